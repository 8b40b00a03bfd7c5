"""Where a signal handler's calls wait while the thread it interrupted is looking for the hub.

A signal handler runs on the main thread between two bytecodes, possibly in the middle of the
first logging call's look for the hub (:func:`.connect.rediscover`: hub files, connect). A
handler that logs (a 1 ms ``SIGALRM`` profiler or watchdog) must neither wait for that look (it
is the one holding it up: a deadlock) nor start a look of its own (nested in the interrupted
one, and each nested look slow enough for the next alarm to nest again). Its calls go here, a
list appended to without a lock, and the look hands them to the channel it found, or drops
them with the rest when it found no hub (calls with no hub are no-ops, as everywhere).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .._items import EVENT, SCALAR, CallItem

if TYPE_CHECKING:
    from .._capture import CaptureWriter
    from .._channel import Channel

__all__ = ["PendingCalls"]


class PendingCalls:
    """A channel that holds calls until the look in progress on this thread has a channel."""

    start_ns = 0  # no hub yet: the *_ts steps of a handler's calls count from the clock's origin

    def __init__(self) -> None:
        self.items: list[CallItem] = []
        self._writer: CaptureWriter | None = None

    def put_scalar(self, tag: str, value: float, step: int | None, wall_time: float) -> None:
        self.items.append((SCALAR, tag, value, step, wall_time))

    def put_event(self, subrun: str, data: bytes) -> None:
        self.items.append((EVENT, subrun, data))

    def flush(self, timeout: float | None = None) -> bool:
        return False  # nothing can be on disk before there is a hub

    def folder(self) -> str:
        return os.getcwd()

    def writer(self) -> CaptureWriter:
        if self._writer is None:
            from .._channel import import_capture_writer  # noqa: PLC0415 - imported by the package already

            self._writer = import_capture_writer()(self, logdir=self.folder())
        return self._writer

    def hand_over(self, channel: Channel | None) -> None:
        """Send what was held to ``channel`` (in the order logged), or drop it with no hub."""
        items, self.items = self.items, []
        if channel is None:
            return
        for item in items:
            if item[0] == SCALAR:
                channel.put_scalar(item[1], item[2], item[3], item[4])
            else:
                channel.put_event(item[1], item[2])
