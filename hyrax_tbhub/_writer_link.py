"""How a :class:`hyrax_tbhub.SummaryWriter` object reaches its hub in whatever process it is in.

The writer's travel and reconnect state, apart from what it logs and from its public life cycle
(``writer.py``):

- :class:`WriterRef`: what a pickled writer is (the hub's address, key and options, and the
  constructor's settings), never a socket or a file;
- :class:`WriterLink`: the slots every writer object has, and the three ways it gets a channel:
  rebuilt from a reference in another process, reset in a forked child (``_after_fork``, called
  by ``_process/writers.py``), and reopened in the owner after ``close()``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ._discovery.hubfile import HubInfo
from ._process import writers
from ._surface import WriterMethods
from .options import Options

if TYPE_CHECKING:
    from ._channel import Channel

__all__ = ["WriterLink", "WriterRef"]


class WriterRef:
    """What a pickled writer is: where its hub is and how it was built. Never a socket."""

    __slots__ = ("info", "log_dir", "settings", "closed")

    def __init__(self, info: HubInfo | None, log_dir: str, settings: dict[str, Any], closed: bool) -> None:
        self.info = info
        self.log_dir = log_dir
        self.settings = settings  # the constructor's arguments, for the attributes of both libraries
        self.closed = closed

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.info, self.log_dir, self.settings, self.closed)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.info, self.log_dir, self.settings, self.closed = state


class WriterLink(WriterMethods):
    """A writer object's way to its hub in this process; the base of ``SummaryWriter``.

    ``_channel_now`` (the hook of every method of ``_surface``) returns the channel, connecting
    as a producer on the first call in a process the writer was handed to.
    """

    _channel: Channel | None
    _ref: WriterRef
    _owned: writers.OwnedHub | None
    _pid: int

    __slots__ = (
        "_channel", "_ref", "_owned", "_pid", "_closed", "_last_ts", "_meta", "_opener", "_reopen",
        "__weakref__",
    )

    #: What reopens the hub after ``close()`` (the owner's object only): folder, suffix, writer
    #: kwargs, options.
    _opener: tuple[str, str, dict[str, Any], Options] | None
    #: True once ``close()`` closed the hub in the owner: the next call opens a new one.
    _reopen: bool
    _closed: bool
    _last_ts: dict[str, int]

    def _init_from_ref(self, ref: WriterRef) -> None:
        self._ref = ref
        self._pid = os.getpid()
        self._last_ts = {}
        self._owned = None
        self._channel = None
        self._meta = None
        self._opener = None
        self._reopen = False
        self._closed = ref.closed or ref.info is None
        if not self._closed:
            writers.track(self)

    def _after_fork(self) -> None:
        # A forked child's copy: the parent's hub and producer are not ours; connect on next call.
        self._pid = os.getpid()
        self._owned = None
        self._channel = None
        self._opener = None  # a closed copy stays closed here: the folder's hub is the parent's
        self._reopen = False

    def _attach(self) -> Channel | None:
        """The channel of this writer in this process, connecting as a producer if need be."""
        if self._pid != os.getpid():  # forked without the at-fork hook (it always runs on POSIX)
            self._after_fork()
        if self._closed:
            return self._reopened() if self._reopen else None
        info = self._ref.info
        if info is None:
            return None
        ch = writers.channel_for(info)
        if ch is None:
            self._closed = True  # its hub closed: calls from here on are no-ops
        self._channel = ch
        return ch

    def _reopened(self) -> Channel | None:
        """After ``close()`` in the owner, as both libraries: the next call logs again.

        A new hub for the same folder, writing a new event file (the hub's file names are
        unique), so nothing logged after close is lost. ``purge_step`` is not written again
        (torch's rule; tensorboardX's would purge what was logged before the close). Copies of
        the writer handed out before close stay closed; copies handed out from now on reach the
        new hub.
        """
        opener = self._opener
        if opener is None or self._pid != os.getpid():
            return None
        folder, suffix, writer_kwargs, options = opener
        owned = writers.open_hub(folder, suffix, None, writer_kwargs, options)
        self._owned = owned
        self._channel = owned.channel
        self._ref = WriterRef(owned.hub.info(), self._ref.log_dir, self._ref.settings, closed=False)
        self._closed = False
        self._reopen = False
        return owned.channel

    def _channel_now(self) -> Channel | None:
        ch = self._channel
        return ch if ch is not None else self._attach()
