"""Point 3, the hub goes away: owners in a child, and producers that log through the loss or a switch."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import hyrax_tbhub
from hyrax_tbhub._discovery import hubfile
from hyrax_tbhub._process.state import STATE
from hyrax_tbhub.options import Options

from faults.common import SAFETY_S, redirect_stderr, report
from faults.procfs import proc_status_kib, process_state, reset_peak_rss
from faults.timing import summarize, timed_calls


def log_through_hub_loss(
    notify: Any,
    told: Any,
    tag: str,
    result: str,
    hub_file: str | None = None,
    after: int = 50_000,
) -> None:
    """Log steadily; keep logging while the hub goes away; report how long each call took.

    1. log 1000 points and flush, then send "ready";
    2. log one point per iteration until the test says (on ``told``) that the hub is gone;
    3. log ``after`` more points, time a flush, a non-scalar call and get_logdir, and report.
    Any exception is reported, never raised: the point is that none happens.
    """
    if hub_file is not None:
        os.environ[hubfile.ENV_INFO] = hub_file  # a producer that inherited the hub's address
    out: dict[str, Any] = {"pid": os.getpid(), "errors": []}
    w = hyrax_tbhub.get_tensorboard_logger()
    before: list[float] = []
    step = 0
    try:
        before += timed_calls(w, tag, 1000)
        step = 1000
        w.add_text(tag + "/text", "warm-up", 0)  # the first non-scalar call imports tensorboardX
        out["first_flush"] = w.flush(30)
        notify.send("ready")
        clock = time.perf_counter
        deadline = time.monotonic() + SAFETY_S
        while not told.poll() and time.monotonic() < deadline:
            before += timed_calls(w, tag, 64, start=step)
            step += 64
        out["logged_before_told"] = step
        gone = timed_calls(w, tag, after, start=step)
        step += after
        t0 = clock()
        out["flush_after"] = w.flush(0.5)
        out["flush_after_s"] = clock() - t0
        t0 = clock()
        w.add_text(tag + "/text", "hello", step)
        out["text_after_s"] = clock() - t0
        t0 = clock()
        out["logdir_after"] = w.get_logdir()
        out["logdir_after_s"] = clock() - t0
        out["before"] = summarize(before)
        out["after"] = summarize(gone)
    except BaseException as exc:  # noqa: B036 - the report is the point
        out["errors"].append(repr(exc))
    out["logged"] = step
    out["reported_at"] = time.time()
    report(result, out)


def owner_main(
    logdir: str, notify: Any, quit_on: Any = None, stderr: str | None = None, options: Options | None = None
) -> None:
    """Own a hub (with ``options``) in this process; send its hub file; wait (to be killed,
    stopped or told to close). Producers of the hub inherit its options through the hub file."""
    if stderr:
        redirect_stderr(stderr)
    reset_peak_rss()
    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir, options=options)
    notify.send(("hub", os.environ[hubfile.ENV_INFO], os.getpid(), proc_status_kib("VmRSS")))
    if quit_on is None:
        threading.Event().wait(SAFETY_S)
        return
    quit_on.poll(SAFETY_S)
    t0 = time.monotonic()
    hyrax_tbhub.close_tensorboard_logger()
    notify.send(("closed", proc_status_kib("VmHWM"), time.monotonic() - t0))


def follow_new_hub(notify: Any, told: Any, result: str, n: int = 500) -> None:
    """Log phase "a" to the first hub; after being told, log phase "b": it must reach the new hub."""
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(n):
        w.add_scalar("phase/a", float(step), step)
    first = w.flush(30)
    first_dir = w.get_logdir()
    notify.send("a done")
    told.poll(SAFETY_S)
    told.recv()
    for step in range(n):
        w.add_scalar("phase/b", float(step), step)
    report(
        result,
        {
            "first_flush": first,
            "first_dir": first_dir,
            "second_flush": w.flush(30),
            "second_dir": w.get_logdir(),
        },
    )


def log_across_hub_switches(notify: Any, told: Any, result: str, switches: int) -> None:
    """Log without pause while the owner closes and reopens its hub ``switches`` times.

    Reports events that a finished producer accepted but neither sent nor counted as dropped:
    calls that returned normally and yet went nowhere, without a trace.
    """
    from hyrax_tbhub._producer import Producer

    w = hyrax_tbhub.get_tensorboard_logger()
    seen: dict[int, Producer] = {}
    step = 0
    notify.send("ready")
    done = 0
    deadline = time.monotonic() + SAFETY_S
    while done < switches and time.monotonic() < deadline:
        w.add_scalar("steady", float(step), step)
        step += 1
        ch = STATE.channel
        if isinstance(ch, Producer):
            seen.setdefault(id(ch), ch)
        if step % 64 == 0 and told.poll():
            told.recv()
            done += 1
        if step % 65536 == 0:
            report(result + ".status", process_state())  # for the test's message if it times out
    final = w.flush(30)
    stranded = []
    for p in seen.values():
        if p is not STATE.channel and not p.alive:
            stranded.append(sum(1 for item in list(p._dq) if item[0] in ("s", "e")))
    report(result, {"logged": step, "producers": len(seen), "stranded": stranded, "final_flush": final})


def tbx_writer_after_close(logdir: str, progress: Any) -> None:
    """Contrast: hyrax's own module in a forked child, whose parent closes the writer.

    The child inherits the SummaryWriter but not its writer thread: its events fill
    tensorboardX's queue (max_queue=10) and then every call blocks.
    """
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(logdir)
    writer.add_scalar("before_fork", 1.0, 0)
    pid = os.fork()
    if pid:
        writer.close()
        os.waitpid(pid, 0)
        return
    try:
        progress.send(("pid", os.getpid()))  # the test kills this process: it never ends by itself
        for step in range(20):
            writer.add_scalar("in_child", float(step), step)
            progress.send(("calls", step + 1))
    finally:
        os._exit(0)
