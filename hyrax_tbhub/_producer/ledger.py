"""A producer's count of what it logged, in memory its hub can read after the producer died.

A producer killed without a goodbye (SIGKILL from an engine's abort, ``Pool.terminate()``'s
follow-up, the OOM killer) takes its queue with it. Its hub knows what it received, but not what
was logged: the ledger is that number, kept where the kill cannot take it. It is a few words in
an anonymous shared-memory file (``memfd_create``), mapped by the producer and handed to the hub
with ``SCM_RIGHTS`` in the same message as the HELLO, that is only after both sides proved the
key; the hub reads it (``pread``, never a mapping: a shrunk file cannot fault the hub) when the
connection ends without a goodbye. Words (native u64):

=====  ===========================================================================
0      events the logging calls put in the queue (counted before the append)
1      events this producer dropped in total (the ``dropped`` it reports as ``d``)
2      of word 0, events taken out of the queue and dropped (could not be encoded,
       the hub went away): they are in word 1 too
=====  ===========================================================================

So the hub computes ``lost = word0 - received - word2`` exactly. Counting before the append
means a call the kill cut in half counts as logged and lost: what the caller saw return is
never more than what is on disk plus what is counted.

Only on a Unix socket to a hub on this machine (a memfd cannot cross hosts) and where the OS has
``memfd_create`` (Linux); elsewhere the words live in private memory and nobody reads them.
"""

from __future__ import annotations

import array
import mmap
import os
import socket

try:  # at import, never on a logging call (fork safety, _util/forksafe.py)
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

from .._wire import LEDGER_DROPPED as DROPPED
from .._wire import LEDGER_LOGGED as LOGGED
from .._wire import LEDGER_LOST_AFTER_QUEUED as LOST_AFTER_QUEUED
from .._wire import LEDGER_WORDS as WORDS

__all__ = ["LOGGED", "DROPPED", "LOST_AFTER_QUEUED", "Ledger", "WORDS"]

_SIZE = WORDS * 8


class Ledger:
    """The words, and the descriptor to hand to the hub (None where there is none)."""

    __slots__ = ("words", "fd", "_map")

    def __init__(self, shared: bool) -> None:
        self.fd: int | None = None
        self._map: mmap.mmap | None = None
        if shared and hasattr(os, "memfd_create"):
            try:
                self.fd, self._map = _shared_words()
            except OSError:
                self.fd = self._map = None  # no memfd here (an old kernel, a sandbox): uncounted
        buffer: mmap.mmap | bytearray = self._map if self._map is not None else bytearray(_SIZE)
        # A memoryview of native u64: one item assignment per logging call (about 40 ns).
        self.words = memoryview(buffer).cast("Q")

    def send_with(self, sock: socket.socket, data: bytes) -> None:
        """Send ``data`` (the HELLO) with our descriptor attached, then close our copy of it."""
        fd = self.fd
        if fd is None or sock.family != socket.AF_UNIX:
            sock.sendall(data)
            return
        sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        if sent < len(data):
            sock.sendall(data[sent:])
        self.close_fd()

    def close_fd(self) -> None:
        """The mapping keeps the memory; the descriptor was only needed to hand it over."""
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def abandon(self) -> None:
        """After fork, in the child: the mapping is the parent's; write to private memory now."""
        self.words = memoryview(bytearray(_SIZE)).cast("Q")
        self.close_fd()


def _shared_words() -> tuple[int, mmap.mmap]:
    fd = os.memfd_create("hyrax_tbhub-ledger", os.MFD_CLOEXEC | getattr(os, "MFD_ALLOW_SEALING", 0))
    try:
        os.ftruncate(fd, _SIZE)
        _seal(fd)
        return fd, mmap.mmap(fd, _SIZE)
    except BaseException:
        os.close(fd)
        raise


def _seal(fd: int) -> None:
    # Fixed size from here on: neither side can shrink the file under the other's mapping.
    if fcntl is None:
        return
    try:
        seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except (AttributeError, OSError):
        pass
