"""How many descriptors the hub may take: the process's limit less a reserve for the owner.

The hub shares the owner's descriptor table. Every producer costs the hub a connection and,
once it logs, an open event file; a key holder that opens connection after connection would
otherwise take the last descriptor the owner's own code needed (its checkpoint, its DataLoader's
pipes). So the hub accepts only while the process has more free descriptors than the reserve,
and the listeners are unregistered (not polled in vain) until one frees.
"""

from __future__ import annotations

import os

# At import, not when a hub starts: a rank's own hub starts on a logging call or on the rank
# watch thread, where an import could leave its lock held in a child forked meanwhile.
import resource

__all__ = ["FdBudget", "raise_fd_limit"]

_MIN_RESERVE = 64
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def raise_fd_limit() -> None:
    """Raise the soft limit towards the hard one (at most 65,536), never lower it.

    Hundreds of producers each hold a socket and a file, and the common soft limit of 1,024 is
    too tight for them; what the hub may use of the raised limit is bounded by :class:`FdBudget`.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 65536
        target = min(target, 65536)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass


class FdBudget:
    """Free descriptors the hub may still take; the rest of the limit is the owner's reserve."""

    __slots__ = ("limit", "reserve")

    def __init__(self) -> None:
        try:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ValueError, OSError):
            soft = resource.RLIM_INFINITY
        self.limit = 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)
        # A quarter of the limit (1,024 of 4,096; 16,384 of 65,536): what the owner had before
        # the hub raised its soft limit, and room for a checkpoint or a DataLoader's workers.
        self.reserve = max(_MIN_RESERVE, self.limit // 4)

    def room(self) -> int:
        """Descriptors the hub may still open (a walk of the descriptor table: ~20 us per 100)."""
        in_use = _open_descriptors()
        if in_use is None:
            return self.limit  # nowhere to count: rely on EMFILE, which pauses accepting too
        return self.limit - self.reserve - in_use


def _open_descriptors() -> int | None:
    for folder in _FD_DIRS:
        try:
            return len(os.listdir(folder)) - 1  # the listing's own descriptor
        except OSError:
            continue
    return None
