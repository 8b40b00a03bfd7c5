"""Capture what your code logged, from every process, and assert on it without TensorBoard.

The TensorBoard counterpart of structlog's ``capture_logs``::

    from hyrax_tbhub.testing import capture_logs

    def test_reader_is_timed():
        with capture_logs() as logs:
            run_my_pipeline(num_workers=2)          # DataLoader workers, pools, spawn...
        logs.assert_logged("DataProvider/file_read_time_s", at_least=10)
        assert {e.run for e in logs.select("DataProvider/file_read_time_s")} == {
            "dataloader_worker_0", "dataloader_worker_1"}
        assert logs.dropped == 0

``capture_logs()`` starts a hub (``init_tensorboard_logger``) into a temporary folder, so the
code under test and every process it starts log there with nothing handed to them. Leaving the
block closes the hub, which returns once every producer's events are on disk, and reads the
whole folder back into :class:`CapturedLogs`. :func:`read_logs` reads any log folder the same
way (a program run as a subprocess, or code that opened its own hub).

How the files are read, and why not with TensorBoard: ``tensorboard`` is only a test extra of
this package, and its Python reader stops silently at the first bad record. This module reads the
TFRecord frames itself (the one place a small reader is justified: it is ~20 lines, checks both
CRCs of every frame and reports where and why it stopped, in :attr:`CapturedLogs.problems`), and
parses each record with the ``Event`` protobuf class: tensorboard's copy when it is installed
(a 40 ms import), else tensorboardX's (always installed, but importing it imports torch when
torch is installed: seconds). Tags and kinds are those TensorBoard shows (``add_text("t", ...)``
is tag ``t/text_summary``); the query methods also accept the name you logged with.

Restrictions, on purpose:

- A process owns at most one hub. ``capture_logs()`` raises :class:`RuntimeError` if this
  process already runs one (rather than closing it, as ``init_tensorboard_logger`` would: a test
  helper must not end the caller's log). In a process that is itself a producer of an outer hub,
  the capture takes over and, on exit, the process logs to the outer hub again.
- Code under test that calls ``init_tensorboard_logger()`` itself replaces the capture's hub
  (the events go to its own folder: read that with :func:`read_logs`). Leaving the block raises
  :class:`RuntimeError` if such a hub is still running. A bare ``close_tensorboard_logger()``
  in the code under test is fine: everything is on disk by then.
- Results are read when the block ends; using them inside the block raises RuntimeError.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crc32c import crc32c as _crc32c

from ._counters import DROPPED as DROPPED_PREFIX
from ._counters import ERRORS as ERRORS_PREFIX
from ._counters import INTERNAL_ERRORS, OVER_CAP, REJECTED, RESERVED_PREFIX, STRANGERS, TRANSPORT_ERRORS
from ._process.state import STATE
from .tensorboardx_logger import close_tensorboard_logger, init_tensorboard_logger

__all__ = [
    "CapturedLogs",
    "DROPPED_PREFIX",
    "ERRORS_PREFIX",
    "INTERNAL_ERRORS",
    "LoggedEvent",
    "OVER_CAP",
    "REJECTED",
    "RESERVED_PREFIX",
    "ROOT_RUN",
    "STRANGERS",
    "TRANSPORT_ERRORS",
    "capture_logs",
    "dropped_tag",
    "errors_tag",
    "read_logs",
]

# The counters' tags (from _counters, their one home), as they appear as keys of
# ``CapturedLogs.counters``: RESERVED_PREFIX starts every one, and they are kept out of ``entries``.
# ``DROPPED_PREFIX + run``: events that producer logged but never sent; ``ERRORS_PREFIX + run``:
# events of that run the hub could not write; TRANSPORT_ERRORS: broken producer connections;
# INTERNAL_ERRORS: bugs of the hub thread; REJECTED: peers that broke the protocol after the
# handshake; STRANGERS: connections that never proved the key; OVER_CAP: events past
# ``Options.max_runs`` / ``max_subruns``.


def dropped_tag(run: str) -> str:
    """The counter tag of the events run ``run`` dropped: ``hyrax_tbhub/dropped/<run>``."""
    return DROPPED_PREFIX + run


def errors_tag(run: str) -> str:
    """The counter tag of the events of run ``run`` the hub could not write."""
    return ERRORS_PREFIX + run


#: The name of the run the owner writes (``log_dir`` itself), as TensorBoard's ``--logdir`` shows it.
ROOT_RUN = "."

_TEXT_SUFFIX = "/text_summary"
# TensorBoard's names for the plugin of each legacy Summary.Value field (data_compat).
_LEGACY_FIELDS = (
    ("simple_value", "scalar", "scalars"),
    ("histo", "histogram", "histograms"),
    ("image", "image", "images"),
    ("audio", "audio", "audio"),
)
_PLUGIN_KINDS = {
    "scalars": "scalar", "histograms": "histogram", "images": "image", "text": "text", "audio": "audio",
}
# tensorboardX's tag rule (summary._clean_tag): what a logged name is stored as.
_INVALID_TAG_CHARACTERS = re.compile(r"[^-/\w\.]")
_DT_FLOAT, _DT_DOUBLE, _DT_INT32, _DT_INT64 = 1, 2, 3, 9


@dataclass(frozen=True)
class LoggedEvent:
    """One summary value found in the log.

    ``run`` is the folder relative to the log folder (``"."`` for the owner; a producer's run such
    as ``"dataloader_worker_0"``; sub-runs of ``add_scalars`` below it). ``kind`` is one of
    ``scalar``, ``text``, ``histogram``, ``image``, ``audio``, ``tensor``, ``other``. ``value`` is a
    float for scalars, the string for text, None otherwise (see ``summary`` for those).
    """

    run: str
    tag: str
    kind: str
    step: int
    value: float | str | None
    wall_time: float
    plugin: str = ""
    #: The ``Summary.Value`` protobuf message, for histograms, images and the like.
    summary: Any = field(default=None, repr=False, compare=False)


@dataclass
class CapturedLogs:
    """Everything one log folder holds, with helpers for assertions.

    ``entries`` excludes the hub's reserved ``hyrax_tbhub/...`` counters; those are in
    ``counters`` (and summed in ``dropped``, ``errors``, ``transport_errors``, ``internal_errors``).
    """

    log_dir: str
    _entries: list[LoggedEvent] | None = field(default=None, repr=False)
    _counters: dict[str, float] = field(default_factory=dict, repr=False)
    _runs: list[str] = field(default_factory=list, repr=False)
    _problems: list[str] = field(default_factory=list, repr=False)

    # -- what was read ----------------------------------------------------------------------------

    def _ready(self) -> list[LoggedEvent]:
        if self._entries is None:
            raise RuntimeError(
                "the captured logs are read when the capture_logs() block ends; use them after it"
            )
        return self._entries

    @property
    def entries(self) -> list[LoggedEvent]:
        """Every summary value except the reserved counters: runs in order (root first), then file order."""
        return list(self._ready())

    @property
    def runs(self) -> list[str]:
        """Every run folder holding an event file, ``"."`` (the owner) first, then by name."""
        self._ready()
        return list(self._runs)

    @property
    def counters(self) -> dict[str, float]:
        """The hub's reserved counters, ``{tag: last value}``, e.g. ``hyrax_tbhub/dropped/<run>``."""
        self._ready()
        return dict(self._counters)

    @property
    def dropped(self) -> int:
        """Events producers logged but never sent (all runs): a full queue, an event over the
        size limit, one that could not be encoded, or a queue lost to an internal error."""
        return self._sum_counters(RESERVED_PREFIX + "dropped/")

    @property
    def errors(self) -> int:
        """Events the hub could not write (all runs)."""
        return self._sum_counters(RESERVED_PREFIX + "errors/")

    @property
    def transport_errors(self) -> int:
        """Broken producer connections the hub saw (e.g. a producer killed mid-send)."""
        return int(self.counters.get(RESERVED_PREFIX + "transport_errors", 0))

    @property
    def internal_errors(self) -> int:
        """Bugs of hyrax_tbhub's hub thread (each also said on stderr with its traceback)."""
        return int(self.counters.get(RESERVED_PREFIX + "internal_errors", 0))

    @property
    def problems(self) -> list[str]:
        """Event files that could not be read to their end: a truncated or corrupt record."""
        self._ready()
        return list(self._problems)

    def _sum_counters(self, prefix: str) -> int:
        return int(sum(v for t, v in self.counters.items() if t.startswith(prefix)))

    # -- queries ----------------------------------------------------------------------------------

    def select(
        self, tag: str | None = None, *, run: str | None = None, kind: str | None = None
    ) -> list[LoggedEvent]:
        """The entries matching every given filter.

        ``tag`` matches the stored tag, the name as logged (tensorboardX replaces characters such
        as spaces with ``_``), or for text the name given to ``add_text`` (stored with
        ``/text_summary`` appended). ``run`` is a run name or a glob (``"dataloader_worker_*"``);
        ``"."`` is the owner.
        """
        wanted = None if tag is None else _tag_variants(tag)
        out = []
        for e in self._ready():
            if wanted is not None and e.tag not in wanted:
                continue
            if run is not None and not _run_matches(e.run, run):
                continue
            if kind is not None and e.kind != kind:
                continue
            out.append(e)
        return out

    def tags(self, run: str | None = None) -> list[str]:
        """The sorted tags logged (in ``run``, a name or glob, if given); reserved counters excluded."""
        return sorted({e.tag for e in self.select(run=run)})

    def scalars(self, tag: str, run: str | None = None) -> list[tuple[int, float]]:
        """``[(step, value), ...]`` of scalar ``tag`` (in ``run`` if given), in the order read."""
        return [(e.step, float(e.value)) for e in self.select(tag, run=run, kind="scalar")
                if isinstance(e.value, float)]

    def texts(self, tag: str, run: str | None = None) -> list[tuple[int, str]]:
        """``[(step, text), ...]`` of text ``tag`` (the name given to ``add_text`` or the stored tag)."""
        return [(e.step, e.value) for e in self.select(tag, run=run, kind="text") if isinstance(e.value, str)]

    def scalar_series(self, run: str | None = None) -> dict[str, list[tuple[int, float]]]:
        """``{tag: [(step, value), ...]}`` of every scalar tag (in ``run``, a name or glob, if given).

        Without ``run``, a tag logged in several runs has their points in run order; use
        :meth:`select` to tell them apart.
        """
        out: dict[str, list[tuple[int, float]]] = {}
        for e in self._ready():
            if e.kind != "scalar" or not isinstance(e.value, float):
                continue
            if run is not None and not _run_matches(e.run, run):
                continue
            out.setdefault(e.tag, []).append((e.step, e.value))
        return out

    def scalars_by_run(self) -> dict[str, dict[str, list[tuple[int, float]]]]:
        """``{run: {tag: [(step, value), ...]}}`` of every run read (``{}`` for a run without
        scalars): the whole log at a glance, to compare with an expected picture."""
        out: dict[str, dict[str, list[tuple[int, float]]]] = {run: {} for run in self.runs}
        for e in self._ready():
            if e.kind == "scalar" and isinstance(e.value, float):
                out[e.run].setdefault(e.tag, []).append((e.step, e.value))
        return out

    def counts(self, kind: str | None = None) -> dict[str, dict[str, int]]:
        """``{run: {tag: number of entries}}`` (of ``kind`` only, if given): a compact picture of what
        landed."""
        out: dict[str, dict[str, int]] = {}
        for e in self._ready():
            if kind is not None and e.kind != kind:
                continue
            per_run = out.setdefault(e.run, {})
            per_run[e.tag] = per_run.get(e.tag, 0) + 1
        return out

    def describe(self) -> str:
        """A human-readable summary: runs, tags with kind and count, counters, problems."""
        lines = [f"log folder {self.log_dir}: {len(self._ready())} entries in {len(self._runs)} runs"]
        kinds = {(e.run, e.tag): e.kind for e in self._ready()}
        counts = self.counts()
        for run in self._runs:
            lines.append(f"  run {run}")
            for tag, n in sorted(counts.get(run, {}).items()):
                lines.append(f"    {tag:<50} {kinds[(run, tag)]:<9} x{n}")
        nonzero = {t: v for t, v in self._counters.items() if v}
        lines.append(f"  counters: {nonzero if nonzero else 'all zero'}")
        for problem in self._problems:
            lines.append(f"  problem: {problem}")
        return "\n".join(lines)

    # -- assertions -------------------------------------------------------------------------------

    def assert_logged(
        self,
        tag: str,
        *,
        count: int | None = None,
        at_least: int = 1,
        run: str | None = None,
        kind: str | None = None,
    ) -> list[LoggedEvent]:
        """Assert ``tag`` was logged ``count`` times exactly (or ``at_least`` times); return the entries.

        The failure message lists what was logged instead, so a typo in a tag is easy to see.
        """
        found = self.select(tag, run=run, kind=kind)
        ok = len(found) == count if count is not None else len(found) >= at_least
        if not ok:
            expected = f"exactly {count}" if count is not None else f"at least {at_least}"
            where = "" if run is None else f" in run {run!r}"
            what = "" if kind is None else f" of kind {kind!r}"
            raise AssertionError(
                f"expected {expected} entries of tag {tag!r}{what}{where}, found {len(found)}.\n"
                + self.describe()
            )
        return found

    def assert_not_logged(self, tag: str, *, run: str | None = None) -> None:
        """Assert nothing was logged under ``tag`` (in ``run`` if given)."""
        found = self.select(tag, run=run)
        if found:
            runs = sorted({e.run for e in found})
            raise AssertionError(f"tag {tag!r} was logged {len(found)} times (runs {runs})")

    def assert_complete(self) -> None:
        """Assert nothing was lost: no drops, no write, transport or internal errors, every file
        read to its end."""
        bad = {t: v for t, v in self.counters.items() if v}
        if bad or self._problems:
            raise AssertionError(f"the log is not complete: counters {bad}, problems {self._problems}")


# -- capturing ----------------------------------------------------------------------------------


@contextmanager
def capture_logs(log_dir: str | os.PathLike[str] | None = None, *, keep: bool = False,
                 **init_kwargs: Any) -> Iterator[CapturedLogs]:
    """Start a hub for the block and read what landed when it ends.

    ``log_dir`` defaults to a fresh temporary folder, removed after it is read unless ``keep``
    is true (a folder you pass is never removed). Other keyword arguments go to
    ``init_tensorboard_logger`` (``filename_suffix``, ``purge_step``...). The yielded
    :class:`CapturedLogs` is filled in when the block ends without an exception.

    Raises RuntimeError if this process already owns a hub, or if the code under test started
    another hub that is still running when the block ends.
    """
    st = STATE
    if st.hub is not None and st.hub.owner_pid == os.getpid():
        raise RuntimeError(
            "capture_logs() needs this process to have no hub, but one is running "
            f"(log_dir={st.hub.logdir!r}); call close_tensorboard_logger() first"
        )
    if log_dir is None:
        log_dir = init_kwargs.pop("logdir", None)
    temporary = log_dir is None
    folder = tempfile.mkdtemp(prefix="hyrax_tbhub-capture-") if temporary else os.fspath(log_dir)
    # Starting a hub makes a producer leave its hub and marks the process idle when closing:
    # both are undone on exit, so a process that logged to an outer hub does so again.
    saved_idle, saved_finished = st.idle, set(st.finished_hubs)
    captured = CapturedLogs(log_dir=os.path.abspath(folder))
    succeeded = False
    message = ""
    try:
        init_tensorboard_logger(log_dir=folder, **init_kwargs)
        ours = st.hub
        try:
            yield captured
            succeeded = True
        finally:
            other = st.hub if st.hub is not ours else None
            if other is not None and other.owner_pid == os.getpid():
                # Not ours to close, and the caller's events went there: say so instead of
                # returning a silently incomplete capture.
                message = (
                    "the code under test started its own hub (init_tensorboard_logger(log_dir="
                    f"{other.logdir!r})) that is still running; its events are not in the capture: "
                    "close it, and read that folder with hyrax_tbhub.testing.read_logs()"
                )
            else:
                close_tensorboard_logger()
        if message:
            raise RuntimeError(message)
        if succeeded:
            _fill(captured, folder)
    finally:
        with st.lock:
            st.idle = saved_idle
            st.finished_hubs.clear()
            st.finished_hubs.update(saved_finished)
        if temporary and not keep:
            shutil.rmtree(folder, ignore_errors=True)


def read_logs(log_dir: str | os.PathLike[str], *, runs: str | Sequence[str] | None = None) -> CapturedLogs:
    """Read a log folder (written by any process, finished or not) into :class:`CapturedLogs`.

    ``runs`` (a run name or glob, or a list of them) reads only those runs' files: a fast path for
    large logs. The hub's counters are in the root run ``"."``: ``read_logs(d, runs=".").counters``
    reads them without the producers' runs; without the root run, ``counters`` is empty.
    ``CapturedLogs.runs`` lists the runs read.
    """
    if not os.path.isdir(log_dir):
        raise FileNotFoundError(f"no log folder at {os.fspath(log_dir)!r}")
    patterns = None if runs is None else ([runs] if isinstance(runs, str) else list(runs))
    captured = CapturedLogs(log_dir=os.path.abspath(log_dir))
    _fill(captured, os.fspath(log_dir), patterns)
    return captured


# -- reading ------------------------------------------------------------------------------------


def _fill(captured: CapturedLogs, folder: str, patterns: list[str] | None = None) -> None:
    event_cls = _event_class()
    entries: list[LoggedEvent] = []
    counters: dict[str, float] = {}
    problems: list[str] = []
    runs = _run_folders(folder)
    if patterns is not None:
        runs = {run: path for run, path in runs.items() if any(_run_matches(run, p) for p in patterns)}
    for run, path in runs.items():
        for file in sorted(p for p in path.iterdir() if "tfevents" in p.name and p.is_file()):
            records, problem = _read_records(file)
            if problem:
                problems.append(f"{os.path.relpath(file, folder)}: {problem}")
            for record in records:
                event = event_cls()
                try:
                    event.ParseFromString(record)
                except Exception as exc:  # a record whose CRCs match but that is not an Event
                    problems.append(f"{os.path.relpath(file, folder)}: undecodable record ({exc})")
                    continue
                if not event.HasField("summary"):
                    continue  # file_version, session_log, graph_def: not something a test asserts on
                for value in event.summary.value:
                    entry = _entry(run, event.step, event.wall_time, value)
                    if entry.tag.startswith(RESERVED_PREFIX) and run == ROOT_RUN:
                        if isinstance(entry.value, float):
                            counters[entry.tag] = entry.value
                        continue
                    entries.append(entry)
    captured._runs = list(runs)
    captured._counters = counters
    captured._problems = problems
    captured._entries = entries


def _run_folders(folder: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for current, _dirs, files in os.walk(folder):
        if any("tfevents" in f for f in files):
            rel = os.path.relpath(current, folder)
            found[ROOT_RUN if rel == "." else Path(rel).as_posix()] = Path(current)
    return dict(sorted(found.items(), key=lambda item: (item[0] != ROOT_RUN, item[0])))


def _masked_crc(data: bytes) -> int:
    # Written here rather than imported from the writer, so the reader checks the writer.
    x = _crc32c(data)
    return ((((x >> 15) | (x << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def _read_records(path: Path) -> tuple[list[bytes], str]:
    """The records of a TFRecord file up to the first bad frame, and why it stopped there ("" if not)."""
    data = path.read_bytes()
    records: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 12:
            return records, f"truncated record at byte {pos}"
        header = data[pos:pos + 8]
        (length,) = _U64.unpack(header)
        if _U32.unpack_from(data, pos + 8)[0] != _masked_crc(header):
            return records, f"corrupt record length at byte {pos}"
        start, stop = pos + 12, pos + 12 + length
        if stop + 4 > end:
            return records, f"truncated record at byte {pos}"
        payload = data[start:stop]
        if _U32.unpack_from(data, stop)[0] != _masked_crc(payload):
            return records, f"corrupt record data at byte {pos}"
        records.append(payload)
        pos = stop + 4
    return records, ""


def _event_class() -> Any:
    try:
        from tensorboard.compat.proto.event_pb2 import Event
    except ImportError:
        from tensorboardX.proto.event_pb2 import Event
    return Event


def _entry(run: str, step: int, wall_time: float, value: Any) -> LoggedEvent:
    which = value.WhichOneof("value")
    for name, kind, plugin in _LEGACY_FIELDS:
        if which == name:
            scalar = float(value.simple_value) if name == "simple_value" else None
            return LoggedEvent(run, value.tag, kind, int(step), scalar, float(wall_time), plugin, value)
    plugin = value.metadata.plugin_data.plugin_name if value.HasField("metadata") else ""
    kind = _PLUGIN_KINDS.get(plugin) or ("other" if plugin else ("tensor" if which == "tensor" else "other"))
    decoded: float | str | None = None
    if which == "tensor":
        if kind == "text":
            strings = value.tensor.string_val
            decoded = strings[0].decode("utf-8", "replace") if len(strings) == 1 else None
        elif kind == "scalar":
            decoded = _tensor_scalar(value.tensor)
    return LoggedEvent(run, value.tag, kind, int(step), decoded, float(wall_time), plugin, value)


def _tensor_scalar(tensor: Any) -> float | None:
    for name in ("float_val", "double_val", "int_val", "int64_val"):
        values = getattr(tensor, name)
        if len(values) == 1:
            return float(values[0])
    content = tensor.tensor_content
    formats = {_DT_FLOAT: "<f", _DT_DOUBLE: "<d", _DT_INT32: "<i", _DT_INT64: "<q"}
    fmt = formats.get(tensor.dtype)
    if fmt and len(content) == struct.calcsize(fmt):
        return float(struct.unpack(fmt, content)[0])
    return None


def _tag_variants(tag: str) -> set[str]:
    cleaned = _INVALID_TAG_CHARACTERS.sub("_", tag).lstrip("/")
    return {tag, cleaned, tag + _TEXT_SUFFIX}


def _run_matches(run: str, pattern: str) -> bool:
    return run == pattern or (any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(run, pattern))

