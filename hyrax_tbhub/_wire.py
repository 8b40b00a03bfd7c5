"""The producer <-> hub wire protocol (version 3): nothing on it is executable.

No deserialiser that can run code (``pickle``, ``marshal``, ``eval``) is applied to anything a
socket delivers, in either direction. Events travel as the TFRecord-framed protobuf bytes the
producer already encoded; everything else is a fixed field. Every length and count read from a
socket is checked against a bound below before anything is allocated for it; input that breaks
the grammar raises :class:`WireError`, and the reader of that connection closes it.

Handshake: a challenge in each direction, as ``multiprocessing.connection`` does, but each
side's HMAC binds its direction and both nonces, so a reflected or replayed answer fails::

    hub -> producer   CHALLENGE  MAGIC (8) | nonce_h (32)
    producer -> hub   ANSWER     nonce_p (32) | HMAC(key, "producer->hub" | MAGIC | nonce_h | nonce_p)
    hub -> producer   PROOF      HMAC(key, "hub->producer" | MAGIC | nonce_h | nonce_p)

The hub reads exactly 64 bytes before it has checked the producer's HMAC and acts on none of
them; the producer reads exactly 40 + 32 bytes and sends nothing but its answer before it has
checked the hub's. ``MAGIC`` carries the protocol version (``HTBHUB03``): a peer of another
version fails the handshake instead of misreading frames. Version 3 added SYNC (and a
producer's ledger descriptor riding with its HELLO on a Unix socket, ``_hub/liveness.py``).

Frames (all integers little-endian; ``str`` fields are UTF-8 and must decode)::

    frame := length:u32  type:u8  payload          1 <= length (type + payload) <= cap

    +------+-----------+-----------------------------------------------+-----------------------+
    | type | direction | payload                                       | bounds                |
    +======+===========+===============================================+=======================+
    | 0x01 | P -> H    | HELLO: pid:u32  name_len:u16  name            | name <= 256 B; first  |
    |      |           |                                               | frame, exactly once   |
    +------+-----------+-----------------------------------------------+-----------------------+
    | 0x02 | P -> H    | BATCH: n:u32  item * n                        | frame <= MAX_FRAME;   |
    |      |           |                                               | n <= MAX_ITEMS        |
    +------+-----------+-----------------------------------------------+-----------------------+
    |      | item 'r'  | 0x72 sub_len:u16 subrun count:u32 blob_len:u32| subrun <= 1024 B;     |
    |      |           | blob (exactly ``count`` TFRecords)            | 1 <= count <= blob/16 |
    |      | item 'f'  | 0x66 seq:u64            (flush barrier)       |                       |
    |      | item 'd'  | 0x64 dropped:u64        (producer's drops)    |                       |
    |      | item 'b'  | 0x62                    (goodbye)             | last item only        |
    +------+-----------+-----------------------------------------------+-----------------------+
    | 0x81 | H -> P    | WELCOME: run_len:u16 run folder_len:u16 folder| run <= 256 B,         |
    |      |           |                                               | folder <= 4096 B      |
    +------+-----------+-----------------------------------------------+-----------------------+
    | 0x82 | H -> P    | ACK: seq:u64                                  | frame <= MAX_HUB_FRAME|
    | 0x83 | H -> P    | DRAIN: token:u64        (the hub is closing)  |                       |
    | 0x84 | H -> P    | SYNC: token:u64         (send what you hold,  |                       |
    |      |           | then a flush item: token with SYNC_BIT set)   |                       |
    +------+-----------+-----------------------------------------------+-----------------------+

A frame must be consumed exactly by its payload (no trailing bytes). A records blob is checked
with :func:`check_records`: every TFRecord header is walked, its length bounded and its header
CRC checked, and the records must tile the blob exactly. The data CRC of each record is *not*
checked: measured at ~0.6 us more per scalar on the hub's single thread (against ~0.17 us for
the walk), and a bad one can only spoil the sender's own run, which a key holder could fill
with anything anyway. Records of peers whose key came from the torch.distributed store (anyone who
can reach the store) also have their data CRCs checked and are parsed as ``Event`` protos
(:class:`EventChecker`): TensorBoard's Python loader stops reloading the whole log folder at the
first record it cannot parse. Decoded
batches are the hub's in-memory items (:data:`._items.WireItem`: records, flush, drops, bye), the
same shapes the producer encoded; an item's byte on the wire is its kind's letter in ASCII.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable
from typing import Any, Final, Literal, TypeAlias

from crc32c import crc32c as _crc32c

from ._events import MASK_DELTA, RECORD_HEADER, RECORD_OVERHEAD, masked_crc
from ._items import BYE, DROPS, FLUSH, RECORDS, WireItem

__all__ = [
    "ANSWER_LEN",
    "CHALLENGE_LEN",
    "MAGIC",
    "PROOF_LEN",
    "AuthError",
    "EventChecker",
    "HubMessage",
    "FrameReader",
    "WireError",
    "check_answer",
    "check_proof",
    "check_records",
    "decode_batch",
    "decode_hello",
    "decode_hub_message",
    "hub_proof",
    "pack_ack",
    "pack_batch",
    "pack_drain",
    "pack_sync",
    "pack_hello",
    "pack_welcome",
    "producer_answer",
]

MAGIC: Final = b"HTBHUB03"
NONCE_LEN: Final = 32
DIGEST_LEN: Final = 32
CHALLENGE_LEN: Final = len(MAGIC) + NONCE_LEN
ANSWER_LEN: Final = NONCE_LEN + DIGEST_LEN
PROOF_LEN: Final = DIGEST_LEN

#: Producer -> hub frame cap: one event of ``Options.queue_max_bytes`` (64 MiB) and its framing
#: must fit; the hub holds at most one partial frame per connection.
MAX_FRAME: Final = 72 * 1024 * 1024
#: Hub -> producer frames are small: a producer never buffers more than this for a hub.
MAX_HUB_FRAME: Final = 8192
MAX_ITEMS: Final = 1 << 16
MAX_NAME: Final = 256
MAX_SUBRUN: Final = 1024
MAX_FOLDER: Final = 4096

#: The ledger a producer shares with its hub (written by ``_producer/ledger.py``, read by
#: ``_hub/liveness.py``): native u64 words at these indexes.
LEDGER_LOGGED: Final = 0  # events the logging calls put in the queue
LEDGER_DROPPED: Final = 1  # events the producer dropped in total
LEDGER_LOST_AFTER_QUEUED: Final = 2  # of LEDGER_LOGGED, taken out of the queue and dropped
LEDGER_WORDS: Final = 3

T_HELLO: Final = 0x01
T_BATCH: Final = 0x02
T_WELCOME: Final = 0x81
T_ACK: Final = 0x82
T_DRAIN: Final = 0x83
T_SYNC: Final = 0x84
# Item tags inside a BATCH: the kind's letter (:mod:`._items`) in ASCII.
I_RECORDS: Final = 0x72
I_FLUSH: Final = 0x66
I_DROPS: Final = 0x64
I_BYE: Final = 0x62
#: A flush item whose seq has this bit answers the hub's SYNC (a producer's own seqs count up
#: from 1 and never reach it); the hub does not acknowledge it.
SYNC_BIT: Final = 1 << 63

_P2H: Final = b"hyrax_tbhub producer->hub\0"
_H2P: Final = b"hyrax_tbhub hub->producer\0"

_LEN = struct.Struct("<I")
LEN_SIZE: Final = _LEN.size
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_B_U64 = struct.Struct("<BQ")
_HELLO_SIZE: Final = 7  # type, pid, name length
_BATCH = struct.Struct("<BI")
_R_MID = struct.Struct("<II")
_REC = struct.Struct("<QI")
_R_TAG: Final = bytes((I_RECORDS,))
_BYE_TAG: Final = bytes((I_BYE,))
_U64_MAX: Final = (1 << 64) - 1


class WireError(ValueError):
    """Bytes that break the protocol's grammar or bounds: the connection is closed."""


class AuthError(ConnectionError):
    """The other end did not prove the key."""


# -- handshake ---------------------------------------------------------------------------------


def _mac(key: bytes, label: bytes, challenge: bytes, nonce_p: bytes) -> bytes:
    return hmac.new(key, label + challenge + nonce_p, hashlib.sha256).digest()


def producer_answer(key: bytes, challenge: bytes, nonce_p: bytes) -> bytes:
    """The producer's ANSWER to ``challenge`` (MAGIC + nonce_h): its nonce, then its proof."""
    return nonce_p + _mac(key, _P2H, challenge, nonce_p)


def check_answer(key: bytes, challenge: bytes, answer: bytes) -> bytes | None:
    """The hub's PROOF if ``answer`` proves the key for ``challenge``, else None."""
    if len(answer) != ANSWER_LEN:
        return None
    nonce_p, mac = answer[:NONCE_LEN], answer[NONCE_LEN:]
    if not hmac.compare_digest(mac, _mac(key, _P2H, challenge, nonce_p)):
        return None
    return hub_proof(key, challenge, nonce_p)


def hub_proof(key: bytes, challenge: bytes, nonce_p: bytes) -> bytes:
    return _mac(key, _H2P, challenge, nonce_p)


def check_proof(key: bytes, challenge: bytes, nonce_p: bytes, proof: bytes) -> None:
    if not challenge.startswith(MAGIC):
        raise AuthError("the endpoint is not a hyrax_tbhub hub of this version")
    if not hmac.compare_digest(proof, hub_proof(key, challenge, nonce_p)):
        raise AuthError("the endpoint did not prove the hub's key")


# -- framing -------------------------------------------------------------------------------------


class FrameReader:
    """Incremental parser of length-prefixed frames, refusing a length over ``cap`` at once."""

    __slots__ = ("_buf", "_cap")

    def __init__(self, cap: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._cap = cap

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        cap = self._cap
        while end - pos >= LEN_SIZE:
            (n,) = _LEN.unpack_from(buf, pos)
            if n == 0 or n > cap:
                raise WireError(f"frame of {n} bytes outside 1..{cap}")
            if end - pos - LEN_SIZE < n:
                break
            start = pos + LEN_SIZE
            frames.append(bytes(buf[start : start + n]))
            pos = start + n
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buf)


def _frame(body: bytes) -> bytes:
    return _LEN.pack(len(body)) + body


def _str_field(text: str, limit: int) -> bytes:
    """A name the receiver only displays: cut to ``limit`` bytes rather than refused."""
    raw = text.encode("utf-8", "replace")
    if len(raw) > limit:
        raw = raw[:limit].decode("utf-8", "ignore").encode("utf-8")
    return _U16.pack(len(raw)) + raw


def _read_str(body: bytes, pos: int, limit: int, what: str) -> tuple[str, int]:
    if pos + 2 > len(body):
        raise WireError(f"truncated {what}")
    (n,) = _U16.unpack_from(body, pos)
    pos += 2
    if n > limit or pos + n > len(body):
        raise WireError(f"{what} of {n} bytes out of bounds")
    try:
        return body[pos : pos + n].decode("utf-8"), pos + n
    except UnicodeDecodeError as exc:
        raise WireError(f"{what} is not UTF-8") from exc


# -- producer -> hub ------------------------------------------------------------------------------


def pack_hello(name: str, pid: int) -> bytes:
    return _frame(bytes((T_HELLO,)) + _U32.pack(pid & 0xFFFFFFFF) + _str_field(name, MAX_NAME))


def decode_hello(body: bytes) -> tuple[str, dict[str, Any]]:
    """``("hello", {"name", "pid"})`` from a HELLO frame body."""
    if len(body) < _HELLO_SIZE or body[0] != T_HELLO:
        raise WireError("the first frame is not a hello")
    (pid,) = _U32.unpack_from(body, 1)
    name, pos = _read_str(body, 5, MAX_NAME, "name")
    if pos != len(body):
        raise WireError("trailing bytes after the hello")
    return "hello", {"name": name, "pid": pid}


def pack_batch(items: Iterable[WireItem], cap: int = MAX_FRAME) -> list[bytes]:
    """Frames carrying ``items`` (``r``, ``f``, ``d``, ``b``), each at most ``cap`` bytes.

    Raises :class:`WireError` for an item no frame can carry (a record blob over the cap, an
    unknown kind); the caller drops and counts it.
    """
    frames: list[bytes] = []
    parts: list[bytes] = []
    size = _BATCH.size
    n = 0
    for item in items:
        if item[0] == RECORDS:
            blob = item[2]
            count = int(item[3])
            try:
                sub = item[1].encode("utf-8")  # routes records: refused, never cut
            except UnicodeEncodeError as exc:
                raise WireError("a sub-run name that is not valid Unicode") from exc
            if len(sub) > MAX_SUBRUN:
                raise WireError(f"a sub-run name of {len(sub)} bytes (the limit is {MAX_SUBRUN})")
            part = b"".join((_R_TAG, _U16.pack(len(sub)), sub, _R_MID.pack(count, len(blob)), blob))
        elif item[0] == FLUSH:
            part = _B_U64.pack(I_FLUSH, int(item[1]) & _U64_MAX)
        elif item[0] == DROPS:
            part = _B_U64.pack(I_DROPS, min(int(item[1]), _U64_MAX))
        elif item[0] == BYE:
            part = _BYE_TAG
        else:
            raise WireError(f"no wire form for item kind {item[0]!r}")
        if _BATCH.size + len(part) > cap:
            raise WireError(f"an item of {len(part)} bytes exceeds the frame cap of {cap}")
        if size + len(part) > cap or n >= MAX_ITEMS:
            frames.append(_frame(_BATCH.pack(T_BATCH, n) + b"".join(parts)))
            parts, size, n = [], _BATCH.size, 0
        parts.append(part)
        size += len(part)
        n += 1
    if n:
        frames.append(_frame(_BATCH.pack(T_BATCH, n) + b"".join(parts)))
    return frames


def decode_batch(body: bytes) -> list[WireItem]:
    """The items of a BATCH frame body; raises :class:`WireError` on anything malformed."""
    end = len(body)
    if end < _BATCH.size or body[0] != T_BATCH:
        raise WireError("not a batch frame")
    (n,) = _U32.unpack_from(body, 1)
    if n > MAX_ITEMS or n > end:
        raise WireError(f"{n} items announced")
    pos = _BATCH.size
    items: list[WireItem] = []
    append = items.append
    for _ in range(n):
        if pos >= end:
            raise WireError("truncated batch")
        if items and items[-1][0] == BYE:
            raise WireError("items after goodbye")
        kind = body[pos]
        pos += 1
        if kind == I_RECORDS:
            subrun, pos = _read_str(body, pos, MAX_SUBRUN, "sub-run")
            if pos + 8 > end:
                raise WireError("truncated records item")
            count, blen = _R_MID.unpack_from(body, pos)
            pos += 8
            if blen > end - pos:
                raise WireError(f"records blob of {blen} bytes overruns the frame")
            blob = body[pos : pos + blen]
            pos += blen
            check_records(blob, count)
            append((RECORDS, subrun, blob, count))
        elif kind == I_FLUSH or kind == I_DROPS:
            if pos + 8 > end:
                raise WireError("truncated control item")
            (value,) = _U64.unpack_from(body, pos)
            pos += 8
            append((FLUSH, value) if kind == I_FLUSH else (DROPS, value))
        elif kind == I_BYE:
            append((BYE,))
        else:
            raise WireError(f"unknown item kind 0x{kind:02x}")
    if pos != end:
        raise WireError("trailing bytes after the batch")
    return items


_HEADER_CRCS: dict[int, int] = {}


def check_records(blob: bytes, count: int) -> None:
    """Check that ``blob`` is exactly ``count`` well-framed TFRecords (headers walked, bounded)."""
    end = len(blob)
    if count < 1 or count * RECORD_OVERHEAD > end:
        raise WireError(f"{count} records cannot fill {end} bytes")
    crcs = _HEADER_CRCS
    get = crcs.get
    unpack = _REC.unpack_from
    pos = 0
    n = 0
    try:
        while pos < end:
            length, header_crc = unpack(blob, pos)
            if get(length) != header_crc:
                if length > end or masked_crc(length.to_bytes(8, "little")) != header_crc:
                    raise WireError("bad TFRecord header")
                if len(crcs) >= 4096:
                    crcs.clear()
                crcs[length] = header_crc
            pos += length + RECORD_OVERHEAD
            n += 1
    except struct.error as exc:
        raise WireError("truncated TFRecord header") from exc
    if pos != end or n != count:
        raise WireError(f"records do not tile the blob ({n} records, {count} announced)")


# -- hub -> producer ------------------------------------------------------------------------------


def pack_welcome(run: str, folder: str) -> bytes:
    return _frame(bytes((T_WELCOME,)) + _str_field(run, MAX_NAME) + _str_field(folder, MAX_FOLDER))


def pack_ack(seq: int) -> bytes:
    return _frame(_B_U64.pack(T_ACK, seq & _U64_MAX))


def pack_drain(token: int = 0) -> bytes:
    return _frame(_B_U64.pack(T_DRAIN, token & _U64_MAX))


def pack_sync(token: int) -> bytes:
    return _frame(_B_U64.pack(T_SYNC, token & _U64_MAX))


_Control: TypeAlias = Literal["ack", "drain", "sync"]
#: A message of the hub to a producer, decoded: its welcome (``run`` and ``folder``) or a control
#: with its seq or token.
HubMessage: TypeAlias = tuple[Literal["hello"], dict[str, str]] | tuple[_Control, int]
_CONTROL_NAMES: Final[dict[int, _Control]] = {T_ACK: "ack", T_DRAIN: "drain", T_SYNC: "sync"}


def decode_hub_message(body: bytes) -> HubMessage:
    """``("hello", {"run", "folder"})``, ``("ack", seq)``, ``("drain", token)`` or ``("sync", token)``."""
    if not body:
        raise WireError("empty frame")
    kind = body[0]
    if kind == T_WELCOME:
        run, pos = _read_str(body, 1, MAX_NAME, "run")
        folder, pos = _read_str(body, pos, MAX_FOLDER, "folder")
        if pos != len(body):
            raise WireError("trailing bytes after the welcome")
        return "hello", {"run": run, "folder": folder}
    if kind in _CONTROL_NAMES:
        if len(body) != _B_U64.size:
            raise WireError("control frame of the wrong size")
        return _CONTROL_NAMES[kind], _U64.unpack_from(body, 1)[0]
    raise WireError(f"unknown frame type 0x{kind:02x}")


class EventChecker:
    """Checks the data CRC of every record of a batch and parses it as a TensorBoard ``Event``.

    For peers that only had to read the torch.distributed store to get the key: a record that
    frames well but does not parse makes TensorBoard's Python reload loop raise and stop, for
    every run of the log folder. About 1.1 us per event, so not for the local socket, whose
    peers are the user's own processes (which could write the event files directly anyway).
    Built in the caller's thread (an import in the hub thread could hold an import lock across a
    fork of another thread).
    """

    def __init__(self) -> None:
        from tensorboard.compat.proto.event_pb2 import Event  # raises ImportError without it

        self._parse = Event.FromString

    def check(self, items: list[WireItem]) -> None:
        parse = self._parse
        for item in items:
            if item[0] != RECORDS:
                continue
            blob = item[2]
            view = memoryview(blob)
            pos = 0
            end = len(blob)
            while pos < end:
                (length,) = _U64.unpack_from(blob, pos)
                data = view[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
                # A bad data CRC makes TensorBoard's reader stop at that record for good.
                x = _crc32c(data)
                masked = ((((x >> 15) | (x << 17)) & 0xFFFFFFFF) + MASK_DELTA) & 0xFFFFFFFF
                if masked != _U32.unpack_from(blob, pos + RECORD_HEADER + length)[0]:
                    raise WireError("a record whose data CRC does not match")
                try:
                    parse(data)
                except Exception as exc:  # protobuf's DecodeError, or anything else it meets
                    raise WireError(f"a record that is not a TensorBoard event ({exc})") from exc
                pos += length + RECORD_OVERHEAD
