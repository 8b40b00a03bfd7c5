"""What a logging call talks to: the hub itself in the owner, a producer elsewhere."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._capture import CaptureWriter

__all__ = ["Channel"]


class Channel(Protocol):
    #: ``time.monotonic_ns()`` when the hub started: the origin of the ``*_ts`` steps.
    start_ns: int

    def put_scalar(self, tag: str, value: float, step: int | None, wall_time: float) -> None:
        """Queue a plain scalar; encoded by the hub. Never blocks for long, never raises."""

    def put_event(self, subrun: str, data: bytes) -> None:
        """Queue a serialised Event for this process's run (or a sub-run below it)."""

    def flush(self, timeout: float | None = None) -> bool:
        """Return once everything queued before the call is readable from disk (or on timeout)."""

    def folder(self) -> str:
        """The run folder of this process."""

    def writer(self) -> CaptureWriter:
        """The tensorboardX writer bound to this channel (for every non-scalar method)."""
