"""The producer's connection to its hub: connect, authenticate both ways, say hello, pump.

Every socket of a producer lives here: the connection and the wake-up pair that lets a logging
call interrupt the sender thread's wait. The sender thread calls :meth:`Link.handshake` once,
then alternates :meth:`Link.wait` (for the hub's messages and for wake-ups) and
:meth:`Link.send`. What to send and when is the producer's business, not the link's.

The handshake (challenge, answer, proof, then hello and welcome) is laid out byte by byte, with
its grammar, in :mod:`.._wire`; this module runs the producer's side of it and sends nothing but
its answer before the hub proved the key.
"""

from __future__ import annotations

import secrets
import selectors
import socket
from typing import TYPE_CHECKING

from .. import _wire
from .._util.net import tune_tcp
from .._wire import (
    CHALLENGE_LEN,
    MAGIC,
    MAX_HUB_FRAME,
    NONCE_LEN,
    PROOF_LEN,
    AuthError,
    FrameReader,
    HubMessage,
    WireError,
)

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = ["Link", "ProtocolError", "TRANSPORT_ERRORS", "connect"]

# poll(2) where there is one: no descriptor of its own (nothing to leak into a fork child) and,
# unlike select(2), no limit on descriptor numbers (select.select raises ValueError for a
# descriptor >= 1024, which a process holding many files or shared tensors easily reaches).
_Selector: type[selectors.BaseSelector] = getattr(selectors, "PollSelector", selectors.DefaultSelector)
_REPLY_RECV = 65536  # bytes per recv of the hub's replies (small messages: welcome, acks, drain, sync)


class ProtocolError(Exception):
    """The hub's bytes could not be read as messages: the transport, not our code, failed."""


#: What "the hub went away or the connection broke" looks like; anything else the sender thread
#: meets is a bug of ours (an internal error) and is reported as one.
TRANSPORT_ERRORS = (OSError, EOFError, ProtocolError, WireError)


def connect(address: str, timeout: float) -> socket.socket:
    """Connect to a hub address: a Unix socket path, or ``tcp:HOST:PORT`` for remote ranks."""
    if address.startswith("tcp:"):
        host, port = address[4:].rsplit(":", 1)
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        tune_tcp(sock)  # a dead rank 0 host is noticed within seconds
        return sock
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


class Link:
    """One producer's connection to one hub, and the pair of sockets that wakes its sender."""

    def __init__(self, address: str, connect_timeout: float = 1.0) -> None:
        self.address = address
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.unproven = False  # the endpoint failed to prove the key: say so even if idle
        self._reader = FrameReader(MAX_HUB_FRAME)
        self._selector: selectors.BaseSelector | None = None
        # connect() runs here, in the first logging call: it completes as soon as the kernel
        # queues us in the hub's backlog, and a closing hub accepts its whole backlog. So every
        # event logged after this returns reaches a hub that closes later, even if the sender
        # thread has not run yet. The handshake itself is left to the sender thread.
        self.sock: socket.socket | None = None
        self.connect_error: Exception | None = None
        try:
            self.sock = connect(address, timeout=connect_timeout)
        except OSError as exc:
            self.connect_error = exc

    def wake(self) -> None:
        """Interrupt the sender's :meth:`wait` (from any thread; never blocks, never raises)."""
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def handshake(
        self, key: bytes, name: str, pid: int, timeout: float, ledger: Ledger | None = None
    ) -> tuple[dict[str, str], list[HubMessage]]:
        """Authenticate both ways and say hello; the hub's welcome and any messages behind it.

        Closes the connection on any failure (``unproven`` tells an endpoint that failed to
        prove the key from a hub that went away).
        """
        sock = self.sock
        if sock is None:
            raise ConnectionError(str(self.connect_error))
        try:
            sock.settimeout(timeout)
            challenge = _recv_exact(sock, CHALLENGE_LEN)
            if not challenge.startswith(MAGIC):
                raise AuthError("the endpoint is not a hyrax_tbhub hub of this version")
            nonce = secrets.token_bytes(NONCE_LEN)
            sock.sendall(_wire.producer_answer(key, challenge, nonce))
            # Nothing else goes out, and nothing that comes in is read as a frame, until the
            # hub proved the key too: whoever answers at a stale or forged address gets
            # neither our events nor our name.
            _wire.check_proof(key, challenge, nonce, _recv_exact(sock, PROOF_LEN))
            hello = _wire.pack_hello(name, pid)
            if ledger is None:
                sock.sendall(hello)
            else:  # the ledger's descriptor rides with the hello: after the key check only
                ledger.send_with(sock, hello)
            # The reader may keep the start of a frame that followed the welcome: wait() goes on.
            reader = self._reader = FrameReader(MAX_HUB_FRAME)
            frames: list[bytes] = []
            while not frames:
                frames = reader.feed(_recv_some(sock))
            welcome = _wire.decode_hub_message(frames[0])
            if welcome[0] != "hello":
                raise ConnectionError("unexpected reply from the hub")
            meta = welcome[1]
            extra = [_wire.decode_hub_message(frame) for frame in frames[1:]]
            sock.settimeout(None)
            return dict(meta), extra
        except AuthError:
            self.unproven = True
            sock.close()
            raise
        except BaseException:
            sock.close()
            raise

    def wait(self, timeout: float) -> tuple[bool, list[HubMessage]]:
        """Wait up to ``timeout`` s for the hub or a wake-up; (woken, the hub's messages)."""
        sel = self._selector
        sock = self.sock
        if sel is None:
            assert sock is not None, "wait() before a successful handshake"
            sel = self._selector = _Selector()
            sel.register(sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
        woken = False
        messages: list[HubMessage] = []
        for key, _mask in sel.select(timeout):
            if key.fileobj is self._wake_r:
                woken = True
                try:
                    while self._wake_r.recv(4096):
                        pass
                except OSError:
                    pass
            else:
                assert sock is not None
                data = sock.recv(_REPLY_RECV)
                if not data:
                    raise ConnectionError("the hub closed the connection")
                try:
                    messages += [_wire.decode_hub_message(payload) for payload in self._reader.feed(data)]
                except WireError as exc:
                    raise ProtocolError(f"unreadable message from the hub: {exc!r}") from exc
        return woken, messages

    def send(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(data)

    def send_last(self, data: bytes) -> None:
        """Best effort, bounded: the hub may be busy, and this is the way out of a failure."""
        if self.sock is None:
            return
        try:
            self.sock.settimeout(2.0)
            self.sock.sendall(data)
        except Exception:
            pass

    def close(self) -> None:
        """Close the connection (the wake-up pair stays: logging calls may still wake us)."""
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self.sock is not None:
            self.sock.close()

    def abandon(self) -> None:
        """After fork, in the child: close our copies of the parent's sockets.

        Left open, the child's copy would keep the parent's connection alive after the parent
        dies, and a closing hub would wait for a goodbye that never comes.
        """
        # getattr: the fork may have come while another thread was still in __init__.
        for name in ("sock", "_wake_r", "_wake_w"):
            sock = getattr(self, name, None)
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the hub closed the connection during the handshake")
        buf += chunk
    return buf


def _recv_some(sock: socket.socket) -> bytes:
    chunk = sock.recv(_REPLY_RECV)
    if not chunk:
        raise ConnectionError("the hub closed the connection")
    return chunk
