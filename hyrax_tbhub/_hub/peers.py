"""The hub's listeners and connections: accepting, handshakes, frames in, replies out.

One :class:`Peers` per hub, driven by the hub thread (:mod:`.server`) under the hub's lock. A
connection, as the hub sees it::

    state          reads                  sends                     then
    auth           <= ANSWER_LEN bytes    CHALLENGE (at accept)     key proven: PROOF, -> live;
                                                                    else cut (``strangers``)
    live, no run   one HELLO frame        WELCOME (+ DRAIN)         the store gives it a run (a
                                                                    refused one past ``max_runs``)
    live, run      BATCH frames           ACK per flush item,       goodbye or EOF: its run ends;
                                          DRAIN when closing        a bad frame: cut (``rejected``)

A connection with no run at its handshake deadline (``Options.handshake_timeout``) is cut. The
listening sockets, and the pause of accepting while descriptors are short, are :mod:`.listeners`'.
"""

from __future__ import annotations

import errno
import functools
import os
import secrets
import selectors
import socket
import struct
import threading
import time
from typing import Any

from .. import _wire
from .._items import FLUSH
from .._util.net import tune_tcp
from .._wire import ANSWER_LEN, CHALLENGE_LEN, MAGIC, SYNC_BIT, FrameReader, WireError
from ..options import Options
from .listeners import Listeners
from .liveness import HubLedger, recv_hello
from .store import Run, Store
from .sync import SyncRounds

__all__ = ["Peers"]

_RECV_SIZE = 1 << 18  # bytes per recv: several full batches of a busy producer in one call
_ACCEPT_BATCH = 64  # accepts per wake-up, so a connect storm cannot starve live producers
_PER_CONN_FDS = 3  # a producer's connection, its run's event file, its ledger (liveness.py)
_PEERCRED = getattr(socket, "SO_PEERCRED", None)
_CRED = struct.Struct("3i")  # pid, uid, gid


_AUTH, _LIVE = 0, 1


class _Conn:
    """One peer: where it is in the handshake, its buffers, its run once it said hello."""

    __slots__ = (
        "sock", "key", "checker", "state", "deadline", "challenge", "inbuf", "reader", "outbuf", "run",
        "acks", "bye", "holder", "ledger",
    )

    def __init__(
        self, sock: socket.socket, deadline: float, key: bytes, checker: _wire.EventChecker | None,
        holder: object,
    ) -> None:
        self.sock = sock
        self.holder = holder  # who holds it, as far as the kernel tells: its pid, or its address
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
        self.ledger: HubLedger | None = None  # what the producer logged (liveness.py)


class Peers:
    """The listeners and connections of one hub: accepting, handshakes, frames in, replies out."""

    def __init__(self, sel: selectors.BaseSelector, store: Store, key: bytes, options: Options) -> None:
        self._sel = sel
        self._store = store
        self._key = key
        self._handshake_timeout = options.handshake_timeout
        self._max_pending = options.max_pending_handshakes
        self._listeners = Listeners(sel, self._on_accept, store.guard)
        self.conns: dict[socket.socket, _Conn] = {}
        self.draining = False  # close began: producers are told to send what they hold and leave
        self.sync = SyncRounds()
        self._max_per_holder = options.max_peer_connections
        self._per_holder: dict[object, int] = {}
        self.accept_failures = 0  # accepts that failed for want of a descriptor

    def add_listener(
        self, sock: socket.socket, key: bytes | None = None, checker: _wire.EventChecker | None = None
    ) -> None:
        self._listeners.add(sock, key, checker)

    @property
    def listening(self) -> bool:
        """False while accepting is paused (descriptors low)."""
        return self._listeners.listening

    # -- accepting and handshakes -----------------------------------------------------------------

    def _on_accept(self, listener: Any, mask: int) -> None:
        self._accept(listener, _ACCEPT_BATCH)

    def _accept(self, listener: socket.socket, limit: int, collect: bool = False) -> None:
        # ``collect``: close or a hub-wide flush takes every producer waiting in the backlog,
        # reserve or not: each may hold events logged before it, and the reserve is for this.
        deadline = time.monotonic() + self._handshake_timeout
        room = self._listeners.budget.room()
        for _ in range(limit):
            if room < _PER_CONN_FDS and not collect:
                self._listeners.pause()
                return
            try:
                conn_sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    # Out of descriptors after all (another thread of the owner took them): stop
                    # polling a listener we cannot serve, until a connection closes.
                    self.accept_failures += 1
                    self._store.count_transport_error("out of file descriptors")
                    self._listeners.pause()
                return
            room -= _PER_CONN_FDS
            holder = _holder(conn_sock, addr)
            held = self._per_holder.get(holder, 0)
            if held >= self._max_per_holder:
                conn_sock.close()
                self._store.guard.refuse_connection(self._max_per_holder)
                continue
            self._per_holder[holder] = held + 1
            conn_sock.setblocking(False)
            if conn_sock.family != socket.AF_UNIX:
                tune_tcp(conn_sock)  # a dead node must not hold a close up
            key = self._listeners.key(listener, self._key)
            conn = _Conn(conn_sock, deadline, key, self._listeners.checker(listener), holder)
            self.conns[conn_sock] = conn
            try:
                conn_sock.send(conn.challenge)
            except OSError:
                self._drop(conn)
                continue
            self._sel.register(conn_sock, selectors.EVENT_READ, functools.partial(self._on_event, conn))
            self._limit_pending()

    def resume(self) -> None:
        """Accept again if descriptors freed (after a connection closed, and once a second)."""
        self._listeners.resume()

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
            data = _receive(conn)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            _count_vanished(self._store, conn)
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
                items = _wire.decode_batch(payload)
                if conn.ledger is not None:
                    conn.ledger.note(items)
                items = store.admit(run, items)
                if conn.checker is not None:
                    conn.checker.check(items)
                for control in store.write(run, items):
                    if control[0] == FLUSH:
                        if control[1] & SYNC_BIT:  # answers a hub-wide flush (sync.py)
                            self.sync.answered(conn, control[1] & ~SYNC_BIT)
                        else:
                            conn.acks.append(control[1])
                    else:  # BYE: the producer said goodbye, after everything it logged
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
        """Give the peer its run (a refused one past ``max_runs``: its events are counted)."""
        run = self._store.open_run(str(message[1].get("name", "producer")))
        conn.run = run
        self._send(conn, _wire.pack_welcome(run.name, os.path.abspath(run.folder)))
        if self.draining:
            self._send(conn, _wire.pack_drain(0))
        for token in self.sync.tokens_for_new_run(conn):
            self._send(conn, _wire.pack_sync(token))
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
        self.sync.gone(conn)
        if conn.ledger is not None:
            conn.ledger.close()
        if self.conns.pop(conn.sock, None) is not None:
            held = self._per_holder.pop(conn.holder, 1) - 1
            if held:
                self._per_holder[conn.holder] = held
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        try:
            conn.sock.close()
        except OSError:
            pass
        if not self.listening and not self.draining:
            self.resume()

    def drain(self) -> None:
        """Close begins: take every producer already in a backlog, stop listening, and ask
        each producer to send what it holds."""
        self.draining = True
        for listener in self._listeners.socks:
            self._accept(listener, 1 << 30, collect=True)  # each of them has events to collect
        self.stop_listening()
        for conn in list(self.conns.values()):
            if conn.run is not None:
                self._send(conn, _wire.pack_drain(0))

    def start_sync(self) -> threading.Event:
        """A hub-wide flush over every producer, those still in the backlog included."""
        for listener in self._listeners.socks:
            self._accept(listener, 1 << 30, collect=True)  # each may hold events logged before now
        return self.sync.start(list(self.conns.values()), lambda c: c.run is not None,
                               lambda c, token: self._send(c, _wire.pack_sync(token)))

    def busy(self, now: float) -> bool:
        """Some producer is still sending, or some peer may still prove the key and say hello."""
        return any(c.state == _LIVE or c.deadline > now for c in self.conns.values())

    def stop_listening(self) -> None:
        self._listeners.stop()

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
        for sock in [*self._listeners.socks, *self.conns]:
            try:
                sock.close()
            except OSError:
                pass
        for conn in self.conns.values():  # the producers' ledgers are the parent's, too
            if conn.ledger is not None:
                conn.ledger.close()


def _receive(conn: _Conn) -> bytes:
    """What the peer sent; until its hello, with the ledger that comes with it (liveness.py)."""
    if conn.run is not None or conn.sock.family != socket.AF_UNIX:
        return conn.sock.recv(_RECV_SIZE)
    data, ledger = recv_hello(conn.sock, _RECV_SIZE)
    if ledger is not None:
        if conn.ledger is None:
            conn.ledger = ledger
        else:  # one ledger per producer: any other descriptor would be a key holder's leak
            ledger.close()
    return data


def _count_vanished(store: Store, conn: _Conn) -> None:
    """A live peer's stream ended without a goodbye: count what that cost."""
    if conn.reader.buffered:
        # The producer died in the middle of a batch (killed); the rest of it is gone.
        store.count_transport_error(f"producer {_who(conn)} vanished mid-batch")
    if conn.run is None:  # proved the key, then died before its hello: count unknown
        store.count_transport_error("a producer vanished before its hello")
    elif conn.ledger is not None:  # no goodbye: killed; its ledger says what it took
        store.count_killed(conn.run, conn.ledger.lost())


def _holder(sock: socket.socket, addr: Any) -> object:
    """Who holds a connection: the peer's pid on a Unix socket (the kernel's word, not the
    peer's), its address on TCP; connections are capped per holder."""
    if sock.family == socket.AF_UNIX:
        if _PEERCRED is not None:
            try:
                return ("pid", _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, _PEERCRED, _CRED.size))[0])
            except OSError:
                pass
        return ("unix",)
    return ("addr", addr[0] if isinstance(addr, tuple) else addr)


def _who(conn: _Conn) -> str:
    return repr(conn.run.name) if conn.run is not None else "(before hello)"
