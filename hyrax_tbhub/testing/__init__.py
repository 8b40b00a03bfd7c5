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

For tests that watch the hub while it runs (no ``sleep``: wait on a real condition):
:func:`running_hub` gives a :class:`HubProbe` of the hub this process owns (its connected
producers, the runs they joined, the strangers it cut), :func:`wait_until` polls a condition with
a timeout that names what was awaited, :func:`logging_to_a_hub` says whether this process's calls
reach a hub yet (a rank or worker waiting to find it), :func:`published_hub` says which hub the
processes started from here will find, and :func:`reset_logging` (for an autouse fixture) closes
the hub and makes the process start the next test as a fresh one. ``AGGREGATE_RUN`` is the run
``aggregate()`` writes its statistics to. See docs/testing.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .._counters import DROPPED as DROPPED_PREFIX
from .._counters import ERRORS as ERRORS_PREFIX
from .._counters import INTERNAL_ERRORS, OVER_CAP, REJECTED, RESERVED_PREFIX, STRANGERS, TRANSPORT_ERRORS
from .._hub.aggregate import AGGREGATE_RUN
from .._process.state import STATE
from ..tensorboardx_logger import close_tensorboard_logger, init_tensorboard_logger
from ._captured import ROOT_RUN, CapturedLogs, LoggedEvent
from ._live import (
    HubProbe,
    PublishedHub,
    logging_to_a_hub,
    published_hub,
    reset_logging,
    running_hub,
    wait_until,
)
from ._read import fill

__all__ = [
    "AGGREGATE_RUN",
    "CapturedLogs",
    "DROPPED_PREFIX",
    "ERRORS_PREFIX",
    "HubProbe",
    "INTERNAL_ERRORS",
    "LoggedEvent",
    "OVER_CAP",
    "PublishedHub",
    "REJECTED",
    "RESERVED_PREFIX",
    "ROOT_RUN",
    "STRANGERS",
    "TRANSPORT_ERRORS",
    "capture_logs",
    "dropped_tag",
    "errors_tag",
    "logging_to_a_hub",
    "published_hub",
    "read_logs",
    "reset_logging",
    "running_hub",
    "wait_until",
]

# The counters' tags (from _counters, their one home), as they appear as keys of
# ``CapturedLogs.counters``: RESERVED_PREFIX starts every one, and they are kept out of ``entries``.
# ``DROPPED_PREFIX + run``: events that producer logged but never sent; ``ERRORS_PREFIX + run``:
# events of that run the hub could not write; TRANSPORT_ERRORS: broken producer connections;
# INTERNAL_ERRORS: bugs of the hub thread; REJECTED: peers that broke the protocol after the
# handshake; STRANGERS: connections that never proved the key; OVER_CAP: events past
# ``Options.max_runs`` / ``max_subruns``. AGGREGATE_RUN: the run ``aggregate()`` writes its
# statistics to.


def dropped_tag(run: str) -> str:
    """The counter tag of the events run ``run`` dropped: ``hyrax_tbhub/dropped/<run>``."""
    return DROPPED_PREFIX + run


def errors_tag(run: str) -> str:
    """The counter tag of the events of run ``run`` the hub could not write."""
    return ERRORS_PREFIX + run


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
            fill(captured, folder)
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
    fill(captured, os.fspath(log_dir), patterns)
    return captured
