"""The channel is private: only key holders get past the handshake, nothing binds a network port.

Mechanism test (it imports private modules on purpose): the handshake of ``_wire`` spoken by hand (a
wrong key, a key holder), and the modes of the hub file and runtime folder (``_discovery.hubfile``).
"""

from __future__ import annotations

import os
import pickle
import secrets
import socket
import stat
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub import _wire
from hyrax_tbhub._discovery import hubfile
from hyrax_tbhub._process.state import STATE

pytestmark = pytest.mark.timeout(60)


def _hub_info() -> hubfile.HubInfo:
    info = hubfile.read_hub_file(os.environ[hubfile.ENV_INFO])
    assert info is not None
    return info


def test_runtime_folder_hub_file_and_socket_are_private_to_the_user(hub: Path) -> None:
    info = _hub_info()
    folder = hubfile.runtime_dir()
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.environ[hubfile.ENV_INFO]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(info.address).st_mode) & 0o077 == 0
    assert os.stat(folder).st_uid == os.getuid()


def test_every_hub_has_its_own_random_key(tmp_path: Path) -> None:
    keys = set()
    for i in range(3):
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(tmp_path / str(i)))
        keys.add(_hub_info().authkey)
        hyrax_tbhub.close_tensorboard_logger()
    assert len(keys) == 3 and all(len(bytes.fromhex(k)) == 32 for k in keys)


class _Boom:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (self.path,))

    def __init__(self, path: str) -> None:
        self.path = path


def test_wrong_key_is_refused_before_anything_is_unpickled(hub: Path, tmp_path: Path) -> None:
    info = _hub_info()
    marker = tmp_path / "unpickled"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(info.address)
        challenge = sock.recv(_wire.CHALLENGE_LEN)
        assert challenge.startswith(_wire.MAGIC)
        sock.sendall(_wire.producer_answer(b"\0" * 32, challenge, secrets.token_bytes(32)))
        try:
            boom = pickle.dumps([_Boom(str(marker))], 5)
            sock.sendall(_wire.pack_hello("intruder", 1) + len(boom).to_bytes(4, "little") + boom)
        except OSError:
            pass  # the hub may already have hung up
        try:
            reply = sock.recv(100)
        except ConnectionResetError:
            reply = b""
        assert reply == b""  # closed by the hub, no reply
    hub_obj = STATE.hub
    assert hub_obj is not None
    hyrax_tbhub.close_tensorboard_logger()
    assert not marker.exists()
    assert hub_obj.strangers_rejected >= 1
    assert not (hub / "intruder").exists()


def test_a_key_holder_is_served(hub: Path) -> None:
    info = _hub_info()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(info.address)
        challenge = sock.recv(_wire.CHALLENGE_LEN)
        nonce = secrets.token_bytes(_wire.NONCE_LEN)
        sock.sendall(_wire.producer_answer(info.key, challenge, nonce))
        proof = b""
        while len(proof) < _wire.PROOF_LEN:
            proof += sock.recv(_wire.PROOF_LEN - len(proof))
        _wire.check_proof(info.key, challenge, nonce, proof)  # the hub proved the key too
        sock.sendall(_wire.pack_hello("manual", os.getpid()))
        reader = _wire.FrameReader(_wire.MAX_HUB_FRAME)
        frames: list[bytes] = []
        while not frames:
            frames = reader.feed(sock.recv(4096))
        kind, meta = _wire.decode_hub_message(frames[0])
        assert kind == "hello" and meta["run"] == "manual"


def _socket_inodes() -> set[str]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc")
def test_the_hub_binds_no_network_interface(hub: Path) -> None:
    hyrax_tbhub.get_tensorboard_logger().add_scalar("x", 1.0, 1)
    ours = _socket_inodes()
    assert ours
    for table in ("tcp", "tcp6", "udp", "udp6"):
        path = f"/proc/net/{table}"
        if not os.path.exists(path):
            continue
        with open(path) as fh:
            rows = [line.split() for line in fh.readlines()[1:]]
        assert not ours & {row[9] for row in rows if len(row) > 9}, table
