"""The owner's channel: calls of the process that runs the hub go straight into its queue."""

from __future__ import annotations

import os
from typing import Any

from ._capture import CaptureWriter
from ._hub import Hub

__all__ = ["LocalChannel"]


class LocalChannel:
    def __init__(self, hub: Hub, writer_kwargs: dict[str, Any]) -> None:
        self.hub = hub
        self.start_ns = hub.start_ns
        self._put = hub.put_local
        self._writer = CaptureWriter(self, **writer_kwargs)

    def put_scalar(self, tag: str, value: float, step: int | None, wall_time: float) -> None:
        self._put(("s", tag, value, step, wall_time))

    def put_event(self, subrun: str, data: bytes) -> None:
        self._put(("e", subrun, data))

    def flush(self, timeout: float | None = None) -> bool:
        return self.hub.flush_local(timeout)

    def folder(self) -> str:
        return os.path.abspath(self.hub.logdir)

    def writer(self) -> CaptureWriter:
        return self._writer
