"""A pool worker SIGTERMed at every line of its exit flush loses nothing.

A ``Pool`` worker can get its end sentinel and ``terminate()``'s SIGTERM at once, so the signal may
come at any point of its exit flush. Each test traces one function of that flush line by line and
SIGTERMs a fresh pool-worker-named fork child at each line.

Mechanism test (it imports private modules on purpose): the exit hook ``_process.hooks._at_exit``
and ``Producer.close``, whose lines are the points where the SIGTERM is sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from faults import common

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch):
    yield from common.private_runtime(monkeypatch)


def _report_of(logdir: Path, where: str, events: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(HERE / "exit_flush_workers.py"), "sigterm_in_exit_flush", str(logdir), where,
         str(events)],
        capture_output=True, text=True, timeout=240, cwd=HERE,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, (proc.stdout[-2000:], proc.stderr[-4000:])
    report: dict[str, Any] = json.loads(lines[-1])
    return report


@pytest.mark.parametrize("where", ["at_exit", "producer_close"])
def test_a_pool_worker_sigtermed_at_any_line_of_its_exit_flush_loses_nothing(
    tmp_path: Path, where: str
) -> None:
    """A Pool worker can get its end sentinel and ``terminate()``'s SIGTERM at once, so SIGTERM
    may arrive at any point of its exit flush: for every line of that flush, a worker SIGTERMed
    there has every event it logged on disk and nothing counted lost (0.4.0 lost all of them at
    eight lines of the exit hook: the SIGTERM flush looked for the producer where the exit hook
    had already swapped in the late channel)."""
    events = 5
    rep = _report_of(tmp_path / "log", where, events)
    logs = common.read_intact(tmp_path / "log")
    got: dict[str, int] = {}
    for e in logs.select(kind="scalar"):
        got[e.tag] = got.get(e.tag, 0) + 1
    lost = {line: got.get(f"exit/{where}/{line}", 0) for line in rep["exits"]
            if got.get(f"exit/{where}/{line}", 0) != events}
    assert lost == {}, (lost, rep["exits"])
    # Ended by the SIGTERM (the main thread's handler re-raises it: -15; the wakeup-fd thread
    # took it first: exit status 143, as a shell reports it), or exited before it came (0).
    odd = {line: code for line, code in rep["exits"].items() if code not in (0, -15, 128 + 15)}
    assert rep["exits"] and odd == {}, odd
    assert {k: v for k, v in logs.counters.items() if v} == {}


def test_the_sigterm_flush_finds_producers_while_another_thread_makes_one() -> None:
    """The SIGTERM flush lists this process's producers while another thread's first logging
    call builds one: iterating the set of producers then raised RuntimeError ("Set changed size
    during iteration"), and the process died without flushing anything."""
    from hyrax_tbhub._process import hooks
    from hyrax_tbhub._producer import Producer

    class Stranger:  # a producer of another process, as the flush sees a fork's inherited ones
        pid = -1

    stop = threading.Event()

    def add_flat_out() -> None:
        kept: list[Stranger] = []
        while not stop.is_set():
            kept.append(Stranger())
            Producer.instances.add(kept[-1])  # type: ignore[arg-type]
            if len(kept) > 2000:
                del kept[:1000]

    adder = threading.Thread(target=add_flat_out, daemon=True)
    adder.start()
    failures = 0
    try:
        for _ in range(3000):
            try:
                hooks._finish_producers(0.1)
            except RuntimeError:
                failures += 1
    finally:
        stop.set()
        adder.join(30)
    assert failures == 0
