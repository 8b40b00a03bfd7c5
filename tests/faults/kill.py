"""Point 1, producers killed mid-stream: victims that say when they reach the kill point."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import hyrax_tbhub

from faults.common import SAFETY_S


def stall_sendall(notify: Any, min_len: int, nth: int = 1) -> None:
    """Make this process's producer thread stop in the middle of a ``sendall`` and say so.

    The ``nth`` send of at least ``min_len`` bytes by the producer thread sends its first half,
    sends ``("stalled", total, sent)`` on the ``notify`` connection and then blocks until the
    process is killed: the test kills the process while half a frame is on the wire.
    """
    original = socket.socket.sendall
    seen = [0]

    def sendall(self: socket.socket, data: Any, *args: Any) -> None:
        if threading.current_thread().name == "hyrax_tbhub-producer" and len(data) >= min_len:
            seen[0] += 1
            if seen[0] == nth:
                half = max(1, len(data) // 2)
                original(self, bytes(data[:half]))
                notify.send(("stalled", len(data), half))
                threading.Event().wait(SAFETY_S)
                os._exit(3)
        original(self, data, *args)

    socket.socket.sendall = sendall  # type: ignore[method-assign]


def victim(notify: Any, tag: str, target: int, mode: str) -> None:
    """Log without end until killed; say when the kill point is reached.

    ``mode`` "random": send ``("at", target)`` once ``target`` points were logged, keep logging.
    ``mode`` "midsend"/"midhandshake": stop the producer thread half-way through a batch frame or
    through the handshake digest (see :func:`stall_sendall`) and say so.
    """
    if mode == "midsend":
        stall_sendall(notify, min_len=1024)
    elif mode == "midhandshake":
        stall_sendall(notify, min_len=1, nth=1)
    w = hyrax_tbhub.get_tensorboard_logger()
    deadline = time.monotonic() + SAFETY_S
    step = 0
    while time.monotonic() < deadline:
        w.add_scalar(tag, float(step), step)
        if step == target and mode == "random":
            notify.send(("at", target))
        step += 1
    os._exit(3)


def producer_with_forked_child(notify: Any, tag: str) -> None:
    """Log, fork a child that logs and lives on (it inherits our socket), then wait to be killed."""
    import multiprocessing

    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(100):
        w.add_scalar(tag, float(step), step)
    w.flush(30)
    recv, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(
        target=_forked_child_lives_on, args=(send, tag + "/child"), name="child-of-" + tag.replace("/", "_")
    )
    child.start()
    recv.poll(30)
    notify.send(("ready", child.pid))
    threading.Event().wait(SAFETY_S)  # until killed


def _forked_child_lives_on(flushed: Any, tag: str) -> None:
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(100):
        w.add_scalar(tag, float(step), step)
    flushed.send(w.flush(30))
    threading.Event().wait(SAFETY_S)  # until killed (no shared Event: a killed waiter wedges one)


def mpqueue_victim(q: Any, size: int) -> None:
    """Put one large item on a shared multiprocessing.Queue, then wait to be killed."""
    q.put(b"x" * size)
    threading.Event().wait(SAFETY_S)


def mpqueue_survivor(q: Any) -> None:
    q.put(("survivor", os.getpid()))


def mpqueue_consumer(q: Any, out: Any) -> None:
    """Try to read what the survivor put; report what came (or hang, which the test detects)."""
    try:
        item = q.get(timeout=5)
        out.send(("got", repr(item)[:60]))
    except Exception as exc:
        out.send(("error", repr(exc)))
