"""A batch of outbox items as one wire frame, encoded in the producer's sender thread.

Encoding here, not in the hub, spreads it over every producer's CPU time instead of queueing
it up behind the hub's single thread.
"""

from __future__ import annotations

from .. import _wire
from .._events import encode_batch
from .outbox import Item, Outbox

__all__ = ["encode_frame"]


def encode_frame(batch: list[Item], outbox: Outbox) -> bytes:
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
    good: list[Item] = []
    for item in batch:
        try:
            _wire.pack_batch(encode_batch([item]))
        except Exception as exc:
            outbox.drop(1, f"an event could not be encoded ({exc!r})")
            continue
        good.append(item)
    drops = outbox.unreported_drops()
    if drops is not None:
        goodbye = [item for item in good if item[0] == "b"]
        good = [item for item in good if item[0] not in ("b", "d")] + [("d", drops)] + goodbye
    return b"".join(_wire.pack_batch(encode_batch(good)))
