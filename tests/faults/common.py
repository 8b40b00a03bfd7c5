"""Plumbing every fault test and child shares: reports, waits, the private runtime folder.

Children report back through small JSON files written atomically (a SIGKILLed child leaves no
half-written report and holds no lock anybody else needs) or through a one-way Pipe. Nothing
here sleeps to synchronise: waits are on pipes, events, files or process exit, each bounded by a
deadline. Where a child must stay busy or stuck until the test kills it, it blocks on an Event
nobody sets, with SAFETY_S as a safety net.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hyrax_tbhub
from hyrax_tbhub._discovery import hubfile
from hyrax_tbhub._process.state import STATE
from hyrax_tbhub.testing import ROOT_RUN, CapturedLogs, read_logs, running_hub

SAFETY_S = 120.0  # a child left behind by a broken test gives up after this long


RECORD_ENV = "HYRAX_TBHUB_FAULT_RECORD"


def record(point: int, test: str, **figures: Any) -> None:
    """Append one test's measurements to the file named by $HYRAX_TBHUB_FAULT_RECORD (if set).

    scripts/fault_table.py runs the suite with it set and turns the records into the fault table
    of docs/performance.md.
    """
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    line = json.dumps({"point": point, "test": test, **figures}, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def wait_until(pred: Callable[[], Any], timeout: float, what: str = "condition", poll: float = 0.005) -> Any:
    """Poll ``pred`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def report(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (readers never see a partial file)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


def read_report(path: str | os.PathLike[str], timeout: float = 30.0) -> Any:
    wait_until(lambda: os.path.exists(path), timeout, f"report {path}")
    with open(path) as fh:
        return json.load(fh)


def private_runtime(monkeypatch: Any, base: str | None = None) -> Iterator[Path]:
    """A fresh runtime folder for hub files and sockets, so tests never see other sessions' hubs.

    Use as the body of a fixture. Fork children inherit the cached folder; spawn and forkserver
    children and subprocesses read it from the environment. On teardown, hubs are closed and child
    processes still alive are killed (a failing test must not leave processes behind).
    """
    import multiprocessing
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="htbf", dir=base or "/tmp"))
    os.chmod(folder, 0o700)
    monkeypatch.setenv(hubfile.ENV_RUNTIME_DIR, str(folder))
    monkeypatch.delenv(hubfile.ENV_INFO, raising=False)
    monkeypatch.setattr(hubfile, "_runtime_dir", folder)
    try:
        yield folder
    finally:
        for p in multiprocessing.active_children():
            p.kill()
            p.join(5)
        hyrax_tbhub.close_tensorboard_logger()
        shutil.rmtree(folder, ignore_errors=True)


def runtime_leftovers(folder: Path) -> list[str]:
    """Sockets and hub files left in a runtime folder (the shared "generation" word is meant to stay)."""
    return sorted(e.name for e in folder.iterdir() if e.name != "generation")


def producer() -> Any:
    """This process's Producer, or None (the owner, or no hub)."""
    from hyrax_tbhub._producer import Producer

    ch = STATE.channel
    return ch if isinstance(ch, Producer) else None


def dropped() -> int:
    """Events this process's producer dropped so far (0 without one)."""
    p = producer()
    return 0 if p is None else int(p.dropped)


def hub_thread_alive() -> bool:
    """Whether this process runs a hub whose thread is still alive (a bug must not kill it)."""
    probe = running_hub()
    return probe is not None and probe.alive


def redirect_stderr(path: str) -> None:
    """Send this process's fd 2 to ``path`` (to count the warnings a child prints)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    # Under pytest, sys.stderr is a capture object with its own file, not fd 2.
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def read_intact(logdir: str | os.PathLike[str], runs: str | list[str] | None = None) -> CapturedLogs:
    """The log read with hyrax_tbhub.testing, failing on any record whose framing or checksum is
    wrong (interleaved or torn bytes) or that is not an Event."""
    logs = read_logs(logdir, runs=runs)
    assert logs.problems == [], f"damaged records: {logs.problems}"
    return logs


def merged_scalars(logs: CapturedLogs) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` over all runs; fails if one tag is in two runs."""
    runs_of: dict[str, set[str]] = {}
    for e in logs.select(kind="scalar"):
        runs_of.setdefault(e.tag, set()).add(e.run)
    twice = {tag: sorted(runs) for tag, runs in runs_of.items() if len(runs) > 1}
    assert not twice, f"tags in more than one run: {twice}"
    return logs.scalar_series()


def counters(logdir: str | os.PathLike[str]) -> dict[str, float]:
    """The hub's counters (``{tag: last value}``), reading the root run only, intact."""
    return read_intact(logdir, runs=ROOT_RUN).counters


def scalars_by_run(logdir: str | os.PathLike[str]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{run: {tag: [(step, value), ...]}}`` of the whole log, intact (the hub's counters left out)."""
    return read_intact(logdir).scalars_by_run()
