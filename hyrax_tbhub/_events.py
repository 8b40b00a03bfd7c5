"""Event encoding and TFRecord framing.

tensorboardX builds every scalar as ``Summary`` and ``Event`` protobuf objects (~6 us) and frames
them through a ``multiprocessing.Queue`` to its own thread (measured here: ~30-59 us per event). The hub
writes tens of thousands of scalars per second from many producers, so the scalar path encodes
the three-field ``Event`` by hand here, as it does the two fixed records every file starts with
(importing tensorboardX's protos imports tensorboardX, which imports torch: seconds per process).
``tests/mechanism/test_events.py`` checks byte equality with
protobuf's own serialisation over random inputs; everything that is not a plain scalar still goes
through tensorboardX's summary builders and protobuf.
"""

from __future__ import annotations

import math
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Final, cast

from crc32c import crc32c as _crc32c

from ._items import (
    EVENT,
    RECORDS,
    SCALAR,
    ByeItem,
    DropsItem,
    EventItem,
    FlushItem,
    ScalarItem,
    SenderItem,
    WireItem,
)

__all__ = [
    "clean_tag",
    "encode_scalar",
    "encode_scalar_records",
    "encode_batch",
    "encode_text_event",
    "file_version_event",
    "frame",
    "event_file_name",
    "session_start_event",
]


# Same rule as tensorboardX.summary._clean_tag, which every scalar passes through in-process.
_INVALID_TAG_CHARACTERS = re.compile(r"[^-/\w\.]")

_HEADER = struct.Struct("<QI")
_U32 = struct.Struct("<I")
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
#: TFRecord framing: a u64 length and the masked CRC32C of it (u32), the data, the data's masked CRC.
RECORD_HEADER: Final = 12
RECORD_OVERHEAD: Final = 16
MASK_DELTA: Final = 0xA282EAD8  # added to the rotated CRC32C (TensorFlow's crc32c::Mask)
_U32_MAX: Final = 0xFFFFFFFF


def clean_tag(tag: str) -> str:
    """Return ``tag`` as tensorboardX would store it (illegal characters become ``_``)."""
    return _INVALID_TAG_CHARACTERS.sub("_", tag).lstrip("/")


def masked_crc(data: bytes) -> int:
    x = _crc32c(data)
    return ((((x >> 15) | (x << 17)) & 0xFFFFFFFF) + MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """Frame one serialised Event as a TFRecord: length, its CRC, the data, the data's CRC."""
    n = len(record)
    header = n.to_bytes(8, "little")
    return _HEADER.pack(n, masked_crc(header)) + record + _U32.pack(masked_crc(record))


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 is encoded as its 64-bit two's complement
    # Unrolled for the common sizes: microsecond steps since the hub started need 4-6 bytes.
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 0x200000:
        return bytes((value & 0x7F | 0x80, (value >> 7) & 0x7F | 0x80, value >> 14))
    if value < 0x10000000:
        return bytes((value & 0x7F | 0x80, (value >> 7) & 0x7F | 0x80, (value >> 14) & 0x7F | 0x80,
                      value >> 21))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# A scalar Event is  wall_time(1:double) step(2:varint) summary(5:{value(1:{tag(1) simple_value(2:float)})}).
# Only the tag-dependent prefix is cached; the cache is bounded so a tag per step cannot grow it forever.
_prefix_cache: dict[str, bytes] = {}
_PREFIX_CACHE_MAX: Final = 65536


def _tag_prefix(tag: str) -> bytes:
    entry = _prefix_cache.get(tag)
    if entry is None:
        name = clean_tag(tag).encode("utf-8")
        # An empty tag (e.g. "/" after cleaning) is a default value: proto3 leaves it out.
        value_msg_prefix = (b"\x0a" + _varint(len(name)) + name if name else b"") + b"\x15"
        value_len = len(value_msg_prefix) + 4
        summary_inner = b"\x0a" + _varint(value_len) + value_msg_prefix
        summary_len = len(summary_inner) + 4
        entry = b"\x2a" + _varint(summary_len) + summary_inner
        if len(_prefix_cache) >= _PREFIX_CACHE_MAX:
            _prefix_cache.clear()
        _prefix_cache[tag] = entry
    return entry


def _float32(value: float) -> bytes:
    try:
        return _FLOAT.pack(value)
    except OverflowError:
        # protobuf rounds out-of-range doubles to +/-inf when storing a float field.
        return _FLOAT.pack(math.copysign(math.inf, value))


def encode_scalar(tag: str, value: float, step: int | None, wall_time: float) -> bytes:
    """Serialise the Event tensorboardX writes for ``add_scalar(tag, value, step, wall_time)``."""
    # _event_head inlined: this runs once per scalar of every producer.
    # proto3 leaves fields at their default value (step 0, wall time 0.0) out of the encoding.
    head = b"\x09" + _DOUBLE.pack(wall_time) if wall_time != 0.0 else b""
    if step:
        head += b"\x10" + _varint(step)
    return head + _tag_prefix(tag) + _float32(value)


def _event_head(wall_time: float, step: int | None) -> bytes:
    head = b"\x09" + _DOUBLE.pack(wall_time) if wall_time != 0.0 else b""
    if step:
        head += b"\x10" + _varint(step)
    return head


_FILE_VERSION = b"brain.Event:2"


_HEADER_BY_LENGTH: dict[int, bytes] = {}
_pack_double = _DOUBLE.pack
_pack_u32 = _U32.pack
_KIND = itemgetter(0)


def _record_header(n: int) -> bytes:
    header = _HEADER_BY_LENGTH.get(n)
    if header is None:
        header = _HEADER_BY_LENGTH[n] = _HEADER.pack(n, masked_crc(n.to_bytes(8, "little")))
    return header


# Per tag, for a step of 1 to 4 varint bytes: one struct that packs the whole record
# (wall_time, step, the tag's prefix, the value) and the record's TFRecord header, which only
# depends on the record's length. Bounded like _prefix_cache, for the same reason.
_Shape = tuple[bytes, tuple[Callable[..., bytes], ...], tuple[bytes, ...]]
_shape_cache: dict[str, _Shape] = {}


def _shape(tag: str) -> _Shape:
    prefix = _tag_prefix(tag)
    k = len(prefix)
    packs = tuple(struct.Struct(f"<BdB{v}B{k}sf").pack for v in range(1, 5))
    headers = tuple(_record_header(1 + 8 + 1 + v + k + 4) for v in range(1, 5))
    if len(_shape_cache) >= _PREFIX_CACHE_MAX:
        _shape_cache.clear()
    entry = _shape_cache[tag] = (prefix, packs, headers)
    return entry


def _encode_scalar_record(item: ScalarItem) -> bytes:
    """Any scalar item, framed: the general case of encode_scalar_records (no wall time, a step
    that is None, 0, negative or of five varint bytes or more, a value out of float range)."""
    _kind, tag, value, step, wall = item
    head = b"\x09" + _pack_double(wall) if wall != 0.0 else b""
    if step:
        head += b"\x10" + _varint(step)
    record = head + _tag_prefix(tag) + _float32(value)
    x = _crc32c(record)
    return _record_header(len(record)) + record + _pack_u32(
        ((((x >> 15) | (x << 17)) & 0xFFFFFFFF) + MASK_DELTA) & _U32_MAX
    )


def encode_scalar_records(items: Iterable[ScalarItem]) -> bytes:
    """Encode and frame scalar items (:data:`._items.ScalarItem`) into one buffer.

    The same bytes as ``frame(encode_scalar(...))`` per item (tested). This runs in the
    producer's sender thread for every scalar, holding the GIL that the logging thread needs,
    so the common record (a wall time, a step of 1 to 4 varint bytes: below 2**28) is one
    struct call per record with every lookup local; the rest takes _encode_scalar_record.
    """
    out: list[bytes] = []
    append = out.append
    shape_of = _shape_cache.get
    crc = _crc32c
    for item in items:
        _kind, tag, value, step, wall = item
        shape = shape_of(tag) or _shape(tag)
        try:
            if not wall or step is None or step < 1:
                raise OverflowError  # a field proto3 leaves out: the general case
            if step < 0x80:
                record = shape[1][0](9, wall, 16, step, shape[0], value)
                header = shape[2][0]
            elif step < 0x4000:
                record = shape[1][1](9, wall, 16, step & 0x7F | 0x80, step >> 7, shape[0], value)
                header = shape[2][1]
            elif step < 0x200000:
                record = shape[1][2](9, wall, 16, step & 0x7F | 0x80, (step >> 7) & 0x7F | 0x80, step >> 14,
                                     shape[0], value)
                header = shape[2][2]
            elif step < 0x10000000:
                record = shape[1][3](9, wall, 16, step & 0x7F | 0x80, (step >> 7) & 0x7F | 0x80,
                                     (step >> 14) & 0x7F | 0x80, step >> 21, shape[0], value)
                header = shape[2][3]
            else:
                raise OverflowError
        except (OverflowError, struct.error):  # also a value out of float32's range
            append(_encode_scalar_record(item))
            continue
        x = crc(record)  # masked as in masked_crc, inlined
        append(header + record + _pack_u32(((((x >> 15) | (x << 17)) & 0xFFFFFFFF) + MASK_DELTA) & _U32_MAX))
    return b"".join(out)


def encode_batch(items: Sequence[SenderItem]) -> list[WireItem]:
    """Turn queued items into framed records, grouped per sub-run, control items kept in order.

    Scalars and events (:mod:`._items`) become records items ``("r", subrun, framed_bytes,
    count)``: consecutive records of one sub-run share one item.
    Producers run this in their sender thread, so encoding scales with the number of producer
    processes instead of queueing up behind the hub's single thread.
    """
    out: list[WireItem] = []
    subrun = ""
    parts: list[bytes] = []
    count = 0

    def close_run() -> None:
        nonlocal count
        if count:
            out.append((RECORDS, subrun, b"".join(parts), count))
            parts.clear()
            count = 0

    # Runs of one kind at a time (groupby walks the items in C): a batch of scalars, the usual
    # case, costs one call of encode_scalar_records and no Python step per item here. The casts
    # say what the key guarantees: every item of a group has the group's kind.
    for kind, group in groupby(items, _KIND):
        if kind == SCALAR:
            if subrun:
                close_run()
                subrun = ""
            scalars = cast("list[ScalarItem]", list(group))
            parts.append(encode_scalar_records(scalars))
            count += len(scalars)
        elif kind == EVENT:
            for item in cast("Iterator[EventItem]", group):
                if item[1] != subrun:
                    close_run()
                    subrun = item[1]
                parts.append(frame(item[2]))
                count += 1
        else:
            close_run()
            out.extend(cast("Iterator[FlushItem | DropsItem | ByeItem]", group))
    close_run()
    return out


# A text Event: summary(5) > value(1) > Value{tag(1), tensor(8), metadata(9)}. Constant parts:
# TensorProto{dtype(1)=DT_STRING(7), tensor_shape(2)={dim(2)={size(1)=1}}} then string_val(8),
# SummaryMetadata{plugin_data(1)={plugin_name(1)="text"}} (TextPluginData(version=0) is empty).
_TEXT_TENSOR_HEAD = b"\x08\x07\x12\x04\x12\x02\x08\x01"
_TEXT_METADATA = b"\x4a\x08\x0a\x06\x0a\x04text"


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_text_event(tag: str, text: str, step: int | None, wall_time: float) -> bytes:
    """The serialised ``Event`` of ``SummaryWriter.add_text(tag, text, step, wall_time)``.

    tensorboardX's text builder needs tensorboardX, whose import imports torch: seconds in a
    worker that logs one line. tests/test_logging_handler.py compares the bytes with it.
    """
    tensor = _TEXT_TENSOR_HEAD + _field(8, text.encode("utf-8"))
    value = _field(1, (tag + "/text_summary").encode("utf-8")) + _field(8, tensor) + _TEXT_METADATA
    head = b"\x09" + _DOUBLE.pack(wall_time) if wall_time != 0.0 else b""
    if step:  # proto3 leaves a zero step out, as protobuf does
        head += b"\x10" + _varint(int(step))
    return head + _field(5, _field(1, value))


def file_version_event(wall_time: float | None = None, step: int | None = None) -> bytes:
    """The first record of every event file: ``Event(file_version="brain.Event:2")``."""
    wall = time.time() if wall_time is None else wall_time
    return _event_head(wall, step) + b"\x1a" + _varint(len(_FILE_VERSION)) + _FILE_VERSION


def session_start_event(step: int, wall_time: float | None = None) -> bytes:
    """``Event(step, session_log=SessionLog(status=START))``: what ``purge_step`` writes."""
    wall = time.time() if wall_time is None else wall_time
    return _event_head(wall, step) + b"\x3a\x02\x08\x01"


_hostname = socket.gethostname()


def event_file_name(suffix: str = "", now: float | None = None) -> str:
    """tensorboardX's event file name; the caller's ``suffix`` must make it unique in its folder."""
    stamp = str(time.time() if now is None else now)[:10]
    return f"events.out.tfevents.{stamp}.{_hostname}{suffix}"
