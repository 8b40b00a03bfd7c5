"""The channel of every process that is not the owner: buffer calls, ship them from a thread.

A logging call only appends a tuple to the :class:`~.outbox.Outbox` (bounded; overflow is
counted, never blocks). A daemon thread connects through its :class:`~.link.Link`,
authenticates the hub (and itself), and sends the outbox in batches of the binary format of
:mod:`.._wire`; it also reads the hub's acknowledgements (for ``flush()``) and its drain request
(the hub is closing). The :class:`Producer` decides what is sent when; the outbox knows nothing
of sockets and the link nothing of events.

Each process has its own socket, so a producer killed mid-send corrupts only its own stream and
never holds a lock another process needs: the failure that wedges a shared
``multiprocessing.Queue`` (a write lock left held) cannot happen here.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._channel import import_capture_writer
from .._discovery.hubfile import HubInfo
from .._items import BYE, DROPS, CallItem, QueuedItem
from .._naming import producer_name
from .._util.stderr import warn, warn_internal
from .._util.threads import StartOnce
from .._wire import SYNC_BIT, HubMessage
from ..options import DEFAULT_OPTIONS, Options
from .frames import encode_frame, send_round
from .ledger import Ledger
from .link import TRANSPORT_ERRORS, Link
from .outbox import RECORD, new_outbox

if TYPE_CHECKING:
    from .._capture import CaptureWriter

__all__ = ["Producer", "local_start_ns", "options_of", "producers_of_this_process"]

_CONNECTING, _LIVE, _GONE = 0, 1, 2


class Producer:
    """Ships this process's events to the hub described by ``info``."""

    #: Every producer of this process (a fork child abandons all the parent's, published or not).
    instances: weakref.WeakSet[Producer] = weakref.WeakSet()

    # Bound in __init__ to the outbox's methods: a logging call costs one call, not two.
    put_scalar: Callable[[str, float, int | None, float], None]
    put_event: Callable[[str, bytes], None]

    def __init__(self, info: HubInfo, on_gone: Callable[[Producer], None]) -> None:
        Producer.instances.add(self)
        self.info = info
        self.start_ns = local_start_ns(info)
        self.pid = os.getpid()
        self.options = options_of(info)
        self._on_gone = on_gone
        self._name = producer_name()
        self._state = _CONNECTING
        self.lost = False  # True when the hub went away without a clean drain
        self._cond = threading.Condition()  # guards _seq and _acked; flush() waits on it
        self._seq = 0
        self._acked = 0
        self._closing = False
        self._drain_requested = False
        self._gone_said = False
        self._urgent = False  # a flush waits: send now, not at the next batching gap
        self._folder: str | None = None
        self.run_name: str | None = None
        self._hello = threading.Event()
        self._writer: CaptureWriter | None = None
        self.frames_sent = 0  # batches on the wire (scripts/bench_remote.py reports them)
        self._link = Link(info.address)
        # Shared with the hub only over a Unix socket: a hub on another host cannot map it.
        self._ledger = Ledger(shared=not info.address.startswith("tcp:"))
        self._outbox = new_outbox(self.options, self._link.wake, self._ledger)
        self.put_scalar = self._outbox.put_scalar
        self.put_event = self._outbox.put_event
        # Started by rediscovery, or by a close that comes first. Set last: begin_close and
        # wait_closed take its absence for a producer still being built.
        self._sender = StartOnce(self._serve, "hyrax_tbhub-producer")
        self._thread = self._sender.thread

    def start(self) -> None:
        """Start the sender thread: only once the process state points at this producer, or a
        hub closing right after the handshake would retire it before it is published."""
        self._sender.start()

    @property
    def dropped(self) -> int:
        return self._outbox.dropped

    @property
    def _dq(self) -> list[QueuedItem]:  # what tests look at: the queued items
        return self._outbox.items()

    @property
    def _queued_bytes(self) -> int:
        return self._outbox.queued_bytes

    @property
    def _sock(self) -> socket.socket | None:
        return self._link.sock

    @property
    def alive(self) -> bool:
        return self._state != _GONE

    # -- called from logging threads -----------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        if self._state == _GONE:
            return False
        with self._cond:
            self._seq += 1
            seq = self._seq
        self._urgent = True
        self._outbox.put_flush(seq)
        deadline = time.monotonic() + (self.options.connect_timeout + 20.0 if timeout is None else timeout)
        with self._cond:
            while self._acked < seq and self._state != _GONE:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self._acked >= seq

    def folder(self) -> str:
        self._hello.wait(self.options.connect_timeout)
        if self._folder is None:
            return os.path.join(self.info.logdir, self._name)
        return self._folder

    def writer(self) -> CaptureWriter:
        if self._writer is None:
            writer_class = import_capture_writer()  # imports tensorboardX: only when needed
            self._writer = writer_class(self, logdir=self.info.logdir)
        return self._writer

    def close(self, timeout: float | None = None) -> None:
        """Send everything queued, say goodbye, and stop the sender (bounded by ``timeout``)."""
        if os.getpid() != self.pid:
            return
        budget = self.options.exit_timeout if timeout is None else timeout
        self._begin_close(start_wait=max(0.0, budget))  # starts a sender not started yet
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(budget)
        if self._thread.is_alive() or (self._thread.ident is None and len(self._outbox)):
            warn(f"hyrax_tbhub: {len(self._outbox)} events of this process were not sent before exit")

    def forward_refused(self, sink: Callable[[CallItem], None]) -> None:
        """Calls made once the final batch is cut go to ``sink`` instead of being no-ops (a
        thread that read this producer just before the exit flush replaced it)."""
        self._outbox.refused = sink

    def begin_close(self) -> None:
        """Start the close without waiting for it (a SIGTERM flush starts every producer's, then
        waits for all of them with :meth:`wait_closed`)."""
        self._begin_close(start_wait=0)

    def _begin_close(self, start_wait: float) -> None:
        if os.getpid() != self.pid or getattr(self, "_sender", None) is None:
            # A parent's producer, or one caught halfway through __init__ (by a fork, or by a
            # signal on this thread): nothing was logged to it yet.
            return
        self._closing = True
        self._link.wake()
        if self._thread.ident is None and len(self._outbox):
            # Published and logged to, but closed before rediscovery started it.
            try:
                self._sender.start(start_wait)
            except RuntimeError:  # no new threads at interpreter shutdown: close() says so
                pass

    def wait_closed(self, timeout: float) -> bool:
        """Wait until a close in progress has sent the final batch; True if it has, or if there
        is nothing this process could send.

        Not a join: a SIGTERM handler that runs inside this producer's own :meth:`close` (on the
        same thread, whose ``join`` may already hold the sender thread's end-of-life lock) would
        wait for itself until its budget ran out."""
        if os.getpid() != self.pid or getattr(self, "_sender", None) is None:
            return True
        if self._thread.ident is None:
            return not len(self._outbox)
        return self._outbox.final_sent.wait(timeout)

    def abandon_in_child(self) -> None:
        """After fork, in the child: drop the parent's queue and close our copies of its sockets."""
        self._state = _GONE
        # getattr: the fork may have come while another thread was still in __init__.
        outbox = getattr(self, "_outbox", None)
        if outbox is not None:
            outbox.abandon()
        link = getattr(self, "_link", None)
        if link is not None:
            link.abandon()

    # -- the sender thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            self._serve_connection()
        except Exception as exc:  # the last guard: a sender thread never dies of a traceback
            self._internal_error(None, exc)

    def _serve_connection(self) -> None:
        link = self._link
        try:
            meta, extra = link.handshake(
                self.info.key, self._name, os.getpid(), self.options.connect_timeout, self._ledger
            )
        except TRANSPORT_ERRORS as exc:
            self._hello.set()
            self._give_up(f"cannot reach the hub at {self.info.address} ({exc!r})")
            return
        except Exception as exc:
            self._hello.set()
            self._internal_error(None, exc)
            return
        self._folder = str(meta["folder"])
        self.run_name = str(meta["run"])
        for message in extra:
            self._on_message(message)
        self._state = _LIVE
        self._hello.set()
        try:
            self._pump(link)
        except TRANSPORT_ERRORS as exc:
            self._give_up(f"lost the hub ({exc!r})")
        except Exception as exc:
            self._internal_error(link, exc)
        finally:
            link.close()

    def _pump(self, link: Link) -> None:
        interval = self.options.send_interval
        min_gap = self.options.send_min_gap
        wake_at = self.options.batch_events
        outbox = self._outbox
        queue = outbox.queue  # RECORD slots per item
        wake_slots = wake_at * RECORD
        last_send = 0.0
        while True:
            # Sleep until woken (first event after idle, a full batch, flush, exit); when events
            # wait but the last send was under min_gap ago, only until the gap has passed.
            timeout = interval
            if queue and not self._urgent:
                timeout = max(0.0, last_send + min_gap - time.monotonic())
            woken, messages = link.wait(timeout)
            if woken:
                outbox.woken = False
            for message in messages:
                self._on_message(message)
            finishing = self._closing or self._drain_requested
            if finishing:
                # Leave the process's state before the goodbye, not after: the hub counts this
                # producer done when it reads the goodbye, and the owner may then open a new hub
                # and tell this process so. A call made after that must find the new hub, not
                # this producer (closed for calls, however late this thread runs again).
                self._say_gone()
                outbox.close_for_puts()
            now = time.monotonic()
            if finishing or self._urgent or len(queue) >= wake_slots or now - last_send >= min_gap:
                self._urgent = False
                if queue or finishing or outbox.dropped != outbox.reported:
                    self._send_queued(link, final=finishing)
                    last_send = now
            if finishing:
                self._state = _GONE
                outbox.final_sent.set()
                with self._cond:
                    self._cond.notify_all()
                return

    def _send_queued(self, link: Link, final: bool) -> None:
        """Send what is queued now: all of it when ``final``, else a bounded round."""
        self.frames_sent += send_round(self._outbox, link, self.options, final)

    def _on_message(self, message: HubMessage) -> None:
        if message[0] == "ack":
            with self._cond:
                self._acked = max(self._acked, int(message[1]))
                self._cond.notify_all()
        elif message[0] == "drain":
            self._drain_requested = True
        elif message[0] == "sync" and not (self._closing or self._drain_requested):
            # The hub wants everything queued now on disk (rank 0 is closing the job's log): a
            # barrier behind it, answered by the hub, not acknowledged (a finishing producer's
            # goodbye answers it as well).
            self._urgent = True
            self._outbox.put_flush(int(message[1]) | SYNC_BIT)

    def _internal_error(self, link: Link | None, exc: BaseException) -> None:
        """A bug of ours in the sender thread (not the hub going away, not the user's input).

        The connection itself is still good (the failure was not in it): tell the hub what is
        dropped and say goodbye, so the count lands in the log and the run ends cleanly. Then
        this producer stops like one that lost its hub: a bug that recurs must not loop.
        """
        self._state = _GONE
        lost = self._outbox.discard()  # every later call is a counted drop until rediscovery
        if link is not None:
            try:
                last = encode_frame([(DROPS, self._outbox.dropped), (BYE,)], self._outbox)
            except Exception:
                last = b""
            link.send_last(last)
            self._outbox.unreported_drops()  # told
        warn_internal(
            f"the sender thread of process {os.getpid()}", exc,
            f"{lost} queued events dropped (counted under hyrax_tbhub/dropped/<run>); "
            "logging of this process is a no-op from now on",
        )
        self._finish_gone()

    def _finish_gone(self) -> None:
        self._ledger.close_fd()
        self.lost = True
        self._state = _GONE
        self._outbox.final_sent.set()
        with self._cond:
            self._cond.notify_all()
        self._hello.set()
        self._say_gone()

    def _say_gone(self) -> None:
        """Tell the process (once) that this producer is done: it stops being its channel."""
        if not self._gone_said:
            self._gone_said = True
            self._on_gone(self)

    def _give_up(self, why: str) -> None:
        """The transport failed: the hub went away, or the connection broke."""
        was_live = self._state == _LIVE
        self._state = _GONE
        lost = self._outbox.discard()  # every later call is a counted drop until rediscovery
        if lost or was_live or self._link.unproven:
            warn(f"hyrax_tbhub: {why}; {lost} queued events dropped, logging is a no-op from now on")
        self._finish_gone()


def producers_of_this_process() -> list[Producer]:
    """The live producers this process made (not those a fork inherited).

    Not ``list(Producer.instances)``: iterating a WeakSet raises RuntimeError when another thread
    adds to it meanwhile (a first logging call building its producer; until Python 3.14), and the
    SIGTERM flush that asks must not fail for that. Copying the set of references under it is one
    C call. A producer still in ``__init__`` may have no ``pid`` yet.
    """
    pid = os.getpid()
    # WeakSet.data, the set of weak references, is CPython's attribute since WeakSet exists;
    # typeshed does not declare it.
    refs: set[weakref.ref[Producer]] = set(Producer.instances.data)  # type: ignore[attr-defined]
    found = (ref() for ref in refs)
    return [p for p in found if p is not None and getattr(p, "pid", None) == pid]


def options_of(info: HubInfo) -> Options:
    """The hub's options; the defaults if the hub file's are not usable by this version."""
    try:
        return Options.from_wire(info.options)
    except (TypeError, ValueError) as exc:
        warn(f"hyrax_tbhub: the hub's options are not usable here ({exc}); using the defaults")
        return DEFAULT_OPTIONS


def local_start_ns(info: HubInfo) -> int:
    """The hub's start on this process's monotonic clock (the origin of *_ts steps).

    On the hub's machine the monotonic clock is shared, so it is the hub's own reading. On
    another machine only wall clocks are comparable (as well as NTP keeps them): map the hub's
    wall-clock start onto the local monotonic clock.
    """
    if not info.address.startswith("tcp:") or info.hostname == socket.gethostname():
        return info.start_ns
    return time.monotonic_ns() - (time.time_ns() - info.start_wall_ns)


