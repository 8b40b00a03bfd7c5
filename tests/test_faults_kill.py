"""Fault 1: producers SIGKILLed mid-stream, mid-frame and mid-handshake.

The hub must keep serving, every other producer's events must all land, and the owner must still
log and close. The last test shows the failure we avoid: a shared ``multiprocessing.Queue`` whose
writer is killed mid-put wedges every other producer and the reader (cpython issues 87971, 96062).
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import random
import signal
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.options import Options
from hyrax_tbhub.testing import TRANSPORT_ERRORS, running_hub

from faults import common, kill, loggers
from readback import read_log

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc and Unix sockets"),
]

BATCHES = 9
VICTIMS_PER_BATCH = 6  # 9 x 6 = 54 kills
SURVIVORS_PER_BATCH = 2
SURVIVOR_EVENTS = 3000


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch):
    yield from common.private_runtime(monkeypatch)


def _kill_batch(ctx, rng: random.Random, batch: int, tmp: Path, modes: list[str]) -> dict[str, object]:
    victims = []
    for v, mode in enumerate(modes):
        recv, send = ctx.Pipe(duplex=False)
        target = rng.randrange(0, 20000)
        p = ctx.Process(
            target=kill.victim, args=(send, f"victim/{batch}/{v}", target, mode), name=f"victim-{batch}-{v}"
        )
        p.start()
        send.close()
        victims.append((p, recv, mode))
    survivors = []
    for s in range(SURVIVORS_PER_BATCH):
        tag = f"survivor/{batch}/{s}"
        result = tmp / f"survivor-{batch}-{s}.json"
        p = ctx.Process(
            target=loggers.survivor, args=(tag, SURVIVOR_EVENTS, str(result)), name=f"survivor-{batch}-{s}"
        )
        p.start()
        survivors.append((p, tag, result))
    stalled = 0
    for p, recv, mode in victims:
        assert recv.poll(60), f"victim {p.name} ({mode}) never reached its kill point"
        msg = recv.recv()
        if msg[0] == "stalled":
            stalled += 1
        os.kill(p.pid, signal.SIGKILL)
    for p, recv, _mode in victims:
        p.join(10)
        recv.close()
        assert p.exitcode == -signal.SIGKILL, (p.name, p.exitcode)
    for p, tag, result in survivors:
        p.join(60)
        assert p.exitcode == 0, (p.name, p.exitcode)
        rep = common.read_report(result, 5)
        assert rep["flush"] is True, (tag, rep)
        assert rep["dropped"] == 0, (tag, rep)
    return {
        "kills": len(victims),
        "stalled": stalled,
        "modes": [mode for _p, _r, mode in victims],
        "tags": [tag for _p, tag, _r in survivors],
    }


def test_sigkill_at_random_moments_and_mid_frame_hub_keeps_serving(hub: Path, tmp_path: Path) -> None:
    """54 producers killed (random moments, half a frame sent, half a handshake sent) among 18 survivors."""
    ctx = mp.get_context("fork")
    rng = random.Random(20240601)
    w = hyrax_tbhub.get_tensorboard_logger()
    kills = stalled = 0
    modes_seen: list[str] = []
    survivor_tags: list[str] = []
    for batch in range(BATCHES):
        modes = ["random"] * (VICTIMS_PER_BATCH - 2) + [
            "midsend",
            "midhandshake" if batch % 3 == 0 else "random",
        ]
        rng.shuffle(modes)
        out = _kill_batch(ctx, rng, batch, tmp_path, modes)
        kills += out["kills"]
        stalled += out["stalled"]
        modes_seen += out["modes"]
        survivor_tags += out["tags"]
        w.add_scalar("owner/during", float(batch), batch)
        assert common.hub_thread_alive()
    assert kills >= 50
    assert stalled >= BATCHES  # at least one kill per batch with half a frame on the wire

    probe = running_hub()
    assert probe is not None
    # The hub noticed every death: no connection (and so no descriptor) is left behind.
    common.wait_until(
        lambda: probe.connections() == 0, 10, "the hub to drop every dead producer's connection"
    )

    # A new producer after all that is served normally.
    late = tmp_path / "late.json"
    p = ctx.Process(target=loggers.survivor, args=("late/after", 500, str(late)), name="late")
    p.start()
    p.join(30)
    assert p.exitcode == 0 and common.read_report(late)["flush"] is True

    for step in range(100):
        w.add_scalar("owner/after", float(step), step)
    t0 = time.monotonic()
    hyrax_tbhub.close_tensorboard_logger()
    close_s = time.monotonic() - t0
    assert close_s < 5.0, "close took too long after the kills"

    merged = common.merged_scalars(common.read_intact(hub))  # also checks every record's framing and CRC
    common.record(
        1,
        "kill",
        kills=kills,
        random=modes_seen.count("random"),
        midsend=modes_seen.count("midsend"),
        midhandshake=modes_seen.count("midhandshake"),
        survivors=len(survivor_tags),
        survivor_events=len(survivor_tags) * SURVIVOR_EVENTS,
        survivor_landed=sum(len(merged.get(t, [])) for t in survivor_tags),
        transport_errors=common.counters(hub).get(TRANSPORT_ERRORS, 0),
        close_s=close_s,
    )
    for tag in survivor_tags:
        assert merged[tag] == [(s, s * 0.5) for s in range(SURVIVOR_EVENTS)], tag
    assert merged["late/after"] == [(s, s * 0.5) for s in range(500)]
    assert merged["owner/during"] == [(b, float(b)) for b in range(BATCHES)]
    assert merged["owner/after"] == [(s, float(s)) for s in range(100)]
    # Each half-sent frame is counted, not silently swallowed (half-sent handshakes are not frames).
    assert common.counters(hub).get(TRANSPORT_ERRORS, 0) >= BATCHES
    # tensorboard's own reader agrees on a sample of runs
    log = read_log(hub)
    assert {t: points for r in ("survivor-0-0", "late") for t, points in log[r].items()} == {
        t: merged[t] for t in ("survivor/0/0", "late/after")
    }


def test_sigkill_spawned_producers(hub: Path, tmp_path: Path) -> None:
    """The same with spawn children (how hyrax's distributed ranks start): 6 kills, 2 survivors."""
    ctx = mp.get_context("spawn")
    out = _kill_batch(
        ctx,
        random.Random(7),
        0,
        tmp_path,
        ["random", "midsend", "random", "midsend", "random", "midhandshake"],
    )
    assert out["kills"] == 6
    hyrax_tbhub.close_tensorboard_logger()
    merged = common.merged_scalars(common.read_intact(hub))
    common.record(
        1,
        "kill_spawn",
        kills=out["kills"],
        survivor_events=len(out["tags"]) * SURVIVOR_EVENTS,
        survivor_landed=sum(len(merged.get(t, [])) for t in out["tags"]),
    )
    for tag in out["tags"]:
        assert merged[tag] == [(s, s * 0.5) for s in range(SURVIVOR_EVENTS)], tag


def test_killed_producer_with_live_forked_child_does_not_stall_close(logdir: Path) -> None:
    """A producer that forked a child (a DataLoader worker, say) and is then killed.

    The child inherits the producer's socket; unless the library closes that copy, the hub never
    sees the killed producer hang up and close_tensorboard_logger() waits its full close timeout.
    """

    # The default close timeout is 30 s; 8 s keeps a failure cheap and still far above 3 s.
    hub = logdir
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(hub), options=Options(close_timeout=8.0))
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=kill.producer_with_forked_child, args=(send, "parent"), name="parent")
    p.start()
    assert recv.poll(30)
    _ready, child_pid = recv.recv()
    os.kill(p.pid, signal.SIGKILL)
    # Not p.join(): its sentinel pipe is held open by the child, which inherited it too.
    common.wait_until(lambda: p.exitcode is not None, 10, "the killed producer to be reaped")
    t0 = time.monotonic()
    hyrax_tbhub.close_tensorboard_logger()
    took = time.monotonic() - t0
    common.kill_quietly(child_pid)
    common.record(1, "kill_forked_child", close_s=took)
    assert took < 3.0, f"close waited {took:.1f} s for a producer that was killed"
    merged = common.merged_scalars(common.read_intact(hub))
    assert merged["parent"] == [(s, float(s)) for s in range(100)]
    assert merged["parent/child"] == [(s, float(s)) for s in range(100)]


def _pipe_bytes(fd: int) -> int:
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


def test_contrast_shared_mp_queue_wedges_after_sigkill_mid_put() -> None:
    """What hyrax_tbhub is built to avoid: one SIGKILL mid-put wedges a shared multiprocessing.Queue.

    The victim's feeder thread holds the queue's write lock while it writes a 1 MiB message into
    a 64 KiB pipe; killed there, it leaves the lock held and half a message in the pipe. The
    survivor's item never arrives and the reader blocks mid-message. Bounded: the stuck processes
    are killed after 5 s.
    """
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    victim = ctx.Process(target=kill.mpqueue_victim, args=(q, 1 << 20))
    victim.start()
    # The pipe is full (part of the 1 MiB message is in it): the feeder is blocked in its write.
    common.wait_until(lambda: _pipe_bytes(q._reader.fileno()) >= 32768, 10, "the queue's pipe to fill")
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(5)
    survivor = ctx.Process(target=kill.mpqueue_survivor, args=(q,))
    survivor.start()
    recv, send = ctx.Pipe(duplex=False)
    consumer = ctx.Process(target=kill.mpqueue_consumer, args=(q, send))
    consumer.start()
    got = recv.poll(3)
    survivor.join(2)
    wedged_survivor = survivor.is_alive()  # its feeder waits forever for the dead victim's lock
    for p in (survivor, consumer):
        p.kill()
        p.join(5)
    common.record(1, "contrast_mpqueue", wedged=not got and wedged_survivor)
    assert not got, "the reader got something: the shared queue did not wedge this time"
    assert wedged_survivor, "the survivor exited: the shared queue did not wedge this time"
