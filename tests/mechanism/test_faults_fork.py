"""Fault 7: fork at the worst moment.

A producer forks while its sender thread is half-way through a frame, while another thread holds
its locks, or from a thread other than the main one; the owner forks while its hub thread holds
the hub's lock. The child logs and exits normally, the parent carries on, nothing deadlocks, and
no byte of one process is interleaved with another's on the wire.

Mechanism test (it imports private modules on purpose): the fork hooks: a fork while the hub thread
holds the hub's lock or a producer's locks.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import threading
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub._process.state import STATE
from hyrax_tbhub.testing import TRANSPORT_ERRORS, dropped_tag

from faults import common, fork, loggers
from readback import read_log

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc and Unix sockets"),
]


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch):
    yield from common.private_runtime(monkeypatch)


def test_producer_forks_mid_send(hub: Path, tmp_path: Path) -> None:
    rounds, child_events = 15, 500
    result = tmp_path / "parent.json"
    p = mp.get_context("fork").Process(
        target=fork.fork_at_worst_moments,
        args=(str(result), str(tmp_path), rounds, child_events),
        name="parent",
    )
    p.start()
    p.join(90)
    assert p.exitcode == 0
    rep = common.read_report(result)
    assert rep["errors"] == [], rep["errors"]
    assert rep["exitcodes"] == [0] * rounds, rep
    assert rep["flush"] is True
    assert sorted(set(rep["rounds"])) == ["bare_fork_from_thread", "locks_held", "process"]
    hyrax_tbhub.close_tensorboard_logger()

    logs = common.read_intact(hub)  # every record's framing and checksum is checked on the way
    counted = logs.counters
    assert counted.get(TRANSPORT_ERRORS, 0) == 0, "a frame was torn or interleaved"
    merged = common.merged_scalars(logs)
    for r in range(rounds):
        assert common.read_report(tmp_path / f"child-{r}.json")["flush"] is True
        assert merged[f"child/{r}"] == [(s, float(s)) for s in range(child_events)], r
    # The parent: a gap-free accounting of what it logged (its queue overflowed while the sender
    # was held mid-frame, so some were dropped, and counted).
    spam = [s for s, _v in merged["parent/spam"]]
    common.record(
        7,
        "producer_forks",
        rounds=rounds,
        kinds=sorted(set(rep["rounds"])),
        child_events=rounds * child_events,
        child_landed=sum(len(merged.get(f"child/{r}", [])) for r in range(rounds)),
        parent_logged=rep["logged"],
        parent_landed=len(spam),
        parent_dropped=counted.get(dropped_tag(rep["run"]), 0),
        transport_errors=counted.get(TRANSPORT_ERRORS, 0),
    )
    assert spam == sorted(set(spam)), "the parent's events are out of order or duplicated"
    assert len(spam) + counted.get(dropped_tag(rep["run"]), 0) == rep["logged"]
    assert rep["dropped"] == counted.get(dropped_tag(rep["run"]), 0)
    read_log(hub)  # tensorboard's own reader accepts every file


def test_owner_forks_while_the_hub_holds_its_lock(hub: Path, tmp_path: Path) -> None:
    """The hub thread (here: a thread standing in for it) holds the hub's lock at the fork."""
    hub_obj = STATE.hub
    ctx = mp.get_context("fork")
    w = hyrax_tbhub.get_tensorboard_logger()
    for r in range(5):
        held, release = threading.Event(), threading.Event()

        def hold(held: threading.Event = held, release: threading.Event = release) -> None:
            with hub_obj._lock:
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        p = ctx.Process(
            target=loggers.child_logs, args=(f"child/{r}", 300, str(tmp_path / f"c{r}.json")), name=f"c{r}"
        )
        p.start()
        w.add_scalar("owner/steps", float(r), r)  # the owner carries on meanwhile
        release.set()
        holder.join(10)
        p.join(30)
        assert p.exitcode == 0
        assert common.read_report(tmp_path / f"c{r}.json")["flush"] is True
    hyrax_tbhub.close_tensorboard_logger()
    merged = common.merged_scalars(common.read_intact(hub))
    common.record(
        7, "owner_forks", rounds=5, child_landed=sum(len(merged.get(f"child/{r}", [])) for r in range(5))
    )
    for r in range(5):
        assert merged[f"child/{r}"] == [(s, float(s)) for s in range(300)]
    assert merged["owner/steps"] == [(r, float(r)) for r in range(5)]
