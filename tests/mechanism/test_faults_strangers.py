"""Fault 5: strangers on the hub's endpoint.

A client with a wrong key, one that connects and says nothing, one that sends garbage or a huge
length prefix, many at once: none of them delays real producers beyond a short handshake
timeout, makes the hub decode a byte as a frame (nor unpickle one: nothing on the wire is ever
unpickled), crashes it or leaks a file descriptor. The pre-authentication path is fuzzed with
thousands of random inputs.

Mechanism test (it imports private modules on purpose): the handshake of ``_wire`` (challenge,
answer, frame reader) spoken by hand to the hub.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import secrets
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hyrax_tbhub
from hyrax_tbhub import _hub, _wire
from hyrax_tbhub._process.state import STATE
from hyrax_tbhub._wire import ANSWER_LEN, CHALLENGE_LEN, MAGIC, FrameReader, WireError
from hyrax_tbhub.options import Options
from hyrax_tbhub.testing import REJECTED, ROOT_RUN

from faults import common, loggers, procfs
from wire_peers import authenticate

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc and Unix sockets"),
]

HANDSHAKE_S = 1.0  # the tests shorten the 10 s default so that silent strangers expire quickly


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch):
    yield from common.private_runtime(monkeypatch)


def digest(key: bytes, challenge: bytes) -> bytes:
    """A producer's answer to ``challenge`` with ``key`` (its nonce fixed)."""
    return _wire.producer_answer(key, challenge, b"\0" * _wire.NONCE_LEN)


def pack(message: object) -> bytes:
    """A frame of the old pickled protocol: what a stranger may still try."""
    payload = pickle.dumps(message, 5)
    return struct.pack("<I", len(payload)) + payload


class _SpyDecoder:
    """Wraps the hub's frame decoders: counts every frame it decodes (``loads`` for history)."""

    def __init__(self, wire) -> None:
        self._wire = wire
        self.loads_calls = 0

    def decode_hello(self, body: bytes):
        self.loads_calls += 1
        return self._wire.decode_hello(body)

    def decode_batch(self, body: bytes):
        self.loads_calls += 1
        return self._wire.decode_batch(body)

    def __getattr__(self, name: str):
        return getattr(self._wire, name)


@pytest.fixture
def short_hub(logdir: Path, monkeypatch: pytest.MonkeyPatch):
    """A hub with a 1 s handshake timeout and a spy on its frame decoding."""
    assert not hasattr(_hub.server, "pickle"), "the hub must not even import pickle"
    spy = _SpyDecoder(_wire)
    monkeypatch.setattr(_hub.server, "_wire", spy)  # a spy, not a knob: it counts what the hub decodes
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir), options=Options(handshake_timeout=HANDSHAKE_S))
    hub = STATE.hub
    yield hub, spy
    hyrax_tbhub.close_tensorboard_logger()


def _connect(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(address)
    return s


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def _closed_by_hub(s: socket.socket, timeout: float) -> bool:
    """True once the hub hung up on ``s`` (it may first send its challenge)."""
    s.settimeout(timeout)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


def _strangers(address: str, rng) -> dict[str, list[socket.socket]]:
    kinds: dict[str, list[socket.socket]] = {
        k: []
        for k in (
            "silent",
            "wrong_key",
            "garbage",
            "huge_length",
            "pickle_before_auth",
            "slow_loris",
            "half_close",
        )
    }
    for _ in range(40):
        kinds["silent"].append(_connect(address))
        s = _connect(address)
        challenge = _recv_exact(s, CHALLENGE_LEN)
        assert challenge.startswith(MAGIC)
        s.sendall(digest(secrets.token_bytes(32), challenge))
        kinds["wrong_key"].append(s)
        s = _connect(address)
        s.sendall(rng.randbytes(rng.randrange(1, 4096)))
        kinds["garbage"].append(s)
        s = _connect(address)
        s.sendall(struct.pack("<I", 0xFFFFFFFF) + rng.randbytes(60))
        kinds["huge_length"].append(s)
        s = _connect(address)
        # A well-formed frame of the protocol, sent without proving the key first.
        s.sendall(pack(("hello", {"name": "intruder", "pid": 1})) + pack([("s", "intruder", 1.0, 1, 0.0)]))
        kinds["pickle_before_auth"].append(s)
        s = _connect(address)
        s.sendall(b"\0" * (ANSWER_LEN - 1))  # almost an answer, then nothing
        kinds["slow_loris"].append(s)
        s = _connect(address)
        s.sendall(rng.randbytes(7))
        s.shutdown(socket.SHUT_WR)
        kinds["half_close"].append(s)
    return kinds


def test_strangers_are_refused_without_unpickling(short_hub, logdir: Path) -> None:
    import random

    hub, spy = short_hub
    fds_before = procfs.open_fds()
    kinds = _strangers(hub.address, random.Random(5))
    n = sum(len(v) for v in kinds.values())
    # Every stranger is hung up on: at once once it sent 64 bytes that are not an answer,
    # at the handshake deadline otherwise.
    t0 = time.monotonic()
    for kind, socks in kinds.items():
        for s in socks:
            left = max(0.1, HANDSHAKE_S + 2.5 - (time.monotonic() - t0))
            assert _closed_by_hub(s, left), f"a {kind} stranger was not hung up on"
    for socks in kinds.values():
        for s in socks:
            s.close()
    common.wait_until(lambda: not hub._conns, 5, "the hub to forget every stranger")
    common.record(
        5,
        "kinds",
        strangers=n,
        kinds=len(kinds),
        loads=spy.loads_calls,
        new_fds=len(procfs.new_fds(fds_before)),
    )
    assert spy.loads_calls == 0, "the hub decoded bytes from an unauthenticated peer"
    assert common.hub_thread_alive()
    assert hub.strangers_rejected >= n - len(kinds["half_close"]) - len(kinds["slow_loris"])
    assert procfs.new_fds(fds_before) == {}
    # Nothing of theirs was written anywhere.
    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_scalar("owner/ok", 1.0, 1)
    hyrax_tbhub.close_tensorboard_logger()
    logs = common.read_intact(logdir)
    assert logs.runs == [ROOT_RUN] and logs.tags() == ["owner/ok"]
    assert logs.scalars("owner/ok") == [(1, 1.0)]


def _storm(address: str, stop: threading.Event, held: list[socket.socket], counts: dict[str, int]) -> None:
    """Connect strangers of every kind without pause until ``stop``; keep the silent ones open."""
    import random

    rng = random.Random(11)
    while not stop.is_set():
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect(address)
        except OSError:
            counts["refused"] += 1
            continue
        kind = rng.randrange(4)
        try:
            if kind == 0:
                held.append(s)  # silent: held open
                counts["silent"] += 1
                continue
            if kind == 1:
                s.sendall(digest(secrets.token_bytes(32), _recv_exact(s, CHALLENGE_LEN)))
            elif kind == 2:
                s.sendall(rng.randbytes(rng.randrange(1, 600)))
            else:
                s.sendall(struct.pack("<I", 0xFFFFFFF0))
            counts["other"] += 1
        except OSError:
            counts["refused"] += 1
        s.close()


def test_real_producers_are_not_delayed_by_a_stranger_storm(short_hub, logdir: Path, tmp_path: Path) -> None:
    """Over 2000 strangers (600 silent, more than the 512 pre-auth slots) while 8 producers start and log."""
    hub, _spy = short_hub
    stop = threading.Event()
    held: list[socket.socket] = []
    counts = {"silent": 0, "other": 0, "refused": 0}
    storm = threading.Thread(target=_storm, args=(hub.address, stop, held, counts), daemon=True)
    storm.start()
    try:
        # More silent strangers than the hub's 512 pre-authentication slots: the eviction path runs.
        common.wait_until(lambda: counts["silent"] >= 600, 60, "the storm to build up")
        ctx = mp.get_context("fork")
        procs = []
        for i in range(8):
            result = tmp_path / f"real-{i}.json"
            p = ctx.Process(
                target=loggers.timed_producer, args=(f"real/{i}", 1000, str(result)), name=f"real-{i}"
            )
            p.start()
            procs.append((p, result))
        reports = []
        for p, result in procs:
            p.join(60)
            assert p.exitcode == 0
            reports.append(common.read_report(result))
    finally:
        stop.set()
        storm.join(10)
    for s in held:
        s.close()
    common.record(
        5,
        "storm",
        strangers=counts["silent"] + counts["other"],
        producers=len(reports),
        max_seconds=max(r["seconds"] for r in reports),
    )
    assert counts["silent"] + counts["other"] > 2000, counts
    for rep in reports:
        # Connecting, logging 1000 points and the flush barrier: well under one handshake timeout.
        assert rep["flush"] is True and rep["dropped"] == 0, rep
        assert rep["seconds"] < HANDSHAKE_S, rep
    assert common.hub_thread_alive()
    hyrax_tbhub.close_tensorboard_logger()
    merged = common.merged_scalars(common.read_intact(logdir))
    for i in range(8):
        assert merged[f"real/{i}"] == [(s, float(s)) for s in range(1000)]


def test_fuzz_the_pre_authentication_path(short_hub, logdir: Path, tmp_path: Path) -> None:
    """3000 random inputs before authentication; one in ten connections is left open meanwhile."""
    hub, spy = short_hub
    fds_before = procfs.open_fds()
    held: list[socket.socket] = []

    chunks = st.one_of(
        st.binary(max_size=80),
        st.just(b""),
        st.builds(lambda n: struct.pack("<I", n), st.integers(0, 2**32 - 1)),
        st.builds(
            lambda b: pack(b), st.sampled_from([("hello", {"name": "x"}), [("s", "x", 1.0, 1, 0.0)], "ack"])
        ),
        st.builds(
            lambda k: digest(k, MAGIC + b"\0" * (CHALLENGE_LEN - len(MAGIC))),
            st.binary(min_size=32, max_size=32),
        ),
    )

    @settings(
        max_examples=3000,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        parts=st.lists(chunks, max_size=4),
        read_first=st.booleans(),
        ending=st.sampled_from(["close", "shut", "hold"]),
    )
    def one(parts: list[bytes], read_first: bool, ending: str) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(hub.address)
        try:
            if read_first:
                assert _recv_exact(s, CHALLENGE_LEN).startswith(MAGIC)
            for part in parts:
                s.sendall(part)
            if ending == "shut":
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the hub may already have hung up: that is fine
        if ending == "hold" and len(held) < 300:
            held.append(s)
        else:
            s.close()

    one()
    for s in held:
        s.close()
    common.wait_until(lambda: not hub._conns, HANDSHAKE_S + 5, "the hub to forget every fuzzing client")
    common.record(5, "fuzz", inputs=3000, loads=spy.loads_calls, new_fds=len(procfs.new_fds(fds_before)))
    assert spy.loads_calls == 0
    assert common.hub_thread_alive()
    assert procfs.new_fds(fds_before) == {}
    # The hub still serves a real producer.
    ctx = mp.get_context("fork")
    result = tmp_path / "after.json"
    p = ctx.Process(target=loggers.timed_producer, args=("after/fuzz", 200, str(result)), name="after")
    p.start()
    p.join(30)
    assert common.read_report(result)["flush"] is True
    hyrax_tbhub.close_tensorboard_logger()
    logs = common.read_intact(logdir)
    assert logs.runs == [ROOT_RUN, "after"] and logs.tags() == ["after/fuzz"]
    assert logs.scalars("after/fuzz") == [(s, float(s)) for s in range(200)]


@settings(max_examples=2000, deadline=None, database=None, derandomize=True)
@given(data=st.lists(st.binary(max_size=64), max_size=8), frames=st.lists(st.binary(max_size=40), max_size=4))
def test_fuzz_the_frame_reader(data: list[bytes], frames: list[bytes]) -> None:
    """After authentication: any byte stream yields whole frames or a WireError, nothing else."""
    stream = b"".join(struct.pack("<I", len(f)) + f for f in frames) + b"".join(data)
    reader = FrameReader()
    got: list[bytes] = []
    try:
        for i in range(0, len(stream), 7):
            got += reader.feed(stream[i : i + 7])
    except WireError:
        return
    assert got[: len(frames)] == frames
    assert reader.buffered <= len(stream)


def test_huge_length_prefix_after_auth_is_refused_without_allocating(short_hub, logdir: Path) -> None:
    """A peer that knows the key (a buggy producer) announces a 4 GiB frame: it is cut off, counted."""
    hub, spy = short_hub
    s = _connect(hub.address)
    authenticate(s, hub._key)
    s.sendall(struct.pack("<I", 0xFFFFFFFF) + b"x" * 100)
    assert _closed_by_hub(s, 5)
    s.close()
    assert common.hub_thread_alive()
    hyrax_tbhub.close_tensorboard_logger()
    assert common.counters(logdir).get(REJECTED) == 1
    assert spy.loads_calls == 0


def test_contrast_listener_accept_is_blocked_by_a_silent_client(tmp_path: Path) -> None:
    """What the selector-driven handshake avoids: ``multiprocessing.connection.Listener.accept()``
    runs the HMAC handshake inline, so one client that connects and says nothing blocks every
    real client behind it. Bounded: the silent client hangs up after 2 s."""
    from multiprocessing.connection import Client, Listener

    key = secrets.token_bytes(32)
    address = str(tmp_path / "listener.sock")
    listener = Listener(address, family="AF_UNIX", authkey=key)
    accepted: list[object] = []

    def serve() -> None:
        for _ in range(2):
            try:
                accepted.append(listener.accept())
            except Exception as exc:  # the silent client hung up mid-handshake
                accepted.append(exc)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    silent = _connect(address)
    common.wait_until(
        lambda: _recv_exact(silent, 1), 5, "the listener to start the silent client's handshake"
    )
    served = threading.Event()

    def real_client() -> None:
        Client(address, family="AF_UNIX", authkey=key).close()
        served.set()

    client = threading.Thread(target=real_client, daemon=True)
    client.start()
    blocked = not served.wait(2.0)
    silent.close()  # unblocks accept(); the real client is served next
    client.join(10)
    server.join(10)
    listener.close()
    common.record(5, "contrast_listener", blocked=blocked)
    assert blocked, "the real client was served while a silent client sat in accept()"
    assert served.is_set()
