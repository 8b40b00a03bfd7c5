"""``hyrax-tbhub inspect LOGDIR``: summarize what a log directory holds, as TensorBoard will read it.

Every directory below LOGDIR that holds ``*tfevents*`` files is a run (LOGDIR itself is run ``.``).
Files are read with TensorBoard's own record reader (``RawEventFileLoader``) and passed through the
same compatibility layers TensorBoard applies (``data_compat``, ``dataclass_compat``), so tag names
and kinds match what the TensorBoard UI shows (tensorboardX's ``add_text("t", ...)`` becomes tag
``t/text_summary``, legacy ``simple_value`` scalars become scalar tensors, ...).

TensorBoard's Python reader stops silently at the first bad record (it logs the ``DataLossError`` at
debug level only). We detect that by comparing the bytes the reader consumed with the file size and
report it as a problem: ``truncated`` (the last record is incomplete: a crashed writer, or one still
writing) or ``corrupt`` (a complete record fails its CRC). Counts are what the Python reader
(``EventAccumulator``, ``tensorboard --load_fast=false``) gets. The default Rust data server differs
on ``corrupt`` files: it only checks a record's data CRC when the payload fails to parse, so a flipped
bit inside a value is served as is and reading goes on; a bad length CRC stops it too.

JSON output (``--json``), format ``hyrax_tbhub.inspect/1``; stdout is JSON exactly when the exit code
is 0::

    {
      "format": "hyrax_tbhub.inspect/1",
      "logdir": "/abs/path",
      "transport_errors": int | null,      # latest hyrax_tbhub/transport_errors, null if never logged
      "internal_errors": int | null,       # likewise hyrax_tbhub/internal_errors (bugs of the hub)
      "rejected": int | null,              # peers that proved the key, then broke the protocol
      "strangers": int | null,             # connections that never proved the key
      "over_cap": int | null,              # events past the runs / sub-runs caps
      "total_dropped": int,                # sum over runs of "dropped" (null counted as 0)
      "total_errors": int,
      "runs": {                            # "." first, then sorted by name
        "<run>": {
          "path": "/abs/path/<run>",
          "dropped": int | null,           # latest hyrax_tbhub/dropped/<run> from the root run
          "errors": int | null,            # latest hyrax_tbhub/errors/<run> from the root run
          "event_files": [{"file": "<path relative to logdir>", "size_bytes": int,
                           "bytes_read": int, "records": int}],
          "tags": {                        # sorted by tag
            "<tag>": {"kind": "scalar|histogram|image|text|audio|tensor|other", "plugin": str,
                      "count": int, "step_min": int, "step_max": int,
                      "step_regressions": int,   # points whose step is lower than the previous one
                      "wall_time_min": float, "wall_time_max": float,        # seconds since epoch
                      "wall_time_min_utc": str, "wall_time_max_utc": str}  # ISO 8601, "Z"
          }
        }
      },
      "problems": [{"run": str, "file": str, "kind": "truncated|corrupt|undecodable|unreadable",
                    "offset": int | null, "unread_bytes": int, "message": str}]
    }

Exit codes: 0 (also when some files are truncated or corrupt: a warning goes to stderr), 1 when no
event file exists below LOGDIR, 2 when LOGDIR is missing or not a directory, 3 when the ``tensorboard``
package (not a dependency of hyrax_tbhub: its readers are imported lazily) is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._counters import (
    DROPPED,
    ERRORS,
    INTERNAL_ERRORS,
    OVER_CAP,
    REJECTED,
    RESERVED_PREFIX,
    STRANGERS,
    TRANSPORT_ERRORS,
)
from ..testing import ROOT_RUN

# The hub-wide counters of the root run: JSON key -> tag.
_HUB_COUNTERS = {
    "transport_errors": TRANSPORT_ERRORS, "internal_errors": INTERNAL_ERRORS, "rejected": REJECTED,
    "strangers": STRANGERS, "over_cap": OVER_CAP,
}
JSON_FORMAT = "hyrax_tbhub.inspect/1"

# TensorBoard plugin names -> the kinds we report. Anything else with a tensor is "tensor" when it
# has no plugin, "other" (pr_curves, hparams, graphs, mesh, ...) when it names one.
_PLUGIN_KINDS = {
    "scalars": "scalar",
    "histograms": "histogram",
    "images": "image",
    "text": "text",
    "audio": "audio",
}

# A TFRecord frame: u64 length, u32 masked CRC of the length, payload, u32 masked CRC of the payload.
_FRAME_HEADER = 12
_FRAME_OVERHEAD = 16


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
            **{key: getattr(self, key) for key in _HUB_COUNTERS},
            "total_dropped": self.total_dropped,
            "total_errors": self.total_errors,
            "runs": {name: _run_to_dict(run) for name, run in self.runs.items()},
            "problems": [_problem_to_dict(p) for p in self.problems],
        }


# --------------------------------------------------------------------------------------------------
# Reading


def inspect_logdir(logdir: str | os.PathLike[str]) -> LogdirReport:
    """Read every run below ``logdir`` and summarize it.

    Raises FileNotFoundError / NotADirectoryError when ``logdir`` is not an existing directory.
    Damaged files do not raise: they are read as far as TensorBoard can and listed in ``problems``.
    """
    root = Path(logdir)
    if not root.exists():
        raise FileNotFoundError(f"no such directory: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")
    report = LogdirReport(logdir=str(root.resolve()))
    for run_dir, files in _find_runs(root, report.walk_problems):
        name = _run_name(root, run_dir)
        report.runs[name] = _read_run(root, name, run_dir, files)
    _apply_counters(report)
    report.runs = dict(sorted(report.runs.items(), key=lambda item: (item[0] != ROOT_RUN, item[0])))
    return report


def _find_runs(root: Path, problems: list[Problem]) -> Iterator[tuple[Path, list[Path]]]:
    """Yield (directory, sorted event files) for every directory holding ``*tfevents*`` files."""

    def on_error(err: OSError) -> None:
        # An unreadable subdirectory should not hide the rest of the logdir.
        where = _relative(root, Path(err.filename)) if err.filename else "?"
        problems.append(
            Problem(
                run=where,
                file=where,
                kind="unreadable",
                offset=None,
                unread_bytes=0,
                message=f"cannot list directory: {err.strerror or err}",
            )
        )

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames.sort()
        # Same rule as TensorBoard's io_wrapper.IsTensorFlowEventsFile; sorted like its
        # DirectoryWatcher, i.e. by the timestamp in the name, so "latest" means last written.
        events = sorted(Path(dirpath, f) for f in filenames if "tfevents" in f)
        events = [p for p in events if p.is_file()]
        if events:
            yield Path(dirpath), events


def _read_run(root: Path, name: str, run_dir: Path, files: list[Path]) -> RunReport:
    run = RunReport(name=name, path=str(run_dir.resolve()))
    # dataclass_compat tracks each tag's first metadata per run, not per file (as TensorBoard does).
    initial_metadata: dict[str, Any] = {}
    for path in files:
        file_report, problems = _read_event_file(root, run, path, initial_metadata)
        run.event_files.append(file_report)
        run.problems.extend(problems)
    run.tags = dict(sorted(run.tags.items()))
    return run


def _read_event_file(
    root: Path, run: RunReport, path: Path, initial_metadata: dict[str, Any]
) -> tuple[EventFileReport, list[Problem]]:
    """Feed one file's events into ``run``; return its report and what went wrong reading it."""
    # tensorboard is imported where used: it is not a dependency of hyrax_tbhub, only of this command.
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat import tf

    rel = _relative(root, path)
    problems: list[Problem] = []
    try:
        size = path.stat().st_size
    except OSError as err:
        problems.append(Problem(run.name, rel, "unreadable", None, 0, f"cannot stat: {err}"))
        return EventFileReport(file=rel, size_bytes=0), problems
    report = EventFileReport(file=rel, size_bytes=size)
    try:
        # RawEventFileLoader yields each record's payload; the frame around it is 16 bytes, which
        # lets us count exactly how far the reader got (it hides DataLossError from its caller).
        for record in RawEventFileLoader(str(path)).Load():
            report.records += 1
            report.bytes_read += len(record) + _FRAME_OVERHEAD
            problem = _add_record(run, record, initial_metadata)
            if problem:
                problems.append(
                    Problem(run.name, rel, "undecodable", report.bytes_read - len(record) - 4, 0, problem)
                )
    except (OSError, tf.errors.OpError) as err:
        problems.append(
            Problem(
                run.name,
                rel,
                "unreadable",
                report.bytes_read,
                max(size - report.bytes_read, 0),
                f"read failed: {err}",
            )
        )
        return report, problems
    if report.bytes_read < size:
        problems.append(_classify_stop(run.name, rel, path, report))
    return report, problems


def _add_record(run: RunReport, record: bytes, initial_metadata: dict[str, Any]) -> str | None:
    """Decode one record like TensorBoard's EventFileLoader and count its summary values.

    Returns an error message for a record that passed its CRC but is not a valid Event.
    """
    from google.protobuf.message import DecodeError
    from tensorboard import data_compat, dataclass_compat
    from tensorboard.compat.proto import event_pb2

    try:
        event = event_pb2.Event.FromString(record)
    except DecodeError as err:
        return f"record is not an Event proto: {err}"
    try:
        events = dataclass_compat.migrate_event(data_compat.migrate_event(event), initial_metadata)
    except Exception as err:  # a malformed value must not stop the inspection of everything else
        return f"TensorBoard cannot convert this event: {err!r}"
    for migrated in events:
        if migrated.WhichOneof("what") != "summary":
            continue  # file_version, session_log, the legacy copy of a graph: not a tag
        for value in migrated.summary.value:
            tag = run.tags.get(value.tag)
            if tag is None:
                kind, plugin = _value_kind(value)
                tag = run.tags[value.tag] = TagReport(tag=value.tag, kind=kind, plugin=plugin)
            tag.add_point(migrated.step, migrated.wall_time)
            if tag.kind == "scalar" and value.tag.startswith(RESERVED_PREFIX):
                _record_counter(run, value)
    return None


def _record_counter(run: RunReport, value: Any) -> None:
    from tensorboard.util import tensor_util

    try:
        run.counters[value.tag] = int(round(float(tensor_util.make_ndarray(value.tensor).item())))
    except (TypeError, ValueError, OverflowError):
        pass  # a non-finite or non-numeric counter: keep the previous value


def _value_kind(value: Any) -> tuple[str, str]:
    """(kind, plugin name) of a migrated Summary.Value, decided by its first occurrence in a run."""
    plugin = value.metadata.plugin_data.plugin_name
    if plugin in _PLUGIN_KINDS:
        return _PLUGIN_KINDS[plugin], plugin
    if plugin:
        return "other", plugin
    return ("tensor" if value.HasField("tensor") else "other"), ""


def _classify_stop(run: str, rel: str, path: Path, report: EventFileReport) -> Problem:
    """Say why TensorBoard's reader stopped before the end of ``path``.

    An incomplete last frame is "truncated" (a writer that died mid-write, or one still writing: the
    rest may appear later). A complete frame that fails its CRC is "corrupt": the Python reader never
    reads past it (the Rust data server may, see the module docstring).
    """
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    offset, size = report.bytes_read, report.size_bytes
    unread = size - offset
    head = _read_bytes(path, offset, _FRAME_HEADER)
    done = f"{report.records} record{'' if report.records == 1 else 's'} ({offset} bytes) read before it"
    if len(head) < _FRAME_HEADER:
        return Problem(
            run,
            rel,
            "truncated",
            offset,
            unread,
            f"truncated: incomplete record header at byte {offset} of {size} ({unread} bytes "
            f"unread; the writer died or is still writing); {done}",
        )
    (length,) = struct.unpack("<Q", head[:8])
    (header_crc,) = struct.unpack("<I", head[8:])
    if masked_crc32c(head[:8]) != header_crc:
        return Problem(
            run,
            rel,
            "corrupt",
            offset,
            unread,
            f"corrupt: record header at byte {offset} fails its CRC; TensorBoard stops reading "
            f"this file there: {unread} of {size} bytes unread; {done}",
        )
    needed = length + _FRAME_OVERHEAD
    if offset + needed > size:
        return Problem(
            run,
            rel,
            "truncated",
            offset,
            unread,
            f"truncated: last record at byte {offset} is cut short (needs {needed} bytes, "
            f"{unread} present; the writer died or is still writing); {done}",
        )
    return Problem(
        run,
        rel,
        "corrupt",
        offset,
        unread,
        f"corrupt: record at byte {offset} fails its data CRC; TensorBoard's Python reader stops "
        f"there ({unread} of {size} bytes unread; the Rust data server may read on); {done}",
    )


def _read_bytes(path: Path, offset: int, count: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(count)
    except OSError:
        return b""


def _apply_counters(report: LogdirReport) -> None:
    """Attribute the hub's counters (scalars in the root run) to the runs they name."""
    root = report.runs.get(ROOT_RUN)
    if root is None:
        return
    by_tag = {tag: key for key, tag in _HUB_COUNTERS.items()}
    for tag, value in root.counters.items():
        if tag in by_tag:
            setattr(report, by_tag[tag], value)
            continue
        for prefix, attr in ((DROPPED, "dropped"), (ERRORS, "errors")):
            if tag.startswith(prefix) and len(tag) > len(prefix):
                name = tag[len(prefix) :]
                # A producer that dropped everything may have no run directory: still show it.
                run = report.runs.setdefault(name, RunReport(name=name, path=str(Path(report.logdir, name))))
                setattr(run, attr, value)


def _run_name(root: Path, run_dir: Path) -> str:
    rel = os.path.relpath(run_dir, root)
    return ROOT_RUN if rel == os.curdir else Path(rel).as_posix()


def _relative(root: Path, path: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


# --------------------------------------------------------------------------------------------------
# Output


def utc_iso(wall_time: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds, e.g. 2024-05-01T12:00:00.123Z."""
    if wall_time is None:
        return None
    stamp = datetime.fromtimestamp(wall_time, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _run_to_dict(run: RunReport) -> dict[str, Any]:
    return {
        "path": run.path,
        "dropped": run.dropped,
        "errors": run.errors,
        "event_files": [
            {"file": f.file, "size_bytes": f.size_bytes, "bytes_read": f.bytes_read, "records": f.records}
            for f in run.event_files
        ],
        "tags": {tag.tag: _tag_to_dict(tag) for tag in run.tags.values()},
    }


def _tag_to_dict(tag: TagReport) -> dict[str, Any]:
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


def _problem_to_dict(problem: Problem) -> dict[str, Any]:
    return {
        "run": problem.run,
        "file": problem.file,
        "kind": problem.kind,
        "offset": problem.offset,
        "unread_bytes": problem.unread_bytes,
        "message": problem.message,
    }


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def format_report(report: LogdirReport) -> str:
    """The human-readable table: two summary lines, then one block per run."""
    points = sum(t.count for run in report.runs.values() for t in run.tags.values())
    summary = (
        f"{_plural(len(report.runs), 'run')}, {_plural(report.event_file_count, 'event file')}, "
        f"{_plural(points, 'point')}; dropped {report.total_dropped}, errors {report.total_errors}, "
        f"transport errors {_count(report.transport_errors)}"
    )
    # The rarer counters only when the hub logged them: a clean log keeps its two-line summary.
    for key in ("internal_errors", "rejected", "strangers", "over_cap"):
        value = getattr(report, key)
        if value:
            summary += f", {key.replace('_', ' ')} {value}"
    if report.problems:
        summary += f"; {_plural(len(report.problems), 'damaged file')} (see warnings)"
    lines = [f"logdir {report.logdir}", summary]
    # One column layout for the whole report so runs line up when read top to bottom.
    tags = [t for run in report.runs.values() for t in run.tags.values()]
    widths = (
        max([len("tag")] + [len(t.tag) for t in tags]),
        max([len("steps")] + [len(_steps(t)) for t in tags]),
    )
    for run in report.runs.values():
        lines.append("")
        lines.extend(_format_run(run, widths))
    return "\n".join(lines) + "\n"


def _steps(tag: TagReport) -> str:
    return f"{tag.step_min}..{tag.step_max}"


def _format_run(run: RunReport, widths: tuple[int, int]) -> list[str]:
    tag_w, steps_w = widths
    lines = [
        f"run {run.name}  ({_plural(len(run.event_files), 'event file')}; "
        f"dropped {_count(run.dropped)}, errors {_count(run.errors)})"
    ]
    if not run.event_files:
        return [*lines, "  (no event files: this run is only named by a hub counter)"]
    if not run.tags:
        return [*lines, "  (no summary data)"]
    lines.append(f"  {'tag':<{tag_w}}  {'kind':<9}  {'count':>7}  {'steps':<{steps_w}}  wall time (UTC)")
    for tag in run.tags.values():
        wall = f"{utc_iso(tag.wall_time_min)} .. {utc_iso(tag.wall_time_max)}"
        line = f"  {tag.tag:<{tag_w}}  {tag.kind:<9}  {tag.count:>7}  {_steps(tag):<{steps_w}}  {wall}"
        if tag.step_regressions:
            line += f"  [step went backwards {tag.step_regressions}x: TensorBoard hides earlier points]"
        lines.append(line)
    return lines


def _warning_line(problem: Problem) -> str:
    return f"WARNING: {problem.file}: {problem.message}"


# --------------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyrax-tbhub inspect",
        description="Summarize the runs, tags and hub counters of a TensorBoard log directory.",
        epilog="Exit status: 0 ok (damaged files are reported as warnings on stderr), "
        "1 no event files found, 2 LOGDIR missing or not a directory.",
    )
    parser.add_argument("logdir", help="the log directory (the hub's LOGDIR)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (keys documented)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    prog = "hyrax-tbhub inspect"
    if importlib.util.find_spec("tensorboard") is None:
        print(
            f"{prog}: needs the tensorboard package to read event files: pip install tensorboard",
            file=sys.stderr,
        )
        return 3
    try:
        report = inspect_logdir(args.logdir)
    except (FileNotFoundError, NotADirectoryError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    if report.event_file_count == 0:
        print(f"{prog}: no event files (*tfevents*) found under {report.logdir}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        sys.stdout.write(format_report(report))
    for problem in report.problems:
        print(_warning_line(problem), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
