"""Process shapes of tests/test_trust_process.py, each run as ``python process_workers.py NAME ARGS``.

Every shape runs in a fresh interpreter that is the owner (or a plain process) by itself, so
what it does to its own descriptors, imports and exit cannot touch the test process. Each prints
one JSON line with what it saw; the test reads the log back.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from typing import Any


def _report(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def forks_with_fresh_pipes(logdir: str, children: int, parallel: int) -> None:
    """The owner forks ``children`` children one after another, each handed a pipe opened just
    before its fork; every child checks that both ends are its pipe, logs one scalar and ends.
    The hub opens and closes a run per child all the while (the children connect and leave)."""
    import hyrax_tbhub

    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    log = hyrax_tbhub.get_tensorboard_logger()
    log.add_scalar("owner", 0.0, 0)
    live: dict[int, int] = {}
    closed_in_child: list[int] = []
    for i in range(children):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            ok = _is_pipe(r) and _is_pipe(w)
            code = 0 if ok else 3
            try:
                if ok:
                    os.write(w, b"x")
                    ok = os.read(r, 1) == b"x"
                    code = 0 if ok else 4
                log.add_scalar("child", float(i), i)
                log.flush()
            finally:
                os._exit(code)
        os.close(r)
        os.close(w)
        live[pid] = i
        while len(live) >= parallel:
            done, status = os.waitpid(-1, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                closed_in_child.append(live[done])
            live.pop(done, None)
    deadline = time.monotonic() + 120
    while live and time.monotonic() < deadline:
        done, status = os.waitpid(-1, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            closed_in_child.append(live[done])
        live.pop(done, None)
    hyrax_tbhub.close_tensorboard_logger()
    _report({"bad_children": sorted(closed_in_child), "unreaped": sorted(live.values())})


def _pool_task(i: int) -> int:
    import hyrax_tbhub

    hyrax_tbhub.get_tensorboard_logger().add_scalar("task", float(i), i)
    return i


def _wait_for_no_connections(hub: Any, timeout: float = 60.0) -> None:
    """Until the hub (a ``running_hub()`` probe) has ended every run of the workers that left
    (their descriptors are then closed: what is still open after that is what the owner keeps)."""
    deadline = time.monotonic() + timeout
    while hub.connections() and time.monotonic() < deadline:
        time.sleep(0.002)


def pool_per_epoch(logdir: str, epochs: int, tasks: int) -> None:
    """A new fork ``Pool(5)`` every epoch, its workers logging one scalar per task; the owner's
    descriptor count and RSS after each epoch."""
    import multiprocessing as mp

    import hyrax_tbhub
    from hyrax_tbhub.testing import running_hub

    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    hub = running_hub()
    ctx = mp.get_context("fork")
    fds: list[int] = []
    rss: list[int] = []
    for epoch in range(epochs):
        with ctx.Pool(5) as pool:
            got = pool.map(_pool_task, range(epoch * tasks, (epoch + 1) * tasks), chunksize=1)
        assert got == list(range(epoch * tasks, (epoch + 1) * tasks))
        _wait_for_no_connections(hub)
        fds.append(len(os.listdir("/proc/self/fd")))
        with open("/proc/self/statm") as f:
            rss.append(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    hyrax_tbhub.close_tensorboard_logger()
    _report({"fds": fds, "rss": rss})


def ctrl_c_owner(logdir: str, after_calls: int) -> None:
    """The owner logs flat out in ``try: ... finally: close_tensorboard_logger()`` and gets
    Ctrl-C (SIGINT, KeyboardInterrupt) after about ``after_calls`` calls; reports how many calls
    had returned."""
    import signal
    import threading

    import hyrax_tbhub

    # What a terminal's Ctrl-C meets. A process started in the background of a non-interactive
    # shell (a CI driver's `cmd &`) inherits SIGINT ignored, and Python then keeps it ignored:
    # the interrupt never came and the loop ran until the test's timeout.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    log = hyrax_tbhub.get_tensorboard_logger()
    returned = 0

    def interrupt() -> None:
        while returned < after_calls:
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    interrupted = False
    try:
        try:
            i = 0
            while True:
                log.add_scalar("main", float(i), i)
                i += 1
                returned = i
        finally:
            hyrax_tbhub.close_tensorboard_logger()
    except KeyboardInterrupt:
        interrupted = True
    _report({"returned": returned, "interrupted": interrupted})


def _alarm_logger(log: Any, done: list[int]) -> Any:
    """A 1 ms SIGALRM handler that logs (a profiler or watchdog of training code)."""
    import itertools
    import signal

    steps = itertools.count()

    def on_alarm(signum: int, frame: Any) -> None:
        n = next(steps)  # handlers may nest: each call takes its own step
        log.add_scalar("alarm", float(n), n)
        done.append(n)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    return signal


def _calls_under_alarms(log: Any, calls: int) -> dict[str, Any]:
    """``calls`` scalars while a 1 ms SIGALRM handler logs through ``log`` too: what raised, and
    which alarms logged."""
    done: list[int] = []
    error = None
    signal = _alarm_logger(log, done)
    try:
        for i in range(calls):
            log.add_scalar("main", float(i), i)
    except Exception as exc:
        error = repr(exc)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
    return {"error": error, "alarms": sorted(done)}


def _log_under_alarms(log: Any, calls: int) -> None:
    """:func:`_calls_under_alarms`, then reports it and whether the flush was confirmed."""
    report = _calls_under_alarms(log, calls)
    report["flushed"] = log.flush()
    _report(report)


def alarm_owner(logdir: str, calls: int) -> None:
    """The owner logs ``calls`` scalars flat out while a 1 ms SIGALRM handler logs too."""
    import hyrax_tbhub

    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    report = _calls_under_alarms(hyrax_tbhub.get_tensorboard_logger(), calls)
    hyrax_tbhub.close_tensorboard_logger()
    _report(report)


def alarm_producer(calls: int) -> None:
    """A producer (the hub is its parent's) whose 1 ms SIGALRM handler logs from the first
    call on, while that call connects."""
    import hyrax_tbhub

    log = hyrax_tbhub.get_tensorboard_logger()
    _log_under_alarms(log, calls)


def _package_modules() -> int:
    return sum(1 for name in list(sys.modules) if name.split(".")[0] == "hyrax_tbhub")


def fork_during_first_import(threads: int, seed: int) -> None:
    """Threads do this process's first ``from hyrax_tbhub import ...`` and log, while the main
    thread forks children back to back; each child imports the package and logs one scalar
    (the hub is the test's: this process found it through the environment). Reports children
    that did not finish in time (killed) and exit codes."""
    import random
    import signal
    import threading

    rng = random.Random(seed)

    def first_import(i: int) -> None:
        time.sleep(rng.random() * 0.01)  # a randomised mix of starts, not a synchronisation
        from hyrax_tbhub import get_tensorboard_logger

        get_tensorboard_logger().add_scalar("thread", float(i), seed * 100 + i)

    workers = [threading.Thread(target=first_import, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    # Fork only once the package's first lines ran (what no code of a package can guard: the
    # moment between a thread taking the package's import lock and the package's first line).
    while _package_modules() < 4 and any(t.is_alive() for t in workers):
        time.sleep(0.0002)
    children: list[int] = []
    while (any(t.is_alive() for t in workers) and len(children) < 20) or not children:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                from hyrax_tbhub import get_tensorboard_logger

                log = get_tensorboard_logger()
                log.add_scalar("child", 1.0, seed * 1000 + len(children))
                code = 0 if log.flush() else 2
            finally:
                os._exit(code)
        children.append(pid)
    for t in workers:
        t.join(60)
    deadline = time.monotonic() + 30
    codes: dict[int, int] = {}
    while len(codes) < len(children) and time.monotonic() < deadline:
        for pid in children:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    hung = [pid for pid in children if pid not in codes]
    for pid in hung:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    from hyrax_tbhub import get_tensorboard_logger

    get_tensorboard_logger().flush()
    _report({"children": len(children), "hung": len(hung), "failed": sorted(c for c in codes.values() if c)})


class _LogsWhenCollected:
    """Logs from ``__del__``: kept in a module global, it is collected at interpreter teardown
    (CPython clears module globals only when no daemon thread is left: ``exit_hooks`` with
    ``daemon=0``)."""

    def __init__(self, log: Any) -> None:
        self.log = log

    def __del__(self) -> None:
        self.log.add_scalar("del", 1.0, 0)


def exit_hooks(logdir: str, role: str, daemon: int) -> None:
    """Events logged at interpreter exit: an ``atexit`` hook and a ``weakref.finalize`` both
    registered before the package is imported (they run after its own exit hook), and either an
    object whose ``__del__`` logs at teardown (``daemon=0``) or a daemon thread logging up to the
    end (``daemon=1``; the step of its last returned call is kept in ``<logdir>.daemon``).
    ``role`` is ``owner`` (this process runs the hub) or ``producer`` (the hub is the test's)."""
    import atexit
    import mmap
    import threading
    import weakref

    class Anchor:
        pass

    anchor = Anchor()
    handle: list[Any] = []
    atexit.register(lambda: handle[0].add_scalar("atexit", 1.0, 0))
    weakref.finalize(anchor, lambda: handle[0].add_scalar("finalize", 1.0, 0))
    globals()["_anchor"] = anchor

    import hyrax_tbhub

    if role == "owner":
        hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    log = hyrax_tbhub.get_tensorboard_logger()
    handle.append(log)
    log.add_scalar("main", 1.0, 0)
    if not daemon:
        globals()["_collected_at_exit"] = _LogsWhenCollected(log)
        _report({"ok": True})
        return
    with open(logdir + ".daemon", "wb") as f:
        f.write(bytes(8))
    with open(logdir + ".daemon", "r+b") as f:
        last = mmap.mmap(f.fileno(), 8)
    started = threading.Event()

    def log_until_the_end() -> None:
        i = 0
        while True:
            log.add_scalar("daemon", float(i), i)
            last[:8] = (i + 1).to_bytes(8, "little")  # calls returned so far
            i += 1
            if i == 100:
                started.set()

    threading.Thread(target=log_until_the_end, daemon=True).start()
    started.wait(60)
    _report({"ok": True})


def alarm_writer_producer(pickled: str, calls: int) -> None:
    """``alarm_producer`` through a ``hyrax_tbhub.SummaryWriter`` object handed over pickled."""
    import pickle

    with open(pickled, "rb") as f:
        log = pickle.load(f)
    _log_under_alarms(log, calls)


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    globals()[name](*[int(a) if a.isdigit() else a for a in args])
