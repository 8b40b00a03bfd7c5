"""The watching handle's fast path: a process that may still gain a hub looks for one exactly when
the shared generation word moved, or its watch was poked, since it last looked (never otherwise).

Its check reads a module copy of the watch's ``seen``: these tests pin that the copy follows
every change (settle, poke, a hub start) whichever thread makes it.

Mechanism test (it imports private modules on purpose): the watching handle's fast path:
``_discovery.hubfile.GenerationWatch`` and the process state's watch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from hyrax_tbhub import tensorboardx_logger as tbl
from hyrax_tbhub._discovery import hubfile
from hyrax_tbhub._process.state import STATE

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def looks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The handle as a watching one (no hub, the look found nothing); counts its later looks."""
    state = STATE
    assert state.channel is None and state.hub is None
    watch = hubfile.GenerationWatch()
    state.watch = watch
    watch.settle(watch.current())
    state.idle = False  # notifies: the handle switches to the watching class
    assert type(tbl.get_tensorboard_logger()) is tbl._WatchingWriter
    calls: list[int] = []

    def counted_look() -> None:
        calls.append(1)
        watch.settle(watch.current())  # a look that finds nothing settles, as rediscover's does

    monkeypatch.setattr(tbl, "_rediscover", counted_look)
    yield calls


def test_no_look_while_nothing_changed(looks: list[int]) -> None:
    w = tbl.get_tensorboard_logger()
    for step in range(100):
        w.add_scalar("x", 1.0, step)
        w.add_text("t", "x", step)
    assert looks == []


def test_a_hub_start_anywhere_makes_the_next_call_look_once(looks: list[int]) -> None:
    w = tbl.get_tensorboard_logger()
    hubfile.bump_generation()
    w.add_scalar("x", 1.0, 0)
    w.add_scalar("x", 1.0, 1)
    assert looks == [1]


@pytest.mark.parametrize("on_thread", [False, True], ids=["same_thread", "other_thread"])
def test_a_poke_makes_the_next_call_look_once(looks: list[int], on_thread: bool) -> None:
    """As the store watch of a distributed rank does, from its own thread."""
    w = tbl.get_tensorboard_logger()
    watch = STATE.watch
    assert watch is not None
    if on_thread:
        t = threading.Thread(target=watch.poke)
        t.start()
        t.join(10)
    else:
        watch.poke()
    w.add_scalar("x", 1.0, 0)
    w.log_scalar_ts("x", 1.0)
    assert looks == [1]
