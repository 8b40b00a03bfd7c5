"""Live aggregates across producers: count, mean, min, max, p50, p95 per time window.

The hub calls three hooks, only once :func:`attach` configured an :class:`Aggregator` (a hub
without one pays one attribute check per batch): ``records`` with each producer batch of framed
scalar records, ``scalars`` with the owner's scalar items, and ``tick`` once per loop turn (and
with ``None`` at close, which ends every open window).

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
import os
import re
import struct
import time
from typing import TYPE_CHECKING, Any, Final

from ._events import RESERVED_PREFIX, clean_tag, encode_scalar_records

if TYPE_CHECKING:
    from ._hub import Hub, _Run

__all__ = ["AGGREGATE_RUN", "Aggregator", "QuantileSketch", "aggregate", "attach", "parse_scalar_tag"]

AGGREGATE_RUN: Final = "all_producers"
EXACT_CAP: Final = 2048  # values per (tag, window) kept exactly before switching to the sketch
RELATIVE_ERROR: Final = 0.01
MIN_MAGNITUDE: Final = 1e-9
STATS: Final = ("count", "mean", "min", "max", "p50", "p95")
_QUANTILES: Final = (0.5, 0.95)
_TAG_CACHE_MAX: Final = 65536

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

    __slots__ = ("pattern", "index", "count", "total", "lo", "hi", "values", "sketch")

    def __init__(self, pattern: _Pattern, index: int) -> None:
        self.pattern = pattern
        self.index = index
        self.count = 0
        self.total = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self.values: list[float] | None = []
        self.sketch: QuantileSketch | None = None

    def add(self, x: float) -> None:
        if x - x != 0.0:  # NaN or an infinity: left out (it would make mean, min or max meaningless)
            return
        self.count += 1
        self.total += x
        if x < self.lo:
            self.lo = x
        if x > self.hi:
            self.hi = x
        values = self.values
        if values is not None:
            values.append(x)
            if len(values) > EXACT_CAP:
                sketch = self.sketch = QuantileSketch()
                for v in values:
                    sketch.add(v)
                self.values = None
        else:
            assert self.sketch is not None
            self.sketch.add(x)

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


class Aggregator:
    """The aggregates of one hub. Runs only on the hub thread, under the hub's lock."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._start_ns = hub.start_ns
        self._patterns: list[_Pattern] = []
        # What a record's tag bytes (the record minus its head and value) decide: the tag and
        # its pattern, or None for a tag no pattern matches (the common case costs a dict hit).
        self._by_prefix: dict[bytes, tuple[str, _Pattern] | None] = {}
        self._by_tag: dict[str, tuple[str, _Pattern] | None] = {}  # owner tags: stored tag, pattern
        self._open: dict[str, _Window] = {}
        self._next_due = 1 << 62  # monotonic ns at which the first open window ends
        self._run: _Run | None = None
        self.points = 0  # values aggregated, for the benchmark
        self.windows = 0  # (tag, window) pairs written
        self.internal_errors = 0

    def add_pattern(self, glob: str, every_s: float) -> None:
        self._patterns.append(_Pattern(glob, every_s))
        self._by_prefix.clear()
        self._by_tag.clear()

    # -- hooks (hub thread) -------------------------------------------------------------------

    def records(self, blob: bytes) -> None:
        """A producer's batch of framed records (its main run only)."""
        try:
            self._records(blob, time.monotonic_ns())
        except Exception:
            self.internal_errors += 1

    def scalars(self, items: list[tuple[Any, ...]]) -> None:
        """The owner's ``("s", tag, value, step, wall_time)`` items."""
        try:
            now = time.monotonic_ns()
            by_tag = self._by_tag
            for item in items:
                try:
                    entry = by_tag[item[1]]
                except KeyError:
                    entry = self._match(item[1])
                if entry is not None:
                    self._add(entry[0], entry[1], float(item[2]), now)
        except Exception:
            self.internal_errors += 1

    def tick(self, hub: Hub, now: float | None) -> None:
        """Write every window that has ended (all of them when ``now`` is None: the hub closes)."""
        try:
            self._tick(None if now is None else time.monotonic_ns())
        except Exception:
            self.internal_errors += 1

    # -- internals ----------------------------------------------------------------------------

    def _match(self, tag: str) -> tuple[str, _Pattern] | None:
        """The stored tag and the first pattern matching it (as logged or as stored), or None."""
        found = None
        stored = clean_tag(tag)
        if not stored.startswith(RESERVED_PREFIX):
            for pattern in self._patterns:
                if pattern.regex.match(tag) or pattern.regex.match(stored):
                    found = (stored, pattern)
                    break
        if len(self._by_tag) >= _TAG_CACHE_MAX:
            self._by_tag.clear()
        self._by_tag[tag] = found
        return found

    def _records(self, blob: bytes, now: int) -> None:
        by_prefix = self._by_prefix
        unpack_header = _HEADER.unpack_from
        unpack_float = _FLOAT.unpack_from
        offset, end = 0, len(blob)
        while offset + 12 <= end:
            length = unpack_header(blob, offset)[0]
            start = offset + 12
            stop = start + length
            offset = stop + 4
            # Our scalar layout (_events.encode_scalar): [0x09 wall:8] [0x10 step:varint]
            # then the tag prefix (0x2a ...) and the 4-byte float. Skip the head to the prefix.
            pos = start
            if pos < stop and blob[pos] == 0x09:
                pos += 9
            if pos < stop and blob[pos] == 0x10:
                pos += 1
                while pos < stop and blob[pos] & 0x80:
                    pos += 1
                pos += 1
            if pos >= stop or blob[pos] != 0x2A:
                continue  # not a summary-only event (file version, session log, graph...)
            key = blob[pos:stop - 4]
            try:
                entry = by_prefix[key]
            except KeyError:
                entry = self._decide(key)
            if entry is not None:
                self._add(entry[0], entry[1], unpack_float(blob, stop - 4)[0], now)

    def _decide(self, key: bytes) -> tuple[str, _Pattern] | None:
        tag = parse_scalar_tag(key)
        entry = None if tag is None else self._match(tag)
        if len(self._by_prefix) >= _TAG_CACHE_MAX:
            self._by_prefix.clear()
        self._by_prefix[key] = entry
        return entry

    def _add(self, tag: str, pattern: _Pattern, value: float, now: int) -> None:
        index = (now - self._start_ns) // pattern.every_ns
        window = self._open.get(tag)
        if window is None or window.index != index:
            if window is not None:
                self._write(tag, window)
            window = self._open[tag] = _Window(pattern, index)
            end = self._start_ns + (index + 1) * pattern.every_ns
            if end < self._next_due:
                self._next_due = end
        window.add(value)
        self.points += 1

    def _tick(self, now: int | None) -> None:
        if now is not None and now < self._next_due:
            return  # most turns of a busy hub: nothing ended
        since = None if now is None else now - self._start_ns
        done = [(tag, w) for tag, w in self._open.items()
                if since is None or since // w.pattern.every_ns != w.index]
        for tag, window in done:
            del self._open[tag]
            self._write(tag, window)
        ends = (self._start_ns + (w.index + 1) * w.pattern.every_ns for w in self._open.values())
        self._next_due = min(ends, default=1 << 62)

    def _write(self, tag: str, window: _Window) -> None:
        if not window.count:
            return  # only NaNs or infinities came: a window without data writes nothing
        step = (window.index + 1) * window.pattern.every_ns // 1000
        wall = time.time()
        p50, p95 = window.quantiles()
        stats = (window.count, window.total / window.count, window.lo, window.hi, p50, p95)
        items = [("s", f"{tag}/{name}", float(v), step, wall) for name, v in zip(STATS, stats, strict=True)]
        run = self._the_run()
        run.file("").add(encode_scalar_records(items), len(items))
        self._hub._dirty.add(run)
        self.windows += 1

    def _the_run(self) -> _Run:
        if self._run is None:
            from ._hub import _Run

            hub = self._hub
            run = hub._counters.get(AGGREGATE_RUN)
            if run is None:
                run = _Run(AGGREGATE_RUN, os.path.join(hub.logdir, AGGREGATE_RUN), hub.config.filename_suffix)
                hub._counters[AGGREGATE_RUN] = run  # closed, abandoned after fork and counted by the hub
            self._run = run
        return self._run


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
    with hub._lock:
        agg = hub._aggregate
        if agg is None:
            agg = Aggregator(hub)
            hub._live_names.add(AGGREGATE_RUN)  # no producer may take the aggregate run's name
        agg.add_pattern(pattern, float(every_s))
        hub._aggregate = agg


def aggregate(pattern: str, every_s: float = 1.0) -> None:
    """Write live aggregates of the tags matching ``pattern`` into the run ``all_producers``.

    Call it in the process that called ``init_tensorboard_logger`` (the owner), after init. For
    each window of ``every_s`` seconds that saw data of a matching tag (from any producer and the
    owner), the hub writes ``<tag>/count``, ``/mean``, ``/min``, ``/max``, ``/p50`` and ``/p95``
    at step = microseconds since the hub started at the window's end. ``pattern`` is a glob
    (``"DataProvider/*"``); calling again adds patterns (a tag takes the first that matches).
    count/mean/min/max are exact; p50/p95 are exact up to 2048 values per window and tag, within
    1% relative error beyond (docs/aggregates.md). For a :class:`hyrax_tbhub.SummaryWriter` use
    its ``aggregate`` method.
    """
    from . import _state

    hub = _state.STATE.hub
    if hub is None or hub.owner_pid != os.getpid():
        raise RuntimeError(
            "aggregate() configures the hub of this process: call init_tensorboard_logger() first, "
            "in the process that owns the log"
        )
    attach(hub, pattern, every_s)
