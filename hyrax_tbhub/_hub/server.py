"""The hub thread: one selector loop serving every producer, and the owner's own queue.

Sockets live only here. Producers connect to a private Unix socket (ranks on other machines to a
TCP one as well, :func:`hyrax_tbhub.serve_ranks`); handshakes, batches and acknowledgements of
all of them are interleaved in one loop, so a slow, silent or hostile peer costs the others
nothing. The owner's own calls skip the socket and enter a deque that the same thread drains
(:mod:`.owner_queue`). What a batch does to the files is the store's business (:mod:`.store`);
the bytes are :mod:`.._wire`'s grammar; the connections' states are :mod:`.peers`', the listening
sockets :mod:`.listeners`'.
"""

from __future__ import annotations

import os
import secrets
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import _wire
from .._discovery import hubfile
from .._items import CallItem
from .._util.stderr import warn
from .._util.threads import daemon_thread
from ..options import DEFAULT_OPTIONS, Options
from .fdbudget import raise_fd_limit
from .listeners import tcp_listener, unix_listener
from .owner_queue import OwnerQueue
from .peers import Peers
from .store import Store

__all__ = ["Hub", "HubConfig"]

_LOOP_INTERVAL = 0.05  # s: how often the owner's deque is drained when nobody wakes the thread
_EXPIRY_INTERVAL = 1.0  # s: between looks for handshakes past their deadline (seconds long)
_LOCAL_HIGH_WATER = 8192  # owner items queued before the caller waits for the hub thread


class HubConfig:
    """How one hub is set up: the user's options (shared with its producers) and file naming."""

    def __init__(self, options: Options = DEFAULT_OPTIONS, filename_suffix: str = "") -> None:
        self.options = options
        self.filename_suffix = filename_suffix


class Hub:
    """Owns the event files under ``logdir`` (its :class:`.Store`) and the endpoint producers
    connect to; all their work is done by one thread, under ``_lock``."""

    def __init__(
        self, logdir: str, config: HubConfig | None = None, purge_step: int | None = None,
        root_folder: str | None = None,
    ) -> None:
        self.config = config or HubConfig()
        self.logdir = logdir
        # The owner's own run: ``logdir`` itself, or a rank's run when the hub serves one rank of
        # a job whose log folder is shared (_process/rank_hub.py).
        self.root_folder = logdir if root_folder is None else root_folder
        self.start_wall_ns = time.time_ns()
        self.hub_id = secrets.token_hex(8)
        self.owner_pid = os.getpid()
        self._key = secrets.token_bytes(32)
        options = self.config.options
        self.store = Store(logdir, options, self.config.filename_suffix, root_folder=root_folder,
                           purge_step=purge_step)
        # Held by the hub thread for a whole turn; the owner takes it to help drain its queue,
        # attach() to add an aggregate.
        self._lock = threading.RLock()
        self._closing = False
        self._closed = threading.Event()
        self._close_deadline = 0.0
        self._next_expiry = 0.0
        self._hub_file: str | None = None
        self._close_callbacks: list[Callable[[], None]] = []
        self._before_close: list[Callable[[], None]] = []
        #: Where the owner's calls go once the hub closes at exit (_process/late.py); None: no-ops.
        self.late: Callable[[CallItem], None] | None = None
        raise_fd_limit()
        hubfile.remove_stale_hub_files()
        hubfile.say_fallback_once()
        self.address = str(hubfile.runtime_dir() / f"{self.owner_pid}-{self.hub_id[:8]}.sock")
        self._sel = selectors.DefaultSelector()  # epoll where there is one: select() refuses fds >= 1024
        self._waker = _Waker(self._sel)
        self._peers = Peers(self._sel, self.store, self._key, options)
        self._peers.add_listener(unix_listener(self.address))
        self._conns = self._peers.conns  # the live connections; tests wait on it
        self._thread = daemon_thread(self._serve, "hyrax_tbhub-hub")
        self._queue = OwnerQueue(self.store, self.wake, self._thread, self._closed)  # the owner's calls
        self._local = self._queue.items  # put_local appends to it directly: the owner's every call

    # -- life cycle ---------------------------------------------------------------------------

    def info(self, address: str | None = None) -> hubfile.HubInfo:
        """What a producer needs to reach this hub at ``address`` (default: the Unix socket)."""
        return hubfile.HubInfo(
            address=self.address if address is None else address,
            authkey=self._key.hex(),
            start_ns=self.start_ns,
            logdir=os.path.abspath(self.logdir),
            owner_pid=self.owner_pid,
            hub_id=self.hub_id,
            start_wall_ns=self.start_wall_ns,
            hostname=socket.gethostname(),
            options=self.config.options.to_wire(),
        )

    def start(self, publish: bool = True) -> str:
        """Start serving and publish the hub file; return its path.

        ``publish=False`` (a :class:`hyrax_tbhub.SummaryWriter`'s hub) writes no hub file and
        bumps no generation: producers get its address handed to them, and the process-wide hub
        file of this pid stays the one ``init_tensorboard_logger`` wrote. Returns "" then.
        """
        if publish:
            self._hub_file = str(hubfile.write_hub_file(self.info()))
        self._thread.start()
        if publish:
            hubfile.bump_generation()
        return self._hub_file or ""

    def close(self, timeout: float | None = None) -> None:
        """Drain every producer and the owner's queue, write counters, close all files."""
        if self._closed.is_set() or os.getpid() != self.owner_pid:
            return
        try:
            for callback in self._before_close:
                try:
                    callback()
                except Exception as exc:  # asking other ranks to flush must not fail a close
                    warn(f"hyrax_tbhub: before closing: {exc!r}")
        finally:  # Ctrl-C while rank 0 waits for the ranks: the close itself still happens
            self._close_after_callbacks(timeout)

    def _close_after_callbacks(self, timeout: float | None) -> None:
        with self._lock:
            self._closing = True
            wait = self.config.options.close_timeout if timeout is None else timeout
            self._close_deadline = time.monotonic() + wait
        self.wake()
        self._thread.join(wait + 5.0)
        if self._thread.is_alive():  # pragma: no cover - the loop is bounded by the deadline
            warn("hyrax_tbhub: the hub thread did not stop in time; some events may be missing")
        self._closed.set()
        self._queue.hand_over(self.late)
        for callback in self._close_callbacks:
            try:
                callback()
            except Exception as exc:  # withdrawing an address must not fail a close
                warn(f"hyrax_tbhub: while closing: {exc!r}")

    def before_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in ``close()`` before anything closes (rank 0: the ranks' flush)."""
        self._before_close.append(callback)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in ``close()``, once every event is on disk."""
        self._close_callbacks.append(callback)

    def abandon_in_child(self) -> None:
        """After fork, in the child: drop the parent's pending bytes and our copies of its fds."""
        self._closing = True
        self._closed.set()
        self._local.clear()
        self.store.abandon()
        self._peers.abandon()
        self._waker.close()
        try:
            self._sel.close()
        except (OSError, ValueError):
            pass

    def listen_tcp(
        self, host: str, key: bytes | None = None, checker: _wire.EventChecker | None = None
    ) -> tuple[str, int]:
        """Also accept producers over TCP on ``host`` (an ephemeral port); return the address.

        Only for ranks on other machines (:func:`hyrax_tbhub.serve_ranks`): the handshake is the
        same as on the Unix socket, with ``key`` (a key the launcher shared) or else the hub's own.
        With ``checker``, every record of these peers must parse as an Event.
        """
        sock = tcp_listener(host)
        with self._lock:
            if self._closing:
                sock.close()
                raise RuntimeError("the hub is closing")
            self._peers.add_listener(sock, key, checker)
        self.wake()
        bound = sock.getsockname()
        return str(bound[0]), int(bound[1])

    def count_transport_error(self, what: str) -> None:
        """Count a connection lost as another party reported it (a process that found this hub
        through its engine's store and could not connect)."""
        with self._lock:
            self.store.count_transport_error(what)

    def add_aggregate(self, pattern: str, every_s: float) -> None:
        """Aggregate the tags matching ``pattern`` (checked by :func:`.aggregate.attach`)."""
        with self._lock:
            self.store.add_aggregate(pattern, every_s)

    @property
    def start_ns(self) -> int:
        """The clock origin (monotonic ns) of ``*_ts`` steps and of the counters' steps."""
        return self.store.start_ns

    @start_ns.setter
    def start_ns(self, value: int) -> None:
        # A rank's hub takes the job's origin (_process/rank_hub.py), so every rank's steps compare.
        self.store.start_ns = value

    def sync_producers(self, timeout: float) -> bool:
        """Every event logged before this call by the owner or by any producer connected (or
        waiting to be accepted) is on disk when this returns True; False after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        if not self.flush_local(timeout):
            return False
        with self._lock:
            if self._closing:  # its close drains every producer: wait for that instead
                done = self._closed
            else:
                done = self._peers.start_sync()
        self.wake()
        return done.wait(max(0.0, deadline - time.monotonic()))

    @property
    def strangers_rejected(self) -> int:
        """Connections cut before they proved the key."""
        return self.store.guard.strangers

    # -- the owner's channel ------------------------------------------------------------------

    def wake(self) -> None:
        self._waker.wake()

    def put_local(self, item: CallItem) -> None:
        if self._closing:
            late = self.late
            if late is not None:
                late(item)  # the owner's exit flush: the call still goes to the log
            return  # a writer object kept past close_tensorboard_logger(): a no-op, as documented
        local = self._local
        local.append(item)
        if len(local) >= _LOCAL_HIGH_WATER:
            self._queue.wait_for_drain()

    def flush_local(self, timeout: float | None) -> bool:
        """True once everything the owner logged before the call is written (``.owner_queue``)."""
        return self._queue.flush(timeout)

    # -- the loop -------------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while True:
                try:
                    ready = self._sel.select(_LOOP_INTERVAL)
                except InterruptedError:
                    continue
                with self._lock:
                    for key, mask in ready:
                        try:
                            key.data(key.fileobj, mask)
                        except Exception as exc:  # a bug must not kill the hub
                            self.store.count_internal_error(exc)
                    now = time.monotonic()
                    try:
                        self._turn(now)
                    except Exception as exc:  # nor anything else a turn of the loop meets
                        self.store.count_internal_error(exc)
                    if self._closing and self._close_step(now):
                        break
        finally:
            with self._lock:
                self._finish()

    def _turn(self, now: float) -> None:
        """The work of one loop turn after reading: the owner's queue, timers, writes, acks."""
        self._queue.drain()
        self.store.tick(now)
        if now >= self._next_expiry:
            self._peers.expire_handshakes(now)
            self._peers.resume()  # the owner may have closed files of its own
            self._next_expiry = now + _EXPIRY_INTERVAL
        self.store.write_pending()
        self._peers.send_acks()  # after the write: an ack says the OS has every record before it
        self._peers.sync.end_turn()  # the same for hub-wide flushes (sync.py)

    def _close_step(self, now: float) -> bool:
        """One step of closing; True once every producer is done or the deadline passed."""
        if not self._peers.draining:
            self._peers.drain()
            self._unlink_files()
        return not self._peers.busy(now) or now >= self._close_deadline

    def _unlink_files(self) -> None:
        # No new producer may find us from here on.
        for path in (self.address, self._hub_file):
            if path:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def _finish(self) -> None:
        self._peers.stop_listening()
        self._unlink_files()
        self._peers.finish()
        self._queue.drain()
        self.store.close()
        self._peers.sync.abandon()  # everything is on disk now
        self._waker.close()
        self._sel.close()


class _Waker:
    """A socket pair whose read end the selector watches: one byte wakes the loop at once."""

    __slots__ = ("_r", "_w")

    def __init__(self, sel: selectors.BaseSelector) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)  # the owner's thread must never wait on the hub's
        sel.register(self._r, selectors.EVENT_READ, self._on_readable)

    def wake(self) -> None:
        try:
            self._w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or we are closed

    def _on_readable(self, sock: Any, mask: int) -> None:
        try:
            while self._r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        for sock in (self._r, self._w):
            try:
                sock.close()
            except OSError:
                pass
