"""Reading a log directory as TensorBoard does, for ``hyrax-tbhub inspect``.

Files are read with TensorBoard's own record reader and migrated through its compatibility layers,
so tags and kinds are what the UI shows; where the reader stopped early is found by counting the
bytes it consumed (see :mod:`hyrax_tbhub._tools.inspect`). ``tensorboard`` is imported where used:
it is not a dependency of hyrax_tbhub, only of this command.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._counters import DROPPED, ERRORS, RESERVED_PREFIX
from .._events import RECORD_HEADER, RECORD_OVERHEAD
from ..testing import ROOT_RUN
from .inspect_model import HUB_COUNTERS, EventFileReport, LogdirReport, Problem, RunReport, TagReport

# TensorBoard plugin names -> the kinds we report. Anything else with a tensor is "tensor" when it
# has no plugin, "other" (pr_curves, hparams, graphs, mesh, ...) when it names one.
_PLUGIN_KINDS = {
    "scalars": "scalar",
    "histograms": "histogram",
    "images": "image",
    "text": "text",
    "audio": "audio",
}



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
            report.bytes_read += len(record) + RECORD_OVERHEAD
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
    head = _read_bytes(path, offset, RECORD_HEADER)
    done = f"{report.records} record{'' if report.records == 1 else 's'} ({offset} bytes) read before it"
    if len(head) < RECORD_HEADER:
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
    needed = length + RECORD_OVERHEAD
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
    by_tag = {tag: key for key, tag in HUB_COUNTERS.items()}
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
