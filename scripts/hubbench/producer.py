"""A producer process: the logging loops that are timed, and the writer each contender hands it.

Nothing here imports hyrax_tbhub at module level: producers of (a)-(c) must not carry it."""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from .config import SETUP_TIMEOUT_S, TAGS, RunSpec


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process in MiB.

    ``ru_maxrss`` is wrong for spawned children on Linux: the exec that follows the (v)fork keeps
    the parent's high-water mark (measured: a spawn child of a 500 MiB parent reports 500 MiB).
    ``VmHWM`` belongs to the address space and starts afresh at exec, so it is used where it exists.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def payloads(kind: str, seed: int) -> list[Any]:
    """A small pool of values, built before the clock starts so that only logging is timed."""
    if kind == "scalar":
        return [math.sin(seed + i / 7) for i in range(64)]
    import numpy as np

    rng = np.random.default_rng(seed)
    if kind == "histogram":
        return [rng.standard_normal(1000) for _ in range(8)]
    return [rng.integers(0, 256, size=(3, 64, 64), dtype=np.uint8) for _ in range(8)]


# One loop per kind: the attribute lookup per call stays in the loop, as in user code.
def _scalar_loop(writer: Any, tags: Sequence[str], pool: Sequence[Any], start: int, end: int) -> None:
    for step in range(start, end):
        writer.add_scalar(tags[step & 3], pool[step & 63], step)


def _histogram_loop(writer: Any, tags: Sequence[str], pool: Sequence[Any], start: int, end: int) -> None:
    for step in range(start, end):
        writer.add_histogram(tags[step & 3], pool[step & 7], step)


def _image_loop(writer: Any, tags: Sequence[str], pool: Sequence[Any], start: int, end: int) -> None:
    for step in range(start, end):
        writer.add_image(tags[step & 3], pool[step & 7], step)


_LOOPS: dict[str, Callable[[Any, Sequence[str], Sequence[Any], int, int], None]] = {
    "scalar": _scalar_loop,
    "histogram": _histogram_loop,
    "image": _image_loop,
}


def log_stream(
    writer: Any, kind: str, events: int, chunk: int, pool: Sequence[Any]
) -> tuple[list[float], dict[str, float]]:
    """Log ``events`` events, then flush once; the cost per call (ns) of each timed chunk, and
    the whole loop's cost.

    The median of chunks hides what the library's own threads do (hyrax_tbhub's sender encodes
    every event, holding the GIL the caller needs), so the loop is also timed whole:
    ``loop_ns`` is its wall time per call, the sender's share included for as long as it ran
    during the loop; ``flushed_ns`` adds one ``flush()``, so that what was still queued counts
    too; ``cpu_ns`` is the CPU time of the whole process (every thread) over both, per call.
    ``loop_end`` (``perf_counter``, one clock for every process of the machine) says when the
    last call returned.
    """
    loop, tags = _LOOPS[kind], TAGS[kind]
    per_call: list[float] = []
    cpu0 = time.process_time_ns()
    begin = time.perf_counter_ns()
    for start in range(0, events, chunk):
        end = min(start + chunk, events)
        t0 = time.perf_counter_ns()
        loop(writer, tags, pool, start, end)
        per_call.append((time.perf_counter_ns() - t0) / (end - start))
    loop_end = time.perf_counter_ns()
    writer.flush()
    flushed = time.perf_counter_ns()
    cpu = time.process_time_ns() - cpu0
    n = max(events, 1)
    cost = {"loop_ns": (loop_end - begin) / n, "flushed_ns": (flushed - begin) / n, "cpu_ns": cpu / n,
            "loop_end": loop_end / 1e9}
    return per_call, cost


def flush_rounds(writer: Any, kind: str, rounds: int, batch: int, pool: Sequence[Any]) -> list[float]:
    """Log ``batch`` events then time one ``flush()``, ``rounds`` times; microseconds per flush.

    A flush that reports failure (hyrax_tbhub returns False) is recorded as a negative latency.
    """
    loop, tags = _LOOPS[kind], TAGS[kind]
    latencies: list[float] = []
    for r in range(rounds):
        loop(writer, tags, pool, r * batch, (r + 1) * batch)
        t0 = time.perf_counter_ns()
        ok = writer.flush()
        elapsed = (time.perf_counter_ns() - t0) / 1e3
        latencies.append(-elapsed if ok is False else elapsed)
    return latencies


class _QueueWriter:
    """What the hand-made fix (b) hands to a child: every call becomes one queue item."""

    def __init__(self, work: Any) -> None:
        self._work = work

    def add_scalar(self, tag: str, value: Any, step: int) -> None:
        self._work.put(("add_scalar", tag, value, step))

    def add_histogram(self, tag: str, values: Any, step: int) -> None:
        self._work.put(("add_histogram", tag, values, step))

    def add_image(self, tag: str, image: Any, step: int) -> None:
        self._work.put(("add_image", tag, image, step))

    def flush(self) -> None:
        """Nothing to do: a queue offers no cross-process flush (stdlib QueueListener has none either)."""


def _producer_writer(spec: RunSpec, idx: int, log_dir: str, work: Any) -> tuple[Any, Callable[[], None]]:
    """The writer a producer of ``spec.contender`` logs to, and what it must call when done."""
    if spec.contender == "b":
        return _QueueWriter(work), lambda: None
    if spec.contender == "c":
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(log_dir=os.path.join(log_dir, f"producer_{idx:02d}"))
        return writer, writer.close
    if spec.contender == "d":
        import hyrax_tbhub

        if spec.kind != "scalar":
            # Histograms and images run tensorboardX's summary code in the producer; importing it
            # (and torch with it, when installed) is setup, as it is for (c), not a cost per call.
            import tensorboardX  # noqa: F401
        # Nothing to close: the owner's close_tensorboard_logger() is the contract under test.
        return hyrax_tbhub.get_tensorboard_logger(), lambda: None
    raise ValueError(f"contender {spec.contender!r} has no producers")


def producer_main(spec: RunSpec, idx: int, log_dir: str, barrier: Any, results: Any, work: Any) -> None:
    """Body of a producer process: set up, wait for the start, log, report."""
    try:
        writer, finish = _producer_writer(spec, idx, log_dir, work)
        pool = payloads(spec.kind, seed=idx)
        barrier.wait(timeout=SETUP_TIMEOUT_S)
        per_call: list[float] = []
        flush_us: list[float] = []
        costs: list[dict[str, float]] = []
        if spec.flush_rounds:
            flush_us = flush_rounds(writer, spec.kind, spec.flush_rounds, spec.flush_batch, pool)
        else:
            per_call, cost = log_stream(writer, spec.kind, spec.per_producer, spec.chunk, pool)
            costs.append(cost)
        finish()
        results.put({"idx": idx, "per_call_ns": per_call, "flush_us": flush_us, "costs": costs,
                     "peak_mib": peak_rss_mib()})
    except BaseException:
        barrier.abort()  # the coordinator learns at once instead of at the setup timeout
        results.put({"idx": idx, "error": traceback.format_exc()})
