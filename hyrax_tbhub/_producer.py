"""The channel of every process that is not the owner: buffer calls, ship them from a thread.

A logging call only appends a tuple to a deque (bounded; overflow is counted, never blocks).
A daemon thread connects, authenticates the hub (and itself), and sends the deque in batches of
the binary format of :mod:`._wire`; it also reads
the hub's acknowledgements (for ``flush()``) and its drain request (the hub is closing).

Each process has its own socket, so a producer killed mid-send corrupts only its own stream and
never holds a lock another process needs: the failure that wedges a shared
``multiprocessing.Queue`` (FACTS) cannot happen here.
"""

from __future__ import annotations

import os
import secrets
import selectors
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _wire
from ._channel import import_capture_writer
from ._discovery.hubfile import HubInfo
from ._events import encode_batch
from ._naming import producer_name
from ._util.net import tune_tcp
from ._util.stderr import warn as _warn
from ._util.stderr import warn_internal
from ._util.threads import daemon_thread
from ._wire import (
    CHALLENGE_LEN,
    MAGIC,
    MAX_HUB_FRAME,
    NONCE_LEN,
    PROOF_LEN,
    AuthError,
    FrameReader,
    WireError,
)
from .options import DEFAULT_OPTIONS, Options

if TYPE_CHECKING:
    from ._capture import CaptureWriter

__all__ = ["Producer"]


_CONNECTING, _LIVE, _GONE = 0, 1, 2
_SEND_BYTES = 4 * 1024 * 1024  # bytes of frames handed to one sendall

# poll(2) where there is one: no descriptor of its own (nothing to leak into a fork child) and,
# unlike select(2), no limit on descriptor numbers (FACTS: select.select raises ValueError for a
# descriptor >= 1024, which a process holding many files or shared tensors easily reaches).
_Selector: type[selectors.BaseSelector] = getattr(selectors, "PollSelector", selectors.DefaultSelector)


class _ProtocolError(Exception):
    """The hub's bytes could not be read as messages: the transport, not our code, failed."""


# What "the hub went away or the connection broke" looks like; anything else the sender thread
# meets is a bug of ours (an internal error) and is reported as one.
_TRANSPORT_ERRORS = (OSError, EOFError, _ProtocolError, WireError)


class Producer:
    """Ships this process's events to the hub described by ``info``."""

    #: Every producer of this process (a fork child abandons all the parent's, published or not).
    instances: weakref.WeakSet[Producer] = weakref.WeakSet()

    def __init__(self, info: HubInfo, on_gone: Callable[[Producer], None]) -> None:
        Producer.instances.add(self)
        self.info = info
        self.start_ns = _local_start_ns(info)
        self.pid = os.getpid()
        self.options = options_of(info)
        self._max_events = self.options.queue_max_events
        self._wake_at = self.options.batch_events
        self._dq: deque[tuple[Any, ...]] = deque()
        self._queued_bytes = 0
        self.dropped = 0
        self._reported_dropped = 0
        self._state = _CONNECTING
        self._on_gone = on_gone
        self._cond = threading.Condition()
        self._seq = 0
        self._acked = 0
        self._closing = False
        self._drain_requested = False
        self._folder: str | None = None
        self.run_name: str | None = None
        self._hello = threading.Event()
        self._writer: CaptureWriter | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._woken = False
        self._warned: set[str] = set()
        self.lost = False  # True when the hub went away without a clean drain
        self._closed_for_puts = False
        self._final_sent = threading.Event()  # set once this producer sends nothing more
        self._urgent = False
        self.after_close = 0  # calls that arrived after this producer's final batch
        self._name = producer_name()
        self._reader = FrameReader(MAX_HUB_FRAME)
        self._unproven = False  # the endpoint failed to prove the key: say so even if idle
        # connect() runs here, in the first logging call: it completes as soon as the kernel
        # queues us in the hub's backlog, and a closing hub accepts its whole backlog. So every
        # event logged after this returns reaches a hub that closes later, even if the sender
        # thread has not run yet. The handshake itself is left to the thread.
        self._sock: socket.socket | None = None
        try:
            self._sock = _connect(info.address, timeout=1.0)
        except OSError as exc:
            self._connect_error: Exception | None = exc
        else:
            self._connect_error = None
        self._thread = daemon_thread(self._serve, "hyrax_tbhub-producer")

    def start(self) -> None:
        """Start the sender thread: only once the process state points at this producer, or a
        hub closing right after the handshake would retire it before it is published."""
        self._thread.start()

    # -- called from logging threads -----------------------------------------------------------

    def put_scalar(self, tag: str, value: float, step: int | None, wall_time: float) -> None:
        dq = self._dq
        n = len(dq)
        if n < self._max_events:
            dq.append(("s", tag, value, step, wall_time))
            # Wake the sender for the first event after idle (so an event is on its way within
            # about a millisecond, before a pool's terminate() can kill us) and for a full batch.
            if (n == 0 or n + 1 >= self._wake_at) and not self._woken:
                self._wake()
        else:
            self._drop()

    def put_event(self, subrun: str, data: bytes) -> None:
        dq = self._dq
        size = len(data)
        if size > self.options.queue_max_bytes:
            self._drop(1, f"an event of {size} bytes is larger than Options.queue_max_bytes "
                          f"({self.options.queue_max_bytes} bytes)")
            return
        if len(dq) < self._max_events and self._queued_bytes + size <= self.options.queue_max_bytes:
            self._queued_bytes += size
            n = len(dq)
            dq.append(("e", subrun, data))
            if (n == 0 or n + 1 >= self._wake_at) and not self._woken:
                self._wake()
        else:
            self._drop()

    def flush(self, timeout: float | None = None) -> bool:
        if self._state == _GONE:
            return False
        with self._cond:
            self._seq += 1
            seq = self._seq
        self._dq.append(("f", seq))
        self._urgent = True  # a waiting caller: send now, not at the next batching gap
        self._wake()
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
        self._closing = True
        self._wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(self.options.exit_timeout if timeout is None else timeout)
        if self._thread.is_alive():
            _warn(f"hyrax_tbhub: {len(self._dq)} events of this process were not sent before exit")

    @property
    def alive(self) -> bool:
        return self._state != _GONE

    def abandon_in_child(self) -> None:
        """After fork, in the child: close our copies of the parent's sockets.

        Left open, the child's copy would keep the parent's connection alive after the parent
        dies, and a closing hub would wait for a goodbye that never comes.
        """
        self._state = _GONE
        self._max_events = -1
        dq = getattr(self, "_dq", None)
        if dq is not None:
            dq.clear()
        # getattr: the fork may have come while another thread was still in __init__.
        for name in ("_sock", "_wake_r", "_wake_w"):
            sock = getattr(self, name, None)
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass

    # -- internals ----------------------------------------------------------------------------

    def _wake(self) -> None:
        self._woken = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def _refuse_after_close(self) -> None:
        self._max_events = -1
        self._closed_for_puts = True

    def _drop(self, n: int = 1, why: str = "") -> None:
        if self._closed_for_puts:
            self.after_close += n  # logged after close: a no-op by design, not a loss to report
            if not self._final_sent.is_set():
                # The sender is sending the final batch, which a close waits for. A caller that
                # logs flat out holds the GIL that the sender needs: each time it takes the GIL
                # back, the sender waits for the OS to run it again (on a loaded machine, many
                # milliseconds each time). So a call made in that window waits, letting go of
                # the GIL, until the final batch is out; bounded by Options.final_batch_wait per call.
                self._final_sent.wait(self.options.final_batch_wait)
            return
        self.dropped += n
        if not self.dropped & 1023:
            # A caller that outruns the hub spins here holding the GIL, and the sender thread,
            # the one that could empty the queue, waits for it: hand it over now and then.
            time.sleep(0)
        if self._state == _GONE:
            return  # the hub is gone, which was said once already ("lost the hub", ...)
        reason = why or "it logs faster than the hub writes (its queue is full)"
        key = reason.split("(")[0]
        if key not in self._warned:
            self._warned.add(key)
            _warn(f"hyrax_tbhub: process {os.getpid()} dropped an event: {reason}; "
                  "drops are counted under hyrax_tbhub/dropped/<run>")

    def _handshake(self) -> socket.socket:
        sock = self._sock
        if sock is None:
            raise ConnectionError(str(self._connect_error))
        try:
            sock.settimeout(self.options.connect_timeout)
            challenge = _recv_exact(sock, CHALLENGE_LEN)
            if not challenge.startswith(MAGIC):
                raise AuthError("the endpoint is not a hyrax_tbhub hub of this version")
            nonce = secrets.token_bytes(NONCE_LEN)
            sock.sendall(_wire.producer_answer(self.info.key, challenge, nonce))
            # Nothing else goes out, and nothing that comes in is read as a frame, until the
            # hub proved the key too: whoever answers at a stale or forged address gets
            # neither our events nor our name.
            _wire.check_proof(self.info.key, challenge, nonce, _recv_exact(sock, PROOF_LEN))
            sock.sendall(_wire.pack_hello(self._name, os.getpid()))
            reader = self._reader = FrameReader(MAX_HUB_FRAME)
            frames: list[bytes] = []
            while not frames:
                frames = reader.feed(_recv_some(sock))
            kind, meta = _wire.decode_hub_message(frames[0])
            if kind != "hello":
                raise ConnectionError("unexpected reply from the hub")
            self._folder = str(meta["folder"])
            self.run_name = str(meta["run"])
            for extra in frames[1:]:
                self._on_message(_wire.decode_hub_message(extra))
            sock.settimeout(None)
            return sock
        except AuthError:
            self._unproven = True
            sock.close()
            raise
        except BaseException:
            sock.close()
            raise

    def _serve(self) -> None:
        try:
            self._serve_connection()
        except Exception as exc:  # the last guard: a sender thread never dies of a traceback
            self._internal_error(None, exc)

    def _serve_connection(self) -> None:
        try:
            sock = self._handshake()
        except _TRANSPORT_ERRORS as exc:
            self._hello.set()
            self._give_up(f"cannot reach the hub at {self.info.address} ({exc!r})")
            return
        except Exception as exc:
            self._hello.set()
            self._internal_error(None, exc)
            return
        self._state = _LIVE
        self._hello.set()
        reader = self._reader  # it may hold the start of a frame that followed the hub's hello
        try:
            self._pump(sock, reader)
        except _TRANSPORT_ERRORS as exc:
            self._give_up(f"lost the hub ({exc!r})")
        except Exception as exc:
            self._internal_error(sock, exc)
        finally:
            sock.close()

    def _pump(self, sock: socket.socket, reader: FrameReader) -> None:
        sel = _Selector()
        try:
            sel.register(sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            self._pump_with(sel, sock, reader)
        finally:
            sel.close()

    def _pump_with(self, sel: selectors.BaseSelector, sock: socket.socket, reader: FrameReader) -> None:
        interval = self.options.send_interval
        min_gap = self.options.send_min_gap
        dq = self._dq
        wake_r = self._wake_r
        last_send = 0.0
        while True:
            # Sleep until woken (first event after idle, a full batch, flush, exit); when events
            # wait but the last send was under min_gap ago, only until the gap has passed.
            timeout = interval
            if dq and not self._urgent:
                timeout = max(0.0, last_send + min_gap - time.monotonic())
            readable = [key.fileobj for key, _mask in sel.select(timeout)]
            if wake_r in readable:
                self._woken = False
                try:
                    while wake_r.recv(4096):
                        pass
                except OSError:
                    pass
            if sock in readable:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("the hub closed the connection")
                try:
                    for payload in reader.feed(data):
                        self._on_message(_wire.decode_hub_message(payload))
                except WireError as exc:
                    raise _ProtocolError(f"unreadable message from the hub: {exc!r}") from exc
            finishing = self._closing or self._drain_requested
            if finishing:
                # From here on calls are refused (counted in after_close), so nothing can land in
                # the queue behind the final batch and stay there, neither sent nor counted.
                self._refuse_after_close()
            now = time.monotonic()
            if finishing or self._urgent or len(dq) >= self._wake_at or now - last_send >= min_gap:
                self._urgent = False
                if dq or finishing or self.dropped != self._reported_dropped:
                    self._send_queued(sock, final=finishing)
                    last_send = now
            if finishing:
                self._state = _GONE
                self._final_sent.set()
                with self._cond:
                    self._cond.notify_all()
                self._on_gone(self)
                return

    def _send_queued(self, sock: socket.socket, final: bool) -> None:
        dq = self._dq
        pop = dq.popleft
        batch_max = self.options.batch_events
        frame_bytes = self.options.batch_bytes
        # Send what is queued now, not what keeps arriving: a caller logging flat out must not
        # keep a flush, a drain or an exit waiting. Later events go with the next round (or,
        # after a final round, nowhere: they were logged after close).
        remaining = len(dq)
        if not final:
            # Bounded, so the loop soon looks at the hub's messages again (a drain request must
            # not wait behind a whole backlog of a flooding caller).
            remaining = min(remaining, batch_max * 16)
        frames: list[bytes] = []
        size_out = 0
        while True:
            # Up to batch_max events and about Options.batch_bytes of pre-encoded events per frame: the
            # hub holds a frame whole while reading it, so large events must not make it huge.
            if self._queued_bytes <= 0:  # scalars only: nothing large, take a full batch at once
                n = min(remaining, batch_max)
                remaining -= n
                batch = [pop() for _ in range(n)]
                for item in batch:
                    if item[0] == "e":  # one may have arrived since the check
                        self._queued_bytes -= len(item[2])
            else:
                batch = []
                size = 0
                while remaining and len(batch) < batch_max and size < frame_bytes:
                    item = pop()
                    remaining -= 1
                    if item[0] == "e":
                        size += len(item[2])
                        self._queued_bytes -= len(item[2])
                    batch.append(item)
            if self.dropped != self._reported_dropped:
                self._reported_dropped = self.dropped
                batch.append(("d", self.dropped))
            if final and remaining == 0:
                batch.append(("b",))
            if batch:
                frames.append(self._encode(batch))
                size_out += len(frames[-1])
            # Frames go out several at a time: each sendall lets go of the GIL, and a thread that
            # logs flat out takes it at once, so each one costs this thread a whole switch
            # interval (5 ms, far more on a loaded machine) before it runs again. One sendall per
            # few MiB, not per frame, is what keeps a drain of a full queue short.
            if frames and (remaining == 0 or size_out >= _SEND_BYTES):
                sock.sendall(b"".join(frames) if len(frames) > 1 else frames[0])
                frames.clear()
                size_out = 0
            if remaining == 0:
                return

    def _encode(self, batch: list[tuple[Any, ...]]) -> bytes:
        # Encoding here, not in the hub, spreads it over every producer's CPU time.
        try:
            return b"".join(_wire.pack_batch(encode_batch(batch)))
        except Exception:
            pass
        # One malformed item (a value of a type the fast path let through, an event larger than
        # a frame) must cost only itself: encode one by one, drop and count the ones that fail.
        good: list[tuple[Any, ...]] = []
        for item in batch:
            try:
                _wire.pack_batch(encode_batch([item]))
            except Exception as exc:
                self._drop(1, f"an event could not be encoded ({exc!r})")
                continue
            good.append(item)
        if self.dropped != self._reported_dropped:
            self._reported_dropped = self.dropped
            good.append(("d", self.dropped))
        return b"".join(_wire.pack_batch(encode_batch(good)))

    def _on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ack":
            with self._cond:
                self._acked = max(self._acked, int(message[1]))
                self._cond.notify_all()
        elif kind == "drain":
            self._drain_requested = True

    def _internal_error(self, sock: socket.socket | None, exc: BaseException) -> None:
        """A bug of ours in the sender thread (not the hub going away, not the user's input).

        The connection itself is still good (the failure was not in it): tell the hub what is
        dropped and say goodbye, so the count lands in the log and the run ends cleanly. Then
        this producer stops like one that lost its hub: a bug that recurs must not loop.
        """
        lost = self._discard_queue()
        if sock is not None:
            try:
                sock.settimeout(2.0)  # the hub may be busy; never wait on it for long here
                sock.sendall(self._encode([("d", self.dropped), ("b",)]))
                self._reported_dropped = self.dropped
            except Exception:
                pass
        warn_internal(
            f"the sender thread of process {os.getpid()}", exc,
            f"{lost} queued events dropped (counted under hyrax_tbhub/dropped/<run>); "
            "logging of this process is a no-op from now on",
        )
        self._finish_gone()

    def _discard_queue(self) -> int:
        self._state = _GONE
        self._max_events = -1  # every later put is a counted drop until the process rediscovers
        lost = sum(1 for item in self._dq if item[0] in ("s", "e"))
        self._dq.clear()
        self.dropped += lost
        return lost

    def _finish_gone(self) -> None:
        self.lost = True
        self._state = _GONE
        self._final_sent.set()
        with self._cond:
            self._cond.notify_all()
        self._hello.set()
        self._on_gone(self)

    def _give_up(self, why: str) -> None:
        """The transport failed: the hub went away, or the connection broke."""
        was_live = self._state == _LIVE
        lost = self._discard_queue()
        if lost or was_live or self._unproven:
            _warn(f"hyrax_tbhub: {why}; {lost} queued events dropped, logging is a no-op from now on")
        self._finish_gone()


def _connect(address: str, timeout: float) -> socket.socket:
    """Connect to a hub address: a Unix socket path, or ``tcp:HOST:PORT`` for remote ranks."""
    if address.startswith("tcp:"):
        host, port = address[4:].rsplit(":", 1)
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        tune_tcp(sock)  # issue 10: a dead rank 0 host is noticed within seconds
        return sock
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def options_of(info: HubInfo) -> Options:
    """The hub's options; the defaults if the hub file's are not usable by this version."""
    try:
        return Options.from_wire(info.options)
    except (TypeError, ValueError) as exc:
        _warn(f"hyrax_tbhub: the hub's options are not usable here ({exc}); using the defaults")
        return DEFAULT_OPTIONS


def _local_start_ns(info: HubInfo) -> int:
    """The hub's start on this process's monotonic clock (the origin of *_ts steps).

    On the hub's machine the monotonic clock is shared, so it is the hub's own reading. On
    another machine only wall clocks are comparable (as well as NTP keeps them): map the hub's
    wall-clock start onto the local monotonic clock.
    """
    if not info.address.startswith("tcp:") or info.hostname == socket.gethostname():
        return info.start_ns
    return time.monotonic_ns() - (time.time_ns() - info.start_wall_ns)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the hub closed the connection during the handshake")
        buf += chunk
    return buf


def _recv_some(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("the hub closed the connection")
    return chunk
