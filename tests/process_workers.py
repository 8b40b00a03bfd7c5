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
    """Until the hub has ended every run of the workers that left (their descriptors are then
    closed: what is still open after that is what the owner keeps)."""
    deadline = time.monotonic() + timeout
    while hub._conns and time.monotonic() < deadline:
        time.sleep(0.002)


def pool_per_epoch(logdir: str, epochs: int, tasks: int) -> None:
    """A new fork ``Pool(5)`` every epoch, its workers logging one scalar per task; the owner's
    descriptor count and RSS after each epoch."""
    import multiprocessing as mp

    import hyrax_tbhub

    from hyrax_tbhub._process.state import STATE

    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    hub = STATE.hub
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


def alarm_owner(logdir: str, calls: int) -> None:
    """The owner logs ``calls`` scalars flat out while a 1 ms SIGALRM handler logs too."""
    import hyrax_tbhub

    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    log = hyrax_tbhub.get_tensorboard_logger()
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
    hyrax_tbhub.close_tensorboard_logger()
    _report({"error": error, "alarms": sorted(done)})


def alarm_producer(calls: int) -> None:
    """A producer (the hub is its parent's) whose 1 ms SIGALRM handler logs from the first
    call on, while that call connects."""
    import hyrax_tbhub

    log = hyrax_tbhub.get_tensorboard_logger()
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
    flushed = log.flush()
    _report({"error": error, "alarms": sorted(done), "flushed": flushed})


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    globals()[name](*[int(a) if a.isdigit() else a for a in args])
