"""Hand-driven peers of the wire protocol: a client that proves the key, and rogue hubs."""

from __future__ import annotations

import os
import secrets
import socket
import struct
import threading
from collections.abc import Callable

from hyrax_tbhub import _wire


class Boom:
    """A pickle whose reconstruction creates a folder: proof that something unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (self.path,))


def raw_frame(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


def authenticate(sock: socket.socket, key: bytes) -> None:
    """The producer's side of the handshake, checking the hub's proof."""
    challenge = recv_exact(sock, _wire.CHALLENGE_LEN)
    nonce = secrets.token_bytes(_wire.NONCE_LEN)
    sock.sendall(_wire.producer_answer(key, challenge, nonce))
    _wire.check_proof(key, challenge, nonce, recv_exact(sock, _wire.PROOF_LEN))


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def closed_by_peer(sock: socket.socket, timeout: float = 10.0) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


class RogueHub:
    """A Unix socket that answers like a hub would, without the key, for one connection.

    ``script(conn, received)`` drives the connection; everything the producer sends is recorded
    in ``received`` until it hangs up. ``release`` lets a script that waits on it finish.
    """

    def __init__(self, path: str, script: Callable[[socket.socket, RogueHub], None]) -> None:
        self.path = path
        self.received = bytearray()
        self.release = threading.Event()
        self.done = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(4)
        self._listener.settimeout(30)
        self._script = script
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def recv_some(self, conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        self.received += data
        return data

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            self.done.set()
            return
        with conn:
            conn.settimeout(30)
            try:
                self._script(conn, self)
                # Record whatever else the producer sends until it hangs up.
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    self.received += chunk
            except OSError:
                pass
        self.done.set()

    def close(self) -> None:
        self.release.set()
        self._listener.close()
        self._thread.join(30)
