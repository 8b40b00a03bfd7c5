"""The producer <-> hub wire protocol over a Unix stream socket.

Handshake (the hub unpickles nothing before it succeeds)::

    hub  -> producer   MAGIC (8 bytes) + nonce (32 bytes)
    producer -> hub    HMAC-SHA256(key, MAGIC + nonce)  (exactly 32 bytes)

After it, both sides exchange frames: a 4-byte little-endian length and a pickled payload.
Producer -> hub payloads are lists of items (see ``_hub.Hub._apply``); hub -> producer payloads
are single tuples (``("hello", dict)``, ``("ack", seq)``, ``("drain", token)``).

``multiprocessing.connection`` has the same HMAC idea, but ``Listener.accept()`` runs the
handshake inline, so one silent client blocks every other (FACTS); the hub instead drives all
handshakes from one selector loop with a deadline each.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import struct
from typing import Any, Final

MAGIC: Final = b"HTBHUB01"
NONCE_LEN: Final = 32
DIGEST_LEN: Final = 32
CHALLENGE_LEN: Final = len(MAGIC) + NONCE_LEN
#: Producers are authenticated, so a large frame is a big image, not an attack; the bound only
#: keeps one corrupt length from allocating gigabytes.
MAX_FRAME: Final = 512 * 1024 * 1024
PICKLE_PROTOCOL: Final = 5  # every supported Python reads it

_LEN = struct.Struct("<I")
LEN_SIZE: Final = _LEN.size


def digest(key: bytes, challenge: bytes) -> bytes:
    return hmac.new(key, challenge, hashlib.sha256).digest()


def pack(obj: Any) -> bytes:
    payload = pickle.dumps(obj, PICKLE_PROTOCOL)
    return _LEN.pack(len(payload)) + payload


class FrameReader:
    """Incremental parser of length-prefixed frames from a byte stream."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= LEN_SIZE:
            (n,) = _LEN.unpack_from(buf, pos)
            if n > MAX_FRAME:
                raise ValueError(f"frame of {n} bytes exceeds the limit")
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
