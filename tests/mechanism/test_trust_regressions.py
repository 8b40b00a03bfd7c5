"""Regression tests of "every event, every time": one per symptom found.

1. threads that start logging at once in a fresh process lost whole threads' events, uncounted;
2. a fork while another thread logs (and imports) hung the child on an import lock;
3. a producer with more than 1024 descriptors lost everything (select.select) and counted nothing;
5. every sender failure was "lost the hub", and a bug in the hub counted as a transport error.
(Symptom 4, a slow close under a flat-out producer, is tests/test_faults_hubgone.py's
test_close_and_switch_while_a_producer_logs_flat_out, run under load.)

Mechanism test (it imports private modules on purpose): the hub object and the fork hooks (``_hub``,
``_process.hooks``), each symptom at the place it was fixed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import signal
import subprocess
import sys
from collections.abc import Iterator
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

import pytest

import hyrax_tbhub
from hyrax_tbhub import _hub
from hyrax_tbhub.testing import INTERNAL_ERRORS, TRANSPORT_ERRORS, dropped_tag

import trust_workers as tw
from faults import common

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc and Unix sockets"),
]


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch):
    yield from common.private_runtime(monkeypatch)


def _join(p: Any, timeout: float) -> None:
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join(10)
        raise AssertionError(f"{p.name} did not finish in {timeout} s")


def _histogram_tags(logdir: Path) -> set[str]:
    return {e.tag for e in common.read_intact(logdir).select(kind="histogram")}


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_threads_that_start_logging_at_once_lose_nothing(hub: Path, tmp_path: Path, method: str) -> None:
    """8 threads of a fresh child start logging 500 scalars each at the same moment, while the
    first call is still connecting: every event of every thread is on disk, none dropped."""
    threads, events = 8, 500
    result = tmp_path / "threads.json"
    p = mp.get_context(method).Process(
        target=tw.threads_at_once, args=(str(result), threads, events), name="threads"
    )
    p.start()
    _join(p, 90)
    assert p.exitcode == 0
    rep = common.read_report(result)
    hyrax_tbhub.close_tensorboard_logger()
    merged = common.merged_scalars(common.read_intact(hub))
    landed = {i: len(merged.get(f"thread{i}", [])) for i in range(threads)}
    assert landed == {i: events for i in range(threads)}, (landed, rep)
    assert rep["flush"] is True and rep["dropped"] == 0, rep
    for i in range(threads):
        assert merged[f"thread{i}"] == [(s, float(s)) for s in range(events)]


def _check_fork_children(hub: Path, tmp_path: Path, rep: dict[str, Any], children: int) -> None:
    assert rep["errors"] == [], rep["errors"]
    failed = sorted({int(i) for i, code in rep["exitcodes"].items() if code != 0} | set(rep["hung"]))
    stacks = {}
    for i in failed:
        stack = tmp_path / f"child-{rep['pid']}-{i}.json.stack"
        stacks[i] = stack.read_text() if stack.exists() else "?"
    # A child that hangs dumps its stacks and exits 1 (trust_workers.STACK_AFTER_S).
    assert failed == [], f"children {failed} hung or failed after the fork: {rep}; stacks: {stacks}"
    hyrax_tbhub.close_tensorboard_logger()
    merged = common.merged_scalars(common.read_intact(hub))
    for i in range(children):
        assert merged.get(f"child{i}") == [(s, float(s)) for s in range(9)], i
    hists = _histogram_tags(hub)
    assert {f"child{i}/h" for i in range(children)} <= hists, hists


def test_fork_while_another_thread_logs_never_hangs_the_child(hub: Path, tmp_path: Path) -> None:
    """A fresh producer process starts a thread logging flat out (its first call imports
    tensorboardX) and forks children at once, by os.fork and by multiprocessing: every child
    exits and its events land."""
    children = 8
    result = tmp_path / "parent.json"
    p = mp.get_context("spawn").Process(
        target=tw.fork_under_load, args=(str(result), str(tmp_path), children), name="parent"
    )
    p.start()
    _join(p, 150)
    assert p.exitcode == 0
    _check_fork_children(hub, tmp_path, common.read_report(result), children)


@pytest.fixture
def _own_forkserver() -> Iterator[None]:
    """A forkserver started for this test and stopped after it.

    The server keeps the environment of the moment it starts, here this test's private runtime
    folder: one left running would send later tests' forkserver children to a folder that is gone.
    """
    forkserver._forkserver._stop()
    try:
        yield
    finally:
        forkserver._forkserver._stop()


@pytest.mark.usefixtures("_own_forkserver")
def test_forkserver_child_whose_threads_log_forks_a_grandchild(hub: Path, tmp_path: Path) -> None:
    """A forkserver child with two threads logging flat out forks grandchildren: they all finish."""
    children = 4
    result = tmp_path / "parent.json"
    p = mp.get_context("forkserver").Process(
        target=tw.fork_under_load, args=(str(result), str(tmp_path), children, 2), name="fsparent"
    )
    p.start()
    _join(p, 150)
    assert p.exitcode == 0
    _check_fork_children(hub, tmp_path, common.read_report(result), children)


def test_a_producer_with_more_than_1024_descriptors_loses_nothing(hub: Path, tmp_path: Path) -> None:
    """A child that holds ~1,100 descriptors (its socket numbers pass 1024) logs: all land."""
    events = 300
    result, stderr = tmp_path / "fds.json", tmp_path / "fds.stderr"
    p = mp.get_context("spawn").Process(
        target=tw.log_with_many_fds, args=(str(result), str(stderr), 1100, events), name="fds"
    )
    p.start()
    _join(p, 90)
    assert p.exitcode == 0
    rep = common.read_report(result)
    assert rep["sock_fd"] is not None and rep["sock_fd"] >= 1024, rep  # the case is really exercised
    hyrax_tbhub.close_tensorboard_logger()
    merged = common.merged_scalars(common.read_intact(hub))
    assert merged.get("many_fds") == [(s, float(s)) for s in range(events)], (rep, stderr.read_text())
    assert rep["flush"] is True and rep["dropped"] == 0, rep


def test_a_bug_in_the_sender_is_counted_and_said_once(hub: Path, tmp_path: Path) -> None:
    """An internal error in a producer's sender thread: what it held is counted as dropped in the
    log (not only in the producer), one stderr line says it is an internal error with its
    traceback, and the hub sees no transport error (the connection itself was fine)."""
    events = 500
    result, stderr = tmp_path / "bug.json", tmp_path / "bug.stderr"
    p = mp.get_context("fork").Process(
        target=tw.sender_bug, args=(str(result), str(stderr), events), name="buggy"
    )
    p.start()
    _join(p, 60)
    rep = common.read_report(result)
    assert rep["first_flush"] is True and rep["gone"] is True, rep
    assert rep["later_flush"] is False, rep  # what it logs since goes nowhere: flush says so
    assert rep["dropped"] == events, rep
    hyrax_tbhub.close_tensorboard_logger()
    counted = common.counters(hub)
    assert counted.get(dropped_tag(rep['run'])) == events, counted
    assert counted.get(TRANSPORT_ERRORS, 0) == 0, counted
    text = stderr.read_text()
    lines = [line for line in text.splitlines() if line.startswith("hyrax_tbhub:")]
    assert len(lines) == 1, text
    assert "internal error" in lines[0] and "RuntimeError" in lines[0], text
    assert "Traceback" in text and "a bug in the sender" in text, text


def test_a_bug_in_the_hub_is_an_internal_error_not_a_transport_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """An exception inside the hub's loop is counted under hyrax_tbhub/internal_errors and said
    once on stderr with its traceback; transport_errors keeps meaning a broken connection."""
    original = _hub.peers.Peers.send_acks
    raised = []

    def broken(self: Any) -> None:
        if not raised:
            raised.append(1)
            raise KeyError("a bug in the hub")
        original(self)

    monkeypatch.setattr(_hub.peers.Peers, "send_acks", broken)
    logdir = tmp_path / "log"
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_scalar("owner", 1.0, 0)
    assert w.flush(30)
    common.wait_until(lambda: raised, 30, "the injected bug")
    w.add_scalar("owner", 2.0, 1)  # the hub carries on
    hyrax_tbhub.close_tensorboard_logger()
    counted = common.counters(logdir)
    assert counted.get(INTERNAL_ERRORS) == 1, counted
    assert counted.get(TRANSPORT_ERRORS, 0) == 0, counted
    assert common.merged_scalars(common.read_intact(logdir))["owner"] == [(0, 1.0), (1, 2.0)]
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hyrax_tbhub:")]
    assert len(lines) == 1 and "internal error" in lines[0], err
    assert "Traceback" in err and "a bug in the hub" in err, err


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_the_logging_path_imports_no_module_of_ours(tmp_path: Path, method: str) -> None:
    """The class behind symptom 2: every module a logging call needs is imported with the package,
    so no fork from another thread can catch one of ours half-imported (scalars, text, ``*_ts``,
    flush, get_logdir, and a SummaryWriter of the child's own)."""
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(tmp_path / "log"))
    try:
        result = tmp_path / "imports.json"
        p = mp.get_context(method).Process(
            target=tw.modules_imported_by_logging, args=(str(result), str(tmp_path / "own"))
        )
        p.start()
        _join(p, 60)
        assert p.exitcode == 0
    finally:
        hyrax_tbhub.close_tensorboard_logger()
    report = json.loads(result.read_text())
    assert report["flush"] is True
    assert report["new"] == [], report["new"]


def _blocks(mask: int, sig: int) -> bool:
    return bool(mask >> (sig - 1) & 1)


def test_our_threads_never_take_a_signal_meant_for_the_process(tmp_path: Path) -> None:
    """A process-directed SIGTERM (Pool.terminate) or SIGINT that the kernel hands to one of our
    threads never reaches a Python handler while the main thread waits in C: a pool worker then
    outlived terminate() and ``with Pool`` hung (seen under --start-method=forkserver). So the hub
    and every producer thread block every asynchronous signal."""
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(tmp_path / "log"))
    try:
        owner = tw.thread_signal_masks()
        result = tmp_path / "masks.json"
        p = mp.get_context("spawn").Process(target=tw.blocked_signals_of_our_threads, args=(str(result),))
        p.start()
        _join(p, 60)
        assert p.exitcode == 0
    finally:
        hyrax_tbhub.close_tensorboard_logger()
    child = json.loads(result.read_text())
    assert "hyrax_tbhub-hub" in owner and "hyrax_tbhub-producer" in child, (owner, child)
    for name, mask in [*owner.items(), *child.items()]:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGALRM):
            assert _blocks(mask, sig), (name, signal.Signals(sig).name, hex(mask))
        assert not _blocks(mask, signal.SIGSEGV), name  # faults stay with the thread that caused them


_FORK_OF_A_POOL_WORKER = """
import multiprocessing, os, signal, sys
multiprocessing.current_process().name = "PoolWorker-1"  # what a pool worker is called
import hyrax_tbhub
from hyrax_tbhub._process import hooks
hooks.flush_on_pool_terminate()  # what a pool worker gets at import and after fork
armed = signal.set_wakeup_fd(-1)  # read the watch's fd, and put it back
signal.set_wakeup_fd(armed)
assert armed != -1
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(w, str(signal.set_wakeup_fd(-1)).encode())  # the child's wakeup fd, if any
    os._exit(0)
os.waitpid(pid, 0)
print(os.read(r, 64).decode())
"""


def test_a_fork_child_of_a_pool_worker_does_not_share_its_sigterm_watch() -> None:
    """The SIGTERM watch of a pool worker (the signal module's wakeup fd) is not inherited by a
    child it forks: a SIGTERM to that child would be written to the parent's watch and end the
    parent (seen: the pool worker exited 143 when its bare fork child was terminated)."""
    done = subprocess.run([sys.executable, "-c", _FORK_OF_A_POOL_WORKER], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "-1"


def test_every_module_a_hub_needs_is_imported_with_the_package() -> None:
    """A rank starts its own hub on a logging call or on its watch thread: nothing may be imported
    then (an import another thread is in at a fork hangs the child's next import of it)."""
    code = ("import sys, hyrax_tbhub; before = set(sys.modules); "
            "from hyrax_tbhub._hub import Hub; import tempfile; d = tempfile.mkdtemp(); "
            "h = Hub(d); h.start(publish=False); h.close(); "
            "new = sorted(set(sys.modules) - before - {'tempfile'}); print(new)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
