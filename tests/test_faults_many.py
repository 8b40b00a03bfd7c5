"""Fault 9: many producers at once.

256 producer processes (fork: the fastest start on a 2-core machine) wait on one start signal,
then all connect and log at the same moment; every event lands, in its own run.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import running_hub

from faults import common, loggers

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc and Unix sockets"),
]

PRODUCERS = 256
EVENTS = 50


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch):
    yield from common.private_runtime(monkeypatch)


def test_256_producers_connect_at_once(hub: Path) -> None:
    ctx = mp.get_context("fork")
    go, leave = ctx.Event(), ctx.Event()
    procs = [
        ctx.Process(target=loggers.many_producer, args=(go, leave, f"many/{i}", EVENTS), name=f"many-{i}")
        for i in range(PRODUCERS)
    ]
    for p in procs:
        p.start()
    probe = running_hub()
    assert probe is not None
    t0 = time.monotonic()
    go.set()
    try:
        # Every producer has connected, logged and flushed, and all are connected at the same time.
        common.wait_until(
            lambda: (
                len(probe.joined_runs()) >= PRODUCERS
                or any(p.exitcode not in (None, 0) for p in procs)
            ),
            120,
            "all producers to be connected at once",
        )
        all_in = time.monotonic() - t0
    finally:
        leave.set()
    for p in procs:
        p.join(30)
    codes = [p.exitcode for p in procs]
    assert codes == [0] * PRODUCERS, {c: codes.count(c) for c in set(codes)}
    hyrax_tbhub.close_tensorboard_logger()
    logs = common.read_intact(hub)
    assert len(logs.runs) == PRODUCERS + 1
    merged = common.merged_scalars(logs)
    common.record(
        9,
        "many",
        producers=PRODUCERS,
        logged=PRODUCERS * EVENTS,
        landed=sum(len(merged.get(f"many/{i}", [])) for i in range(PRODUCERS)),
        all_connected_s=all_in,
    )
    for i in range(PRODUCERS):
        assert merged[f"many/{i}"] == [(s, float(s)) for s in range(EVENTS)], i
    print(f"{PRODUCERS} producers connected and flushed within {all_in:.2f} s")
