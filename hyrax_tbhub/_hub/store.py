"""The hub's files: a run per producer and the owner's root run, their sub-runs, and the counters.

No sockets and no threads: the server calls it from the hub thread, under the hub's lock, and a
test can drive it alone, given a folder. What could not be written is counted here and the
counters (tags from :mod:`.._counters`) are written to the root run, so a loss is visible where
the data is.

Layout: the owner writes the root run (``logdir`` itself, or ``logdir/rank_<n>`` for the hub of
one rank of a job); every producer process gets its own run folder below ``logdir``, because
TensorBoard drops points when one (run, tag) sees steps go back (its Rust loader) and several producers'
steps are never ordered with each other. A batch's items are those of :mod:`.._items`: scalars
and events (the owner's calls), records a producer framed, its drop count; flushes and goodbyes
are for the caller.
"""

from __future__ import annotations

import os
import re
import struct
import time
from collections.abc import Sequence
from typing import overload

from .. import _counters as tags
from .._events import (
    RECORD_HEADER,
    RECORD_OVERHEAD,
    encode_scalar,
    encode_scalar_records,
    file_version_event,
    frame,
    session_start_event,
)
from .._items import (
    BYE,
    DROPS,
    EVENT,
    FLUSH,
    RECORDS,
    SCALAR,
    ByeItem,
    FlushItem,
    HubItem,
    LocalFlushItem,
    LocalItem,
    ScalarItem,
    WireItem,
)
from ..options import DEFAULT_OPTIONS, Options
from .aggregate import Aggregator
from .guard import Guard
from .names import GivenNames
from .runfile import RunFile
from .tally import Tally

__all__ = ["Run", "Store", "clean_run_name"]

_Control = FlushItem | LocalFlushItem | ByeItem  # what the connection (or the owner) acts on, not the files
_STATS_INTERVAL = 1.0  # s: counters change often under load; a point a second is enough to see them


class Run:
    """The event files of one producer (or of the owner): the run folder and its sub-runs."""

    __slots__ = ("name", "folder", "suffix", "files", "dropped", "errors", "refused")

    def __init__(self, name: str, folder: str, suffix: str, refused: bool = False) -> None:
        self.name = name
        self.folder = folder
        self.suffix = suffix
        self.files: dict[str, RunFile] = {}  # sub-run ("" for the run itself) -> its open file
        self.dropped = 0  # what the producer says it dropped (its queue was full)
        self.errors = 0  # what the hub could not write
        # Refused past ``max_runs``: its producer is served as any other (its flushes answered,
        # its goodbye honoured) but its events are counted under over_cap, one by one, not written.
        self.refused = refused

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


class Store:
    """The runs under ``logdir`` and what the hub counts about them."""

    def __init__(
        self, logdir: str, options: Options = DEFAULT_OPTIONS, suffix: str = "", *,
        root_folder: str | None = None, purge_step: int | None = None, start_ns: int | None = None,
    ) -> None:
        self.logdir = logdir
        self.suffix = suffix
        # The counters' steps are microseconds since this (the hub's clock origin).
        self.start_ns = time.monotonic_ns() if start_ns is None else start_ns
        self.guard = Guard(options.max_runs, options.max_subruns)
        # A rank's hub names its root run after its folder (rank_<n>): its counters then say whose.
        root_name = "root" if root_folder is None else os.path.basename(root_folder.rstrip("/"))
        self.root = Run(root_name, logdir if root_folder is None else root_folder, suffix)
        root_file = self.root.file("")  # tensorboardX opens the file at construction; so do we
        if purge_step is not None:
            # As SummaryWriter: tells TensorBoard to hide earlier data at steps >= purge_step.
            root_file.add(frame(file_version_event(step=int(purge_step))))
            root_file.add(frame(session_start_event(int(purge_step))))
        self.live_names: set[str] = set()  # taken: by a connected producer, or by the hub itself
        # The runs with open files: a producer's until it leaves, the hub's own until the end.
        # Nothing else of a closed run is kept (a Pool per epoch opens tens of thousands): only
        # its name, in fixed memory, so that it is never given again.
        self._runs: dict[str, Run] = {}
        self._given = GivenNames()  # every name given: open, closed, refused and the hub's own
        # Base name -> the last suffix given for it, for names given more than once only
        # (dataloader_worker_3 every epoch): the next one starts looking there, not at 1.
        self._suffixes: dict[str, int] = {}
        self._own: dict[str, Run] = {}  # runs the hub writes itself, by the name they asked for
        self.open_runs = 0  # producers' runs whose producer is still connected: what max_runs caps
        self._dirty: set[Run] = set()  # runs with records not yet handed to the OS
        self.aggregator: Aggregator | None = None
        self.tally = Tally(self.guard)  # what was lost, written to the root run as counters
        self._next_counters = 0.0

    # -- runs -----------------------------------------------------------------------------------

    def open_run(self, requested: str) -> Run:
        """The run of a producer that asked for ``requested``.

        The name is cleaned and made unique for the hub's whole life (``worker``, ``worker-2``,
        ...): a pid the kernel reused or a DataLoader worker id of a later epoch never lands in
        the run of an earlier process, whose steps would then go back. Past ``max_runs`` runs
        open at once the run is *refused*: nothing of it is written, its events are counted.
        """
        base = clean_run_name(requested)
        n = self._suffixes.get(base, 1)
        name = base if n == 1 else f"{base}-{n}"
        while name in self._given:
            n += 1
            name = f"{base}-{n}"
        if n > 1:
            self._suffixes[base] = n
        folder = os.path.join(self.logdir, name)
        self._given.add(name)  # a refused run's name too: its producer was told it
        if not self.guard.run_allowed(self.open_runs):
            return Run(name, folder, self.suffix, refused=True)
        self.open_runs += 1
        self.live_names.add(name)
        run = self._runs[name] = Run(name, folder, self.suffix)
        return run

    def end_run(self, run: Run) -> None:
        """The producer of ``run`` is gone: finish its files and free its slot (not its name)."""
        if run.refused:
            return
        try:
            run.close()
        except OSError as exc:  # the disk, not the connection: an error of that run's files
            self._count_error(run, exc)
        run.files = {}
        if run.name in self.live_names:
            self.live_names.discard(run.name)
            self.open_runs -= 1
        if self._runs.get(run.name) is run:
            del self._runs[run.name]  # counts not yet written stay with it in tally.counted
        self._dirty.discard(run)

    def own_run(self, name: str) -> Run:
        """A run the hub writes itself (the aggregates): no producer gets its name, and if a
        producer already has it, the hub's run is ``<name>-2`` (never the producer's)."""
        run = self._own.get(name)
        if run is None:
            unique, n = name, 1
            while unique in self._given:
                n += 1
                unique = f"{name}-{n}"
            self._given.add(unique)
            self.live_names.add(unique)
            run = Run(unique, os.path.join(self.logdir, unique), self.suffix)
            self._own[name] = self._runs[unique] = run
        return run

    # -- writing --------------------------------------------------------------------------------

    def admit(self, run: Run, items: list[WireItem]) -> list[WireItem]:
        """The items of a peer's batch that the caps let in (the others are counted)."""
        if run.refused:
            return items  # write() counts every one of them
        return self.guard.keep_items(run.name, run.files, items)

    # What a batch gives back is what its caller acts on: a peer's flushes and goodbye, the
    # owner's flushes (_hub/server.py).
    @overload
    def write(self, run: Run, items: Sequence[WireItem]) -> list[FlushItem | ByeItem]: ...
    @overload
    def write(self, run: Run, items: Sequence[LocalItem]) -> list[LocalFlushItem]: ...

    def write(self, run: Run, items: Sequence[HubItem]) -> Sequence[_Control]:
        """Queue one batch of ``run`` in order; return its flush and bye items, for the caller.

        An item that cannot be written is counted under ``errors/<run>``; the others still are.
        """
        if run.refused:
            return self._count_refused(run, items)
        controls: list[_Control] = []
        scalars: list[ScalarItem] = []  # consecutive scalars are encoded in one call
        for item in items:
            if item[0] == SCALAR:
                scalars.append(item)
                continue
            if scalars:
                self._write_scalars(run, scalars)
                scalars = []
            try:
                if item[0] == RECORDS:  # records a producer already encoded and framed
                    self._write_records(run, item[1], item[2])
                elif item[0] == EVENT:
                    run.file(item[1]).add(frame(item[2]))
                elif item[0] == DROPS:  # the producer's running total: a late or repeated one cannot lower it
                    if int(item[1]) > run.dropped:
                        run.dropped = int(item[1])
                        self.tally.counted.add(run)
                elif item[0] == FLUSH or item[0] == BYE:
                    controls.append(item)
                else:
                    raise ValueError(f"unknown item kind {item[0]!r}")
            except Exception as exc:
                self._count_error(run, exc)
        if scalars:
            self._write_scalars(run, scalars)
        self._dirty.add(run)
        return controls

    def _count_refused(self, run: Run, items: Sequence[HubItem]) -> list[_Control]:
        """A refused run's batch: every event in it (and every one its producer says it dropped)
        counts under over_cap; its flushes and goodbye go back to the caller."""
        controls: list[_Control] = []
        events = 0
        for item in items:
            if item[0] == RECORDS:
                events += int(item[3])
            elif item[0] == SCALAR or item[0] == EVENT:
                events += 1
            elif item[0] == DROPS:
                if int(item[1]) > run.dropped:
                    events += int(item[1]) - run.dropped
                    run.dropped = int(item[1])
            elif item[0] == FLUSH or item[0] == BYE:
                controls.append(item)
        self.guard.count_refused_events(events)
        return controls

    def add_own(self, run: Run, records: bytes) -> None:
        """Queue framed records the hub made itself (aggregates): they are not aggregated again."""
        run.file("").add(records)
        self._dirty.add(run)

    def write_pending(self) -> None:
        """Hand every record queued so far to the OS; readers see it from here on."""
        for run in self._dirty:
            try:
                run.write_pending()
            except Exception as exc:  # a full disk, or worse: that run's batch, not the hub
                self._count_error(run, exc)
        self._dirty.clear()

    def _write_scalars(self, run: Run, scalars: list[ScalarItem]) -> None:
        if self.aggregator is not None:
            self.aggregator.scalars(scalars)
        try:
            run.file("").add(encode_scalar_records(scalars))
        except Exception:
            # Some item is malformed, or the run's folder cannot be made: keep the good ones,
            # count the others.
            for item in scalars:
                try:
                    run.file("").add(frame(encode_scalar(item[1], item[2], item[3], item[4])))
                except Exception as exc:
                    self._count_error(run, exc)

    def _write_records(self, run: Run, subrun: str, blob: bytes) -> None:
        if self.aggregator is not None and not subrun:
            self.aggregator.records(blob)
        try:
            run.file(subrun).add(blob)
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

    # -- aggregates -----------------------------------------------------------------------------

    def add_aggregate(self, pattern: str, every_s: float) -> None:
        """Aggregate the tags matching ``pattern`` too (:func:`.aggregate.attach` checked both)."""
        if self.aggregator is None:
            self.aggregator = Aggregator(self)
        self.aggregator.add_pattern(pattern, every_s)

    # -- counters (.tally) -----------------------------------------------------------------------

    def count_transport_error(self, what: str) -> None:
        self.tally.transport_error(what)

    def count_killed(self, run: Run, lost: tuple[int, int] | None) -> None:
        self.tally.killed_producer(run, lost)

    def count_internal_error(self, exc: BaseException) -> None:
        self.tally.internal_error(exc)

    def _count_error(self, run: Run, exc: BaseException) -> None:
        self.tally.error(run, exc)

    def tick(self, now: float) -> None:
        """What is due at ``now`` (monotonic s): windows of aggregates that ended, the counters."""
        if self.aggregator is not None:
            self.aggregator.tick(now)
        if now >= self._next_counters:
            self._write_counters()
            self._next_counters = now + _STATS_INTERVAL

    def _write_counters(self) -> None:
        """Write every counter whose value changed since it was last written."""
        changed = self.tally.changed()
        if changed:
            step = (time.monotonic_ns() - self.start_ns) // 1000
            wall = time.time()
            self.root.file("").add(b"".join(frame(encode_scalar(t, v, step, wall)) for t, v in changed))
            self._dirty.add(self.root)

    # -- the end --------------------------------------------------------------------------------

    def close(self) -> None:
        """End every open window, write the counters and every record, close every file."""
        if self.aggregator is not None:
            self.aggregator.tick(None)
        self._write_counters()
        self.write_pending()
        for run in [self.root, *self._runs.values()]:
            try:
                run.close()
            except OSError:
                pass  # already counted by write_pending; nothing is left to write it to

    def abandon(self) -> None:
        """After fork, in the child: drop the parent's pending records and our copies of its fds."""
        for run in [self.root, *self._runs.values()]:
            run.abandon()


def _safe_subpath(subrun: str) -> str:
    # Sub-runs come from tag names (add_scalars): keep them inside the run folder.
    parts = [p for p in subrun.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return os.path.join(*parts) if parts else "_"


_NAME_BAD = re.compile(r"[^A-Za-z0-9_.\-]")
# The one nesting a run name may have: the rank a producer descends from (``rank_3/...``).
_RANK_PREFIX = re.compile(r"rank_[0-9]{1,9}/")


def clean_run_name(name: str) -> str:
    """A run folder name that stays one level (or ``rank_<n>/`` plus one) below the log folder."""
    prefix = ""
    match = _RANK_PREFIX.match(name)
    if match is not None:
        prefix, name = match.group(0), name[match.end():]
    name = _NAME_BAD.sub("_", name)[:80].lstrip(".")
    if not name or name.startswith(tags.RESERVED_PREFIX.rstrip("/")):
        name = "producer"
    return prefix + name


def _split_records(blob: bytes) -> list[bytes]:
    """The framed records of a batch, each with its own framing (length, CRCs)."""
    records = []
    offset = 0
    while offset + RECORD_HEADER <= len(blob):
        (length,) = struct.unpack_from("<Q", blob, offset)
        end = offset + length + RECORD_OVERHEAD
        records.append(blob[offset:end])
        offset = end
    return records
