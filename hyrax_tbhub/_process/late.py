"""Calls made after this process's exit flush: they still land on disk, or are counted and said.

Our exit hook closes the hub (owner) or sends the queue and leaves (producer). Code of the user's
can still log after it: ``atexit`` hooks and ``weakref.finalize`` finalizers registered before
the package was imported (atexit runs hooks last-registered first), objects whose ``__del__``
logs while the interpreter tears down, daemon threads that run until the end. Each used to be a
silent no-op. After the exit flush the process's channel is one of these:

- :class:`LateOwner` (the owner): the calling thread writes each call to a new event file of the
  owner's run, at once (no hub thread: at interpreter teardown the daemon threads are stopped);
- :class:`LateProducer` (a producer): a producer connected on the first late call, flushed after
  every call, so a call that returns is on disk. Once the interpreter is tearing down, its
  sender thread (a daemon) cannot run: later calls are counted and said once.

Whatever fails here is said once on stderr and never raised: these calls run in exit hooks and
finalizers, where an exception of ours would turn a clean exit into a traceback.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING

from .._channel import import_capture_writer
from .._hub import Hub
from .._hub.store import Store
from .._items import EVENT, SCALAR, CallItem
from .._producer import Producer
from .._util.stderr import warn

if TYPE_CHECKING:
    from .._capture import CaptureWriter
    from .._discovery.hubfile import HubInfo

__all__ = ["LateOwner", "LateProducer"]

_LOCK_WAIT = 2.0  # s: a daemon thread stopped at teardown may hold the lock; never wait for good
_FLUSH_WAIT = 5.0  # s: per late call of a producer


class _Late:
    """What both kinds share: the lock, the count of calls that could not be saved, the writer."""

    start_ns: int

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self._lock = threading.RLock()  # reentrant: a signal handler may log during a late call
        self.lost = 0
        self._said = False
        self._writer: CaptureWriter | None = None

    def put_scalar(self, tag: str, value: float, step: int | None, wall_time: float) -> None:
        self._put((SCALAR, tag, value, step, wall_time))

    def put_event(self, subrun: str, data: bytes) -> None:
        self._put((EVENT, subrun, data))

    def put_item(self, item: CallItem) -> None:
        """A call as the owner's queue holds it."""
        self._put(item)

    def _put(self, item: CallItem) -> None:
        try:
            if not self._lock.acquire(timeout=_LOCK_WAIT):
                self._lose("another thread stopped while logging holds the way to the log")
                return
            try:
                self._save(item)
            finally:
                self._lock.release()
        except Exception as exc:
            self._lose(repr(exc))

    def _save(self, item: CallItem) -> None:
        raise NotImplementedError

    def _lose(self, why: str) -> None:
        self.lost += 1
        if not self._said:
            self._said = True
            warn(f"hyrax_tbhub: process {os.getpid()} logged after its exit flush and an event could "
                 f"not be saved ({why}); later ones that cannot are not said again")

    def flush(self, timeout: float | None = None) -> bool:
        return self.lost == 0  # every late call that was saved is on disk when it returns

    def writer(self) -> CaptureWriter:
        if self._writer is None:
            self._writer = import_capture_writer()(self, logdir=self.folder())
        return self._writer

    def folder(self) -> str:
        raise NotImplementedError


class LateOwner(_Late):
    """The owner after its hub closed at exit: each call is written by the calling thread."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub.start_ns)
        self._logdir = hub.logdir
        self._root_folder = hub.root_folder
        self._options = hub.config.options
        self._suffix = hub.config.filename_suffix
        self._store: Store | None = None

    def _save(self, item: CallItem) -> None:
        store = self._store
        if store is None:
            root = None if self._root_folder == self._logdir else self._root_folder
            # A new event file in the owner's run: the hub's own files are closed.
            store = self._store = Store(self._logdir, self._options, self._suffix, root_folder=root,
                                        start_ns=self.start_ns)
        store.write(store.root, [item])
        store.write_pending()

    def folder(self) -> str:
        return os.path.abspath(self._root_folder)


class LateProducer(_Late):
    """A producer after its exit flush: connects again on the first late call, flushes each."""

    def __init__(self, info: HubInfo, start_ns: int) -> None:
        super().__init__(start_ns)
        self._info = info
        self._producer: Producer | None = None

    def _save(self, item: CallItem) -> None:
        if sys.is_finalizing():
            # The sender thread is a daemon: from here on it can never run again.
            self._lose("the interpreter is tearing down")
            return
        producer = self._producer
        if producer is None or not producer.alive:
            producer = self._producer = Producer(self._info, lambda _p: None)
            producer.start()
        if item[0] == SCALAR:
            producer.put_scalar(*item[1:])
        else:
            producer.put_event(item[1], item[2])
        if not producer.flush(_FLUSH_WAIT):
            self._lose("the hub did not confirm it")

    def folder(self) -> str:
        producer = self._producer
        return producer.folder() if producer is not None else self._info.logdir
