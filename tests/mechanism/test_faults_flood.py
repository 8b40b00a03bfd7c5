"""Fault 4: flood and backpressure.

Producers log faster than the hub writes. Bounds (``hyrax_tbhub.Options``):
a producer queues at most ``max_events`` events and ``max_bytes`` bytes of pre-encoded events;
beyond that a call drops the event and counts it, it never waits. The hub buffers at most one
partial frame per connection and writes every batch it reads before reading more, so the
kernel's socket buffers hold the rest and push back on the producer's sender thread, never on
the caller. Drops are counted per producer, written as ``hyrax_tbhub/dropped/<run>`` scalars in
the root run, and said once on stderr; nothing is dropped while the hub keeps up.

Mechanism test (it imports private modules on purpose): the bound of the owner's local queue
(``_hub.server``'s high-water mark, the hub's deque).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub import _hub
from hyrax_tbhub._process.state import STATE
from hyrax_tbhub.options import DEFAULT_OPTIONS
from hyrax_tbhub.testing import DROPPED_PREFIX, dropped_tag

from faults import common, flood, hubgone

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc and Unix sockets"),
]

MIB = 1024
# Bounds checked below, in KiB of RSS growth while the hub is frozen and a producer floods (measured
# here: 36 MiB for scalars, 74 MiB for 1 MiB texts, 192 MiB for the hub).
# Scalars: the queue itself, max_events tuples of ~190 B each, plus one batch being pickled.
SCALAR_PRODUCER_BOUND_KIB = DEFAULT_OPTIONS.queue_max_events * 256 // 1024 + 8 * MIB
# Large events: max_bytes of queued events, plus the batch being pickled.
TEXT_PRODUCER_BOUND_KIB = DEFAULT_OPTIONS.queue_max_bytes // 1024 + 32 * MIB
# The hub has no queue of its own: per connection at most one partial frame (a frame holds at most
# max_bytes of events), plus the one batch being decoded and written (about 4 copies of a frame).
N_FLOODERS = 3
HUB_BOUND_KIB = (N_FLOODERS + 4) * DEFAULT_OPTIONS.queue_max_bytes // 1024 + 64 * MIB

@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch):
    yield from common.private_runtime(monkeypatch)


def _warnings(path: Path, needle: str) -> list[str]:
    return [line for line in path.read_text().splitlines() if needle in line] if path.exists() else []


def test_flood_while_the_hub_is_frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner is frozen (SIGSTOP) while 2 producers log 1M scalars and one 120 x 1 MiB texts."""
    ctx = mp.get_context("fork")
    spawn = mp.get_context("spawn")  # producers with their own heap: their RSS is theirs alone
    logdir = tmp_path / "log"
    owner_err = tmp_path / "owner.err"
    o_recv, o_send = ctx.Pipe(duplex=False)
    quit_r, quit_w = ctx.Pipe(duplex=False)
    owner = ctx.Process(
        target=hubgone.owner_main, args=(str(logdir), o_send, quit_r, str(owner_err)), name="owner"
    )
    owner.start()
    assert o_recv.poll(30)
    _tag, hub_file, owner_pid, owner_rss0 = o_recv.recv()
    monkeypatch.setenv("HYRAX_TBHUB_INFO", hub_file)  # the producers are this process's children
    specs = [("scalars-0", 1_000_000, 0), ("scalars-1", 1_000_000, 0), ("texts", 120, 1 << 20)]
    assert len(specs) == N_FLOODERS
    procs = []
    for name, n, text_bytes in specs:
        recv, send = spawn.Pipe(duplex=False)
        go_r, go_w = spawn.Pipe(duplex=False)
        p = spawn.Process(
            target=flood.flood,
            args=(
                send,
                go_r,
                f"flood/{name}",
                n,
                str(tmp_path / f"{name}.json"),
                str(tmp_path / f"{name}.err"),
                text_bytes,
            ),
            name=name,
        )
        p.start()
        procs.append((name, p, recv, go_w))
    try:
        for name, _p, recv, _go in procs:
            assert recv.poll(60) and recv.recv() == "ready", name
        os.kill(owner_pid, signal.SIGSTOP)
        for _name, _p, _recv, go in procs:
            go.send("go")
        for name, _p, recv, _go in procs:
            assert recv.poll(120) and recv.recv() == "logged", name
    finally:
        os.kill(owner_pid, signal.SIGCONT)
    for _name, _p, _recv, go in procs:
        go.send("flush")
    reports = {}
    for name, p, _recv, _go in procs:
        reports[name] = common.read_report(tmp_path / f"{name}.json", 180)
        p.join(30)
        assert p.exitcode == 0, name
    quit_w.send("close")
    assert o_recv.poll(120)
    _closed, owner_hwm, close_s = o_recv.recv()
    owner.join(30)
    assert owner.exitcode == 0

    log = common.read_intact(logdir).counts()
    counted = common.counters(logdir)
    for name, n, text_bytes in specs:
        rep = reports[name]
        assert rep["connected"] and rep["flush"], rep
        run = rep["run"]
        # The bound held and drops happened (the hub was frozen): counted, written, said once.
        assert rep["max_dq"] <= rep["limits"]["max_events"], rep
        assert rep["max_queued_bytes"] <= rep["limits"]["max_bytes"], rep
        assert rep["dropped"] > 0, rep
        assert counted.get(dropped_tag(run)) == rep["dropped"], (run, counted)
        landed = log[run].get(f"flood/{name}/text_summary" if text_bytes else f"flood/{name}", 0)
        bound = TEXT_PRODUCER_BOUND_KIB if text_bytes else SCALAR_PRODUCER_BOUND_KIB
        assert rep["rss_growth_kib"] < bound, rep
        assert landed + rep["dropped"] == n, (name, landed, rep["dropped"])
        # No call waited for the hub: every producer reported "logged" while the hub was still
        # frozen (SIGCONT comes only after). Call latencies go to the fault table, not into an
        # assertion: they measure the machine's load, not a property of the code.
        assert len(_warnings(tmp_path / f"{name}.err", "dropped")) == 1, name
        assert len(_warnings(owner_err, f"producer {run!r} dropped")) == 1, run
    common.record(
        4,
        "frozen",
        flooders={
            name: {
                "logged": rep["logged"],
                "dropped": rep["dropped"],
                "counter": counted.get(dropped_tag(rep['run'])),
                "landed": log.get(rep["run"], {}).get(
                    f"flood/{name}/text_summary" if name == "texts" else f"flood/{name}", 0
                ),
                "rss_growth_mib": rep["rss_growth_kib"] / 1024,
                "max_ms": rep["calls"]["max_ms"],
                "p999_ms": rep["calls"]["p999_ms"],
            }
            for name, rep in reports.items()
        },
        hub_growth_mib=(owner_hwm - owner_rss0) / 1024,
        max_events=DEFAULT_OPTIONS.queue_max_events,
        max_bytes_mib=DEFAULT_OPTIONS.queue_max_bytes / 2**20,
    )
    assert owner_hwm - owner_rss0 < HUB_BOUND_KIB, (owner_hwm, owner_rss0)
    assert close_s < 5.0


def test_bursts_within_the_queue_bound_drop_nothing(hub: Path, tmp_path: Path) -> None:
    """3 producers each log 150k events flat out (fewer than max_events): the hub falls behind, the
    queues absorb it, nothing is dropped."""
    n = 150_000
    assert n < DEFAULT_OPTIONS.queue_max_events
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(
            target=flood.burst, args=(f"burst/{i}", n, str(tmp_path / f"b{i}.json")), name=f"burst-{i}"
        )
        for i in range(3)
    ]
    for p in procs:
        p.start()
    for i, p in enumerate(procs):
        p.join(180)
        assert p.exitcode == 0
        rep = common.read_report(tmp_path / f"b{i}.json")
        assert rep["flush"] and rep["dropped"] == 0, rep
    hyrax_tbhub.close_tensorboard_logger()
    merged = common.merged_scalars(common.read_intact(hub))
    common.record(
        4,
        "bursts",
        producers=3,
        logged=3 * n,
        landed=sum(len(merged.get(f"burst/{i}", [])) for i in range(3)),
    )
    for i in range(3):
        assert len(merged[f"burst/{i}"]) == n
    assert not any(k.startswith(DROPPED_PREFIX) and v for k, v in common.counters(hub).items())


def test_paced_producers_drop_nothing(hub: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """4 producers at 20k events/s each for 3 s, a pace the hub keeps up with: no drop, no warning."""
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(
            target=flood.paced,
            args=(f"paced/{i}", 20_000, 3.0, str(tmp_path / f"p{i}.json")),
            name=f"paced-{i}",
        )
        for i in range(4)
    ]
    for p in procs:
        p.start()
    for i, p in enumerate(procs):
        p.join(60)
        assert p.exitcode == 0
        rep = common.read_report(tmp_path / f"p{i}.json")
        assert rep["flush"] and rep["dropped"] == 0 and rep["logged"] == 60_000, rep
    hyrax_tbhub.close_tensorboard_logger()
    merged = common.merged_scalars(common.read_intact(hub))
    common.record(
        4,
        "paced",
        producers=4,
        logged=240_000,
        landed=sum(len(merged.get(f"paced/{i}", [])) for i in range(4)),
    )
    for i in range(4):
        assert [s for s, _v in merged[f"paced/{i}"]] == list(range(60_000))
    assert "dropped" not in capfd.readouterr().err


def test_owner_floods_its_own_hub(hub: Path) -> None:
    """The owner logs 300k scalars flat out: its queue stays bounded, nothing is dropped."""
    w = hyrax_tbhub.get_tensorboard_logger()
    hub_obj = STATE.hub
    n = 300_000
    longest = 0
    for step in range(n):
        w.add_scalar("owner/flood", float(step), step)
        if step % 256 == 0:
            longest = max(longest, len(hub_obj._local))
    common.record(4, "owner_flood", logged=n, longest_queue=longest)
    assert longest <= _hub.server._LOCAL_HIGH_WATER + 256
    hyrax_tbhub.close_tensorboard_logger()
    assert [s for s, _v in common.merged_scalars(common.read_intact(hub))["owner/flood"]] == list(range(n))
