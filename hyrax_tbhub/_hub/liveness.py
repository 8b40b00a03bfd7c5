"""What a producer that vanished had logged: its ledger, read by the hub when the goodbye is missing.

A producer on this machine hands the hub a descriptor of its ledger (``_producer/ledger.py``: a
few u64 words in an anonymous shared-memory file) with its HELLO, which the hub reads only after
the peer proved the key: the ancillary data of anything read before that is discarded by the
kernel (``recv``), and after the HELLO the hub reads with ``recv`` again, so a descriptor sent
later is closed unseen. The hub counts the events of every batch it reads; when the connection
ends without a goodbye (the producer was killed), ``logged - received - dropped after queueing``
is exactly what the kill took, counted under ``hyrax_tbhub/producer_killed/<run>``.

What is read can do nothing but be a number: 24 bytes at offset 0 with ``pread`` (no mapping, so
a file shrunk under us cannot fault the hub), from a descriptor that must be a sealable
shared-memory file (a memfd; ``F_GET_SEALS`` fails on anything else, and a pipe, socket or a file
on a slow file system could block the hub's thread). Any other descriptor is closed at once.

Limits: a producer connected over TCP (a rank on another host) has no ledger: if it vanishes,
the hub counts a transport error, not its events (docs/how-it-works.md).
"""

from __future__ import annotations

import array
import os
import socket
import stat
import struct

from .._items import RECORDS, WireItem
from .._wire import LEDGER_DROPPED, LEDGER_LOGGED, LEDGER_LOST_AFTER_QUEUED, LEDGER_WORDS

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["HubLedger", "recv_hello"]

_WORDS = struct.Struct(f"={LEDGER_WORDS}Q")
_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)  # a descriptor received never leaks into a child
_FD_SPACE = socket.CMSG_SPACE(array.array("i").itemsize)  # room for exactly one descriptor


class HubLedger:
    """The hub's side: the producer's descriptor and the events received from it so far."""

    __slots__ = ("fd", "received")

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd
        self.received = 0

    def note(self, items: list[WireItem]) -> None:
        """Count the events of a decoded batch (before the caps: what is refused is counted there)."""
        for item in items:
            if item[0] == RECORDS:
                self.received += item[3]

    def lost(self) -> tuple[int, int] | None:
        """(events the producer logged that never arrived, its drop total), or None if unreadable."""
        if self.fd is None:
            return None
        try:
            raw = os.pread(self.fd, _WORDS.size, 0)
        except OSError:
            return None
        if len(raw) != _WORDS.size:
            return None
        words = _WORDS.unpack(raw)
        logged, lost_after_queued = words[LEDGER_LOGGED], words[LEDGER_LOST_AFTER_QUEUED]
        return max(0, logged - self.received - lost_after_queued), words[LEDGER_DROPPED]

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            _close(fd)


def recv_hello(sock: socket.socket, size: int) -> tuple[bytes, HubLedger | None]:
    """Read from a peer that proved the key but sent no HELLO yet: its bytes, and its ledger if
    it attached one; every other descriptor that came with them is closed."""
    data, ancdata, _flags, _addr = sock.recvmsg(size, _FD_SPACE, _CLOEXEC)
    fds: list[int] = []
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(cdata) - len(cdata) % array.array("i").itemsize
            fds += array.array("i", cdata[:usable])
    ledger = None
    for fd in fds:
        if ledger is None and _is_ledger(fd):
            ledger = HubLedger(fd)
        else:
            _close(fd)
    return data, ledger


def _is_ledger(fd: int) -> bool:
    if fcntl is None:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < _WORDS.size:
            return False
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except (OSError, AttributeError):
        return False
    # Sealed against shrinking: the producer (or anyone) cannot make our read come up short.
    return bool(seals & fcntl.F_SEAL_SHRINK)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
