"""What the hub refuses, even from peers that proved the key: counted, logged, said once.

A key holder is anyone who can read the hub file (the same user) or, with ``serve_ranks()``
and no launcher key, the torch.distributed store. It may write log events, and that is all: its
bytes are parsed by :mod:`._wire` (bounded, nothing executable), and what it may make the hub
keep is capped here. The counters are written to the root run with the hub's other counters:

``hyrax_tbhub/rejected``
    connections of authenticated peers cut for input that breaks the protocol;
``hyrax_tbhub/strangers``
    connections that did not prove the key (wrong key, silence, garbage), and connections
    closed at accept, before any handshake, because their holder (a pid on the Unix socket, an
    address on TCP) already had ``max_peer_connections``;
``hyrax_tbhub/over_cap``
    events refused past a cap: those of a sub-run over ``max_subruns``, and every event of a
    producer that said hello while ``max_runs`` runs were open (it stays connected, its events
    are read and counted one by one, including those it says it dropped itself).
"""

from __future__ import annotations

from typing import Any

from .._counters import OVER_CAP, REJECTED, STRANGERS
from .._items import RECORDS, WireItem
from .._util.stderr import warn as _warn

__all__ = ["Guard"]


class Guard:
    __slots__ = ("max_runs", "max_subruns", "rejected", "strangers", "over_cap", "_reported", "_warned")

    def __init__(self, max_runs: int, max_subruns: int) -> None:
        self.max_runs = max_runs
        self.max_subruns = max_subruns
        self.rejected = 0
        self.strangers = 0
        self.over_cap = 0
        self._reported: dict[str, int] = {}
        self._warned: set[str] = set()

    def reject(self, who: str, why: object) -> None:
        """An authenticated peer broke the protocol: its connection is being closed."""
        self.rejected += 1
        self._once("rejected", f"hyrax_tbhub: closed the connection of {who}: {why} (counted under "
                               f"{REJECTED})")

    def stranger(self) -> None:
        """A peer did not prove the key (or was the oldest of too many trying): it is cut.

        Not said on stderr: anyone who can connect can make this count grow.
        """
        self.strangers += 1

    def refuse_connection(self, cap: int) -> None:
        """A holder already has ``cap`` connections: a new one is closed at accept."""
        self.strangers += 1
        self._once("holder", f"hyrax_tbhub: refused a connection: its holder already has {cap} "
                             f"(Options.max_peer_connections; counted under {STRANGERS})")

    def paused(self, limit: int, reserve: int) -> None:
        """Descriptors ran low: the hub stops accepting until one frees (said once)."""
        self._once("paused", f"hyrax_tbhub: the hub stopped accepting producers: fewer than "
                             f"{reserve} of this process's {limit} file descriptors are free, and "
                             "those are left to the program; it accepts again when some free")

    def run_allowed(self, open_runs: int) -> bool:
        """May one more producer get a run while ``open_runs`` are open? Said once when not."""
        if open_runs < self.max_runs:
            return True
        self._once("runs", f"hyrax_tbhub: refused a producer: {self.max_runs} runs are open "
                           f"(Options.max_runs); the events of refused producers are counted under "
                           f"{OVER_CAP}")
        return False

    def count_refused_events(self, events: int) -> None:
        self.over_cap += events

    def keep_items(
        self, run_name: str, open_subruns: dict[str, Any], items: list[WireItem]
    ) -> list[WireItem]:
        """``items`` without the records of sub-runs past ``max_subruns`` (those are counted)."""
        room = self.max_subruns - len(open_subruns)
        new: set[str] = set()
        kept: list[WireItem] = []
        for item in items:
            if item[0] == RECORDS and item[1] not in open_subruns and item[1] not in new:
                if room <= len(new):
                    self.over_cap += item[3]
                    self._once("subruns", f"hyrax_tbhub: run {run_name!r} opened {self.max_subruns} "
                                          f"sub-runs; the events of further ones are counted under "
                                          f"{OVER_CAP}")
                    continue
                new.add(item[1])
            kept.append(item)
        return kept

    def changed(self) -> list[tuple[str, int]]:
        """The counters whose value changed since the last call, as (tag, value)."""
        out = []
        for tag, value in ((REJECTED, self.rejected), (STRANGERS, self.strangers), (OVER_CAP, self.over_cap)):
            if value != self._reported.get(tag, 0):
                self._reported[tag] = value
                out.append((tag, value))
        return out

    def _once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _warn(message)
