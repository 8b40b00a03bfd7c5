"""The hub thread: one selector loop serving every producer, and the owner's own queue.

Sockets live only here. Producers connect to a private Unix socket (ranks on other machines to a
TCP one as well, :func:`hyrax_tbhub.serve_ranks`); handshakes, batches and acknowledgements of
all of them are interleaved in one loop, so a slow, silent or hostile peer costs the others
nothing. The owner's own calls skip the socket and enter a deque that the same thread drains.
What a batch does to the files is the store's business (:mod:`.store`); the bytes are
:mod:`.._wire`'s grammar. A connection, as the hub sees it::

    state          reads                  sends                     then
    auth           <= ANSWER_LEN bytes    CHALLENGE (at accept)     key proven: PROOF, -> live;
                                                                    else cut (``strangers``)
    live, no run   one HELLO frame        WELCOME (+ DRAIN)         the store gives it a run; else
                                                                    cut (over ``max_runs``)
    live, run      BATCH frames           ACK per flush item,       goodbye or EOF: its run ends;
                                          DRAIN when closing        a bad frame: cut (``rejected``)

A connection with no run at its handshake deadline (``Options.handshake_timeout``) is cut.
"""

from __future__ import annotations

import errno
import functools
import os

# At import, not in _raise_fd_limit: a rank's own hub starts on a logging call or on the rank
# watch thread, where an import could leave its lock held in a child forked meanwhile (FACTS).
import resource
import secrets
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import _wire
from .._discovery import hubfile
from .._util.net import tune_tcp
from .._util.stderr import warn
from .._util.threads import daemon_thread
from .._wire import ANSWER_LEN, CHALLENGE_LEN, MAGIC, FrameReader, WireError
from ..options import DEFAULT_OPTIONS, Options
from .store import Run, Store

__all__ = ["Hub", "HubConfig"]

_LOOP_INTERVAL = 0.05  # s: how often the owner's deque is drained when nobody wakes the thread
_EXPIRY_INTERVAL = 1.0  # s: between looks for handshakes past their deadline (seconds long)
_LOCAL_HIGH_WATER = 8192  # owner items queued before the caller waits for the hub thread
_LOCAL_WAIT = 5.0  # s: the most a call waits for a hub thread that does not drain (a wedged hub: a bug)
_RECV_SIZE = 1 << 18  # bytes per recv: several full batches of a busy producer in one call
_ACCEPT_BATCH = 64  # accepts per wake-up, so a connect storm cannot starve live producers
_BACKLOG = min(socket.SOMAXCONN, 4096)  # hundreds of workers may connect at once at start


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
        self._local: deque[tuple[Any, ...]] = deque()
        self._closing = False
        self._closed = threading.Event()
        self._close_deadline = 0.0
        self._next_expiry = 0.0
        self._hub_file: str | None = None
        self._close_callbacks: list[Callable[[], None]] = []
        #: Where the owner's calls go once the hub closes at exit (_process/late.py); None: no-ops.
        self.late: Callable[[tuple[Any, ...]], None] | None = None
        _raise_fd_limit()
        hubfile.remove_stale_hub_files()
        self.address = str(hubfile.runtime_dir() / f"{self.owner_pid}-{self.hub_id[:8]}.sock")
        self._sel = selectors.DefaultSelector()  # epoll where there is one: fds >= 1024 (FACTS)
        self._waker = _Waker(self._sel)
        self._peers = _Peers(self._sel, self.store, self._key, options)
        self._peers.add_listener(_unix_listener(self.address))
        self._conns = self._peers.conns  # the live connections; tests wait on it
        self._thread = daemon_thread(self._serve, "hyrax_tbhub-hub")

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
        with self._lock:
            self._closing = True
            wait = self.config.options.close_timeout if timeout is None else timeout
            self._close_deadline = time.monotonic() + wait
        self.wake()
        self._thread.join(wait + 5.0)
        if self._thread.is_alive():  # pragma: no cover - the loop is bounded by the deadline
            warn("hyrax_tbhub: the hub thread did not stop in time; some events may be missing")
        self._closed.set()
        late = self.late
        while late is not None and self._local:  # appended while the last drain ran
            late(self._local.popleft())
        for callback in self._close_callbacks:
            try:
                callback()
            except Exception as exc:  # withdrawing an address must not fail a close
                warn(f"hyrax_tbhub: while closing: {exc!r}")

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
        sock = _tcp_listener(host)
        with self._lock:
            if self._closing:
                sock.close()
                raise RuntimeError("the hub is closing")
            self._peers.add_listener(sock, key, checker)
        self.wake()
        bound = sock.getsockname()
        return str(bound[0]), int(bound[1])

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

    @property
    def strangers_rejected(self) -> int:
        """Connections cut before they proved the key."""
        return self.store.guard.strangers

    # -- the owner's channel ------------------------------------------------------------------

    def wake(self) -> None:
        self._waker.wake()

    def put_local(self, item: tuple[Any, ...]) -> None:
        if self._closing:
            late = self.late
            if late is not None:
                late(item)  # the owner's exit flush: the call still goes to the log
            return  # a writer object kept past close_tensorboard_logger(): a no-op, as documented
        local = self._local
        local.append(item)
        if len(local) >= _LOCAL_HIGH_WATER:
            self._wait_for_drain()

    def _wait_for_drain(self) -> None:
        """The owner logs faster than the hub thread gets the GIL: wait (letting go of the GIL)
        until the hub thread has written what is queued, rather than queue without bound.

        Only the hub thread ever takes from the owner's queue. A caller that drained it itself
        could be cut between taking a batch and writing it by an exception raised between two
        bytecodes of its own thread (Ctrl-C's KeyboardInterrupt: thousands of returned calls
        lost), or re-entered by a signal handler that logs (which emptied the queue under the
        interrupted drain: IndexError). Here an interrupt only cuts the wait: what a call
        appended is written whatever the caller's thread does next.
        """
        thread = self._thread
        if thread.ident == threading.get_ident() or not thread.is_alive():
            return  # the hub thread drains at its next turn; a hub not started has no thread yet
        self.flush_local(_LOCAL_WAIT)

    def flush_local(self, timeout: float | None) -> bool:
        if self._closed.is_set():
            return True
        done = threading.Event()
        self._local.append(("f", done))
        self.wake()
        return done.wait(timeout)

    def _drain_local(self) -> None:
        local = self._local
        n = len(local)
        if not n:
            return
        pop = local.popleft
        controls = self.store.write(self.store.root, [pop() for _ in range(n)])
        if controls:  # the owner's flushes: each waits until what it logged before is written
            self.store.write_pending()
            for item in controls:
                item[1].set()

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
        self._drain_local()
        self.store.tick(now)
        if now >= self._next_expiry:
            self._peers.expire_handshakes(now)
            self._next_expiry = now + _EXPIRY_INTERVAL
        self.store.write_pending()
        self._peers.send_acks()  # after the write: an ack says the OS has every record before it

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
        self._drain_local()
        self.store.close()
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


_AUTH, _LIVE = 0, 1


class _Conn:
    """One peer: where it is in the handshake, its buffers, its run once it said hello."""

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
        self.run: Run | None = None
        self.acks: list[int] = []  # flush items read this turn, acknowledged once written
        self.bye = False


class _Peers:
    """The listeners and connections of one hub: accepting, handshakes, frames in, replies out."""

    def __init__(self, sel: selectors.BaseSelector, store: Store, key: bytes, options: Options) -> None:
        self._sel = sel
        self._store = store
        self._key = key
        self._handshake_timeout = options.handshake_timeout
        self._max_pending = options.max_pending_handshakes
        self._listeners: list[socket.socket] = []
        self._keys: dict[socket.socket, bytes] = {}  # listeners whose key is not the hub's
        self._checkers: dict[socket.socket, _wire.EventChecker] = {}  # listeners of store readers
        self.conns: dict[socket.socket, _Conn] = {}
        self.draining = False  # close began: producers are told to send what they hold and leave

    def add_listener(
        self, sock: socket.socket, key: bytes | None = None, checker: _wire.EventChecker | None = None
    ) -> None:
        self._listeners.append(sock)
        if key is not None:
            self._keys[sock] = key
        if checker is not None:
            self._checkers[sock] = checker
        self._sel.register(sock, selectors.EVENT_READ, self._on_accept)

    # -- accepting and handshakes -----------------------------------------------------------------

    def _on_accept(self, listener: Any, mask: int) -> None:
        self._accept(listener, _ACCEPT_BATCH)

    def _accept(self, listener: socket.socket, limit: int) -> None:
        deadline = time.monotonic() + self._handshake_timeout
        for _ in range(limit):
            try:
                conn_sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._store.count_transport_error("out of file descriptors")
                return
            conn_sock.setblocking(False)
            if conn_sock.family != socket.AF_UNIX:
                tune_tcp(conn_sock)  # a dead node must not hold a close up
            key = self._keys.get(listener, self._key)
            conn = _Conn(conn_sock, deadline, key, self._checkers.get(listener))
            try:
                conn_sock.send(conn.challenge)
            except OSError:
                conn_sock.close()
                continue
            self.conns[conn_sock] = conn
            self._sel.register(conn_sock, selectors.EVENT_READ, functools.partial(self._on_event, conn))
            self._limit_pending()

    def _limit_pending(self) -> None:
        waiting = [c for c in self.conns.values() if c.state == _AUTH]
        if len(waiting) > self._max_pending:
            self._store.guard.stranger()
            self._drop(min(waiting, key=lambda c: c.deadline))

    def expire_handshakes(self, now: float) -> None:
        for conn in [c for c in self.conns.values() if c.run is None and c.deadline < now]:
            if conn.state == _AUTH:
                self._store.guard.stranger()
            else:  # proved the key, then sent no hello: the handshake deadline still holds
                self._store.guard.reject("a peer", "no hello before the handshake deadline")
            self._drop(conn)

    def _on_event(self, conn: _Conn, sock: Any, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush_out(conn)
        if mask & selectors.EVENT_READ:
            if conn.state == _AUTH:
                self._read_answer(conn)
            else:
                self._read_frames(conn)

    def _read_answer(self, conn: _Conn) -> None:
        # Read no more than the answer: nothing a peer sends before it proves the key is
        # buffered beyond 64 bytes, and none of it is acted on.
        try:
            data = conn.sock.recv(ANSWER_LEN - len(conn.inbuf))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.inbuf += data
        if len(conn.inbuf) < ANSWER_LEN:
            return
        proof = _wire.check_answer(conn.key, conn.challenge, conn.inbuf)
        if proof is None:
            self._store.guard.stranger()
            self._drop(conn)
            return
        conn.state = _LIVE
        conn.inbuf = b""
        self._send(conn, proof)  # the producer sends nothing more before it has checked this

    # -- frames ---------------------------------------------------------------------------------

    def _read_frames(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if conn.reader.buffered:
                # The producer died in the middle of a batch (killed); the rest of it is gone.
                self._store.count_transport_error(f"producer {_who(conn)} vanished mid-batch")
            self._end(conn)
            return
        store = self._store
        try:
            for payload in conn.reader.feed(data):
                run = conn.run
                if run is None:
                    if not self._on_hello(conn, _wire.decode_hello(payload)):
                        return
                    continue
                items = store.admit(run, _wire.decode_batch(payload))
                if conn.checker is not None:
                    conn.checker.check(items)
                for control in store.write(run, items):
                    if control[0] == "f":
                        conn.acks.append(control[1])
                    else:  # "b": the producer said goodbye, after everything it logged
                        conn.bye = True
        except WireError as exc:
            # Everything before the bad frame was applied; the bad frame and the rest of the
            # stream are not: after a framing error nothing later can be trusted to line up.
            store.guard.reject(f"producer {_who(conn)}", exc)
            self._end(conn)
            return
        if conn.bye:
            self._end(conn)

    def _on_hello(self, conn: _Conn, message: tuple[str, dict[str, Any]]) -> bool:
        """Give the peer its run; False (and the peer is cut) if the store refuses one."""
        run = self._store.open_run(str(message[1].get("name", "producer")))
        if run is None:
            self._drop(conn)
            return False
        conn.run = run
        self._send(conn, _wire.pack_welcome(run.name, os.path.abspath(run.folder)))
        if self.draining:
            self._send(conn, _wire.pack_drain(0))
        return True

    # -- replies --------------------------------------------------------------------------------

    def send_acks(self) -> None:
        for conn in list(self.conns.values()):
            if conn.acks:
                conn.outbuf += b"".join(_wire.pack_ack(seq) for seq in conn.acks)
                conn.acks.clear()
                self._flush_out(conn)

    def _send(self, conn: _Conn, data: bytes) -> None:
        conn.outbuf += data
        self._flush_out(conn)

    def _flush_out(self, conn: _Conn) -> None:
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
            key = self._sel.get_key(conn.sock)
            if key.events != want:
                self._sel.modify(conn.sock, want, key.data)
        except (KeyError, ValueError):
            pass

    # -- ends -----------------------------------------------------------------------------------

    def _end(self, conn: _Conn) -> None:
        """A producer said goodbye or went away: finish its files and free its run name."""
        if conn.run is not None:
            self._store.end_run(conn.run)
        self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        self.conns.pop(conn.sock, None)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        try:
            conn.sock.close()
        except OSError:
            pass

    def drain(self) -> None:
        """Close begins: take every producer already in a backlog, stop listening, and ask
        each producer to send what it holds."""
        self.draining = True
        for listener in self._listeners:
            self._accept(listener, 1 << 30)  # unbounded: each of them has events to collect
        self.stop_listening()
        for conn in list(self.conns.values()):
            if conn.run is not None:
                self._send(conn, _wire.pack_drain(0))

    def busy(self, now: float) -> bool:
        """Some producer is still sending, or some peer may still prove the key and say hello."""
        return any(c.state == _LIVE or c.deadline > now for c in self.conns.values())

    def stop_listening(self) -> None:
        for listener in self._listeners:
            try:
                self._sel.unregister(listener)
            except (KeyError, ValueError):
                pass
            listener.close()
        self._listeners.clear()

    def finish(self) -> None:
        """The close deadline passed or nobody is left: end every connection still open."""
        for conn in list(self.conns.values()):
            if conn.state == _LIVE:
                self._store.count_transport_error(f"producer {_who(conn)} did not finish before close")
                self._end(conn)
            else:
                self._drop(conn)

    def abandon(self) -> None:
        """After fork, in the child: close our copies of the parent's sockets, nothing else."""
        for sock in [*self._listeners, *self.conns]:
            try:
                sock.close()
            except OSError:
                pass


def _who(conn: _Conn) -> str:
    return repr(conn.run.name) if conn.run is not None else "(before hello)"


def _unix_listener(address: str) -> socket.socket:
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
    sock.listen(_BACKLOG)
    sock.setblocking(False)
    return sock


def _tcp_listener(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _raise_fd_limit() -> None:
    # Hundreds of producers each hold a socket; the common soft limit of 1024 is too tight.
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 65536
        target = min(target, 65536)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass
