"""TensorBoard's own reader (EventAccumulator), the independent oracle of the tests.

Tests read logs with :mod:`hyrax_tbhub.testing`. This module is for the checks that are about
TensorBoard itself: that its reader accepts every file the hub wrote, and that it shows the same
points as our reader (``tests/test_testing.py``), which a bug shared by our writer and our reader
could not show.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hyrax_tbhub.testing import RESERVED_PREFIX, ROOT_RUN


def read_log(logdir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """{run: {tag: [(step, value), ...]}} of the scalars TensorBoard shows (the hub's counters left
    out), plus '_other': {kind: {tag: count}} for histograms, images and tensors."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = Path(logdir)
    result: dict[str, dict[str, Any]] = {}
    for folder, _dirs, files in os.walk(root):
        if not any("tfevents" in f for f in files):
            continue
        run = os.path.relpath(folder, root)
        acc = EventAccumulator(
            folder, size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0, "audio": 0}
        )
        acc.Reload()
        tags = acc.Tags()
        scalars: dict[str, Any] = {
            tag: [(e.step, e.value) for e in acc.Scalars(tag)]
            for tag in tags["scalars"]
            if not (run == ROOT_RUN and tag.startswith(RESERVED_PREFIX))
        }
        other = {
            kind: {t: len(getattr(acc, getter)(t)) for t in tags[kind]}
            for kind, getter in (("histograms", "Histograms"), ("images", "Images"), ("tensors", "Tensors"))
            if tags.get(kind)
        }
        if other:
            scalars["_other"] = other
        result[run] = scalars
    return result
