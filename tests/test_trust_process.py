"""Process shapes of long jobs, ends of jobs and re-entrancy, each seen failing on 0.3.0.

1. descriptor ownership across fork: a child must never close a descriptor number that the
   parent had already closed and reused (a fork Pool per epoch hung after ~400 epochs);
4. a fork during the package's first import leaves the child able to import and log;
5. Ctrl-C during the owner's logging loses none of the calls that returned;
6. events logged at interpreter exit are on disk, or counted and said once, never an exception;
7. a signal handler that logs is an ordinary producer (no deadlock, no IndexError).

The shapes run in fresh interpreters (tests/process_workers.py): they fork thousands of times,
import the package for the first time, get interrupted or exit, which the test process must not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hyrax_tbhub.testing import STRANGERS

from faults import common

HERE = Path(__file__).parent

pytestmark = [
    pytest.mark.timeout(400),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc and Unix sockets"),
]


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch):
    yield from common.private_runtime(monkeypatch)


def _run(shape: str, *args: Any, timeout: float = 300, env: dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(HERE / "process_workers.py"), shape, *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=HERE, env=env,
    )
    if check:
        assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    return proc


def _last_report(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, (proc.stdout[-2000:], proc.stderr[-4000:])
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def _points(logdir: Path, tag: str) -> list[tuple[int, float]]:
    """Every point of ``tag`` in the log, whichever runs hold them (one per process here)."""
    logs = common.read_intact(logdir)
    return sorted((e.step, float(e.value)) for e in logs.select(kind="scalar") if e.tag == tag)


def test_3000_forked_children_each_find_the_pipe_opened_just_before_their_fork(tmp_path: Path) -> None:
    """3,000 sequential fork children of the owner, each handed a pipe opened just before its
    fork, while the hub opens and closes a run per child: every child finds both ends open and
    its own, and every child's event is on disk (0.3.0: a few children in a thousand found
    theirs closed by the after-fork path, which closed a number the hub had just closed)."""
    children = 3000
    rep = _last_report(_run("forks_with_fresh_pipes", tmp_path / "log", children, 4))
    assert rep == {"bad_children": [], "unreaped": []}
    assert _points(tmp_path / "log", "child") == [(i, float(i)) for i in range(children)]


def test_a_fork_pool_per_epoch_keeps_every_event_and_the_owner_flat(tmp_path: Path) -> None:
    """A new fork Pool(5) every epoch, workers logging: every task's event is on disk and the
    owner's descriptors do not grow from epoch to epoch (scripts/pool_epochs.py runs 2,500)."""
    epochs, tasks = 40, 10
    rep = _last_report(_run("pool_per_epoch", tmp_path / "log", epochs, tasks))
    assert _points(tmp_path / "log", "task") == [(i, float(i)) for i in range(epochs * tasks)]
    assert len(set(rep["fds"])) == 1, rep["fds"]  # counted once the hub ended the workers' runs


@pytest.mark.parametrize("after_calls", [60_000, 150_000, 310_000])
def test_ctrl_c_while_the_owner_logs_flat_out_loses_no_returned_call(
    tmp_path: Path, after_calls: int
) -> None:
    """Ctrl-C while the owner logs flat out in ``try: ... finally: close_tensorboard_logger()``:
    every call that returned before the KeyboardInterrupt is on disk (0.3.0 lost thousands: the
    interrupt cut the caller's own drain between taking a batch and writing it)."""
    rep = _last_report(_run("ctrl_c_owner", tmp_path / "log", after_calls))
    assert rep["interrupted"] and rep["returned"] >= after_calls, rep
    points = _points(tmp_path / "log", "main")
    returned = rep["returned"]
    # The interrupted call itself may be on disk too (it was queued before the interrupt).
    assert points[:returned] == [(i, float(i)) for i in range(returned)], rep
    assert len(points) in (returned, returned + 1), (len(points), rep)


def test_a_signal_handler_that_logs_in_the_owner_is_an_ordinary_caller(tmp_path: Path) -> None:
    """A 1 ms SIGALRM handler logs while the owner logs flat out: no exception from add_scalar
    (0.3.0: IndexError, the handler's call drained the queue under the interrupted drain) and
    every returned call of both on disk."""
    calls = 400_000
    rep = _last_report(_run("alarm_owner", tmp_path / "log", calls))
    assert rep["error"] is None, rep["error"]
    assert _points(tmp_path / "log", "main") == [(i, float(i)) for i in range(calls)]
    alarms = rep["alarms"]
    assert alarms, "the handler never ran"
    assert {s for s, _v in _points(tmp_path / "log", "alarm")} >= set(alarms)


def test_a_signal_handler_that_logs_during_the_first_connect_does_not_deadlock(hub: Path) -> None:
    """A producer's 1 ms SIGALRM handler logs from its first call on, firing while that call
    looks for the hub and connects: the producer neither deadlocks (0.3.0: the handler waited
    for the lock the interrupted look held) nor loses a returned call."""
    import hyrax_tbhub

    calls = 50_000
    outcomes = []
    for _ in range(5):  # the handler must land in the look of the first call
        outcomes.append(_last_report(_run("alarm_producer", calls, timeout=90)))
    hyrax_tbhub.close_tensorboard_logger()
    logs = common.read_intact(hub)
    for rep in outcomes:
        assert rep["error"] is None and rep["flushed"] is True, rep
    main = sorted(e.step for e in logs.select(kind="scalar") if e.tag == "main")
    assert main == sorted(list(range(calls)) * len(outcomes))
    alarm_points = sorted(e.step for e in logs.select(kind="scalar") if e.tag == "alarm")
    assert alarm_points == sorted(s for rep in outcomes for s in rep["alarms"])


def test_children_forked_during_the_first_import_can_import_and_log(hub: Path) -> None:
    """In fresh processes, threads do the first ``from hyrax_tbhub import ...`` while the main
    thread forks children back to back: every child imports the package and logs (0.3.0: a
    child forked mid-import blocked forever on the package's import lock)."""
    import hyrax_tbhub

    reports = [_last_report(_run("fork_during_first_import", 4, seed, timeout=200)) for seed in range(5)]
    hyrax_tbhub.close_tensorboard_logger()
    assert [(r["hung"], r["failed"]) for r in reports] == [(0, [])] * 5, reports
    logs = common.read_intact(hub)
    children = sum(r["children"] for r in reports)
    assert len([e for e in logs.select(kind="scalar") if e.tag == "child"]) == children
    assert len([e for e in logs.select(kind="scalar") if e.tag == "thread"]) == 4 * 5


def _exit_shape(logdir: Path, role: str, daemon: int) -> tuple[None, str, int]:
    proc = _run("exit_hooks", logdir, role, daemon, timeout=120)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    returned = int.from_bytes(Path(f"{logdir}.daemon").read_bytes(), "little") if daemon else 0
    return None, proc.stderr, returned


def _steps_by_tag(logdir: Path) -> dict[str, list[int]]:
    steps: dict[str, list[int]] = {}
    for e in common.read_intact(logdir).select(kind="scalar"):
        steps.setdefault(e.tag, []).append(e.step)
    return {tag: sorted(s) for tag, s in steps.items()}


def test_the_owner_s_events_logged_at_exit_are_on_disk(tmp_path: Path) -> None:
    """In the owner: an atexit hook and a weakref.finalize registered before the package was
    imported (they run after its exit hook), a daemon thread logging up to the end, and (in a
    second process, as CPython runs ``__del__`` at teardown only without daemon threads) a
    ``__del__`` at teardown: every returned call is on disk, nothing raised (0.3.0: each of them
    was a silent no-op after the exit hook closed the hub)."""
    _, _, returned = _exit_shape(tmp_path / "a", "owner", 1)
    steps = _steps_by_tag(tmp_path / "a")
    assert steps["atexit"] == [0] and steps["finalize"] == [0] and steps["main"] == [0], steps.keys()
    daemon = steps["daemon"]
    assert daemon == list(range(len(daemon))), "a hole in the daemon thread's steps"
    assert len(daemon) in (returned, returned + 1), (len(daemon), returned)
    _exit_shape(tmp_path / "b", "owner", 0)
    steps = _steps_by_tag(tmp_path / "b")
    assert steps["atexit"] == [0] and steps["finalize"] == [0] and steps["del"] == [0], steps


def test_a_producer_s_events_logged_at_exit_are_on_disk_or_said(hub: Path, tmp_path: Path) -> None:
    """In a producer: the atexit hook, the finalizer and the daemon thread's returned calls are
    on disk; a ``__del__`` at teardown (no thread can send any more) is said once on stderr,
    never raised."""
    import hyrax_tbhub

    _, daemon_stderr, returned = _exit_shape(tmp_path / "a", "producer", 1)
    _, stderr, _ = _exit_shape(tmp_path / "b", "producer", 0)
    hyrax_tbhub.close_tensorboard_logger()
    steps = _steps_by_tag(hub)
    assert steps["atexit"] == [0, 0] and steps["finalize"] == [0, 0] and steps["main"] == [0, 0], steps.keys()
    daemon = steps["daemon"]
    assert daemon == list(range(len(daemon))), "a hole in the daemon thread's steps"
    if len(daemon) < returned:  # calls made once the interpreter tears down: said, once
        assert daemon_stderr.count("logged after its exit flush") == 1, (len(daemon), returned, daemon_stderr)
    assert len(daemon) <= returned + 1
    assert "del" in steps or stderr.count("logged after its exit flush") == 1, stderr


def test_a_signal_handler_that_logs_through_a_writer_object_during_its_connect(tmp_path: Path) -> None:
    """The same through a ``hyrax_tbhub.SummaryWriter`` handed to the producer pickled (0.3.0:
    RecursionError, each nested handler waiting on the registry's lock): the handler's calls wait
    for the interrupted connect and go to its producer; nothing lost, no stray connection."""
    import pickle

    import hyrax_tbhub

    calls = 20_000
    writer = hyrax_tbhub.SummaryWriter(str(tmp_path / "log"))
    pickled = tmp_path / "writer.pickle"
    pickled.write_bytes(pickle.dumps(writer))
    outcomes = [_last_report(_run("alarm_writer_producer", pickled, calls, timeout=90)) for _ in range(3)]
    writer.close()
    for rep in outcomes:
        assert rep["error"] is None and rep["flushed"] is True, rep
    logs = common.read_intact(tmp_path / "log")
    main = sorted(e.step for e in logs.select(kind="scalar") if e.tag == "main")
    assert main == sorted(list(range(calls)) * len(outcomes))
    alarm_points = sorted(e.step for e in logs.select(kind="scalar") if e.tag == "alarm")
    assert alarm_points == sorted(s for rep in outcomes for s in rep["alarms"])
    assert common.counters(tmp_path / "log").get(STRANGERS, 0) == 0
