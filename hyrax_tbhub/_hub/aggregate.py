"""Live aggregates across producers: count, mean, min, max, p50, p95 per time window.

The hub's store calls three hooks, only once :func:`attach` configured an :class:`Aggregator` (a
store without one pays one attribute check per batch): ``records`` with each producer batch of
framed scalar records, ``scalars`` with the owner's scalar items, and ``tick`` once per loop turn
(and with ``None`` at close, which ends every open window).

Windows are by arrival at the hub: window ``k`` of a pattern covers ``[k * every_s, (k+1) *
every_s)`` seconds after the hub started, and is written at step = microseconds since the hub
started at its end (the ``*_ts`` helpers' clock), into the run ``all_producers``. Producers send
within about 50 ms of a call, so a point lands in the window of its call or the next one.

count, mean, min and max are exact over the finite values of the window (NaN and infinities are
left out of every statistic). p50 and p95 are exact (the value at rank ``floor(q * (n - 1))`` of
the sorted window) while a window holds at most ``EXACT_CAP`` values of a tag; beyond, a
log-bucket sketch (DDSketch: Masson, Rim and Lee, VLDB 2019) answers within ``RELATIVE_ERROR``
(1%) of that value, with O(1) insert and memory bounded by the value range, not the count.
Magnitudes below ``MIN_MAGNITUDE`` count as 0 in the sketch.
"""

from __future__ import annotations

import fnmatch
import math
import re
import struct
import time
from typing import Any, Final, Protocol

from .._counters import RESERVED_PREFIX
from .._events import RECORD_HEADER, clean_tag, encode_scalar_records
from .._items import SCALAR, ScalarItem


# What this module needs of the store and of the hub, as protocols: the store holds an
# Aggregator and the hub calls attach, so importing either here would make a cycle.
class Store(Protocol):
    start_ns: int

    def own_run(self, name: str) -> Any: ...

    def add_own(self, run: Any, records: bytes) -> None: ...

    def count_internal_error(self, exc: BaseException) -> None: ...


class Hub(Protocol):
    def add_aggregate(self, pattern: str, every_s: float) -> None: ...

__all__ = ["AGGREGATE_RUN", "Aggregator", "QuantileSketch", "attach", "parse_scalar_tag"]

AGGREGATE_RUN: Final = "all_producers"
EXACT_CAP: Final = 2048  # values per (tag, window) kept exactly before switching to the sketch
RELATIVE_ERROR: Final = 0.01
MIN_MAGNITUDE: Final = 1e-9
STATS: Final = ("count", "mean", "min", "max", "p50", "p95")
_QUANTILES: Final = (0.5, 0.95)
_TAG_CACHE_MAX: Final = 65536

_np: Any = None  # numpy, imported by attach() in the caller's thread, never by the hub thread:
# an import running in the hub thread while the owner forks would leave numpy's import lock held
# in the child (CPython resets only its global import lock after fork), and a DataLoader
# worker importing numpy would wait forever.

_HEADER = struct.Struct("<QI")
_FLOAT = struct.Struct("<f")


class QuantileSketch:
    """DDSketch with relative accuracy ``alpha``: a value's bucket is ``ceil(log_gamma |x|)``.

    The estimate of the value at rank ``floor(q * (n - 1))`` is within ``alpha`` of it, relatively,
    for any distribution (proof in the paper); insert is one ``log`` and a dict increment.
    """

    __slots__ = ("_pos", "_neg", "_zero", "count", "_log_gamma", "_gamma")

    def __init__(self, alpha: float = RELATIVE_ERROR) -> None:
        self._gamma = (1 + alpha) / (1 - alpha)
        self._log_gamma = math.log(self._gamma)
        self._pos: dict[int, int] = {}
        self._neg: dict[int, int] = {}
        self._zero = 0
        self.count = 0

    def add(self, x: float) -> None:
        self.count += 1
        if x > MIN_MAGNITUDE:
            k = math.ceil(math.log(x) / self._log_gamma)
            self._pos[k] = self._pos.get(k, 0) + 1
        elif x < -MIN_MAGNITUDE:
            k = math.ceil(math.log(-x) / self._log_gamma)
            self._neg[k] = self._neg.get(k, 0) + 1
        else:
            self._zero += 1

    def add_many(self, values: list[float]) -> None:
        """``add`` for each value; vectorised for large batches (numpy is imported by ``attach``)."""
        if len(values) < 64 or _np is None:
            for x in values:
                self.add(x)
            return
        np = _np
        arr = np.asarray(values, dtype=np.float64)
        self.count += len(arr)
        mag = np.abs(arr)
        big = mag > MIN_MAGNITUDE
        self._zero += int(len(arr) - np.count_nonzero(big))
        keys = np.ceil(np.log(mag[big]) / self._log_gamma).astype(np.int64)
        negative = arr[big] < 0
        for store, chosen in ((self._pos, keys[~negative]), (self._neg, keys[negative])):
            if len(chosen):
                uniq, counts = np.unique(chosen, return_counts=True)
                for k, c in zip(uniq.tolist(), counts.tolist(), strict=True):
                    store[k] = store.get(k, 0) + c

    def _value(self, k: int) -> float:
        # The point of bucket (gamma^(k-1), gamma^k] whose relative distance to both ends is alpha.
        return 2.0 * self._gamma**k / (self._gamma + 1.0)

    def quantile(self, q: float) -> float:
        rank = math.floor(q * (self.count - 1))
        seen = 0
        for k in sorted(self._neg, reverse=True):  # most negative first
            seen += self._neg[k]
            if seen > rank:
                return -self._value(k)
        seen += self._zero
        if seen > rank:
            return 0.0
        for k in sorted(self._pos):
            seen += self._pos[k]
            if seen > rank:
                return self._value(k)
        return self._value(max(self._pos)) if self._pos else 0.0


class _Window:
    """One tag's statistics for the window that is open now."""

    __slots__ = ("index", "count", "total", "lo", "hi", "values", "sketch")

    def __init__(self, index: int) -> None:
        self.index = index
        self.count = 0
        self.total = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self.values: list[float] | None = []
        self.sketch: QuantileSketch | None = None

    def add_many(self, values: list[float]) -> None:
        total = sum(values)
        if total - total != 0.0:  # some NaN or infinity: left out, it would make every statistic meaningless
            values = [v for v in values if v - v == 0.0]
            if not values:
                return
            total = sum(values)
        self.count += len(values)
        self.total += total
        lo, hi = min(values), max(values)
        if lo < self.lo:
            self.lo = lo
        if hi > self.hi:
            self.hi = hi
        kept = self.values
        if kept is not None:
            kept.extend(values)
            if len(kept) <= EXACT_CAP:
                return
            self.sketch = QuantileSketch()
            self.values = None
            values = kept
        self.sketch.add_many(values)  # type: ignore[union-attr]

    def quantiles(self) -> list[float]:
        if self.values is not None:
            ordered = sorted(self.values)
            return [ordered[math.floor(q * (len(ordered) - 1))] for q in _QUANTILES]
        assert self.sketch is not None
        return [self.sketch.quantile(q) for q in _QUANTILES]


class _Pattern:
    __slots__ = ("glob", "regex", "every_ns")

    def __init__(self, glob: str, every_s: float) -> None:
        self.glob = glob
        self.regex = re.compile(fnmatch.translate(glob))
        self.every_ns = max(1, int(every_s * 1e9))


class _Tag:
    """A matched tag: its pattern, its open window, and the values of the batch being read."""

    __slots__ = ("tag", "pattern", "window", "pending")

    def __init__(self, tag: str, pattern: _Pattern) -> None:
        self.tag = tag
        self.pattern = pattern
        self.window: _Window | None = None
        self.pending: list[float] = []


class Aggregator:
    """The aggregates of one hub. Runs only on the hub thread, under the hub's lock."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._start_ns = store.start_ns
        # Taken now, not at the first window: no producer that connects meanwhile may get the name.
        self._run = store.own_run(AGGREGATE_RUN)
        self._patterns: list[_Pattern] = []
        # What a record's tag bytes (the record minus its head and value) decide: the matched tag,
        # or None for a tag no pattern matches. A record costs one dict hit after the first.
        self._by_prefix: dict[bytes, _Tag | None] = {}
        self._by_name: dict[str, _Tag | None] = {}  # the owner's tags as logged
        self._tags: dict[str, _Tag] = {}  # stored tag -> its state
        self._open: list[_Tag] = []  # tags with an open window
        self._next_due = 1 << 62  # monotonic ns at which the first open window ends

    def add_pattern(self, glob: str, every_s: float) -> None:
        self._patterns.append(_Pattern(glob, every_s))
        self._by_prefix.clear()
        self._by_name.clear()

    # -- hooks (hub thread) -------------------------------------------------------------------

    def records(self, blob: bytes) -> None:
        """A producer's batch of framed records (its main run only)."""
        try:
            self._take(self._records(blob), time.monotonic_ns())
        except Exception as exc:
            self._store.count_internal_error(exc)

    def scalars(self, items: list[ScalarItem]) -> None:
        """The owner's scalar items."""
        try:
            by_name = self._by_name
            touched: list[_Tag] = []
            for item in items:
                try:
                    t = by_name[item[1]]
                except KeyError:
                    if len(by_name) >= _TAG_CACHE_MAX:
                        by_name.clear()
                    t = by_name[item[1]] = self._match(item[1])
                if t is not None:
                    pending = t.pending
                    if not pending:
                        touched.append(t)
                    pending.append(float(item[2]))
            self._take(touched, time.monotonic_ns())
        except Exception as exc:
            self._store.count_internal_error(exc)

    def tick(self, now: float | None) -> None:
        """Write every window that has ended (all of them when ``now`` is None: the hub closes)."""
        try:
            self._tick(None if now is None else time.monotonic_ns())
        except Exception as exc:
            self._store.count_internal_error(exc)

    # -- internals ----------------------------------------------------------------------------

    def _match(self, tag: str) -> _Tag | None:
        """The state of ``tag`` (as logged or as stored) if a pattern matches it, else None."""
        stored = clean_tag(tag)
        if stored.startswith(RESERVED_PREFIX):
            return None
        t = self._tags.get(stored)
        if t is not None:
            return t
        for pattern in self._patterns:
            if pattern.regex.match(tag) or pattern.regex.match(stored):
                if len(self._tags) >= _TAG_CACHE_MAX:
                    return None  # a tag per step would grow this without bound: stop adding
                t = self._tags[stored] = _Tag(stored, pattern)
                return t
        return None

    def _records(self, blob: bytes) -> list[_Tag]:
        """Collect the values of matching records into their tags; return the tags touched."""
        by_prefix = self._by_prefix
        unpack_header = _HEADER.unpack_from
        unpack_float = _FLOAT.unpack_from
        touched: list[_Tag] = []
        offset, end = 0, len(blob)
        while offset + RECORD_HEADER <= end:
            pos = offset + RECORD_HEADER
            stop = pos + unpack_header(blob, offset)[0]
            offset = stop + 4
            # Our scalar layout (_events.encode_scalar): [0x09 wall:8] [0x10 step:varint]
            # then the tag prefix (0x2a ...) and the 4-byte float. Skip the head to the prefix.
            if blob[pos] == 0x09:
                pos += 9
            if blob[pos] == 0x10:
                pos += 2
                while blob[pos - 1] & 0x80:
                    pos += 1
            try:
                t = by_prefix[blob[pos:stop - 4]]
            except KeyError:
                t = self._decide(blob[pos:stop - 4])
            if t is not None:
                pending = t.pending
                if not pending:
                    touched.append(t)
                pending.append(unpack_float(blob, stop - 4)[0])
        return touched

    def _decide(self, key: bytes) -> _Tag | None:
        tag = parse_scalar_tag(key) if key[:1] == b"\x2a" else None
        if tag is None:
            return None  # not a simple scalar (text, histogram...): not cached, each is unique
        t = self._match(tag)
        if len(self._by_prefix) >= _TAG_CACHE_MAX:
            self._by_prefix.clear()
        self._by_prefix[key] = t
        return t

    def _take(self, touched: list[_Tag], now: int) -> None:
        since = now - self._start_ns
        for t in touched:
            values = t.pending
            t.pending = []
            index = since // t.pattern.every_ns
            window = t.window
            if window is None or window.index != index:
                if window is not None:
                    self._write(t.tag, t.pattern, window)
                else:
                    self._open.append(t)
                window = t.window = _Window(index)
                due = self._start_ns + (index + 1) * t.pattern.every_ns
                if due < self._next_due:
                    self._next_due = due
            window.add_many(values)

    def _tick(self, now: int | None) -> None:
        if now is not None and now < self._next_due:
            return  # most turns of a busy hub: nothing ended
        since = None if now is None else now - self._start_ns
        still: list[_Tag] = []
        for t in self._open:
            window = t.window
            assert window is not None
            if since is None or since // t.pattern.every_ns != window.index:
                t.window = None
                self._write(t.tag, t.pattern, window)
            else:
                still.append(t)
        self._open = still
        ends = (self._start_ns + (t.window.index + 1) * t.pattern.every_ns for t in still if t.window)
        self._next_due = min(ends, default=1 << 62)

    def _write(self, tag: str, pattern: _Pattern, window: _Window) -> None:
        if not window.count:
            return  # only NaNs or infinities came: a window without data writes nothing
        step = (window.index + 1) * pattern.every_ns // 1000
        wall = time.time()
        p50, p95 = window.quantiles()
        stats = (window.count, window.total / window.count, window.lo, window.hi, p50, p95)
        items: list[ScalarItem] = [
            (SCALAR, f"{tag}/{name}", float(v), step, wall) for name, v in zip(STATS, stats, strict=True)
        ]
        self._store.add_own(self._run, encode_scalar_records(items))


def parse_scalar_tag(key: bytes) -> str | None:
    """The tag of ``Summary{value{tag, simple_value}}`` bytes up to the value, or None.

    ``key`` is the record from its summary field (0x2a) to just before the 4-byte float, as
    :func:`hyrax_tbhub._events._tag_prefix` builds it (and protobuf serialises it). Anything else
    (metadata, several values, a tensor) is not a simple scalar: None, and it is skipped.
    """
    try:
        pos, n = _varint(key, 1)
        if key[0] != 0x2A or pos + n != len(key) + 4:
            return None
        if key[pos] != 0x0A:
            return None
        pos, n = _varint(key, pos + 1)
        if pos + n != len(key) + 4:
            return None  # more than one value in the summary
        tag = ""
        if key[pos] == 0x0A:
            pos, n = _varint(key, pos + 1)
            tag = key[pos:pos + n].decode("utf-8")
            pos += n
        if pos != len(key) - 1 or key[pos] != 0x15:
            return None
        return tag
    except (IndexError, UnicodeDecodeError):
        return None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """(position after the varint at ``pos``, its value)."""
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return pos, value
        shift += 7


def attach(hub: Hub, pattern: str, every_s: float) -> None:
    """Aggregate the tags matching ``pattern`` (a glob, as ``fnmatch``) over ``every_s`` windows."""
    if not isinstance(pattern, str) or not pattern:
        raise TypeError(f"pattern must be a non-empty glob string, not {pattern!r}")
    if isinstance(every_s, bool) or not isinstance(every_s, (int, float)) or not every_s > 0:
        raise ValueError(f"every_s must be a positive number of seconds, not {every_s!r}")
    if not math.isfinite(every_s):
        raise ValueError(f"every_s must be finite, not {every_s!r}")
    global _np
    if _np is None:
        try:
            import numpy

            _np = numpy
        except ImportError:  # pragma: no cover - numpy is a dependency; the loop is the fallback
            pass
    hub.add_aggregate(pattern, float(every_s))

