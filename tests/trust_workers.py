"""Child-process functions of tests/test_trust_regressions.py (importable by spawn and forkserver).

Children report through small JSON files written atomically (faults.common.report). No sleep is
used to synchronise: threads start together behind a Barrier, children are waited for with
bounded waits.
"""

from __future__ import annotations

import faulthandler
import json
import multiprocessing as mp
import os
import resource
import sys
import threading
import time
import traceback
from typing import Any

import hyrax_tbhub
from hyrax_tbhub._process.state import STATE

from faults.common import redirect_stderr, report

SAFETY_S = 90.0
STACK_AFTER_S = 20.0  # a forked child still running after this long dumps its stacks and exits


def _producer() -> Any:
    from hyrax_tbhub._producer import Producer

    ch = STATE.channel
    return ch if isinstance(ch, Producer) else None


# -- symptom 1: threads that start logging at once ---------------------------------------------------


def threads_at_once(result: str, threads: int, events: int) -> None:
    """``threads`` threads start logging ``events`` scalars each at the same moment, in a process
    that has not logged yet (so the first calls race the producer's connect)."""
    w = hyrax_tbhub.get_tensorboard_logger()
    start = threading.Barrier(threads)

    def log(i: int) -> None:
        start.wait(30)
        for step in range(events):
            w.add_scalar(f"thread{i}", float(step), step)

    workers = [threading.Thread(target=log, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(SAFETY_S)
    p = _producer()
    report(result, {
        "flush": w.flush(30),
        "dropped": None if p is None else p.dropped,
        "run": None if p is None else p.run_name,
    })


# -- symptom 2: fork while another thread logs ------------------------------------------------------


def _child_body(tag: str, result: str) -> None:
    """What each forked child does: 9 scalars and a histogram (needs tensorboardX), flush.

    A child that hangs writes its threads' stacks to ``<result>.stack`` before it is killed.
    """
    stack = open(result + ".stack", "w")  # noqa: SIM115 - open until the process ends
    faulthandler.dump_traceback_later(STACK_AFTER_S, exit=True, file=stack)
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(9):
        w.add_scalar(tag, float(step), step)
    w.add_histogram(tag + "/h", [1.0, 2.0, 3.0], 0)
    report(result, {"flush": w.flush(30), "pid": os.getpid()})
    faulthandler.cancel_dump_traceback_later()


def _mp_child(tag: str, result: str) -> None:
    _child_body(tag, result)


def _bare_fork_child(tag: str, result: str) -> None:
    code = 1
    try:
        _child_body(tag, result)
        code = 0
    finally:
        os._exit(code)


def _log_flat_out(stop: threading.Event, tag: str) -> None:
    w = hyrax_tbhub.get_tensorboard_logger()
    step = 0
    # A non-scalar first: the thread imports tensorboardX (and torch) for a second or more, the
    # window in which a fork from another thread used to leave the import lock held.
    w.add_histogram(tag + "/h", [0.0, 1.0], 0)
    while not stop.is_set():
        w.add_scalar(tag, float(step), step)
        step += 1
        if step % 4096 == 0:
            w.add_histogram(tag + "/h", [float(step), 1.0], step)


def fork_under_load(result: str, folder: str, children: int, threads: int = 1, wait_s: float = 30.0) -> None:
    """Start ``threads`` threads logging flat out, then at once fork ``children`` children, half
    with os.fork and half through multiprocessing's fork context; each logs 10 events and exits.

    Reports each child's exit status; a child still running after ``wait_s`` is killed and listed
    under ``hung`` (a fork that left a lock held in it).
    """
    stop = threading.Event()
    loggers = [
        threading.Thread(target=_log_flat_out, args=(stop, f"parent{os.getpid()}/t{i}"), daemon=True)
        for i in range(threads)
    ]
    for t in loggers:
        t.start()
    ctx = mp.get_context("fork")
    pending: dict[int, Any] = {}  # index -> pid (int) or Process
    errors: list[str] = []
    for i in range(children):
        tag = f"child{i}"
        out = os.path.join(folder, f"child-{os.getpid()}-{i}.json")
        try:
            if i % 2 == 0:
                pid = os.fork()
                if pid == 0:
                    _bare_fork_child(tag, out)
                pending[i] = pid
            else:
                p = ctx.Process(target=_mp_child, args=(tag, out), name=f"forked{i}")
                p.start()
                pending[i] = p
        except Exception:
            errors.append(traceback.format_exc())
    deadline = time.monotonic() + wait_s
    exitcodes: dict[int, int | None] = {}
    hung: list[int] = []
    for i, child in pending.items():
        if isinstance(child, int):
            code = None
            while code is None:
                done, status = os.waitpid(child, os.WNOHANG)
                if done:
                    code = os.waitstatus_to_exitcode(status)
                elif time.monotonic() > deadline:
                    break
                else:
                    # A bare-fork child has no join(): poll its exit status (bounded by deadline).
                    time.sleep(0.01)
            if code is None:
                hung.append(i)
                os.kill(child, 9)
                os.waitpid(child, 0)
            exitcodes[i] = code
        else:
            child.join(max(0.0, deadline - time.monotonic()))
            if child.exitcode is None:
                hung.append(i)
                child.kill()
                child.join(10)
            exitcodes[i] = child.exitcode
    stop.set()
    for t in loggers:
        t.join(30)
    report(result, {
        "exitcodes": exitcodes,
        "hung": hung,
        "errors": errors,
        "flush": hyrax_tbhub.get_tensorboard_logger().flush(30),
        "pid": os.getpid(),
    })


# -- symptom 3: more than 1024 descriptors ----------------------------------------------------------


def log_with_many_fds(result: str, stderr: str, fds: int, events: int) -> None:
    """Open ``fds`` descriptors (so the producer's socket numbers pass 1024), then log."""
    redirect_stderr(stderr)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = fds + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        limit = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(fds)]
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(events):
        w.add_scalar("many_fds", float(step), step)
    ok = w.flush(30)
    p = _producer()
    report(result, {
        "flush": ok,
        "max_fd": max(held),
        "sock_fd": None if p is None or p._sock is None else p._sock.fileno(),
        "dropped": None if p is None else p.dropped,
    })
    for fd in held:
        os.close(fd)


# -- symptom 5: a bug in the sender ----------------------------------------------------------------


def sender_bug(result: str, stderr: str, events: int) -> None:
    """Log, flush, then make the sender thread meet an internal error (a bug stand-in) with
    ``events`` more queued: they are dropped, counted, and said once on stderr."""
    redirect_stderr(stderr)
    from hyrax_tbhub import _producer as producer_module

    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_scalar("before", 1.0, 0)
    first = w.flush(30)
    p = _producer()
    armed, queued = threading.Event(), threading.Event()

    def broken(self: Any, sock: Any, final: bool) -> None:
        # Fails only once every event is queued, so that all of them meet the bug.
        if armed.is_set():
            queued.wait(30)
            raise RuntimeError("a bug in the sender")
        original(self, sock, final)

    original = producer_module.Producer._send_queued
    producer_module.Producer._send_queued = broken  # type: ignore[method-assign]
    armed.set()
    for step in range(events):
        w.add_scalar("after", float(step), step)
    queued.set()
    if p is not None:
        p._thread.join(30)
    gone = p is not None and not p._thread.is_alive()
    report(result, {
        "first_flush": first,
        "later_flush": w.flush(5),
        "dropped": None if p is None else p.dropped,
        "gone": gone,
        "run": None if p is None else p.run_name,
    })


def modules_imported_by_logging(result: str, folder: str) -> None:
    """Every plain logging path of a producer, then: which hyrax_tbhub modules did it import?

    The fork-safety rule is that the logging path imports nothing once the package is imported
    (a fork from another thread mid-import leaves that module's lock held in the child for good);
    tensorboardX is the one exception, under ``_forksafe.IMPORT_LOCK``.
    """
    before = {m for m in sys.modules if m.startswith("hyrax_tbhub")}
    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_scalar("imports/scalar", 1.0, 1)
    w.add_text("imports/text", "plain", 1)
    w.log_scalar_ts("imports/ts", 2.0)
    w.log_duration_ts("imports/duration", time.monotonic_ns())
    ok = w.flush()
    w.get_logdir()
    writer = hyrax_tbhub.SummaryWriter(folder)
    writer.add_scalar("imports/writer_scalar", 1.0, 1)
    writer.add_text("imports/writer_text", "plain", 1)
    writer.flush()
    writer.close()
    after = {m for m in sys.modules if m.startswith("hyrax_tbhub")}
    with open(result, "w") as fh:
        json.dump({"new": sorted(after - before), "flush": ok}, fh)


def blocked_signals_of_our_threads(result: str) -> None:
    """Log once, then report which signals each hyrax_tbhub thread of this process blocks."""
    hyrax_tbhub.get_tensorboard_logger().add_scalar("signals/probe", 1.0, 1)
    hyrax_tbhub.get_tensorboard_logger().flush()
    with open(result, "w") as fh:
        json.dump(thread_signal_masks(), fh)


def thread_signal_masks() -> dict[str, int]:
    """``{thread name: SigBlk bit mask}`` of this process's hyrax_tbhub threads (Linux /proc)."""
    masks = {}
    for t in threading.enumerate():
        if t.name.startswith("hyrax_tbhub") and t.native_id is not None:
            with open(f"/proc/self/task/{t.native_id}/status") as fh:
                line = next(ln for ln in fh if ln.startswith("SigBlk:"))
            masks[t.name] = int(line.split()[1], 16)
    return masks
