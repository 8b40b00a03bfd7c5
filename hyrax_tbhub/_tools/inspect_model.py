"""What ``hyrax-tbhub inspect`` reports about one log directory, and its JSON form.

The JSON shape is documented in :mod:`hyrax_tbhub._tools.inspect`; ``LogdirReport.to_dict`` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .._counters import INTERNAL_ERRORS, OVER_CAP, REJECTED, STRANGERS, TRANSPORT_ERRORS

# The hub-wide counters of the root run: JSON key -> tag.
HUB_COUNTERS = {
    "transport_errors": TRANSPORT_ERRORS, "internal_errors": INTERNAL_ERRORS, "rejected": REJECTED,
    "strangers": STRANGERS, "over_cap": OVER_CAP,
}
JSON_FORMAT = "hyrax_tbhub.inspect/1"


@dataclass
class TagReport:
    """What one tag of one run holds, across all of the run's event files."""

    tag: str
    kind: str
    plugin: str
    count: int = 0
    step_min: int | None = None
    step_max: int | None = None
    wall_time_min: float | None = None
    wall_time_max: float | None = None
    # TensorBoard's default (Rust) loader drops earlier points when a step goes backwards, so
    # producers sharing a tag with their own step counters lose data in the UI: worth flagging.
    step_regressions: int = 0
    _last_step: int | None = field(default=None, repr=False, compare=False)

    def add_point(self, step: int, wall_time: float) -> None:
        self.count += 1
        self.step_min = step if self.step_min is None else min(self.step_min, step)
        self.step_max = step if self.step_max is None else max(self.step_max, step)
        self.wall_time_min = wall_time if self.wall_time_min is None else min(self.wall_time_min, wall_time)
        self.wall_time_max = wall_time if self.wall_time_max is None else max(self.wall_time_max, wall_time)
        if self._last_step is not None and step < self._last_step:
            self.step_regressions += 1
        self._last_step = step


@dataclass
class EventFileReport:
    """One event file: how much of it TensorBoard's reader could consume."""

    file: str  # relative to the logdir, "/"-separated
    size_bytes: int
    bytes_read: int = 0
    records: int = 0


@dataclass
class Problem:
    """A file (or directory) that could not be read completely."""

    run: str
    file: str
    kind: str  # "truncated" | "corrupt" | "undecodable" | "unreadable"
    offset: int | None  # byte offset where reading stopped, when known
    unread_bytes: int
    message: str


@dataclass
class RunReport:
    """One run: a directory holding event files (or a run named only by a hub counter)."""

    name: str
    path: str
    event_files: list[EventFileReport] = field(default_factory=list)
    tags: dict[str, TagReport] = field(default_factory=dict)
    dropped: int | None = None
    errors: int | None = None
    problems: list[Problem] = field(default_factory=list)
    # Latest value (in file order, i.e. time order) of each reserved ``hyrax_tbhub/`` scalar tag in
    # this run. Only the root run's are the hub's counters.
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class LogdirReport:
    """Everything ``inspect`` found below one log directory."""

    logdir: str
    runs: dict[str, RunReport] = field(default_factory=dict)
    transport_errors: int | None = None
    internal_errors: int | None = None
    rejected: int | None = None
    strangers: int | None = None
    over_cap: int | None = None
    walk_problems: list[Problem] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        return [*self.walk_problems, *(p for run in self.runs.values() for p in run.problems)]

    @property
    def event_file_count(self) -> int:
        return sum(len(run.event_files) for run in self.runs.values())

    @property
    def total_dropped(self) -> int:
        return sum(run.dropped or 0 for run in self.runs.values())

    @property
    def total_errors(self) -> int:
        return sum(run.errors or 0 for run in self.runs.values())

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON shape (see the module docstring)."""
        return {
            "format": JSON_FORMAT,
            "logdir": self.logdir,
            **{key: getattr(self, key) for key in HUB_COUNTERS},
            "total_dropped": self.total_dropped,
            "total_errors": self.total_errors,
            "runs": {name: run_to_dict(run) for name, run in self.runs.items()},
            "problems": [problem_to_dict(p) for p in self.problems],
        }


def utc_iso(wall_time: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds, e.g. 2024-05-01T12:00:00.123Z."""
    if wall_time is None:
        return None
    stamp = datetime.fromtimestamp(wall_time, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def run_to_dict(run: RunReport) -> dict[str, Any]:
    return {
        "path": run.path,
        "dropped": run.dropped,
        "errors": run.errors,
        "event_files": [
            {"file": f.file, "size_bytes": f.size_bytes, "bytes_read": f.bytes_read, "records": f.records}
            for f in run.event_files
        ],
        "tags": {tag.tag: tag_to_dict(tag) for tag in run.tags.values()},
    }


def tag_to_dict(tag: TagReport) -> dict[str, Any]:
    return {
        "kind": tag.kind,
        "plugin": tag.plugin,
        "count": tag.count,
        "step_min": tag.step_min,
        "step_max": tag.step_max,
        "step_regressions": tag.step_regressions,
        "wall_time_min": tag.wall_time_min,
        "wall_time_max": tag.wall_time_max,
        "wall_time_min_utc": utc_iso(tag.wall_time_min),
        "wall_time_max_utc": utc_iso(tag.wall_time_max),
    }


def problem_to_dict(problem: Problem) -> dict[str, Any]:
    return {
        "run": problem.run,
        "file": problem.file,
        "kind": problem.kind,
        "offset": problem.offset,
        "unread_bytes": problem.unread_bytes,
        "message": problem.message,
    }
