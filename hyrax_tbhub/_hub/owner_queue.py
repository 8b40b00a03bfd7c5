"""The owner's own calls on their way into the store: a deque that only the hub thread drains.

The owner's channel (:mod:`.owner`) skips the socket: :meth:`.server.Hub.put_local` appends each
call here, and the hub thread writes what is queued into the root run at every turn of its loop.
A flush is an item of the queue too, set once everything queued before it is written.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from .._items import FLUSH, CallItem, LocalItem
from .store import Store

__all__ = ["OwnerQueue"]

_LOCAL_WAIT = 5.0  # s: the most a call waits for a hub thread that does not drain (a wedged hub: a bug)


class OwnerQueue:
    """The owner's items (``items``: appended by any thread of the owner, taken by the hub thread)."""

    __slots__ = ("items", "_store", "_wake", "_thread", "_closed", "_handed_over")

    def __init__(
        self, store: Store, wake: Callable[[], None], thread: threading.Thread, closed: threading.Event
    ) -> None:
        self.items: deque[LocalItem] = deque()
        self._store = store
        self._wake = wake
        self._thread = thread  # the hub thread: the only one that takes items
        self._closed = closed  # set once the hub thread stopped: nothing is drained any more
        self._handed_over = threading.Event()  # set once hand_over() emptied the queue for good

    def wait_for_drain(self) -> None:
        """The owner logs faster than the hub thread gets the GIL: wait (letting go of the GIL)
        until the hub thread has written what is queued, rather than queue without bound.

        Only the hub thread ever takes from the owner's queue. A caller that drained it itself
        could be cut between taking a batch and writing it by an exception raised between two
        bytecodes of its own thread (Ctrl-C's KeyboardInterrupt: thousands of returned calls
        lost), or re-entered by a signal handler that logs (which emptied the queue under the
        interrupted drain: IndexError). Here an interrupt only cuts the wait: what a call
        appended is written whatever the caller's thread does next.
        """
        thread = self._thread
        if thread.ident == threading.get_ident() or not thread.is_alive():
            return  # the hub thread drains at its next turn; a hub not started has no thread yet
        self.flush(_LOCAL_WAIT)

    def flush(self, timeout: float | None) -> bool:
        if self._closed.is_set():
            return True
        done = threading.Event()
        self.items.append((FLUSH, done))
        if self._closed.is_set():
            # The hub stopped between the check above and the append. Its hand-over sets this
            # flush if it finds it; if it had finished before the append, nothing ever will, but
            # everything logged before the flush was handed over by then.
            return self._handed_over.wait(timeout)
        self._wake()
        return done.wait(timeout)

    def drain(self) -> None:
        """Write what is queued into the root run (the hub thread, under the hub's lock)."""
        local = self.items
        n = len(local)
        if not n:
            return
        pop = local.popleft
        controls = self._store.write(self._store.root, [pop() for _ in range(n)])
        if controls:  # the owner's flushes: each waits until what it logged before is written
            self._store.write_pending()
            for item in controls:
                item[1].set()

    def hand_over(self, late: Callable[[CallItem], None] | None) -> None:
        """Once the hub thread stopped: what was appended while the last drain ran goes to
        ``late`` (the owner's exit flush), and every flush waiting in the queue returns."""
        try:
            while self.items:  # appended while the last drain ran
                item = self.items.popleft()
                if item[0] == FLUSH:
                    item[1].set()  # a flush: everything before it was drained or goes to `late` first
                elif late is not None:
                    late(item)
        finally:
            self._handed_over.set()
