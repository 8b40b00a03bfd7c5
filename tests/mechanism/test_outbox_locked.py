"""The outbox's locked path (free-threaded CPython, no GIL), forced on any build.

Without a GIL the lock-free outbox's counts would lose updates and a call could land behind the
final batch; there ``new_outbox`` makes a ``LockedOutbox``. ``outbox.LOCKED`` forces it here, so
its behaviour is checked on the GIL build the suite runs on: several threads logging at once, a
sender taking rounds meanwhile, nothing lost, every count exact.

Mechanism test (it imports private modules on purpose): ``_producer.outbox``'s ``LockedOutbox`` and
the ``LOCKED`` switch, driven directly and through a fork child's producer.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import threading
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub._items import SCALAR, QueuedItem
from hyrax_tbhub._process.state import STATE
from hyrax_tbhub._producer import outbox as outbox_module
from hyrax_tbhub._producer.ledger import DROPPED
from hyrax_tbhub._producer.outbox import LockedOutbox, Outbox, gil_disabled, items_of, new_outbox
from hyrax_tbhub.options import Options
from hyrax_tbhub.testing import read_logs

pytestmark = pytest.mark.timeout(120)

THREADS = 4
CALLS = 3000


def _log_from_threads(tag: str) -> None:
    """THREADS threads log CALLS scalars each at once, tag ``<tag>/<thread>``, steps 0..CALLS-1."""
    start = threading.Barrier(THREADS)
    w = hyrax_tbhub.get_tensorboard_logger()

    def run(t: int) -> None:
        start.wait(30)
        for step in range(CALLS):
            w.add_scalar(f"{tag}/{t}", float(step), step)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)


def test_new_outbox_follows_the_switch_and_else_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOCKED forces either outbox; unset, a build running without the GIL gets the locked one."""
    monkeypatch.setattr(outbox_module, "LOCKED", True)
    assert type(new_outbox(Options(), lambda: None)) is LockedOutbox
    monkeypatch.setattr(outbox_module, "LOCKED", False)
    assert type(new_outbox(Options(), lambda: None)) is Outbox
    monkeypatch.setattr(outbox_module, "LOCKED", None)
    expected = LockedOutbox if gil_disabled() else Outbox
    assert type(new_outbox(Options(), lambda: None)) is expected
    assert gil_disabled() == (hasattr(sys, "_is_gil_enabled") and not sys._is_gil_enabled())


def test_locked_outbox_loses_nothing_with_threads_putting_while_the_sender_takes() -> None:
    """Every call of every thread is taken exactly once, in its thread's order, and counted."""
    box = LockedOutbox(Options(), lambda: None)
    taken: list[QueuedItem] = []
    done = threading.Event()

    def sender() -> None:
        while not done.is_set():
            slots, _sized = box.take_slots(64)
            taken.extend(items_of(slots))
        taken.extend(items_of(box.take_slots()[0]))

    start = threading.Barrier(THREADS)

    def put(t: int) -> None:
        start.wait(30)
        for step in range(CALLS):
            box.put_scalar(f"t{t}", float(step), step, 1.0)
            if step % 500 == 0:
                box.put_event(f"e{t}", b"x" * 10)

    taker = threading.Thread(target=sender)
    taker.start()
    putters = [threading.Thread(target=put, args=(t,)) for t in range(THREADS)]
    for thread in putters:
        thread.start()
    for thread in putters:
        thread.join(60)
    done.set()
    taker.join(60)
    assert not taker.is_alive() and not any(thread.is_alive() for thread in putters)

    for t in range(THREADS):
        steps = [item[3] for item in taken if item[0] == SCALAR and item[1] == f"t{t}"]
        assert steps == list(range(CALLS)), t
    events = CALLS // 500 * THREADS
    assert len(taken) == THREADS * CALLS + events
    assert box.logged == box.words[0] == THREADS * CALLS + events
    assert box.queued_bytes == 0 and len(box) == 0
    assert box.dropped == box.words[DROPPED] == 0


def test_locked_outbox_counts_every_drop_of_racing_threads() -> None:
    """Past the bound every refused call is counted once: logged + dropped == calls made."""
    box = LockedOutbox(Options(queue_max_events=1000), lambda: None)
    start = threading.Barrier(THREADS)

    def put(t: int) -> None:
        start.wait(30)
        for step in range(CALLS):
            box.put_scalar(f"t{t}", float(step), step, 1.0)

    putters = [threading.Thread(target=put, args=(t,)) for t in range(THREADS)]
    for thread in putters:
        thread.start()
    for thread in putters:
        thread.join(60)
    assert not any(thread.is_alive() for thread in putters)
    assert len(box) == box.logged == 1000
    assert box.dropped == box.words[DROPPED] == THREADS * CALLS - 1000


def _forked_child(tag: str) -> None:
    _log_from_threads(tag)
    producer = STATE.channel
    assert type(producer._outbox) is LockedOutbox, type(producer._outbox)
    assert producer.flush(60)


def test_a_fork_child_logging_from_threads_through_the_locked_outbox_loses_nothing(
    monkeypatch: pytest.MonkeyPatch, hub: Path
) -> None:
    """End to end: a forked producer (it inherits the switch) logs from several threads at once;
    every point lands in its run, in order, and nothing is counted as dropped."""
    monkeypatch.setattr(outbox_module, "LOCKED", True)
    child = mp.get_context("fork").Process(target=_forked_child, args=("locked",))
    child.start()
    child.join(90)
    assert child.exitcode == 0
    hyrax_tbhub.close_tensorboard_logger()
    logs = read_logs(hub)
    for t in range(THREADS):
        assert logs.scalars(f"locked/{t}") == [(s, float(s)) for s in range(CALLS)], t
    assert logs.dropped == 0 and logs.errors == 0
