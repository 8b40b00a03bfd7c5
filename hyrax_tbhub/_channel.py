"""What a logging call talks to: the hub itself in the owner, a producer elsewhere."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ._util.forksafe import IMPORT_LOCK

if TYPE_CHECKING:
    from ._capture import CaptureWriter

__all__ = ["Channel", "import_capture_writer"]


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


def import_capture_writer() -> type[CaptureWriter]:
    """``_capture.CaptureWriter``, importing tensorboardX on first use (under IMPORT_LOCK).

    Lazy: tensorboardX imports torch when it is installed, seconds in every worker that only
    logs scalars; under the lock a fork takes, so a fork never cuts that import in half.
    """
    with IMPORT_LOCK:
        from ._capture import CaptureWriter as writer_class
    return writer_class
