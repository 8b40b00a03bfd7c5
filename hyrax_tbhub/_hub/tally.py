"""The hub's counts of what was lost, and which of them changed since they were last written.

The store (:mod:`.store`) writes the changed ones to the root run, under the reserved tags of
:mod:`.._counters`, so a loss is visible where the data is; each loss is also said once on
stderr. Per run: what its producer dropped (its queue was full), what the hub could not write,
what a producer killed without a goodbye took with it; for the hub: transport failures, bugs of
its own, ranks that did not confirm their events at rank 0's close; and the guard's counts
(:mod:`.guard`). No files here: the store owns them.
"""

from __future__ import annotations

from typing import Protocol

from .. import _counters as tags
from .._util.stderr import warn, warn_internal
from .guard import Guard

__all__ = ["CountedRun", "Tally"]


class CountedRun(Protocol):
    """What a run is to its counts (:class:`.store.Run`)."""

    name: str
    dropped: int  # what the producer says it dropped
    errors: int  # what the hub could not write
    refused: bool  # past max_runs: its events count under over_cap instead


class Tally:
    """The hub's counts and the runs whose counts moved since :meth:`changed` last ran."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.transport_errors = 0
        self.internal_errors = 0
        self.killed: dict[str, int] = {}  # run -> events its killed producers took with them
        self.ranks_unconfirmed = 0  # set by rank 0's close (_process/rank_sync.py)
        self.counted: set[CountedRun] = set()  # runs whose dropped or errors changed since last written
        self._reported: dict[str, object] = {}  # what each counter said when last written
        self._warned: set[str] = set()

    def transport_error(self, what: str) -> None:
        """A connection broke in a way that lost events (a producer killed mid-batch...)."""
        self.transport_errors += 1
        if self.transport_errors == 1:
            warn(f"hyrax_tbhub: {what} (further transport errors are counted under "
                 f"{tags.TRANSPORT_ERRORS})")

    def internal_error(self, exc: BaseException) -> None:
        """A bug of the hub itself: counted apart from transport failures, said once with its
        traceback so that it can be reported."""
        self.internal_errors += 1
        if self.internal_errors == 1:
            warn_internal("the hub thread", exc, f"further internal errors are counted under "
                          f"{tags.INTERNAL_ERRORS}")

    def error(self, run: CountedRun, exc: BaseException) -> None:
        """An event of ``run`` could not be written."""
        run.errors += 1
        self.counted.add(run)
        if run.name not in self._warned:
            self._warned.add(run.name)
            warn(f"hyrax_tbhub: an event of run {run.name!r} could not be written ({exc!r}); "
                 f"counted under {tags.ERRORS}{run.name}")

    def killed_producer(self, run: CountedRun, lost: tuple[int, int] | None) -> None:
        """The producer of ``run`` ended without a goodbye; ``lost`` is what its ledger says:
        (events it logged that never arrived, its drop total), or None if unreadable."""
        if lost is None:
            return
        events, dropped = lost
        if run.refused:  # nothing of a refused run is written: all it cost is over_cap's
            self.guard.count_refused_events(events + max(0, dropped - run.dropped))
            return
        if dropped > run.dropped:  # drops it had not reported yet
            run.dropped = dropped
            self.counted.add(run)
        if not events:
            return
        self.killed[run.name] = self.killed.get(run.name, 0) + events
        if "killed:" + run.name not in self._warned:
            self._warned.add("killed:" + run.name)
            warn(f"hyrax_tbhub: producer {run.name!r} ended without a goodbye (killed?); {events} events "
                 f"it logged are lost, counted under {tags.PRODUCER_KILLED}{run.name}")

    def changed(self) -> list[tuple[str, int]]:
        """Every counter whose value changed since the last call, as (tag, value)."""
        changed: list[tuple[str, int]] = []
        # Only the runs whose counts moved: a long job keeps tens of thousands of closed runs.
        counted, self.counted = self.counted, set()
        for run in sorted(counted, key=lambda r: r.name):
            pair = (run.dropped, run.errors)
            if pair == self._reported.get(run.name, (0, 0)):
                continue
            self._reported[run.name] = pair  # both are written when either changed: they read as a pair
            changed += [(tags.DROPPED + run.name, run.dropped), (tags.ERRORS + run.name, run.errors)]
            if run.dropped and ("drop:" + run.name) not in self._warned:
                self._warned.add("drop:" + run.name)
                warn(f"hyrax_tbhub: producer {run.name!r} dropped {run.dropped} events (its buffer was "
                     f"full); the count is logged as {tags.DROPPED}{run.name}")
        for name, value in self.killed.items():
            if value != self._reported.get(tags.PRODUCER_KILLED + name, 0):
                self._reported[tags.PRODUCER_KILLED + name] = value
                changed.append((tags.PRODUCER_KILLED + name, value))
        changed += self.guard.changed()
        for tag, value in ((tags.TRANSPORT_ERRORS, self.transport_errors),
                           (tags.INTERNAL_ERRORS, self.internal_errors),
                           (tags.RANKS_UNCONFIRMED, self.ranks_unconfirmed)):
            if value != self._reported.get(tag, 0):
                self._reported[tag] = value
                changed.append((tag, value))
        return changed
