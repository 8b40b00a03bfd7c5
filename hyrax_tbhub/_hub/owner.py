"""The owner's channel: calls of the process that runs the hub go straight into its queue."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .._channel import import_capture_writer
from .._items import EVENT, SCALAR
from .server import Hub

if TYPE_CHECKING:
    from .._capture import CaptureWriter

__all__ = ["LocalChannel"]


class LocalChannel:
    def __init__(self, hub: Hub, writer_kwargs: dict[str, Any]) -> None:
        self.hub = hub
        self.start_ns = hub.start_ns
        self._put = hub.put_local
        self._writer_kwargs = writer_kwargs
        self._writer: CaptureWriter | None = None

    def put_scalar(self, tag: str, value: float, step: int | None, wall_time: float) -> None:
        self._put((SCALAR, tag, value, step, wall_time))

    def put_event(self, subrun: str, data: bytes) -> None:
        self._put((EVENT, subrun, data))

    def flush(self, timeout: float | None = None) -> bool:
        # Bounded like a producer's flush: a wedged hub thread must not hang the training loop.
        return self.hub.flush_local(30.0 if timeout is None else timeout)

    def folder(self) -> str:
        return os.path.abspath(self.hub.root_folder)

    def writer(self) -> CaptureWriter:
        # Built on first use: tensorboardX (and through it torch) is imported only when a
        # non-scalar method is called. purge_step was already written by the hub.
        if self._writer is None:
            writer_class = import_capture_writer()
            kwargs = {k: v for k, v in self._writer_kwargs.items() if k != "purge_step"}
            self._writer = writer_class(self, **kwargs)
        return self._writer
