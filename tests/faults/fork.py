"""Point 7, fork at the worst moment: a producer that forks while its sender is half-way through a frame."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import hyrax_tbhub
from hyrax_tbhub._process.state import STATE

from faults.common import SAFETY_S, dropped, producer, report
from faults.loggers import child_logs


def fork_at_worst_moments(result: str, folder: str, rounds: int, child_events: int) -> None:
    """A producer that forks while its sender thread is half-way through a frame, ``rounds`` times.

    A thread logs without pause all along. Each round arms the sender to stop half-way through its
    next batch frame; once it is stopped there, the process forks (three ways in turn: a
    multiprocessing fork child; the same while another thread holds the producer's lock and the
    process state lock; a bare ``os.fork()`` from a non-main thread), and only then lets the sender
    finish the frame. Children log ``child_events`` points, flush and exit; the parent carries on.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    original = socket.socket.sendall
    mid, go_on = threading.Event(), threading.Event()
    armed = [False]

    def sendall(self: socket.socket, data: Any, *args: Any) -> None:
        if armed[0] and threading.current_thread().name == "hyrax_tbhub-producer" and len(data) >= 1024:
            armed[0] = False
            data = bytes(data)
            half = len(data) // 2
            original(self, data[:half])
            mid.set()
            go_on.wait(SAFETY_S)
            original(self, data[half:])
            return
        original(self, data, *args)

    socket.socket.sendall = sendall  # type: ignore[method-assign]
    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_scalar("parent/hello", 0.0, 0)
    assert w.flush(30)
    mine = producer()
    stop = threading.Event()
    logged = [0]

    def spam() -> None:
        step = 0
        while not stop.is_set():
            w.add_scalar("parent/spam", float(step), step)
            step += 1
            logged[0] = step

    spammer = threading.Thread(target=spam, name="spam")
    spammer.start()
    children: list[Any] = []
    bare: list[int] = []
    out: dict[str, Any] = {"rounds": [], "errors": []}
    try:
        for r in range(rounds):
            mid.clear()
            go_on.clear()
            armed[0] = True
            if not mid.wait(30):
                raise TimeoutError(f"round {r}: the sender never reached a frame")
            tag, res = f"child/{r}", os.path.join(folder, f"child-{r}.json")
            how = ("process", "locks_held", "bare_fork_from_thread")[r % 3]
            if how == "process":
                p = ctx.Process(target=child_logs, args=(tag, child_events, res), name=f"child-{r}")
                p.start()
                children.append(p)
            elif how == "locks_held":
                held, release = threading.Event(), threading.Event()

                def hold(held: threading.Event = held, release: threading.Event = release) -> None:
                    with mine._cond, STATE.lock:
                        held.set()
                        release.wait(SAFETY_S)

                holder = threading.Thread(target=hold)
                holder.start()
                held.wait(10)
                p = ctx.Process(target=child_logs, args=(tag, child_events, res), name=f"child-{r}")
                p.start()
                release.set()
                holder.join(10)
                children.append(p)
            else:
                pids: list[int] = []

                def fork_here(tag: str = tag, res: str = res, pids: list[int] = pids) -> None:
                    pid = os.fork()
                    if pid == 0:
                        try:
                            child_logs(tag, child_events, res)
                            code = 0
                        except BaseException:
                            code = 1
                        os._exit(code)  # a bare fork child: nothing flushes for it, it flushed itself
                    pids.append(pid)

                forker = threading.Thread(target=fork_here)
                forker.start()
                forker.join(10)
                bare += pids
            out["rounds"].append(how)
            go_on.set()
    except BaseException as exc:  # noqa: B036
        out["errors"].append(repr(exc))
        go_on.set()
    stop.set()
    spammer.join(30)
    for p in children:
        p.join(60)
        out.setdefault("exitcodes", []).append(p.exitcode)
    for pid in bare:
        _, status = os.waitpid(pid, 0)
        out.setdefault("exitcodes", []).append(os.waitstatus_to_exitcode(status))
    out["flush"] = w.flush(60)
    out["logged"] = logged[0]
    out["dropped"] = dropped()
    out["run"] = mine.run_name
    report(result, out)
