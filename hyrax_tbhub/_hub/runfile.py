"""One event file of one run, written only by the hub thread.

Records are collected in a list and written with one ``os.write`` per batch on a raw descriptor.
No user-space file buffer exists, so a process forked from the owner has nothing to flush twice
into our files when it exits (a ``BufferedWriter`` would write the parent's pending bytes again).
"""

from __future__ import annotations

import itertools
import os

from .._events import event_file_name, file_version_event, frame

__all__ = ["RunFile"]

# Event files of one folder sort by name, and TensorBoard reads them in that order: a counter in
# the suffix keeps two files opened within the same second in creation order and distinct.
_file_counter = itertools.count()


class RunFile:
    __slots__ = ("path", "_fd", "_pending")

    def __init__(self, folder: str, suffix: str = "") -> None:
        os.makedirs(folder, exist_ok=True)
        unique = f".{os.getpid()}.{next(_file_counter):06d}"
        self.path = os.path.join(folder, event_file_name(unique + suffix))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._fd: int | None = os.open(self.path, flags, 0o644)
        self._pending: list[bytes] = [frame(file_version_event())]

    def add(self, framed: bytes) -> None:
        """Queue framed records for the next write."""
        self._pending.append(framed)

    def write_pending(self) -> None:
        """Hand everything added so far to the OS; readers see it from here on."""
        if not self._pending or self._fd is None:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            self.write_pending()
        finally:
            _close_owned(self)

    def abandon(self) -> None:
        """In a forked child: forget the parent's pending records and close our copy of the fd."""
        self._pending.clear()
        try:
            _close_owned(self)
        except OSError:
            pass


def _close_owned(f: RunFile) -> None:
    """Close the file's descriptor, forgetting the number *before* the OS may hand it out again.

    ``os.close`` lets go of the GIL: another thread may open a pipe that gets the same number and
    fork. A child forked while ``_fd`` still held the number would close that pipe in its
    after-fork path (``abandon``), a descriptor that is not ours (seen: fork Pool workers dying
    with 'Bad file descriptor' on their own pipes). Cleared first, the number is never ours and
    someone else's at once: a fork in between leaves the child a copy of our file that nobody
    closes, which is harmless (close-on-exec, no buffer, never written to).
    """
    fd, f._fd = f._fd, None
    if fd is not None:
        os.close(fd)
