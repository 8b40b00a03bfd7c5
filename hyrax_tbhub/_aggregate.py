"""``hyrax_tbhub.aggregate``: live aggregates for the hub of this process (the hub's side is
:mod:`._hub.aggregate`; this function reads the per-process state, which the hub must not)."""

from __future__ import annotations

import os

from ._hub import attach
from ._process.state import STATE

__all__ = ["aggregate"]


def aggregate(pattern: str, every_s: float = 1.0) -> None:
    """Write live aggregates of the tags matching ``pattern`` into the run ``all_producers``.

    Call it in the process that called ``init_tensorboard_logger`` (the owner), after init. For
    each window of ``every_s`` seconds that saw data of a matching tag (from any producer and the
    owner), the hub writes ``<tag>/count``, ``/mean``, ``/min``, ``/max``, ``/p50`` and ``/p95``
    at step = microseconds since the hub started at the window's end. ``pattern`` is a glob
    (``"DataProvider/*"``); calling again adds patterns (a tag takes the first that matches).
    count/mean/min/max are exact; p50/p95 are exact up to 2048 values per window and tag, within
    1% relative error beyond (docs/aggregates.md). For a :class:`hyrax_tbhub.SummaryWriter` use
    its ``aggregate`` method.
    """
    hub = STATE.hub
    if hub is None or hub.owner_pid != os.getpid():
        raise RuntimeError(
            "aggregate() configures the hub of this process: call init_tensorboard_logger() first, "
            "in the process that owns the log"
        )
    attach(hub, pattern, every_s)
