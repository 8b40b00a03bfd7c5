"""The hub: one thread in the owner process that owns every event file of a log folder.

It serves producers over a private Unix socket from a single selector loop: handshakes,
batches and acknowledgements of all producers are interleaved there, so a slow, silent or
hostile peer costs the others nothing. The owner's own calls skip the socket and enter a deque
that the same thread drains.

Layout: the owner writes the root run (``logdir`` itself); every producer process gets its own
run folder below it, because TensorBoard drops points when one (run, tag) sees steps go back
(FACTS) and several producers' steps are never ordered with each other.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import _discovery, _wire
from .._counters import RESERVED_PREFIX
from .._distributed import tune_tcp
from .._events import (
    encode_scalar,
    encode_scalar_records,
    file_version_event,
    frame,
    session_start_event,
)
from .._stderr import warn as _warn
from .._stderr import warn_internal
from .._threads import daemon_thread
from .._wire import ANSWER_LEN, CHALLENGE_LEN, MAGIC, FrameReader, WireError
from ..options import DEFAULT_OPTIONS, Options
from .guard import Guard
from .runfile import RunFile

__all__ = ["Hub", "HubConfig"]

_LOOP_INTERVAL = 0.05  # s: how often the owner's deque is drained when nobody wakes the thread
_STATS_INTERVAL = 1.0  # s: counters are written at most this often, and at close
_LOCAL_HIGH_WATER = 8192  # owner items queued before the caller helps drain them itself
_RECV_SIZE = 1 << 18


class HubConfig:
    """How one hub is set up: the user's options (shared with its producers) and file naming."""

    def __init__(self, options: Options = DEFAULT_OPTIONS, filename_suffix: str = "") -> None:
        self.options = options
        self.filename_suffix = filename_suffix


class _Run:
    """The event files of one producer (or of the owner): the run folder and its sub-runs."""

    __slots__ = ("name", "folder", "suffix", "files", "dropped", "errors")

    def __init__(self, name: str, folder: str, suffix: str) -> None:
        self.name = name
        self.folder = folder
        self.suffix = suffix
        self.files: dict[str, RunFile] = {}
        self.dropped = 0
        self.errors = 0

    def file(self, subrun: str) -> RunFile:
        f = self.files.get(subrun)
        if f is None:
            folder = os.path.join(self.folder, _safe_subpath(subrun)) if subrun else self.folder
            f = self.files[subrun] = RunFile(folder, self.suffix)
        return f

    def write_pending(self) -> None:
        for f in self.files.values():
            f.write_pending()

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def abandon(self) -> None:
        for f in self.files.values():
            f.abandon()


def _safe_subpath(subrun: str) -> str:
    # Sub-runs come from tag names (add_scalars): keep them inside the run folder.
    parts = [p for p in subrun.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return os.path.join(*parts) if parts else "_"


_NAME_BAD = re.compile(r"[^A-Za-z0-9_.\-]")
# The one nesting a run name may have: the rank a producer descends from (``rank_3/...``).
_RANK_PREFIX = re.compile(r"rank_[0-9]{1,9}/")


def _clean_run_name(name: str) -> str:
    """A run folder name that stays one level (or ``rank_<n>/`` plus one) below the log folder."""
    prefix = ""
    match = _RANK_PREFIX.match(name)
    if match is not None:
        prefix, name = match.group(0), name[match.end():]
    name = _NAME_BAD.sub("_", name)[:80].lstrip(".")
    if not name or name.startswith(RESERVED_PREFIX.rstrip("/")):
        name = "producer"
    return prefix + name


_AUTH, _LIVE = 0, 1


class _Conn:
    __slots__ = (
        "sock", "key", "checker", "state", "deadline", "challenge", "inbuf", "reader", "outbuf", "run",
        "acks", "bye",
    )

    def __init__(
        self, sock: socket.socket, deadline: float, key: bytes, checker: _wire.EventChecker | None
    ) -> None:
        self.sock = sock
        self.key = key  # the key of the listener it came through (serve_ranks may set its own)
        self.checker = checker  # parses its records too: its key was in the store
        self.state = _AUTH
        self.deadline = deadline
        self.challenge = MAGIC + secrets.token_bytes(CHALLENGE_LEN - len(MAGIC))
        self.inbuf = b""
        self.reader = FrameReader()
        self.outbuf = bytearray()
        self.run: _Run | None = None
        self.acks: list[int] = []
        self.bye = False


class Hub:
    """Owns the event files under ``logdir`` and the endpoint producers connect to."""

    def __init__(
        self, logdir: str, config: HubConfig | None = None, purge_step: int | None = None,
        root_folder: str | None = None,
    ) -> None:
        self.config = config or HubConfig()
        self.logdir = logdir
        # The owner's own run: ``logdir`` itself, or a rank's run when the hub serves one rank of
        # a job whose log folder is shared (_rank_hub.py).
        self.root_folder = logdir if root_folder is None else root_folder
        self.start_ns = time.monotonic_ns()
        self.start_wall_ns = time.time_ns()
        self.hub_id = secrets.token_hex(8)
        self.owner_pid = os.getpid()
        self._key = secrets.token_bytes(32)
        self._listener_keys: dict[socket.socket, bytes] = {}  # listeners whose key is not _key
        self._checkers: dict[socket.socket, _wire.EventChecker] = {}  # listeners of store readers
        self._guard = Guard(self.config.options.max_runs, self.config.options.max_subruns)
        self._lock = threading.RLock()
        self._local: deque[tuple[Any, ...]] = deque()
        # A rank's hub names its root run after its folder (rank_<n>): its counters then say whose.
        root_name = "root" if root_folder is None else os.path.basename(root_folder.rstrip("/"))
        self._root = _Run(root_name, self.root_folder, self.config.filename_suffix)
        root_file = self._root.file("")  # tensorboardX opens the file at construction; so do we
        if purge_step is not None:
            # As SummaryWriter: tells TensorBoard to hide earlier data at steps >= purge_step.
            root_file.add(frame(file_version_event(step=int(purge_step))))
            root_file.add(frame(session_start_event(int(purge_step))))
        self._live_names: set[str] = set()
        self._counters: dict[str, _Run] = {}  # every producer run ever seen, for its counters
        self._reported: dict[str, tuple[int, int]] = {}
        self._warned: set[str] = set()
        self.transport_errors = 0
        self.internal_errors = 0
        self.strangers_rejected = 0
        self._reported_transport = 0
        self._reported_internal = 0
        self._conns: dict[socket.socket, _Conn] = {}
        self._dirty: set[_Run] = set()
        self._closing = False
        self._closed = threading.Event()
        self._close_deadline = 0.0
        self._drain_sent = False
        self._next_housekeeping = 0.0
        self._hub_file: str | None = None
        self._close_callbacks: list[Callable[[], None]] = []
        self._aggregate: Any = None  # an _aggregate.Aggregator once aggregate() is asked for
        _raise_fd_limit()
        _discovery.remove_stale_hub_files()
        self.address = str(_discovery.runtime_dir() / f"{self.owner_pid}-{self.hub_id[:8]}.sock")
        self._listener = self._listen(self.address)
        self._listeners: list[socket.socket] = [self._listener]  # plus a TCP one for remote ranks
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, self._on_accept)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self._thread = daemon_thread(self._serve, "hyrax_tbhub-hub")

    # -- life cycle ---------------------------------------------------------------------------

    @staticmethod
    def _listen(address: str) -> socket.socket:
        try:
            os.unlink(address)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file is 0600 from birth, not after a chmod race
        try:
            sock.bind(address)
        finally:
            os.umask(old_umask)
        sock.listen(min(socket.SOMAXCONN, 4096))
        sock.setblocking(False)
        return sock

    def info(self, address: str | None = None) -> _discovery.HubInfo:
        """What a producer needs to reach this hub at ``address`` (default: the Unix socket)."""
        return _discovery.HubInfo(
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
            self._hub_file = str(_discovery.write_hub_file(self.info()))
        self._thread.start()
        if publish:
            _discovery.bump_generation()
        return self._hub_file or ""

    def close(self, timeout: float | None = None) -> None:
        """Drain every producer and the owner's queue, write counters, close all files."""
        if self._closed.is_set() or os.getpid() != self.owner_pid:
            return
        with self._lock:
            self._closing = True
            wait = self.config.options.close_timeout if timeout is None else timeout
            self._close_deadline = time.monotonic() + wait
        self.wake()
        self._thread.join(wait + 5.0)
        if self._thread.is_alive():  # pragma: no cover - the loop is bounded by the deadline
            _warn("hyrax_tbhub: the hub thread did not stop in time; some events may be missing")
        self._closed.set()
        for callback in self._close_callbacks:
            try:
                callback()
            except Exception as exc:  # withdrawing an address must not fail a close
                _warn(f"hyrax_tbhub: while closing: {exc!r}")

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in ``close()``, once every event is on disk."""
        self._close_callbacks.append(callback)

    def abandon_in_child(self) -> None:
        """After fork, in the child: drop the parent's pending bytes and our copies of its fds."""
        self._closing = True
        self._closed.set()
        self._local.clear()
        for run in [self._root, *self._counters.values()]:
            run.abandon()
        for sock in [*self._listeners, self._wake_r, self._wake_w, *self._conns]:
            try:
                sock.close()
            except OSError:
                pass
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
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((host, 0))
            sock.listen(min(socket.SOMAXCONN, 4096))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        with self._lock:
            if self._closing:
                sock.close()
                raise RuntimeError("the hub is closing")
            self._listeners.append(sock)
            if key is not None:
                self._listener_keys[sock] = key
            if checker is not None:
                self._checkers[sock] = checker
            self._sel.register(sock, selectors.EVENT_READ, self._on_accept)
        self.wake()
        bound = sock.getsockname()
        return str(bound[0]), int(bound[1])

    # -- the owner's channel ------------------------------------------------------------------

    def wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or we are closed

    def put_local(self, item: tuple[Any, ...]) -> None:
        if self._closing:
            return  # a writer object kept past close_tensorboard_logger(): a no-op, as documented
        local = self._local
        local.append(item)
        if len(local) >= _LOCAL_HIGH_WATER:
            # The owner logs faster than the hub thread gets the GIL: it does the work itself
            # rather than queue without bound or drop (nothing is lost in-process).
            with self._lock:
                if not self._closed.is_set():
                    self._drain_local_locked()
                    self._write_dirty()

    def flush_local(self, timeout: float | None) -> bool:
        if self._closed.is_set():
            return True
        done = threading.Event()
        self._local.append(("f", done))
        self.wake()
        return done.wait(timeout)

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
                            self._count_internal_error(exc)
                    now = time.monotonic()
                    try:
                        self._turn(now)
                    except Exception as exc:  # nor anything else a turn of the loop meets
                        self._dirty.clear()
                        self._count_internal_error(exc)
                    if self._closing and self._close_step(now):
                        break
        finally:
            with self._lock:
                self._finish()

    def _turn(self, now: float) -> None:
        """The work of one loop turn after reading: the owner's queue, timers, writes, acks."""
        self._drain_local_locked()
        if self._aggregate is not None:
            self._aggregate.tick(self, now)
        if now >= self._next_housekeeping:
            self._expire_handshakes(now)
            self._write_counters()
            self._next_housekeeping = now + _STATS_INTERVAL
        self._write_dirty()
        self._send_acks()

    def _on_wake(self, sock: Any, mask: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _on_accept(self, listener: Any, mask: int) -> None:
        deadline = time.monotonic() + self.config.options.handshake_timeout
        # Bounded, so a connect storm cannot starve live producers; unbounded when closing,
        # because every producer already in the backlog has events that must be collected.
        for _ in range(1 << 30 if self._closing else 64):
            try:
                conn_sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._count_transport_error("out of file descriptors")
                return
            conn_sock.setblocking(False)
            if conn_sock.family != socket.AF_UNIX:
                tune_tcp(conn_sock)  # a dead node must not hold a close up
            key = self._listener_keys.get(listener, self._key)
            conn = _Conn(conn_sock, deadline, key, self._checkers.get(listener))
            try:
                conn_sock.send(conn.challenge)
            except OSError:
                conn_sock.close()
                continue
            self._conns[conn_sock] = conn
            self._sel.register(conn_sock, selectors.EVENT_READ, self._make_handler(conn))
            self._limit_preauth()

    def _make_handler(self, conn: _Conn) -> Callable[[Any, int], None]:
        def handler(sock: Any, mask: int) -> None:
            if mask & selectors.EVENT_WRITE:
                self._send_out(conn)
            if mask & selectors.EVENT_READ:
                self._on_readable(conn)

        return handler

    def _limit_preauth(self) -> None:
        waiting = [c for c in self._conns.values() if c.state == _AUTH]
        if len(waiting) > self.config.options.max_pending_handshakes:
            oldest = min(waiting, key=lambda c: c.deadline)
            self.strangers_rejected += 1
            self._drop_conn(oldest)

    def _expire_handshakes(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.run is None and c.deadline < now]:
            if conn.state == _AUTH:
                self.strangers_rejected += 1
            else:  # proved the key, then sent no hello: the handshake deadline still holds
                self._guard.reject("a peer", "no hello before the handshake deadline")
            self._drop_conn(conn)

    def _on_readable(self, conn: _Conn) -> None:
        if conn.state == _AUTH:
            # Read no more than the answer: nothing a peer sends before it proves the key is
            # buffered beyond 64 bytes, and none of it is acted on.
            try:
                data = conn.sock.recv(ANSWER_LEN - len(conn.inbuf))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._drop_conn(conn)
                return
            conn.inbuf += data
            if len(conn.inbuf) < ANSWER_LEN:
                return
            proof = _wire.check_answer(conn.key, conn.challenge, conn.inbuf)
            if proof is None:
                self.strangers_rejected += 1
                self._drop_conn(conn)
                return
            conn.state = _LIVE
            conn.inbuf = b""
            conn.outbuf += proof  # the producer sends nothing more before it has checked this
            self._send_out(conn)
            return
        try:
            data = conn.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if conn.reader.buffered:
                # The producer died in the middle of a batch (killed); the rest of it is gone.
                self._count_transport_error(f"producer {_run_name(conn)} vanished mid-batch")
            self._end_conn(conn)
            return
        try:
            for payload in conn.reader.feed(data):
                if conn.run is None:
                    self._on_hello(conn, _wire.decode_hello(payload))
                    if conn.run is None:
                        return  # refused (and dropped) by _on_hello
                else:
                    run = conn.run
                    items = self._guard.keep_items(run.name, run.files, _wire.decode_batch(payload))
                    if conn.checker is not None:
                        conn.checker.check(items)
                    self._apply(run, conn, items)
        except WireError as exc:
            # Everything before the bad frame was applied; the bad frame and the rest of the
            # stream are not: after a framing error nothing later can be trusted to line up.
            self._guard.reject(f"producer {_run_name(conn)}", exc)
            self._end_conn(conn)
            return
        if conn.bye:
            self._end_conn(conn)

    def _on_hello(self, conn: _Conn, message: tuple[str, dict[str, Any]]) -> None:
        meta = message[1]
        base = _clean_run_name(str(meta.get("name", "producer")))
        name, n = base, 1
        while name in self._live_names:
            n += 1
            name = f"{base}-{n}"
        if not self._guard.run_allowed(len(self._counters), name not in self._counters):
            self._drop_conn(conn)
            return
        self._live_names.add(name)
        run = self._counters.get(name)
        if run is None:
            folder = os.path.join(self.logdir, name)
            run = self._counters[name] = _Run(name, folder, self.config.filename_suffix)
        else:
            run.files = {}  # a later producer of the same name starts new files in the same folder
        conn.run = run
        self._queue_out(conn, ("hello", {"run": name, "folder": os.path.abspath(run.folder)}))
        if self._drain_sent:
            self._queue_out(conn, ("drain", 0))

    def _apply(self, run: _Run, conn: _Conn | None, items: list[tuple[Any, ...]]) -> None:
        """Write one batch of a producer (or the owner) into its run, in order."""
        scalars: list[tuple[Any, ...]] = []  # consecutive scalars are encoded in one call
        for item in items:
            kind = item[0]
            if kind == "s":
                scalars.append(item)
                continue
            if scalars:
                self._write_scalars(run, scalars)
                scalars = []
            try:
                if kind == "r":  # records a producer already encoded and framed
                    self._add_records(run, item[1], item[2], item[3])
                elif kind == "e":
                    run.file(item[1]).add(frame(item[2]))
                elif kind == "f":
                    if conn is not None:
                        conn.acks.append(item[1])
                    else:
                        run.write_pending()
                        item[1].set()
                elif kind == "d":
                    run.dropped = max(run.dropped, int(item[1]))
                elif kind == "b":
                    if conn is not None:
                        conn.bye = True
                else:
                    raise ValueError(f"unknown item kind {kind!r}")
            except Exception as exc:
                self._count_error(run, exc)
        if scalars:
            self._write_scalars(run, scalars)
        self._dirty.add(run)

    def _write_scalars(self, run: _Run, scalars: list[tuple[Any, ...]]) -> None:
        if self._aggregate is not None:
            self._aggregate.scalars(scalars)
        main = run.file("")
        try:
            main.add(encode_scalar_records(scalars), len(scalars))
        except Exception:
            # Some item is malformed: keep the good ones, count the others.
            for item in scalars:
                try:
                    main.add(frame(encode_scalar(item[1], item[2], item[3], item[4])))
                except Exception as exc:
                    self._count_error(run, exc)

    def _add_records(self, run: _Run, subrun: str, blob: bytes, count: int) -> None:
        if self._aggregate is not None and not subrun:
            self._aggregate.records(blob)
        try:
            run.file(subrun).add(blob, count)
            return
        except Exception:
            pass
        # Something refused the batch (a folder that cannot be created, a record the file
        # will not take): keep every record it will take, count the others.
        for record in _split_records(blob):
            try:
                run.file(subrun).add(record)
            except Exception as exc:
                self._count_error(run, exc)

    def _count_error(self, run: _Run, exc: BaseException, n: int = 1) -> None:
        run.errors += n
        if run.name not in self._warned:
            self._warned.add(run.name)
            _warn(f"hyrax_tbhub: an event of run {run.name!r} could not be written ({exc!r}); "
                  f"counted under {RESERVED_PREFIX}errors/{run.name}")

    def _drain_local_locked(self) -> None:
        local = self._local
        n = len(local)
        if not n:
            return
        pop = local.popleft
        self._apply(self._root, None, [pop() for _ in range(n)])

    def _write_dirty(self) -> None:
        for run in self._dirty:
            try:
                run.write_pending()
            except Exception as exc:  # a full disk, or worse: that run's batch, not the hub
                self._count_error(run, exc)
        self._dirty.clear()

    def _send_acks(self) -> None:
        for conn in list(self._conns.values()):
            if conn.acks:
                for seq in conn.acks:
                    self._queue_out(conn, ("ack", seq))
                conn.acks.clear()

    def _queue_out(self, conn: _Conn, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ack":
            conn.outbuf += _wire.pack_ack(message[1])
        elif kind == "drain":
            conn.outbuf += _wire.pack_drain(message[1])
        else:
            conn.outbuf += _wire.pack_welcome(message[1]["run"], message[1]["folder"])
        self._send_out(conn)

    def _send_out(self, conn: _Conn) -> None:
        # Never block on a producer: what the socket does not take now waits for EVENT_WRITE.
        try:
            while conn.outbuf:
                sent = conn.sock.send(conn.outbuf)
                del conn.outbuf[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            conn.outbuf.clear()
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        try:
            if self._sel.get_key(conn.sock).events != want:
                self._sel.modify(conn.sock, want, self._sel.get_key(conn.sock).data)
        except (KeyError, ValueError):
            pass

    def _end_conn(self, conn: _Conn) -> None:
        """A producer said goodbye or went away: finish its files and free its run name."""
        run = conn.run
        if run is not None:
            try:
                run.close()
            except OSError as exc:  # the disk, not the connection: an error of that run's files
                self._count_error(run, exc)
            self._live_names.discard(run.name)
            self._dirty.discard(run)
        self._drop_conn(conn)

    def _drop_conn(self, conn: _Conn) -> None:
        self._conns.pop(conn.sock, None)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        try:
            conn.sock.close()
        except OSError:
            pass

    def _close_step(self, now: float) -> bool:
        """One step of closing; True once every producer is done or the deadline passed."""
        if not self._drain_sent:
            self._drain_sent = True
            for listener in self._listeners:  # producers already in the backlogs
                self._on_accept(listener, selectors.EVENT_READ)
            self._stop_listening()
            for conn in list(self._conns.values()):
                if conn.run is not None:
                    self._queue_out(conn, ("drain", 0))
        live = [c for c in self._conns.values() if c.state == _LIVE or c.deadline > now]
        return not live or now >= self._close_deadline

    def _stop_listening(self) -> None:
        for listener in self._listeners:
            try:
                self._sel.unregister(listener)
            except (KeyError, ValueError):
                pass
            listener.close()
        for path in (self.address, self._hub_file):
            if path:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def _finish(self) -> None:
        if not self._drain_sent:
            self._drain_sent = True
            self._stop_listening()
        for conn in list(self._conns.values()):
            if conn.state == _LIVE:
                self._count_transport_error(f"producer {_run_name(conn)} did not finish before close")
                self._end_conn(conn)
            else:
                self._drop_conn(conn)
        self._drain_local_locked()
        if self._aggregate is not None:
            self._aggregate.tick(self, None)
        self._write_counters()
        self._write_dirty()
        for run in [self._root, *self._counters.values()]:
            try:
                run.close()
            except OSError:
                pass
        for sock in (self._wake_r, self._wake_w):
            sock.close()
        self._sel.close()

    # -- counters -------------------------------------------------------------------------------

    def _count_internal_error(self, exc: BaseException) -> None:
        """A bug of the hub itself: counted apart from transport failures, said once with its
        traceback so that it can be reported."""
        self.internal_errors += 1
        if self.internal_errors == 1:
            warn_internal("the hub thread", exc, f"further internal errors are counted under "
                          f"{RESERVED_PREFIX}internal_errors")

    def _count_transport_error(self, what: str) -> None:
        self.transport_errors += 1
        if self.transport_errors == 1:
            _warn(f"hyrax_tbhub: {what} (further transport errors are counted under "
                  f"{RESERVED_PREFIX}transport_errors)")

    def _write_counters(self) -> None:
        step = (time.monotonic_ns() - self.start_ns) // 1000
        wall = time.time()
        root_file = self._root.file("")
        for run in [self._root, *self._counters.values()]:
            now = (run.dropped, run.errors)
            if now == self._reported.get(run.name, (0, 0)):
                continue
            self._reported[run.name] = now
            for kind, value in (("dropped", run.dropped), ("errors", run.errors)):
                root_file.add(frame(encode_scalar(f"{RESERVED_PREFIX}{kind}/{run.name}", value, step, wall)))
            if run.dropped and ("drop:" + run.name) not in self._warned:
                self._warned.add("drop:" + run.name)
                _warn(f"hyrax_tbhub: producer {run.name!r} dropped {run.dropped} events (its buffer was "
                      f"full); the count is logged as {RESERVED_PREFIX}dropped/{run.name}")
        for tag, value in self._guard.changed(self.strangers_rejected):
            root_file.add(frame(encode_scalar(tag, value, step, wall)))
        if self.transport_errors != self._reported_transport:
            self._reported_transport = self.transport_errors
            tag = f"{RESERVED_PREFIX}transport_errors"
            root_file.add(frame(encode_scalar(tag, self.transport_errors, step, wall)))
        if self.internal_errors != self._reported_internal:
            self._reported_internal = self.internal_errors
            tag = f"{RESERVED_PREFIX}internal_errors"
            root_file.add(frame(encode_scalar(tag, self.internal_errors, step, wall)))
        self._dirty.add(self._root)


def _split_records(blob: bytes) -> list[bytes]:
    """The framed records of a batch, each with its own framing (length, CRCs)."""
    records = []
    offset = 0
    while offset + 12 <= len(blob):
        (length,) = struct.unpack_from("<Q", blob, offset)
        end = offset + 12 + length + 4
        records.append(blob[offset:end])
        offset = end
    return records


def _run_name(conn: _Conn) -> str:
    return repr(conn.run.name) if conn.run is not None else "(before hello)"


def _raise_fd_limit() -> None:
    # Hundreds of producers each hold a socket; the common soft limit of 1024 is too tight.
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 65536
        target = min(target, 65536)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass
