"""Where this process's logging calls go: its channel, its hub if it owns one, what it has left.

One object, ``STATE``, read by every logging call. It changes under ``STATE.lock`` (connect.py,
init and close) and is reset in a fork child (hooks.py); ``notify()`` tells the handle's fast
paths that it changed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .pending import PendingCalls

if TYPE_CHECKING:
    from .._channel import Channel
    from .._discovery.hubfile import GenerationWatch
    from .._hub import Hub

__all__ = ["SAVED_ENV", "STATE"]


class _ProcessState:
    __slots__ = (
        "pid", "channel", "hub", "_idle", "idle_hooks", "watch", "finished_hubs", "lock", "exit_hooked",
        "lost_hub", "close_owner", "looking", "pending",
    )

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.channel: Channel | None = None
        self.hub: Hub | None = None
        # True when this process has no hub and nothing to look for: a top-level process that
        # has not called init. Logging calls then return after one attribute check.
        self._idle = False
        self.idle_hooks: list[Callable[[], None]] = []
        self.watch: GenerationWatch | None = None
        self.finished_hubs: set[str] = set()  # hubs this process already left: never rejoin them
        # Reentrant: a signal handler that logs runs on a thread that may hold it (init, close).
        self.lock = threading.RLock()
        # The thread (ident) looking for a hub under ``lock`` now, 0 if none; calls a signal
        # handler makes on that thread meanwhile wait in ``pending`` (_process/pending.py).
        self.looking = 0
        self.pending = PendingCalls()
        self.exit_hooked = False
        # The hub went away under a producer of this process (not a clean close): flush() says
        # False from then on, since what was logged since went nowhere. Cleared by a new hub.
        self.lost_hub = False
        # close_tensorboard_logger, set by tensorboardx_logger (which imports this module): the
        # exit hook of an owner calls it without importing anything at exit.
        self.close_owner: Callable[[], None] | None = None

    @property
    def idle(self) -> bool:
        return self._idle

    @idle.setter
    def idle(self, value: bool) -> None:
        self._idle = value
        self.notify()

    def notify(self) -> None:
        """Tell the hooks (the handle's fast paths) that channel, idle or watch changed."""
        for hook in self.idle_hooks:
            hook()


STATE = _ProcessState()

#: The hub-file variable as it was before each hub this process started (init or a rank's own
#: hub): ``close_tensorboard_logger()`` restores it, so descendants started later find no hub.
SAVED_ENV: list[str | None] = []
