"""Plain children: log ``n`` points, flush, report (the survivors and bystanders of the fault tests)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import hyrax_tbhub

from faults.common import SAFETY_S, dropped, report


def survivor(tag: str, n: int, result: str) -> None:
    """Log ``n`` points of ``tag`` (value = step / 2), flush, report, exit normally."""
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(n):
        w.add_scalar(tag, step * 0.5, step)
    ok = w.flush(30)
    report(result, {"pid": os.getpid(), "flush": ok, "dropped": dropped()})


def child_logs(tag: str, n: int, result: str) -> None:
    """A forked child: log ``n`` points, flush, report (and then exit normally)."""
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(n):
        w.add_scalar(tag, float(step), step)
    report(result, {"flush": w.flush(30), "pid": os.getpid()})


def log_scalars_flush(tag: str, n: int) -> None:
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(n):
        w.add_scalar(tag, float(step), step)
    if not w.flush(30):
        sys.exit(2)


def timed_producer(tag: str, n: int, result: str) -> None:
    """Log ``n`` points and flush; report how long that took from the first call."""
    t0 = time.monotonic()
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(n):
        w.add_scalar(tag, float(step), step)
    ok = w.flush(60)
    report(result, {"flush": ok, "seconds": time.monotonic() - t0, "dropped": dropped()})


def many_producer(go: Any, leave: Any, tag: str, n: int) -> None:
    """Wait for the start signal shared by all, log ``n`` points, flush, stay connected until ``leave``."""
    go.wait(SAFETY_S)
    log_scalars_flush(tag, n)
    leave.wait(SAFETY_S)
