"""One round of the sender: take what the outbox holds, cut it into frames, encode, send.

Encoding here, in the producer's sender thread, not in the hub, spreads it over every
producer's CPU time instead of queueing it up behind the hub's single thread. It holds the GIL
that the logging thread needs, so the usual round (only scalars) is encoded straight from the
outbox's slots, without a tuple per item (:func:`scalar_frame`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _wire
from .._events import encode_batch, encode_scalar_records
from .._items import BYE, DROPS, RECORDS, SCALAR, ByeItem, DropsItem, SenderItem
from ..options import Options
from .outbox import RECORD, Outbox, Slots, cut_batch, items_of

if TYPE_CHECKING:
    from .link import Link

__all__ = ["encode_frame", "scalar_frame", "send_round"]

_SEND_BYTES = 4 * 1024 * 1024  # bytes of frames handed to one sendall
_ROUND_BATCHES = 16  # batches per round while not finishing


def send_round(outbox: Outbox, link: Link, options: Options, final: bool) -> int:
    """Send what is queued now (all of it when ``final``, with a goodbye; else a bounded round);
    return the number of frames sent."""
    batch_events = options.batch_events
    # Bounded while not finishing, so the loop soon looks at the hub's messages again (a drain
    # request must not wait behind a whole backlog of a flooding caller).
    slots, sized = outbox.take_slots(None if final else batch_events * _ROUND_BATCHES)
    kinds = slots[::RECORD]
    n = len(kinds)
    items = None if kinds.count(SCALAR) == n else items_of(slots)  # None: only scalars
    frames: list[bytes] = []
    sent = size_out = start = 0
    while True:
        if items is None:
            end = min(n, start + batch_events)  # what cut_batch says for scalars
        else:
            end = cut_batch(items, start, batch_events, options.batch_bytes, sized)
        extras: list[DropsItem | ByeItem] = []
        drops = outbox.unreported_drops()
        if drops is not None:
            extras.append((DROPS, drops))
        if final and end == n:
            extras.append((BYE,))
        if end > start or extras:
            if items is None:
                frame = scalar_frame(slots[start * RECORD : end * RECORD], extras, outbox)
            else:
                frame = encode_frame([*items[start:end], *extras], outbox)
            frames.append(frame)
            size_out += len(frame)
        start = end
        # Frames go out several at a time: each sendall lets go of the GIL, and a thread that
        # logs flat out takes it at once, so each one costs this thread a whole switch interval
        # (5 ms, far more on a loaded machine) before it runs again. One sendall per few MiB,
        # not per frame, is what keeps a drain of a full queue short.
        if frames and (start == n or size_out >= _SEND_BYTES):
            link.send(b"".join(frames) if len(frames) > 1 else frames[0])
            sent += len(frames)
            frames.clear()
            size_out = 0
        if start == n:
            return sent


def scalar_frame(slots: Slots, extras: list[DropsItem | ByeItem], outbox: Outbox) -> bytes:
    """The frame of scalars (outbox slots) followed by ``extras`` (a drop count, goodbye)."""
    if not slots:
        return encode_frame([*extras], outbox)
    it = iter(slots)
    try:
        # zip hands out one tuple at a time, freed before the next: nothing for the GC to walk.
        blob = encode_scalar_records(zip(it, it, it, it, it, strict=True))
        return b"".join(_wire.pack_batch([(RECORDS, "", blob, len(slots) // RECORD), *extras]))
    except Exception:  # the general path finds the bad item, drops and counts it
        return encode_frame([*items_of(slots), *extras], outbox)


def encode_frame(batch: list[SenderItem], outbox: Outbox) -> bytes:
    """The frame(s) carrying ``batch``; an item that cannot be encoded is dropped and counted.

    One malformed item (a value of a type the fast path let through, an event larger than a
    frame) must cost only itself: then the items are encoded one by one, and the drop count
    (a ``d`` item) is brought up to date, before the goodbye if the batch ends with one (the hub
    refuses anything after a goodbye).
    """
    try:
        return b"".join(_wire.pack_batch(encode_batch(batch)))
    except Exception:
        pass
    good: list[SenderItem] = []
    for item in batch:
        try:
            _wire.pack_batch(encode_batch([item]))
        except Exception as exc:
            outbox.lose(1, f"an event could not be encoded ({exc!r})")
            continue
        good.append(item)
    drops = outbox.unreported_drops()
    if drops is not None:
        goodbye = [item for item in good if item[0] == BYE]
        good = [*(item for item in good if item[0] != BYE and item[0] != DROPS), (DROPS, drops), *goodbye]
    return b"".join(_wire.pack_batch(encode_batch(good)))
