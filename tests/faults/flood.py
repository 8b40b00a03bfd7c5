"""Point 4, flood and backpressure: producers that log flat out or at a set pace, sampling their queue."""

from __future__ import annotations

import time
from array import array
from typing import Any

import hyrax_tbhub

from faults.common import SAFETY_S, dropped, producer, redirect_stderr, report
from faults.procfs import proc_status_kib, reset_peak_rss
from faults.timing import GcWatch, summarize, timed_calls


def flood(notify: Any, go: Any, tag: str, n: int, result: str, stderr: str, text_bytes: int = 0) -> None:
    """Connect, wait for ``go``, log ``n`` events flat out, say so, wait for ``go`` again, flush, report.

    Scalars by default; with ``text_bytes`` each event is an add_text of that many bytes. Samples
    the queue length, queued bytes and RSS as it goes.
    """
    redirect_stderr(stderr)
    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_text("warm-up", "x", 0)  # imports tensorboardX now, not inside the timed calls
    w.add_scalar(tag + "/hello", 1.0, 0)
    connected = w.flush(30)
    p = producer()
    limits = {"max_events": p.options.queue_max_events, "max_bytes": p.options.queue_max_bytes,
              "batch": p.options.batch_events}
    notify.send("ready")
    go.poll(SAFETY_S)
    go.recv()
    payload = "x" * text_bytes
    durations = array("d", bytes(8 * n))  # allocated before the baseline: not part of the growth
    watch = GcWatch()
    max_dq = max_bytes = 0
    sample = 1000 if text_bytes == 0 else 1
    clock = time.perf_counter
    timed = 0
    reset_peak_rss()
    rss0 = proc_status_kib("VmRSS")
    for step in range(n):
        runs = watch.runs
        t0 = clock()
        if text_bytes:
            w.add_text(tag, payload, step)
        else:
            w.add_scalar(tag, float(step), step)
        took = clock() - t0
        if watch.runs == runs:
            durations[timed] = took
            timed += 1
        if step % sample == 0:
            max_dq = max(max_dq, len(p._dq))
            max_bytes = max(max_bytes, p._queued_bytes)
    peak = proc_status_kib("VmHWM")
    notify.send("logged")
    go.poll(SAFETY_S)
    go.recv()
    flushed = w.flush(120)
    report(
        result,
        {
            "connected": connected,
            "flush": flushed,
            "logged": n,
            "dropped": int(p.dropped),
            "run": p.run_name,
            "limits": limits,
            "max_dq": max_dq,
            "max_queued_bytes": max_bytes,
            "rss_growth_kib": peak - rss0,
            "calls": summarize(list(durations[:timed])),
            "gc_skipped": n - timed,
        },
    )


def paced(tag: str, rate: float, seconds: float, result: str) -> None:
    """Log at ``rate`` events/s for ``seconds`` (a pace the hub keeps up with), flush, report."""
    w = hyrax_tbhub.get_tensorboard_logger()
    start = time.monotonic()
    step = 0
    total = int(rate * seconds)
    while step < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        if step >= due:
            time.sleep(0.002)  # rate limiting, not synchronisation: nothing waits on this
            continue
        while step < due:
            w.add_scalar(tag, float(step), step)
            step += 1
    report(result, {"logged": step, "flush": w.flush(60), "dropped": dropped()})


def burst(tag: str, n: int, result: str) -> None:
    """Log ``n`` events flat out (fewer than the queue holds), flush, report."""
    w = hyrax_tbhub.get_tensorboard_logger()
    durations = timed_calls(w, tag, n)
    report(result, {"logged": n, "flush": w.flush(120), "dropped": dropped(), "calls": summarize(durations)})
