"""``hyrax_tbhub.SummaryWriter``: a drop-in for tensorboardX's and torch.utils.tensorboard's.

Created in a process, it owns a hub for its log folder (the same hub as
``init_tensorboard_logger`` starts, but private to the writer). The object can then be handed to
any other process: pickled into a spawn pool's arguments, carried by a Dataset into DataLoader
workers (fork, spawn, forkserver), passed to ``mp.Process`` or ``torch.multiprocessing.spawn``.
There it connects to the hub as a producer and logs into the same log folder, one run per
process, as the process-wide logger does.

What travels is a small reference (the hub's address, key and options, and the writer's settings), never
a socket or a file. Under fork nothing is pickled: the child's copy notices it was forked and
connects on its first call.

The migration from ``torch.utils.tensorboard`` is one line::

    from hyrax_tbhub import SummaryWriter  # was: from torch.utils.tensorboard import SummaryWriter
"""

from __future__ import annotations

import os
from typing import Any

from ._filewriter import HubFileWriter
from ._hub import attach as _attach_aggregate
from ._process import writers
from ._writer_calls import WriterCalls
from ._writer_link import WriterRef
from .options import DEFAULT_OPTIONS, Options
from .tensorboardx_logger import _resolve_logdir

__all__ = ["SummaryWriter"]


def _rebuild(ref: WriterRef) -> SummaryWriter:
    writer = SummaryWriter.__new__(SummaryWriter)
    writer._init_from_ref(ref)
    return writer


class SummaryWriter(WriterCalls):
    """A ``SummaryWriter`` whose object works in every process it is handed to.

    Same constructor as ``torch.utils.tensorboard.SummaryWriter`` and ``tensorboardX.SummaryWriter``:
    ``log_dir`` (or ``logdir``; default ``runs/<date>_<host><comment>``), ``comment``,
    ``purge_step``, ``filename_suffix``; ``max_queue`` and ``flush_secs`` are accepted and unused
    (events reach the OS within a loop turn of the hub), and so is tensorboardX's ``comet_config``.
    ``write_to_disk=False`` makes every call a no-op, as in tensorboardX. ``options``
    (:class:`hyrax_tbhub.Options`) sets the bounds and deadlines of the writer's hub and of every
    process the writer is handed to. Every method of both libraries is here, with their
    signatures; tensorboardX's code builds the events in the calling process, so bad arguments
    raise there.

    - In the process that created it (the *owner*), ``close()`` returns once every event logged
      by the owner and by every process it was handed to is on disk; later calls are no-ops.
    - In any other process, ``flush()`` and ``close()`` wait until what this process logged is on
      disk; the writer stays usable, and what is queued is sent when the process exits.
    - Several writers of different folders each run their own hub; writers of one folder in one
      process share a hub (the first one's ``purge_step``, ``filename_suffix`` and ``options``
      apply).
    """

    # The slots, and how the object reaches its hub in each process: _writer_link.py; the methods
    # whose signatures differ between torch and tensorboardX: _writer_calls.py.
    __slots__ = ()

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        comment: str = "",
        purge_step: int | None = None,
        max_queue: int = 10,
        flush_secs: int = 120,
        filename_suffix: str = "",
        write_to_disk: bool = True,
        *,
        logdir: str | os.PathLike[str] | None = None,
        comet_config: dict[str, Any] | None = None,
        options: Options | None = None,
    ) -> None:
        if log_dir is not None and logdir is not None and os.fspath(log_dir) != os.fspath(logdir):
            raise ValueError("give log_dir or logdir, not both")
        chosen = log_dir if log_dir is not None else logdir
        chosen = None if chosen is None else os.fspath(chosen)
        resolved = _resolve_logdir({"logdir": chosen, "comment": comment})
        if options is None:
            options = DEFAULT_OPTIONS
        elif not isinstance(options, Options):
            raise TypeError(f"options must be a hyrax_tbhub.Options, not {type(options).__name__}")
        if purge_step is not None:
            purge_step = int(purge_step)
        del comet_config  # tensorboardX's Comet mirror: accepted, not carried to other processes
        settings = {
            "comment": comment, "purge_step": purge_step, "max_queue": max_queue, "flush_secs": flush_secs,
            "filename_suffix": filename_suffix or "", "write_to_disk": bool(write_to_disk),
        }
        self._pid = os.getpid()
        self._last_ts: dict[str, int] = {}
        self._owned = None
        self._channel = None
        self._meta = None
        self._opener = None
        self._reopen = False
        if not write_to_disk:
            self._ref = WriterRef(None, resolved, settings, closed=True)
            self._closed = True
            return
        writer_kwargs = {"logdir": resolved, "comment": comment, "max_queue": max_queue,
                         "flush_secs": flush_secs, "filename_suffix": filename_suffix or ""}
        owned = writers.open_hub(resolved, str(filename_suffix or ""), purge_step, writer_kwargs, options)
        self._opener = (resolved, str(filename_suffix or ""), writer_kwargs, options)
        self._owned = owned
        self._channel = owned.channel
        self._ref = WriterRef(owned.hub.info(), resolved, settings, closed=False)
        self._closed = False
        writers.track(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # A small reference: the hub's address, key and options, and the constructor's settings.
        # The key gives whoever holds the bytes the right to log here: do not store them or send
        # them to others.
        ref = WriterRef(self._ref.info, self._ref.log_dir, self._ref.settings, self._closed)
        return (_rebuild, (ref,))

    # -- attributes both libraries have ---------------------------------------------------------

    @property
    def log_dir(self) -> str:
        """The writer's log folder (the same in every process it is handed to)."""
        return self._ref.log_dir

    @property
    def logdir(self) -> str:
        """tensorboardX's name of :attr:`log_dir`."""
        return self._ref.log_dir

    @property
    def purge_step(self) -> int | None:
        return self._ref.settings.get("purge_step")

    @property
    def max_queue(self) -> int:
        return int(self._ref.settings.get("max_queue", 10))

    @property
    def flush_secs(self) -> int:
        return int(self._ref.settings.get("flush_secs", 120))

    @property
    def filename_suffix(self) -> str:
        return str(self._ref.settings.get("filename_suffix", ""))

    def get_logdir(self) -> str:
        """As torch's: the log folder given to the constructor."""
        return self._ref.log_dir

    @property
    def run_folder(self) -> str | None:
        """Where this process's events land: ``log_dir`` in the owner, ``log_dir/<run>`` elsewhere."""
        if self._closed:
            return None
        ch = self._channel if self._channel is not None else self._attach()
        return None if ch is None else ch.folder()

    @property
    def file_writer(self) -> HubFileWriter | None:
        """tensorboardX's ``file_writer``: None after ``close()`` in the owner, as in both
        libraries (``_get_file_writer()`` reopens); elsewhere a FileWriter through the hub."""
        if self._closed and self._reopen:
            return None
        return HubFileWriter(self)

    def _get_file_writer(self) -> HubFileWriter:
        """As both libraries: the FileWriter, the writer reopened first if it was closed."""
        if self._closed and self._reopen:
            self._attach()
        return HubFileWriter(self)

    def _file_writer_logdir(self) -> str:
        if self._closed:
            return self._ref.log_dir
        folder = self.run_folder
        return self._ref.log_dir if folder is None else folder

    # -- life cycle ------------------------------------------------------------------------------

    def aggregate(self, pattern: str, every_s: float = 1.0) -> SummaryWriter:
        """Write live aggregates of tags matching ``pattern`` into the run ``all_producers``.

        Only in the owner (the process that created the writer). See
        :func:`hyrax_tbhub.aggregate` and docs/aggregates.md. Returns the writer, for chaining.
        """
        owned = self._owned
        if owned is None or self._closed or owned.hub.owner_pid != os.getpid():
            raise RuntimeError("aggregate() configures the writer's hub: call it in the process that "
                               "created the SummaryWriter, before close()")
        _attach_aggregate(owned.hub, pattern, every_s)
        return self

    def flush(self, timeout: float | None = None) -> bool:
        """A barrier: True once everything this process logged with the writer is on disk."""
        ch = self._channel
        if ch is None:
            return True
        try:
            return ch.flush(timeout)
        except Exception:
            return False

    def close(self) -> None:
        """In the owner: close the hub once every process's events are on disk. Elsewhere: flush."""
        owned = self._owned
        if owned is not None and owned.hub.owner_pid == os.getpid():
            if not self._closed:
                self._closed = True
                self._reopen = self._opener is not None
                self._channel = None
                self._owned = None
                writers.release_hub(owned)
            return
        self.flush()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        role = "closed" if self._closed else ("owner" if self._owned is not None else "producer")
        return f"<hyrax_tbhub.SummaryWriter log_dir={self._ref.log_dir!r} {role}>"
