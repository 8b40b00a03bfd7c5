"""Every summary value of a log folder as TensorBoard's own event-file reader returns it.

The comparisons of our writer with the stock writers need the whole record of each value (tag,
step, wall time, payload, plugin name and content), not what a plot shows; TensorBoard's
``EventFileLoader`` yields the raw ``Event`` messages of one file, the hub's counters left out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from hyrax_tbhub.testing import RESERVED_PREFIX


class Value(NamedTuple):
    run: str
    tag: str
    step: int
    wall_time: float
    kind: str  # the Summary.Value field that is set: simple_value, tensor, histo, image, audio
    payload: Any  # a float for simple_value, else the field's serialised bytes
    plugin: str
    content: bytes


def read_values(logdir: str | os.PathLike[str]) -> list[Value]:
    """Each summary value of each run below ``logdir``, in file order (runs sorted by name)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    root = Path(logdir)
    out: list[Value] = []
    for folder, _dirs, files in sorted(os.walk(root)):
        run = Path(os.path.relpath(folder, root)).as_posix()
        for name in sorted(f for f in files if "tfevents" in f):
            for event in EventFileLoader(os.path.join(folder, name)).Load():
                if not event.HasField("summary"):
                    continue
                for v in event.summary.value:
                    if v.tag.startswith(RESERVED_PREFIX):
                        continue
                    kind = v.WhichOneof("value") or ""
                    payload = v.simple_value if kind == "simple_value" else (
                        getattr(v, kind).SerializeToString() if kind else b"")
                    out.append(Value(run, v.tag, event.step, event.wall_time, kind, payload,
                                     v.metadata.plugin_data.plugin_name, v.metadata.plugin_data.content))
    return out


def other_events(logdir: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(run, field) of every event that is not a summary, file version or session log."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    root = Path(logdir)
    out = []
    for folder, _dirs, files in sorted(os.walk(root)):
        run = Path(os.path.relpath(folder, root)).as_posix()
        for name in sorted(f for f in files if "tfevents" in f):
            for event in EventFileLoader(os.path.join(folder, name)).Load():
                what = event.WhichOneof("what")
                if what not in ("summary", "file_version", "session_log", None):
                    out.append((run, what))
    return out


def number(value: Value) -> float:
    """The scalar a value holds (a legacy ``simple_value`` arrives as a scalar tensor)."""
    if value.kind == "simple_value":
        return float(value.payload)
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.util.tensor_util import make_ndarray

    return float(make_ndarray(TensorProto.FromString(value.payload)).item())
