"""Reading a log folder into :class:`CapturedLogs`: the TFRecord frames (both CRCs checked) and
each record parsed with the ``Event`` protobuf class, as TensorBoard shows it."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from crc32c import crc32c as _crc32c

from .._counters import RESERVED_PREFIX
from ._captured import ROOT_RUN, CapturedLogs, LoggedEvent, run_matches

# TensorBoard's names for the plugin of each legacy Summary.Value field (data_compat).
_LEGACY_FIELDS = (
    ("simple_value", "scalar", "scalars"),
    ("histo", "histogram", "histograms"),
    ("image", "image", "images"),
    ("audio", "audio", "audio"),
)
_PLUGIN_KINDS = {
    "scalars": "scalar", "histograms": "histogram", "images": "image", "text": "text", "audio": "audio",
}
_DT_FLOAT, _DT_DOUBLE, _DT_INT32, _DT_INT64 = 1, 2, 3, 9


def fill(captured: CapturedLogs, folder: str, patterns: list[str] | None = None) -> None:
    event_cls = _event_class()
    entries: list[LoggedEvent] = []
    counters: dict[str, float] = {}
    problems: list[str] = []
    runs = _run_folders(folder)
    if patterns is not None:
        runs = {run: path for run, path in runs.items() if any(run_matches(run, p) for p in patterns)}
    for run, path in runs.items():
        for file in sorted(p for p in path.iterdir() if "tfevents" in p.name and p.is_file()):
            records, problem = _read_records(file)
            if problem:
                problems.append(f"{os.path.relpath(file, folder)}: {problem}")
            for record in records:
                event = event_cls()
                try:
                    event.ParseFromString(record)
                except Exception as exc:  # a record whose CRCs match but that is not an Event
                    problems.append(f"{os.path.relpath(file, folder)}: undecodable record ({exc})")
                    continue
                if not event.HasField("summary"):
                    continue  # file_version, session_log, graph_def: not something a test asserts on
                for value in event.summary.value:
                    entry = _entry(run, event.step, event.wall_time, value)
                    if entry.tag.startswith(RESERVED_PREFIX) and run == ROOT_RUN:
                        if isinstance(entry.value, float):
                            counters[entry.tag] = entry.value
                        continue
                    entries.append(entry)
    captured._runs = list(runs)
    captured._counters = counters
    captured._problems = problems
    captured._entries = entries


def _run_folders(folder: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for current, _dirs, files in os.walk(folder):
        if any("tfevents" in f for f in files):
            rel = os.path.relpath(current, folder)
            found[ROOT_RUN if rel == "." else Path(rel).as_posix()] = Path(current)
    return dict(sorted(found.items(), key=lambda item: (item[0] != ROOT_RUN, item[0])))


def _masked_crc(data: bytes) -> int:
    # Written here rather than imported from the writer, so the reader checks the writer.
    x = _crc32c(data)
    return ((((x >> 15) | (x << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def _read_records(path: Path) -> tuple[list[bytes], str]:
    """The records of a TFRecord file up to the first bad frame, and why it stopped there ("" if not)."""
    data = path.read_bytes()
    records: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 12:
            return records, f"truncated record at byte {pos}"
        header = data[pos:pos + 8]
        (length,) = _U64.unpack(header)
        if _U32.unpack_from(data, pos + 8)[0] != _masked_crc(header):
            return records, f"corrupt record length at byte {pos}"
        start, stop = pos + 12, pos + 12 + length
        if stop + 4 > end:
            return records, f"truncated record at byte {pos}"
        payload = data[start:stop]
        if _U32.unpack_from(data, stop)[0] != _masked_crc(payload):
            return records, f"corrupt record data at byte {pos}"
        records.append(payload)
        pos = stop + 4
    return records, ""


def _event_class() -> Any:
    try:
        from tensorboard.compat.proto.event_pb2 import Event
    except ImportError:
        from tensorboardX.proto.event_pb2 import Event
    return Event


def _entry(run: str, step: int, wall_time: float, value: Any) -> LoggedEvent:
    which = value.WhichOneof("value")
    for name, kind, plugin in _LEGACY_FIELDS:
        if which == name:
            scalar = float(value.simple_value) if name == "simple_value" else None
            return LoggedEvent(run, value.tag, kind, int(step), scalar, float(wall_time), plugin, value)
    plugin = value.metadata.plugin_data.plugin_name if value.HasField("metadata") else ""
    kind = _PLUGIN_KINDS.get(plugin) or ("other" if plugin else ("tensor" if which == "tensor" else "other"))
    decoded: float | str | None = None
    if which == "tensor":
        if kind == "text":
            strings = value.tensor.string_val
            decoded = strings[0].decode("utf-8", "replace") if len(strings) == 1 else None
        elif kind == "scalar":
            decoded = _tensor_scalar(value.tensor)
    return LoggedEvent(run, value.tag, kind, int(step), decoded, float(wall_time), plugin, value)


def _tensor_scalar(tensor: Any) -> float | None:
    for name in ("float_val", "double_val", "int_val", "int64_val"):
        values = getattr(tensor, name)
        if len(values) == 1:
            return float(values[0])
    content = tensor.tensor_content
    formats = {_DT_FLOAT: "<f", _DT_DOUBLE: "<d", _DT_INT32: "<i", _DT_INT64: "<q"}
    fmt = formats.get(tensor.dtype)
    if fmt and len(content) == struct.calcsize(fmt):
        return float(struct.unpack(fmt, content)[0])
    return None
