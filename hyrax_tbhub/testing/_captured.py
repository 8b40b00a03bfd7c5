"""What a log folder holds, as :class:`CapturedLogs` of :class:`LoggedEvent`: the queries and
assertions of ``hyrax_tbhub.testing`` (filled in by ``_read``)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from .._counters import RESERVED_PREFIX

#: The name of the run the owner writes (``log_dir`` itself), as TensorBoard's ``--logdir`` shows it.
ROOT_RUN = "."

_TEXT_SUFFIX = "/text_summary"
# tensorboardX's tag rule (summary._clean_tag): what a logged name is stored as.
_INVALID_TAG_CHARACTERS = re.compile(r"[^-/\w\.]")


@dataclass(frozen=True)
class LoggedEvent:
    """One summary value found in the log.

    ``run`` is the folder relative to the log folder (``"."`` for the owner; a producer's run such
    as ``"dataloader_worker_0"``; sub-runs of ``add_scalars`` below it). ``kind`` is one of
    ``scalar``, ``text``, ``histogram``, ``image``, ``audio``, ``tensor``, ``other``. ``value`` is a
    float for scalars, the string for text, None otherwise (see ``summary`` for those).
    """

    run: str
    tag: str
    kind: str
    step: int
    value: float | str | None
    wall_time: float
    plugin: str = ""
    #: The ``Summary.Value`` protobuf message, for histograms, images and the like.
    summary: Any = field(default=None, repr=False, compare=False)


@dataclass
class CapturedLogs:
    """Everything one log folder holds, with helpers for assertions.

    ``entries`` excludes the hub's reserved ``hyrax_tbhub/...`` counters; those are in
    ``counters`` (and summed in ``dropped``, ``errors``, ``transport_errors``, ``internal_errors``).
    """

    log_dir: str
    _entries: list[LoggedEvent] | None = field(default=None, repr=False)
    _counters: dict[str, float] = field(default_factory=dict, repr=False)
    _runs: list[str] = field(default_factory=list, repr=False)
    _problems: list[str] = field(default_factory=list, repr=False)

    # -- what was read ----------------------------------------------------------------------------

    def _ready(self) -> list[LoggedEvent]:
        if self._entries is None:
            raise RuntimeError(
                "the captured logs are read when the capture_logs() block ends; use them after it"
            )
        return self._entries

    @property
    def entries(self) -> list[LoggedEvent]:
        """Every summary value except the reserved counters: runs in order (root first), then file order."""
        return list(self._ready())

    @property
    def runs(self) -> list[str]:
        """Every run folder holding an event file, ``"."`` (the owner) first, then by name."""
        self._ready()
        return list(self._runs)

    @property
    def counters(self) -> dict[str, float]:
        """The hub's reserved counters, ``{tag: last value}``, e.g. ``hyrax_tbhub/dropped/<run>``."""
        self._ready()
        return dict(self._counters)

    @property
    def dropped(self) -> int:
        """Events producers logged but never sent (all runs): a full queue, an event over the
        size limit, one that could not be encoded, or a queue lost to an internal error."""
        return self._sum_counters(RESERVED_PREFIX + "dropped/")

    @property
    def errors(self) -> int:
        """Events the hub could not write (all runs)."""
        return self._sum_counters(RESERVED_PREFIX + "errors/")

    @property
    def transport_errors(self) -> int:
        """Broken producer connections the hub saw (e.g. a producer killed mid-send)."""
        return int(self.counters.get(RESERVED_PREFIX + "transport_errors", 0))

    @property
    def internal_errors(self) -> int:
        """Bugs of hyrax_tbhub's hub thread (each also said on stderr with its traceback)."""
        return int(self.counters.get(RESERVED_PREFIX + "internal_errors", 0))

    @property
    def problems(self) -> list[str]:
        """Event files that could not be read to their end: a truncated or corrupt record."""
        self._ready()
        return list(self._problems)

    def _sum_counters(self, prefix: str) -> int:
        return int(sum(v for t, v in self.counters.items() if t.startswith(prefix)))

    # -- queries ----------------------------------------------------------------------------------

    def select(
        self, tag: str | None = None, *, run: str | None = None, kind: str | None = None
    ) -> list[LoggedEvent]:
        """The entries matching every given filter.

        ``tag`` matches the stored tag, the name as logged (tensorboardX replaces characters such
        as spaces with ``_``), or for text the name given to ``add_text`` (stored with
        ``/text_summary`` appended). ``run`` is a run name or a glob (``"dataloader_worker_*"``);
        ``"."`` is the owner.
        """
        wanted = None if tag is None else _tag_variants(tag)
        out = []
        for e in self._ready():
            if wanted is not None and e.tag not in wanted:
                continue
            if run is not None and not run_matches(e.run, run):
                continue
            if kind is not None and e.kind != kind:
                continue
            out.append(e)
        return out

    def tags(self, run: str | None = None) -> list[str]:
        """The sorted tags logged (in ``run``, a name or glob, if given); reserved counters excluded."""
        return sorted({e.tag for e in self.select(run=run)})

    def scalars(self, tag: str, run: str | None = None) -> list[tuple[int, float]]:
        """``[(step, value), ...]`` of scalar ``tag`` (in ``run`` if given), in the order read."""
        return [(e.step, float(e.value)) for e in self.select(tag, run=run, kind="scalar")
                if isinstance(e.value, float)]

    def texts(self, tag: str, run: str | None = None) -> list[tuple[int, str]]:
        """``[(step, text), ...]`` of text ``tag`` (the name given to ``add_text`` or the stored tag)."""
        return [(e.step, e.value) for e in self.select(tag, run=run, kind="text") if isinstance(e.value, str)]

    def scalar_series(self, run: str | None = None) -> dict[str, list[tuple[int, float]]]:
        """``{tag: [(step, value), ...]}`` of every scalar tag (in ``run``, a name or glob, if given).

        Without ``run``, a tag logged in several runs has their points in run order; use
        :meth:`select` to tell them apart.
        """
        out: dict[str, list[tuple[int, float]]] = {}
        for e in self._ready():
            if e.kind != "scalar" or not isinstance(e.value, float):
                continue
            if run is not None and not run_matches(e.run, run):
                continue
            out.setdefault(e.tag, []).append((e.step, e.value))
        return out

    def scalars_by_run(self) -> dict[str, dict[str, list[tuple[int, float]]]]:
        """``{run: {tag: [(step, value), ...]}}`` of every run read (``{}`` for a run without
        scalars): the whole log at a glance, to compare with an expected picture."""
        out: dict[str, dict[str, list[tuple[int, float]]]] = {run: {} for run in self.runs}
        for e in self._ready():
            if e.kind == "scalar" and isinstance(e.value, float):
                out[e.run].setdefault(e.tag, []).append((e.step, e.value))
        return out

    def counts(self, kind: str | None = None) -> dict[str, dict[str, int]]:
        """``{run: {tag: number of entries}}`` (of ``kind`` only, if given): a compact picture of what
        landed."""
        out: dict[str, dict[str, int]] = {}
        for e in self._ready():
            if kind is not None and e.kind != kind:
                continue
            per_run = out.setdefault(e.run, {})
            per_run[e.tag] = per_run.get(e.tag, 0) + 1
        return out

    def describe(self) -> str:
        """A human-readable summary: runs, tags with kind and count, counters, problems."""
        lines = [f"log folder {self.log_dir}: {len(self._ready())} entries in {len(self._runs)} runs"]
        kinds = {(e.run, e.tag): e.kind for e in self._ready()}
        counts = self.counts()
        for run in self._runs:
            lines.append(f"  run {run}")
            for tag, n in sorted(counts.get(run, {}).items()):
                lines.append(f"    {tag:<50} {kinds[(run, tag)]:<9} x{n}")
        nonzero = {t: v for t, v in self._counters.items() if v}
        lines.append(f"  counters: {nonzero if nonzero else 'all zero'}")
        for problem in self._problems:
            lines.append(f"  problem: {problem}")
        return "\n".join(lines)

    # -- assertions -------------------------------------------------------------------------------

    def assert_logged(
        self,
        tag: str,
        *,
        count: int | None = None,
        at_least: int = 1,
        run: str | None = None,
        kind: str | None = None,
    ) -> list[LoggedEvent]:
        """Assert ``tag`` was logged ``count`` times exactly (or ``at_least`` times); return the entries.

        The failure message lists what was logged instead, so a typo in a tag is easy to see.
        """
        found = self.select(tag, run=run, kind=kind)
        ok = len(found) == count if count is not None else len(found) >= at_least
        if not ok:
            expected = f"exactly {count}" if count is not None else f"at least {at_least}"
            where = "" if run is None else f" in run {run!r}"
            what = "" if kind is None else f" of kind {kind!r}"
            raise AssertionError(
                f"expected {expected} entries of tag {tag!r}{what}{where}, found {len(found)}.\n"
                + self.describe()
            )
        return found

    def assert_not_logged(self, tag: str, *, run: str | None = None) -> None:
        """Assert nothing was logged under ``tag`` (in ``run`` if given)."""
        found = self.select(tag, run=run)
        if found:
            runs = sorted({e.run for e in found})
            raise AssertionError(f"tag {tag!r} was logged {len(found)} times (runs {runs})")

    def assert_complete(self) -> None:
        """Assert nothing was lost: no drops, no write, transport or internal errors, every file
        read to its end."""
        bad = {t: v for t, v in self.counters.items() if v}
        if bad or self._problems:
            raise AssertionError(f"the log is not complete: counters {bad}, problems {self._problems}")


def _tag_variants(tag: str) -> set[str]:
    cleaned = _INVALID_TAG_CHARACTERS.sub("_", tag).lstrip("/")
    return {tag, cleaned, tag + _TEXT_SUFFIX}


def run_matches(run: str, pattern: str) -> bool:
    return run == pattern or (any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(run, pattern))
