"""Per-call timings that leave out the calls Python's garbage collector interrupted."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from typing import Any


class GcWatch:
    """Counts runs of Python's cyclic garbage collector.

    A full collection in a large process (torch imported) stops every thread for 100 ms or more,
    whatever the code is doing; call timings skip the calls during which one ran (and count them),
    so that they measure the library, not the collector.
    """

    def __init__(self) -> None:
        self.runs = 0
        self.skipped = 0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.runs += 1

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)


def timed_calls(
    w: Any, tag: str, n: int, start: int = 0, call: Callable[..., Any] | None = None
) -> list[float]:
    """Log ``n`` points and return each call's duration in seconds (calls hit by a GC left out)."""
    durations = []
    clock = time.perf_counter
    call = call or w.add_scalar
    watch = GcWatch()
    try:
        for step in range(start, start + n):
            runs = watch.runs
            t0 = clock()
            call(tag, float(step), step)
            took = clock() - t0
            if watch.runs == runs:
                durations.append(took)
    finally:
        watch.close()
    return durations


def summarize(durations: list[float]) -> dict[str, float]:
    if not durations:
        return {"n": 0, "max_ms": 0.0, "p999_ms": 0.0, "total_s": 0.0}
    ordered = sorted(durations)
    return {
        "n": len(ordered),
        "max_ms": ordered[-1] * 1e3,
        "p999_ms": ordered[min(len(ordered) - 1, math.ceil(len(ordered) * 0.999) - 1)] * 1e3,
        "total_s": sum(ordered),
    }
