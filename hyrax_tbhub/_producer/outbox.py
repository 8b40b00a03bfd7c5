"""The producer's outbox: the bounded queue logging calls append to, and what it dropped.

A logging call appends one tuple and returns: it never blocks on the hub and never raises for
a full queue. Past ``Options.queue_max_events`` items or ``Options.queue_max_bytes`` bytes of
pre-encoded events, a call is dropped and counted; the count travels to the hub as a ``d`` item
and lands in the log under ``hyrax_tbhub/dropped/<run>``. The sender thread takes what is queued
and cuts it into frames with :func:`cut_batch`, a pure function of the items and the bounds.

Items (:mod:`.._items`; the sender encodes them, :mod:`.._events`): a logging call queues a
:data:`~.._items.ScalarItem` or an :data:`~.._items.EventItem`, a flush a
:data:`~.._items.FlushItem`; the sender adds the drop count and the goodbye.

No sockets here: the outbox reaches the sender only through the ``wake`` callable it is given.

The queue is one flat list, ``RECORD`` slots per item, not a deque of tuples: a tuple kept in a
queue is a fresh allocation that the garbage collector counts and, every 700 of them, walks; the
five values of a call copied into a list by one ``extend`` leave nothing for it (the argument
tuple is freed at once, to the free list), and the sender takes a whole round with one slice and
one ``del``, in C, instead of one ``popleft`` per item. Measured on this machine: about 0.1 us
less per call in the logging thread, more in a process with a large heap (full collections).

No lock, where there is a GIL: an ``extend`` and the sender's slice-and-``del`` are each atomic
under it, and the counts' read-modify-writes have no call between their read and their write, so
no other thread runs in between. A free-threaded CPython (3.13t, 3.14t) running without the GIL
runs threads at once: counts would lose updates (the ledger's count of what was logged among
them), and a call could land behind the final batch, neither sent nor counted. There
:func:`new_outbox` makes a :class:`LockedOutbox`, the same queue with its changes made under one
lock (:data:`LOCKED` forces either path; tests use it).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._items import EVENT, FLUSH, SCALAR, CallItem, QueuedItem
from .._util.stderr import warn
from ..options import Options
from .ledger import DROPPED, LOST_AFTER_QUEUED, Ledger

__all__ = [
    "LOCKED", "LockedOutbox", "Outbox", "RECORD", "Slots", "cut_batch", "gil_disabled", "items_of",
    "new_outbox",
]

#: Slots per queued item: (kind, a, b, c, d), unused ones None. ``list.extend`` of a tuple is one
#: C call, so an item's slots are never interleaved with another thread's.
RECORD = 5

#: The queue: ``RECORD`` slots per :data:`~.._items.QueuedItem`, its fields padded with None.
#: Flat, not a list of items (see the module's docstring), so not typed per item: the items are
#: typed where they leave it (:func:`items_of`).
Slots = list[Any]

_FULL = "it logs faster than the hub writes (its queue is full)"

#: Which outbox :func:`new_outbox` makes: None decides by :func:`gil_disabled` at each call;
#: True (a :class:`LockedOutbox`) or False (the lock-free :class:`Outbox`) forces it.
LOCKED: bool | None = None


def gil_disabled() -> bool:
    """True when this interpreter runs without the GIL: a free-threaded build (3.13t, 3.14t)
    where neither ``PYTHON_GIL=1`` nor an extension module that needs the GIL turned it back on
    (once on, it stays on)."""
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    return is_gil_enabled is not None and not is_gil_enabled()


def new_outbox(options: Options, wake: Callable[[], None], ledger: Ledger | None = None) -> Outbox:
    """The outbox for this interpreter: lock-free under a GIL, a :class:`LockedOutbox` without."""
    locked = gil_disabled() if LOCKED is None else LOCKED
    return (LockedOutbox if locked else Outbox)(options, wake, ledger)


def cut_batch(
    items: Sequence[QueuedItem], start: int, batch_events: int, batch_bytes: int, sized: bool = True
) -> int:
    """The end (exclusive) of the frame that starts at ``items[start]``.

    At most ``batch_events`` items; and, when ``sized`` (some item may be an ``e`` event), the
    frame ends with the event that brings its events' bytes to ``batch_bytes`` or more: the hub
    holds a frame whole while reading it, so large events must not make one huge. A frame always
    takes at least one item, so one event larger than ``batch_bytes`` still goes (alone).
    """
    end = min(len(items), start + batch_events)
    if not sized:
        return end
    size = 0
    for i in range(start, end):
        item = items[i]
        if item[0] == EVENT:
            size += len(item[2])
            if size >= batch_bytes:
                return i + 1
    return end


class Outbox:
    """The queue between the logging threads and the sender thread.

    Only the sender thread takes from it; any thread appends. No lock: a ``list.extend`` and the
    sender's slice-and-``del`` are each atomic under the GIL, and a counter that is off by a
    racing call or two only shifts when the sender is woken, never what is sent or counted.
    Without a GIL (a free-threaded build) none of that holds: :class:`LockedOutbox` is used there.
    """

    def __init__(self, options: Options, wake: Callable[[], None], ledger: Ledger | None = None) -> None:
        self.options = options
        # What was logged, where the hub can read it if this process is killed (.ledger).
        self.ledger = Ledger(shared=False) if ledger is None else ledger
        self.words = self.ledger.words  # one attribute lookup on the logging path, not two
        self.logged = 0  # events queued so far; the ledger's word 0 (a literal 0 there: no global lookup)
        self.queue: Slots = []
        self.queued_bytes = 0  # bytes of the queued events
        self.dropped = 0
        self.reported = 0  # the count the hub was last told
        self._max_slots = options.queue_max_events * RECORD  # -1 once calls are refused
        self._max_bytes = options.queue_max_bytes
        # The first call after idle wakes the sender (an event is on its way within about a
        # millisecond, before a pool's terminate() can kill us), and so does a full batch.
        self._wake_at = (options.batch_events - 1) * RECORD  # queue length before the append
        self._wake = wake
        self.woken = False  # a wake-up is on its way; the sender clears it when it wakes
        self._closed = False  # refused from now on: calls after the final batch, by design
        self._silent = False  # the hub is gone, which was said once already
        # Where calls refused after the final batch go instead of being no-ops: the process's
        # late channel, when the exit flush closed this outbox (_process/late.py).
        self.refused: Callable[[CallItem], None] | None = None
        self.final_sent = threading.Event()  # set once nothing more will be sent
        self._warned: set[str] = set()

    # -- any thread ----------------------------------------------------------------------------

    def put_scalar(self, tag: str, value: float, step: int | None, wall_time: float) -> None:
        q = self.queue
        n = len(q)
        if n < self._max_slots:
            # LOGGED: a store, not a read-modify-write of the shared word (measured cheaper); no
            # call in between, so no other thread runs between the two lines.
            self.logged = c = self.logged + 1
            self.words[0] = c
            q.extend((SCALAR, tag, value, step, wall_time))
            if (n == 0 or n >= self._wake_at) and not self.woken:
                self.woken = True
                self._wake()
        elif self._closed and self.refused is not None:
            self.refused((SCALAR, tag, value, step, wall_time))
        else:
            self.drop()

    def put_event(self, subrun: str, data: bytes) -> None:
        size = len(data)
        if size > self._max_bytes:
            self.drop(1, f"an event of {size} bytes is larger than Options.queue_max_bytes "
                         f"({self._max_bytes} bytes)")
            return
        q = self.queue
        n = len(q)
        if n < self._max_slots and self.queued_bytes + size <= self._max_bytes:
            # Counted before it is queued: the sender, seeing no bytes queued after it took a
            # round of items, knows that none of them is an event (cut_batch's ``sized``).
            self.queued_bytes += size
            # LOGGED: a store, not a read-modify-write of the shared word (measured cheaper); no
            # call in between, so no other thread runs between the two lines.
            self.logged = c = self.logged + 1
            self.words[0] = c
            q.extend((EVENT, subrun, data, None, None))
            if (n == 0 or n >= self._wake_at) and not self.woken:
                self.woken = True
                self._wake()
        elif self._closed and self.refused is not None:
            self.refused((EVENT, subrun, data))
        else:
            self.drop()

    def put_flush(self, seq: int) -> None:
        """Queue a flush barrier and wake the sender whatever ``woken`` says."""
        self.queue.extend((FLUSH, seq, None, None, None))
        self.woken = True
        self._wake()

    def lose(self, n: int, why: str) -> None:
        """Count ``n`` queued events the sender could not send, even in the final batch.

        Unlike :meth:`drop`, which a call made after the final batch was cut also reaches (a no-op
        by design), these were logged in time: they are a loss, counted and said.
        """
        self.dropped += n
        words = self.words
        words[LOST_AFTER_QUEUED] += n
        words[DROPPED] = self.dropped
        self._say(why)

    def drop(self, n: int = 1, why: str = "") -> None:
        """Count ``n`` calls that will never reach the hub, and say so once per reason."""
        if self._closed:
            # Logged after this producer's final batch: a no-op by design, not a loss. While
            # the sender still sends that batch (which a close waits for), a caller logging flat
            # out holds the GIL the sender needs, and each time it takes the GIL back the sender
            # waits for the OS to run it again (on a loaded machine, many milliseconds). So such
            # a call waits, letting go of the GIL, until the batch is out (bounded per call).
            if not self.final_sent.is_set():
                self.final_sent.wait(self.options.final_batch_wait)
            return
        self.dropped += n
        self.words[DROPPED] = self.dropped
        if not self.dropped & 1023:
            # A caller that outruns the hub spins here holding the GIL, and the sender thread,
            # the one that could empty the queue, waits for it: hand it over now and then.
            time.sleep(0)
        self._say(why)

    def _say(self, why: str) -> None:
        if self._silent:
            return
        reason = why or _FULL
        key = reason.split("(")[0]
        if key not in self._warned:
            self._warned.add(key)
            warn(f"hyrax_tbhub: process {os.getpid()} dropped an event: {reason}; "
                 "drops are counted under hyrax_tbhub/dropped/<run>")

    # -- the sender thread ---------------------------------------------------------------------

    def take(self, limit: int | None = None) -> tuple[list[QueuedItem], bool]:
        """Up to ``limit`` items (all queued now, if None) and whether any may be an ``e`` event."""
        slots, sized = self.take_slots(limit)
        return items_of(slots), sized

    def take_slots(self, limit: int | None = None) -> tuple[Slots, bool]:
        """:meth:`take`, as queue slots (``RECORD`` per item): the sender encodes a round of
        scalars straight from them, without building a tuple per item.

        What is queued now, not what keeps arriving: a caller logging flat out must not keep a
        flush, a drain or an exit waiting behind its newer events.
        """
        q = self.queue
        n = len(q)  # whole items only: each extend adds RECORD slots at once
        if limit is not None and n > limit * RECORD:
            n = limit * RECORD
        flat = q[:n]
        del q[:n]  # other threads only append: the first n slots are still the ones copied
        # Read after the take: an event's bytes are counted before it is queued (put_event).
        sized = self.queued_bytes > 0
        if sized:
            self.queued_bytes -= sum(len(item[2]) for item in items_of(flat) if item[0] == EVENT)
        return flat, sized

    def __len__(self) -> int:
        """Items queued now."""
        return len(self.queue) // RECORD

    def items(self) -> list[QueuedItem]:
        """A copy of what is queued, as items (for diagnostics; the sender uses take())."""
        return items_of(self.queue[:])

    def unreported_drops(self) -> int | None:
        """The drop count if the hub has not been told it yet (then it counts as told)."""
        dropped = self.dropped
        if dropped == self.reported:
            return None
        self.reported = dropped
        return dropped

    def close_for_puts(self) -> None:
        """From now on calls are refused (not counted as drops), so that nothing can land in
        the queue behind the final batch and stay there, neither sent nor counted."""
        self._max_slots = -1
        self._closed = True

    def discard(self) -> int:
        """The hub is gone: drop and count what is queued and every later call; return how many
        queued events were lost (flush barriers are not events)."""
        self._max_slots = -1
        self._silent = True
        kinds = self.queue[::RECORD]
        lost = kinds.count(SCALAR) + kinds.count(EVENT)
        self.queue.clear()
        self.dropped += lost
        words = self.words
        words[LOST_AFTER_QUEUED] += lost
        words[DROPPED] = self.dropped
        return lost

    def abandon(self) -> None:
        """After fork, in the child: the parent's queue is the parent's; refuse and say nothing."""
        self._max_slots = -1
        self._silent = True
        self.queue.clear()
        self.ledger.abandon()
        self.words = self.ledger.words



class LockedOutbox(Outbox):
    """The outbox of an interpreter without a GIL: the same queue and counts, changed under a lock.

    Threads of a free-threaded build run at once, so every change of the queue and of its counts
    (logged, queued bytes, drops, the bound ``close_for_puts`` lowers) is made holding ``_lock``:
    the counts lose no update, and no call lands behind the final batch. The lock is reentrant:
    a signal handler that logs runs on the thread it interrupted, maybe inside a call holding it.
    Whatever waits or talks (waking the sender, the wait for the final batch, the message on
    stderr, the late channel) happens outside it.
    """

    def __init__(self, options: Options, wake: Callable[[], None], ledger: Ledger | None = None) -> None:
        super().__init__(options, wake, ledger)
        self._lock = threading.RLock()

    def put_scalar(self, tag: str, value: float, step: int | None, wall_time: float) -> None:
        wake = False
        with self._lock:
            q = self.queue
            n = len(q)
            queued = n < self._max_slots
            if queued:
                self.logged = c = self.logged + 1
                self.words[0] = c
                q.extend((SCALAR, tag, value, step, wall_time))
                if (n == 0 or n >= self._wake_at) and not self.woken:
                    self.woken = wake = True
        if queued:
            if wake:
                self._wake()
        elif self._closed and self.refused is not None:
            self.refused((SCALAR, tag, value, step, wall_time))
        else:
            self.drop()

    def put_event(self, subrun: str, data: bytes) -> None:
        size = len(data)
        if size > self._max_bytes:
            super().put_event(subrun, data)  # dropped and counted there, by our drop()
            return
        wake = False
        with self._lock:
            q = self.queue
            n = len(q)
            queued = n < self._max_slots and self.queued_bytes + size <= self._max_bytes
            if queued:
                self.queued_bytes += size
                self.logged = c = self.logged + 1
                self.words[0] = c
                q.extend((EVENT, subrun, data, None, None))
                if (n == 0 or n >= self._wake_at) and not self.woken:
                    self.woken = wake = True
        if queued:
            if wake:
                self._wake()
        elif self._closed and self.refused is not None:
            self.refused((EVENT, subrun, data))
        else:
            self.drop()

    def put_flush(self, seq: int) -> None:
        with self._lock:
            self.queue.extend((FLUSH, seq, None, None, None))
            self.woken = True
        self._wake()

    def lose(self, n: int, why: str) -> None:
        with self._lock:
            self.dropped += n
            words = self.words
            words[LOST_AFTER_QUEUED] += n
            words[DROPPED] = self.dropped
        self._say(why)

    def drop(self, n: int = 1, why: str = "") -> None:
        if self._closed:
            super().drop(n, why)  # after the final batch: counts nothing, may wait for it
            return
        with self._lock:
            self.dropped += n
            self.words[DROPPED] = self.dropped
        self._say(why)

    def take_slots(self, limit: int | None = None) -> tuple[Slots, bool]:
        with self._lock:
            return super().take_slots(limit)

    def close_for_puts(self) -> None:
        with self._lock:
            super().close_for_puts()

    def discard(self) -> int:
        with self._lock:
            return super().discard()

    def abandon(self) -> None:
        # After fork: a thread of the parent may have held the lock, and it is not in the child.
        self._lock = threading.RLock()
        super().abandon()

def items_of(flat: Slots) -> list[QueuedItem]:
    """Queue slots as items, each of its own shape (:data:`~.._items.QueuedItem`)."""
    slots = iter(flat)
    items: list[QueuedItem] = list(zip(slots, slots, slots, slots, slots, strict=True))
    kinds = flat[::RECORD]
    if kinds.count(SCALAR) != len(kinds):  # events and barriers have fewer fields than scalars
        items = [item if item[0] == SCALAR else item[:3] if item[0] == EVENT else item[:2] for item in items]
    return items
