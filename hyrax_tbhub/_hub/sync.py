"""A hub-wide flush: every producer connected now sends what it holds, and the hub writes it.

A producer's own ``flush()`` is a barrier for that producer. Rank 0 closing a job's log needs
one for a whole hub of another rank (``_process/rank_sync.py``): "everything any process of this
rank logged before now is on disk". A round does that:

1. the hub takes every connection waiting in its listeners' backlogs (a process that logged has
   connected: ``connect()`` runs in its first logging call), and sends SYNC to every producer
   that said hello; a peer still in its handshake gets it right after its hello;
2. each producer queues a flush item carrying the round's token (``_wire.SYNC_BIT`` set) behind
   everything it logged, and wakes its sender; the hub does not acknowledge it;
3. the round is done at the end of the hub's loop turn (after the turn's ``os.write``) in which
   the last of those producers answered, said goodbye or went away.

The owner's own queue is flushed apart, by the caller, before the round starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["SyncRounds"]


class _Round:
    __slots__ = ("token", "waiting", "done")

    def __init__(self, token: int, waiting: set[Any]) -> None:
        self.token = token
        self.waiting = waiting  # connections that have not answered yet
        self.done = threading.Event()


class SyncRounds:
    """The rounds of one hub; every method but :meth:`start`'s waiting runs in the hub thread
    (or under the hub's lock)."""

    def __init__(self) -> None:
        self._rounds: list[_Round] = []
        self._next = 1

    def start(self, conns: Iterable[Any], has_run: Callable[[Any], bool], send: Callable[[Any, int], None]
              ) -> threading.Event:
        """A round over ``conns`` (the hub's connections now); SYNC goes to those with a run."""
        token = self._next
        self._next += 1
        round_ = _Round(token, set(conns))
        self._rounds.append(round_)
        for conn in round_.waiting:
            if has_run(conn):
                send(conn, token)
        return round_.done

    def tokens_for_new_run(self, conn: Any) -> list[int]:
        """The rounds a peer that just said hello is part of: it gets their SYNC now."""
        return [r.token for r in self._rounds if conn in r.waiting]

    def answered(self, conn: Any, token: int) -> None:
        for r in self._rounds:
            if r.token == token:
                r.waiting.discard(conn)

    def gone(self, conn: Any) -> None:
        """A goodbye or a lost connection: everything it sent was read before this."""
        for r in self._rounds:
            r.waiting.discard(conn)

    def end_turn(self) -> None:
        """After the turn's writes: rounds nobody is waiting for any more are done."""
        if not self._rounds:
            return
        for r in [r for r in self._rounds if not r.waiting]:
            r.done.set()
            self._rounds.remove(r)

    def abandon(self) -> None:
        """The hub is closing: its close drains every producer anyway."""
        for r in self._rounds:
            r.done.set()
        self._rounds.clear()
