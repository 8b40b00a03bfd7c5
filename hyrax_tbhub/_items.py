"""The package's one data model: the items a logging call becomes on its way to an event file.

Every item is a plain tuple whose first element, one letter, says what it is: the constants
below. Their shapes are the type aliases below; who makes each and who consumes it:

``("s", tag, value, step, wall)`` :data:`ScalarItem`, kind :data:`SCALAR`
    Made by a logging call (``add_scalar`` and the ``*_ts`` helpers): the producer's outbox, the
    owner's ``LocalChannel``, the late and pending channels; and by the hub's aggregates.
    Consumed by the producer's sender (``_events.encode_batch``), the hub's ``Store.write`` (the
    owner's calls) and its aggregates.
``("e", subrun, event_bytes)`` :data:`EventItem`, kind :data:`EVENT`
    Any other logging call: a serialised ``Event`` (tensorboardX's builders, ``_events``), for
    the run's sub-run ``subrun`` ("" is the run itself). Consumed as ``s``.
``("f", seq)`` :data:`FlushItem`, kind :data:`FLUSH`
    A producer's ``flush()``, or its answer to a hub-wide SYNC (``seq | SYNC_BIT``). The hub's
    ``Store.write`` hands it back and ``_hub/peers.py`` acknowledges it.
``("f", threading.Event)`` :data:`LocalFlushItem`, kind :data:`FLUSH`
    The owner's ``flush()``, in the owner's queue only: ``OwnerQueue.drain`` sets it once all
    before it is written.
``("r", subrun, framed_bytes, count)`` :data:`RecordsItem`, kind :data:`RECORDS`
    ``count`` TFRecords of one sub-run, encoded by the producer's sender
    (``_events.encode_batch``). Consumed by the hub: ``Store.write``, ``Guard``, ``HubLedger``,
    ``EventChecker``.
``("d", dropped)`` :data:`DropsItem`, kind :data:`DROPS`
    The producer's running total of dropped calls, added by its sender; the hub's
    ``Store.write`` keeps the largest under ``dropped/<run>``.
``("b",)`` :data:`ByeItem`, kind :data:`BYE`
    The producer's goodbye, the last item of its last frame; ``_hub/peers.py`` ends its run.

Stages, as unions: a logging call is a :data:`CallItem`; a producer's outbox holds
:data:`QueuedItem` (as flat slots, ``_producer/outbox.py``); its sender adds a drop count and a
goodbye (:data:`SenderItem`) and turns them into :data:`WireItem`, all that a BATCH frame can
carry (``_wire.py``); the owner's own queue holds :data:`LocalItem`; the store takes any
:data:`HubItem`. The hub's replies to a producer (welcome, acks, drain, sync) are not items: they
never queue, and are decoded into :data:`._wire.HubMessage`.

Why plain tuples and string constants, measured on Python 3.11 (this machine; a function that
builds an item and ``extend``s a list with it): a literal kind, a ``Final`` str constant and an
enum member bound to a module global all cost the same (~105 ns a call); ``Kind.SCALAR``, an
attribute of a str-mixin ``enum.Enum``, costs ~70 ns more per use (``EnumType``'s attribute
lookup); building a ``NamedTuple`` ~250 ns more, half the owner's whole ``add_scalar``. So the
kinds are ``Final`` strs (mypy reads each as its ``Literal`` and narrows a union of shapes on
``item[0] == SCALAR``) and the shapes exist for the type checker only: at run time an item is the
tuple it always was, so the wire, the outbox's slots and tests' literals all agree.
"""

from __future__ import annotations

import threading
from typing import Final, Literal, TypeAlias

__all__ = [
    "BYE",
    "DROPS",
    "EVENT",
    "FLUSH",
    "RECORDS",
    "SCALAR",
    "ByeItem",
    "CallItem",
    "DropsItem",
    "EventItem",
    "FlushItem",
    "HubItem",
    "LocalFlushItem",
    "LocalItem",
    "QueuedItem",
    "RecordsItem",
    "ScalarItem",
    "SenderItem",
    "WireItem",
]

SCALAR: Final = "s"
EVENT: Final = "e"
FLUSH: Final = "f"
RECORDS: Final = "r"
DROPS: Final = "d"
BYE: Final = "b"

#: ``add_scalar``'s arguments: tag, value, step (None: tensorboardX's default), wall time (s).
ScalarItem: TypeAlias = tuple[Literal["s"], str, float, int | None, float]
#: A serialised ``Event`` (no framing) for the run's sub-run ``subrun`` ("" is the run itself).
EventItem: TypeAlias = tuple[Literal["e"], str, bytes]
#: A producer's flush barrier: the hub acknowledges ``seq`` once all before it is written.
FlushItem: TypeAlias = tuple[Literal["f"], int]
#: The owner's flush barrier: the hub thread sets the event once all before it is written.
LocalFlushItem: TypeAlias = tuple[Literal["f"], threading.Event]
#: ``count`` TFRecord-framed events of sub-run ``subrun``, encoded by the producer.
RecordsItem: TypeAlias = tuple[Literal["r"], str, bytes, int]
#: The producer's running total of dropped calls (a late or repeated one never lowers the count).
DropsItem: TypeAlias = tuple[Literal["d"], int]
#: The producer's goodbye: nothing follows it on that connection.
ByeItem: TypeAlias = tuple[Literal["b"]]

#: One logging call, as every channel passes it on.
CallItem: TypeAlias = ScalarItem | EventItem
#: What a producer's outbox holds (flat, ``RECORD`` slots each; ``_producer/outbox.py``).
QueuedItem: TypeAlias = ScalarItem | EventItem | FlushItem
#: What a producer's sender encodes: the queue's items, its drop count and its goodbye.
SenderItem: TypeAlias = ScalarItem | EventItem | FlushItem | DropsItem | ByeItem
#: What a BATCH frame carries (``_wire.pack_batch``, ``_wire.decode_batch``).
WireItem: TypeAlias = RecordsItem | FlushItem | DropsItem | ByeItem
#: What the owner's own queue holds (``_hub/owner_queue.py``).
LocalItem: TypeAlias = ScalarItem | EventItem | LocalFlushItem
#: Anything the hub's store is given to write.
HubItem: TypeAlias = WireItem | LocalItem
