"""Read a log folder back with tensorboard's EventAccumulator, one run per folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

RESERVED = "hyrax_tbhub/"


def run_folders(logdir: str | os.PathLike[str]) -> dict[str, Path]:
    root = Path(logdir)
    out: dict[str, Path] = {}
    for folder, _dirs, files in os.walk(root):
        if any("tfevents" in f for f in files):
            rel = os.path.relpath(folder, root)
            out[rel] = Path(folder)
    return out


def read_log(logdir: str | os.PathLike[str], include_reserved: bool = False) -> dict[str, dict[str, Any]]:
    """{run: {tag: [(step, value), ...]}} for scalars, plus '_other' kinds as {kind: {tag: count}}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result: dict[str, dict[str, Any]] = {}
    for run, folder in run_folders(logdir).items():
        acc = EventAccumulator(
            str(folder),
            size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0, "audio": 0},
        )
        acc.Reload()
        tags = acc.Tags()
        scalars: dict[str, Any] = {}
        for tag in tags["scalars"]:
            if tag.startswith(RESERVED) and not include_reserved:
                continue
            scalars[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
        other = {
            kind: {t: len(getattr(acc, getter)(t)) for t in tags[kind]}
            for kind, getter in (("histograms", "Histograms"), ("images", "Images"), ("tensors", "Tensors"))
            if tags.get(kind)
        }
        if other:
            scalars["_other"] = other
        result[run] = scalars
    return result


def counters(logdir: str | os.PathLike[str]) -> dict[str, float]:
    """The hub's reserved counters in the root run: {tag: last value}."""
    log = read_log(logdir, include_reserved=True).get(".", {})
    return {t: v[-1][1] for t, v in log.items() if t.startswith(RESERVED)}
