"""Nothing on the wire executes, in either direction, and both ends must prove the key.

The owner side: a peer that holds the key and sends pickles (as the hello, as a batch) executes
nothing in the owner, is cut off, and is counted in the log. The producer side: whatever answers
at the hub's address without the key (raw bytes, the right MAGIC then a pickle, the producer's
own proof reflected, a recorded proof replayed) gets nothing from the producer but its answer,
executes nothing in it, and the producer's calls keep returning and count what they drop.

Mechanism test (it imports private modules on purpose): both ends of the handshake and the wire
parsers (``_wire``, ``_producer.Producer``, ``_discovery.store``) against peers that send pickles or
answer falsely.
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub import _wire
from hyrax_tbhub._discovery import hubfile
from hyrax_tbhub._discovery import store as distributed_store
from hyrax_tbhub._discovery.store import KEY_ENV, STORE_KEY, find_distributed_hub
from hyrax_tbhub._producer import Producer
from hyrax_tbhub.options import DEFAULT_OPTIONS, Options
from hyrax_tbhub.testing import OVER_CAP, REJECTED, STRANGERS

from faults.common import counters, read_intact
from readback import read_log
from wire_peers import Boom, RogueHub, authenticate, closed_by_peer, raw_frame, recv_exact

pytestmark = pytest.mark.timeout(60)


def _hub_info() -> hubfile.HubInfo:
    info = hubfile.read_hub_file(os.environ[hubfile.ENV_INFO])
    assert info is not None
    return info


def _connect(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(address)
    return sock


# -- the owner side ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["instead_of_hello", "after_hello"])
def test_a_key_holder_sending_a_pickle_executes_nothing_in_the_owner(
    hub: Path, tmp_path: Path, where: str
) -> None:
    marker = tmp_path / "unpickled"
    info = _hub_info()
    payload = pickle.dumps([Boom(str(marker))], 5)
    with _connect(info.address) as sock:
        authenticate(sock, info.key)
        if where == "after_hello":
            sock.sendall(_wire.pack_hello("evil", 1))
            kind, meta = _wire.decode_hub_message(_read_frame(sock))
            assert kind == "hello" and meta["run"] == "evil"
        sock.sendall(raw_frame(payload))
        assert closed_by_peer(sock), "the hub kept the connection of a peer that sent a pickle"
    hyrax_tbhub.close_tensorboard_logger()
    assert not marker.exists(), "the owner executed a pickle from the wire"
    assert counters(hub)[REJECTED] == 1


def _read_frame(sock: socket.socket) -> bytes:
    (n,) = struct.unpack("<I", recv_exact(sock, 4))
    assert n <= _wire.MAX_HUB_FRAME
    return recv_exact(sock, n)


def test_a_rejected_peer_costs_only_its_own_connection(hub: Path) -> None:
    """A good producer on its own connection is served before and after a peer is cut off."""
    info = _hub_info()
    with _connect(info.address) as good, _connect(info.address) as bad:
        authenticate(good, info.key)
        good.sendall(_wire.pack_hello("good", 2))
        assert _wire.decode_hub_message(_read_frame(good))[0] == "hello"
        authenticate(bad, info.key)
        bad.sendall(_wire.pack_hello("bad", 3) + raw_frame(b"\x02\xff\xff\xff\xff"))
        assert closed_by_peer(bad)
        records = _frame_records([b"\x10\x01", b"\x10\x02"])
        (frame,) = _wire.pack_batch([("r", "", records, 2), ("f", 7)])
        good.sendall(frame)
        assert _wire.decode_hub_message(_read_frame(good)) == ("ack", 7)
    hyrax_tbhub.close_tensorboard_logger()
    assert counters(hub)[REJECTED] == 1


def _frame_records(events: list[bytes]) -> bytes:
    from hyrax_tbhub._events import frame

    return b"".join(frame(e) for e in events)


def test_a_records_blob_that_breaks_tfrecord_framing_is_refused(hub: Path) -> None:
    info = _hub_info()
    good = _frame_records([b"\x10\x01"])
    broken = good[:-1]  # the last data CRC cut short: the file's framing would be off from here
    with _connect(info.address) as sock:
        authenticate(sock, info.key)
        sock.sendall(_wire.pack_hello("liar", 4))
        _read_frame(sock)
        body = b"\x02" + struct.pack("<I", 1) + b"r" + struct.pack("<HII", 0, 1, len(broken)) + broken
        sock.sendall(raw_frame(body))
        assert closed_by_peer(sock)
    hyrax_tbhub.close_tensorboard_logger()
    assert counters(hub)[REJECTED] == 1
    assert read_intact(hub).tags(run="liar") == []  # and every file's framing is intact


def test_sub_runs_past_the_cap_are_counted_not_opened(logdir: Path) -> None:
    hub = logdir
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(hub), options=Options(max_subruns=3))
    info = _hub_info()
    records = _frame_records([b"\x10\x01"])
    with _connect(info.address) as sock:
        authenticate(sock, info.key)
        sock.sendall(_wire.pack_hello("wide", 5))
        _read_frame(sock)
        items = [("r", f"sub{i}", records, 1) for i in range(10)] + [("f", 1)]
        for frame in _wire.pack_batch(items):
            sock.sendall(frame)
        assert _wire.decode_hub_message(_read_frame(sock)) == ("ack", 1)
        sock.sendall(b"".join(_wire.pack_batch([("b",)])))
        assert closed_by_peer(sock)
    hyrax_tbhub.close_tensorboard_logger()
    assert sorted(p.name for p in (hub / "wide").iterdir()) == ["sub0", "sub1", "sub2"]
    assert counters(hub)[OVER_CAP] == 7


def test_runs_past_the_cap_are_refused_and_counted(logdir: Path) -> None:
    """Past ``max_runs`` runs open, a producer is still served but its events are counted, not written."""
    hub = logdir
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(hub), options=Options(max_runs=2))
    info = _hub_info()
    socks = []
    served = []
    for i in range(4):
        sock = _connect(info.address)
        socks.append(sock)
        authenticate(sock, info.key)
        sock.sendall(_wire.pack_hello(f"run{i}", 10 + i))
        served.append(_wire.decode_hub_message(_read_frame(sock))[1]["run"])
    records = _frame_records([b"\x10\x01", b"\x10\x02", b"\x10\x03"])
    for sock in socks:
        sock.sendall(b"".join(_wire.pack_batch([("r", "", records, 3), ("b",)])))
        assert closed_by_peer(sock)
        sock.close()
    hyrax_tbhub.close_tensorboard_logger()
    assert served == ["run0", "run1", "run2", "run3"]
    assert sorted(p.name for p in hub.iterdir() if p.is_dir()) == ["run0", "run1"]
    assert counters(hub)[OVER_CAP] == 2 * 3


def test_failed_handshakes_are_written_to_the_log(hub: Path) -> None:
    info = _hub_info()
    with _connect(info.address) as sock:
        challenge = recv_exact(sock, _wire.CHALLENGE_LEN)
        sock.sendall(_wire.producer_answer(secrets.token_bytes(32), challenge, b"\0" * 32))
        assert closed_by_peer(sock)
    hyrax_tbhub.close_tensorboard_logger()
    assert counters(hub)[STRANGERS] == 1


def test_the_hub_does_not_accept_its_own_proof_reflected(hub: Path) -> None:
    """A peer that answers the hub's challenge with a hub-direction MAC is refused."""
    info = _hub_info()
    with _connect(info.address) as sock:
        challenge = recv_exact(sock, _wire.CHALLENGE_LEN)
        nonce = secrets.token_bytes(32)
        sock.sendall(nonce + _wire.hub_proof(info.key, challenge, nonce))
        assert closed_by_peer(sock)
    hyrax_tbhub.close_tensorboard_logger()
    assert counters(hub)[STRANGERS] == 1


# -- the producer side ------------------------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="rogue-", dir="/tmp")  # Unix socket paths are short
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _info(address: str, key: bytes, logdir: str, options: Options = DEFAULT_OPTIONS) -> hubfile.HubInfo:
    return hubfile.HubInfo(address=address, authkey=key.hex(), start_ns=0, logdir=logdir,
                              owner_pid=1, hub_id=secrets.token_hex(8), options=options.to_wire())


def _old_style_pickle_frame(marker: str) -> bytes:
    return raw_frame(pickle.dumps(("hello", Boom(marker)), 5))


def _raw_bytes(marker: str) -> Callable[[socket.socket, RogueHub], None]:
    def script(conn: socket.socket, rogue: RogueHub) -> None:
        rogue.release.wait(30)
        conn.sendall(secrets.token_bytes(_wire.CHALLENGE_LEN + 100))

    return script


def _magic_then_pickle(marker: str) -> Callable[[socket.socket, RogueHub], None]:
    def script(conn: socket.socket, rogue: RogueHub) -> None:
        rogue.release.wait(30)
        conn.sendall(_wire.MAGIC + secrets.token_bytes(_wire.NONCE_LEN))
        rogue.recv_some(conn, _wire.ANSWER_LEN)
        conn.sendall(_old_style_pickle_frame(marker) * 2)

    return script


def _reflected(marker: str) -> Callable[[socket.socket, RogueHub], None]:
    def script(conn: socket.socket, rogue: RogueHub) -> None:
        rogue.release.wait(30)
        conn.sendall(_wire.MAGIC + secrets.token_bytes(_wire.NONCE_LEN))
        answer = rogue.recv_some(conn, _wire.ANSWER_LEN)
        conn.sendall(answer[_wire.NONCE_LEN:] + _old_style_pickle_frame(marker))  # its own MAC back

    return script


def _replayed(key: bytes) -> Callable[[str], Callable[[socket.socket, RogueHub], None]]:
    # A transcript of a genuine earlier handshake (as if sniffed off the network).
    challenge = _wire.MAGIC + secrets.token_bytes(_wire.NONCE_LEN)
    old_nonce = secrets.token_bytes(_wire.NONCE_LEN)
    old_proof = _wire.hub_proof(key, challenge, old_nonce)

    def make(marker: str) -> Callable[[socket.socket, RogueHub], None]:
        def script(conn: socket.socket, rogue: RogueHub) -> None:
            rogue.release.wait(30)
            conn.sendall(challenge)
            rogue.recv_some(conn, _wire.ANSWER_LEN)
            conn.sendall(old_proof + _wire.pack_welcome("x", "/tmp") + _old_style_pickle_frame(marker))

        return script

    return make


class _Gone(threading.Event):
    """The producer's on_gone callback: set once it gave up."""

    def __call__(self, producer: Producer) -> None:
        self.set()


KEY = secrets.token_bytes(32)
ROGUES = {
    "raw_bytes": _raw_bytes,
    "magic_then_pickle": _magic_then_pickle,
    "reflected_proof": _reflected,
    "replayed_proof": _replayed(KEY),
}


@pytest.mark.parametrize("kind", list(ROGUES))
def test_a_rogue_hub_executes_nothing_in_a_producer_and_gets_nothing(
    kind: str, short_dir: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    marker = str(tmp_path / "unpickled")
    rogue = RogueHub(os.path.join(short_dir, "hub.sock"), ROGUES[kind](marker))
    gone = _Gone()
    try:
        producer = Producer(_info(rogue.path, KEY, str(tmp_path / "log"), Options(connect_timeout=5.0)), gone)
        producer.start()
        # The rogue holds the connection silent until released: these calls return meanwhile.
        for step in range(1000):
            producer.put_scalar("x", 1.0, step, 0.0)
        assert producer.flush(timeout=0.2) is False
        assert not gone.is_set()
        rogue.release.set()
        assert gone.wait(30), "the producer did not give up on a hub that failed to prove the key"
        assert producer.dropped == 1000 and not producer.alive
        assert rogue.done.wait(10)
    finally:
        rogue.close()
    assert not os.path.exists(marker), "the producer executed a pickle from a rogue hub"
    # It sent its 64-byte answer at most: no hello, no name, no events.
    assert len(rogue.received) <= _wire.ANSWER_LEN
    assert b"x" not in bytes(rogue.received[_wire.ANSWER_LEN:])
    err = capfd.readouterr().err
    assert err.count("hyrax_tbhub:") == 1 and "1000 queued events dropped" in err, err


def test_a_producer_stalled_by_a_silent_rogue_keeps_returning_at_once(short_dir: str, tmp_path: Path) -> None:
    """While the rogue sends half a challenge and then nothing, logging calls only queue."""

    def script(conn: socket.socket, rogue: RogueHub) -> None:
        conn.sendall(_wire.MAGIC)
        rogue.release.wait(30)
        conn.shutdown(socket.SHUT_RDWR)

    rogue = RogueHub(os.path.join(short_dir, "hub.sock"), script)
    gone = _Gone()
    try:
        producer = Producer(_info(rogue.path, KEY, str(tmp_path / "log")), gone)
        producer.start()
        for step in range(5000):
            producer.put_scalar("x", 1.0, step, 0.0)
        # All 5000 calls returned while the rogue still holds the handshake.
        assert not rogue.release.is_set() and not gone.is_set()
    finally:
        rogue.close()  # releases it: the producer sees the hang-up and gives up
    assert gone.wait(30) and producer.dropped == 5000


# -- the store carries no secret when the launcher shares one ---------------------------------------


class _Store:
    """The part of a torch.distributed store that serve_ranks and the ranks use."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def set(self, key: str, value: str) -> None:
        self.data[key] = value.encode() if isinstance(value, str) else value

    def get(self, key: str) -> bytes:
        return self.data[key]

    def check(self, keys: list[str]) -> bool:
        return all(k in self.data for k in keys)


def _tcp(address: str) -> socket.socket:
    host, port = address[4:].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def test_with_a_launcher_key_the_store_carries_only_the_address(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = secrets.token_hex(32)
    monkeypatch.setenv(KEY_ENV, shared)
    store = _Store()
    address = hyrax_tbhub.serve_ranks(host="127.0.0.1", store=store)
    published = json.loads(store.data[STORE_KEY])
    assert published["authkey"] == "" and published["key_env"] == KEY_ENV
    assert shared not in store.data[STORE_KEY].decode()
    assert _hub_info().authkey not in store.data[STORE_KEY].decode()
    # The hub's own key (the one in the local hub file) does not open the TCP door...
    with _tcp(address) as sock:
        challenge = recv_exact(sock, _wire.CHALLENGE_LEN)
        sock.sendall(_wire.producer_answer(_hub_info().key, challenge, b"\1" * 32))
        assert closed_by_peer(sock)
    # ...the launcher's key does.
    with _tcp(address) as sock:
        authenticate(sock, shared.encode())
        sock.sendall(_wire.pack_hello("remote", 9))
        assert _wire.decode_hub_message(_read_frame(sock))[0] == "hello"


def test_options_in_the_store_are_not_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever can write the (unauthenticated) store must not set every rank's bounds and
    deadlines: a rank uses the default Options, whatever the entry says."""
    store = _Store()
    entry = {"address": "tcp:127.0.0.1:1", "authkey": "00" * 32, "start_ns": 0, "logdir": "/x",
             "owner_pid": 1, "hub_id": "ab", "options": {"queue_max_events": 1, "connect_timeout": 1e6}}
    store.set(STORE_KEY, json.dumps(entry))
    monkeypatch.setattr(distributed_store, "torch_distributed", lambda: object())
    monkeypatch.setattr(distributed_store, "default_store", lambda dist: store)
    info = find_distributed_hub()
    assert info is not None and info.options == {}


def test_a_rank_without_the_launcher_key_says_so_and_logs_nothing(monkeypatch: pytest.MonkeyPatch,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    store = _Store()
    entry = {"address": "tcp:127.0.0.1:1", "authkey": "", "start_ns": 0, "logdir": "/x", "owner_pid": 1,
             "hub_id": "ab", "key_env": "HYRAX_TBHUB_TEST_KEY"}
    store.set(STORE_KEY, json.dumps(entry))
    # A fake process group: the store lookup is the code under test, torch is not needed.
    monkeypatch.setattr(distributed_store, "torch_distributed", lambda: object())
    monkeypatch.setattr(distributed_store, "default_store", lambda dist: store)
    monkeypatch.delenv("HYRAX_TBHUB_TEST_KEY", raising=False)
    assert find_distributed_hub() is None
    assert "HYRAX_TBHUB_TEST_KEY" in capfd.readouterr().err
    monkeypatch.setenv("HYRAX_TBHUB_TEST_KEY", "k" * 32)
    info = find_distributed_hub()
    assert info is not None and info.key == b"k" * 32


def test_a_short_launcher_key_is_refused_at_the_call(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(ValueError, match="at least"):
        hyrax_tbhub.serve_ranks(host="127.0.0.1", store=_Store())


def test_without_a_launcher_key_records_from_the_store_door_must_parse_as_events(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever read the key in the store may log, but not a record that would stop TensorBoard's
    Python loader (it raises on an unparseable Event and stops reloading every run)."""
    pytest.importorskip("tensorboard")
    monkeypatch.delenv(KEY_ENV, raising=False)
    store = _Store()
    address = hyrax_tbhub.serve_ranks(host="127.0.0.1", store=store)
    key = bytes.fromhex(json.loads(store.data[STORE_KEY])["authkey"])
    good = _frame_records([b"\x10\x01"])
    unparseable = _frame_records([b"\x2a\x03\x0a\x01\xff"])  # frames well, parses badly
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 1  # TensorBoard's reader would stop at this record for good
    for i, bad in enumerate([unparseable, bytes(bad_crc)]):
        with _tcp(address) as sock:
            authenticate(sock, key)
            sock.sendall(_wire.pack_hello(f"remote{i}", 9))
            _read_frame(sock)
            sock.sendall(b"".join(_wire.pack_batch([("r", "", good, 1), ("f", 1)])))
            assert _wire.decode_hub_message(_read_frame(sock)) == ("ack", 1)
            sock.sendall(b"".join(_wire.pack_batch([("r", "", bad, 1), ("f", 2)])))
            assert closed_by_peer(sock)
    hyrax_tbhub.close_tensorboard_logger()
    assert counters(hub)[REJECTED] == 2
    log = read_log(hub)  # TensorBoard reads it: the good records (a bare step) are there, no scalar
    assert log["remote0"] == {} and log["remote1"] == {}


def test_a_key_holder_that_sends_no_hello_is_cut_at_the_handshake_deadline(logdir: Path) -> None:
    """Proving the key does not buy a connection that never says who it is."""
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir), options=Options(handshake_timeout=0.5))
    info = _hub_info()
    with _connect(info.address) as sock:
        authenticate(sock, info.key)
        assert closed_by_peer(sock, timeout=20)
    hyrax_tbhub.close_tensorboard_logger()
    assert counters(logdir)[REJECTED] == 1
