"""Every kind of descendant process finds the hub with nothing handed to it, and loses nothing."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import multiprocess
import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import ROOT_RUN, CapturedLogs, read_logs

import workers

pytestmark = pytest.mark.timeout(120)

N = 500
EXPECTED = [(s, s * 0.5) for s in range(N)]

METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]


def _runs_with(logs: CapturedLogs, tag: str) -> dict[str, list[tuple[int, float]]]:
    """``{run: [(step, value), ...]}`` of scalar ``tag`` in every run that logged it."""
    out: dict[str, list[tuple[int, float]]] = {}
    for e in logs.select(tag, kind="scalar"):
        out.setdefault(e.run, []).append((e.step, float(e.value or 0.0)))
    return out


def _join_all(procs: list, timeout: float = 60) -> None:
    for p in procs:
        p.join(timeout)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]


@pytest.mark.parametrize("lib", [multiprocessing, multiprocess], ids=["stdlib", "multiprocess"])
@pytest.mark.parametrize("method", METHODS)
def test_process_children_of_each_start_method_log_everything(hub: Path, lib, method: str) -> None:
    ctx = lib.get_context(method)
    procs = [ctx.Process(target=workers.log_scalars, args=("loss", N)) for _ in range(3)]
    for p in procs:
        p.start()
    hyrax_tbhub.get_tensorboard_logger().add_scalar("owner", 1.0, 1)
    _join_all(procs)
    hyrax_tbhub.close_tensorboard_logger()
    log = read_logs(hub)
    runs = _runs_with(log, "loss")
    assert len(runs) == 3 and "." not in runs  # one run per producer, never the owner's
    assert all(points == EXPECTED for points in runs.values())
    assert log.scalars("owner", run=ROOT_RUN) == [(1, 1.0)]


def test_run_names_say_which_process_wrote_them(hub: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=workers.log_scalars, args=("x", 3), name=f"reader-{i}") for i in range(2)]
    for p in procs:
        p.start()
    _join_all(procs)
    hyrax_tbhub.close_tensorboard_logger()
    assert set(_runs_with(read_logs(hub), "x")) == {"reader-0", "reader-1"}


@pytest.mark.parametrize("lib", [multiprocessing, multiprocess], ids=["stdlib", "multiprocess"])
def test_forkserver_started_before_init_still_finds_the_hub(logdir: Path, lib) -> None:
    if "forkserver" not in lib.get_all_start_methods():
        pytest.skip("no forkserver here")
    ctx = lib.get_context("forkserver")
    # Start the fork server now, before any hub: it never sees the environment set by init.
    warm = ctx.Process(target=workers.log_scalars, args=("ignored", 1))
    warm.start()
    warm.join(60)
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    procs = [ctx.Process(target=workers.log_scalars, args=("loss", N)) for _ in range(2)]
    for p in procs:
        p.start()
    _join_all(procs)
    hyrax_tbhub.close_tensorboard_logger()
    runs = _runs_with(read_logs(logdir), "loss")
    assert len(runs) == 2 and all(points == EXPECTED for points in runs.values())


@pytest.mark.parametrize("lib", [multiprocessing, multiprocess], ids=["stdlib", "multiprocess"])
@pytest.mark.parametrize("method", METHODS)
def test_pool_workers_log_everything(hub: Path, lib, method: str) -> None:
    ctx = lib.get_context(method)
    with ctx.Pool(2) as pool:
        pids = pool.map(workers.log_scalars_task, [("loss", N, k * N) for k in range(4)])
        pool.close()
        pool.join()
    hyrax_tbhub.close_tensorboard_logger()
    runs = _runs_with(read_logs(hub), "loss")
    assert 1 <= len(runs) <= 2 and len(runs) == len(set(pids))
    merged = sorted(p for points in runs.values() for p in points)
    assert merged == [(s, s * 0.5) for s in range(4 * N)]


def test_pool_started_before_init_finds_the_hub_once_it_exists(logdir: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(workers.log_scalars_task, [("early", 1, 0)] * 2)  # no hub yet: no-ops
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
        pool.map(workers.log_scalars_task, [("late", N, k * N) for k in range(2)])
        pool.close()
        pool.join()
    hyrax_tbhub.close_tensorboard_logger()
    log = read_logs(logdir)
    assert not _runs_with(log, "early")
    merged = sorted(p for points in _runs_with(log, "late").values() for p in points)
    assert merged == [(s, s * 0.5) for s in range(2 * N)]


@pytest.mark.parametrize("method", METHODS)
def test_process_pool_executor_workers_log_everything(hub: Path, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        list(ex.map(workers.log_scalars_task, [("loss", N, k * N) for k in range(3)], timeout=60))
    hyrax_tbhub.close_tensorboard_logger()
    merged = sorted(p for points in _runs_with(read_logs(hub), "loss").values() for p in points)
    assert merged == [(s, s * 0.5) for s in range(3 * N)]


def test_python_subprocess_logs_through_the_inherited_environment(hub: Path, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(f"""
        import hyrax_tbhub
        w = hyrax_tbhub.get_tensorboard_logger()
        for s in range({N}):
            w.add_scalar("loss", s * 0.5, s)
    """))
    subprocess.run([sys.executable, str(script)], check=True, timeout=60)
    hyrax_tbhub.close_tensorboard_logger()
    runs = _runs_with(read_logs(hub), "loss")
    assert list(runs.values()) == [EXPECTED]
    assert next(iter(runs)).startswith("child-")


def test_subprocess_with_a_scrubbed_environment_finds_its_parents_hub(hub: Path, tmp_path: Path) -> None:
    script = tmp_path / "scrubbed.py"
    script.write_text("import hyrax_tbhub\nhyrax_tbhub.get_tensorboard_logger().add_scalar('x', 1.0, 1)\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    if os.environ.get("HYRAX_TBHUB_RUNTIME_DIR"):  # a private runtime folder is not part of what is scrubbed
        env["HYRAX_TBHUB_RUNTIME_DIR"] = os.environ["HYRAX_TBHUB_RUNTIME_DIR"]
    subprocess.run([sys.executable, str(script)], check=True, timeout=60, env=env)
    hyrax_tbhub.close_tensorboard_logger()
    assert list(_runs_with(read_logs(hub), "x").values()) == [[(1, 1.0)]]


def test_grandchildren_find_the_hub(hub: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=workers.nested_spawn, args=("n", N))
    p.start()
    _join_all([p])
    hyrax_tbhub.close_tensorboard_logger()
    log = read_logs(hub)
    assert list(_runs_with(log, "n/child").values()) == [EXPECTED]
    assert list(_runs_with(log, "n/grandchild").values()) == [EXPECTED]


def test_forked_while_logging_from_threads_child_opens_its_own_connection(hub: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        ok = pool.apply(workers.log_in_thread_then_fork_child, ("f", 20000))
        pool.close()
        pool.join()
    assert ok
    hyrax_tbhub.close_tensorboard_logger()
    log = read_logs(hub)
    child = _runs_with(log, "f/child")
    assert list(child.values()) == [EXPECTED[:100]]
    (thread_points,) = _runs_with(log, "f/thread").values()
    assert thread_points == [(s, float(s)) for s in range(len(thread_points))]


def test_forked_child_of_the_owner_logs_through_the_hub_not_its_copy(hub: Path) -> None:
    import os

    w = hyrax_tbhub.get_tensorboard_logger()
    for s in range(100):
        w.add_scalar("owner", float(s), s)  # queued in the owner when the fork happens
    pid = os.fork()
    if pid == 0:
        try:
            workers.log_scalars("forked", N)
            hyrax_tbhub.close_tensorboard_logger()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    hyrax_tbhub.close_tensorboard_logger()
    log = read_logs(hub)
    # Written once, by the owner.
    assert log.scalars("owner", run=ROOT_RUN) == [(s, float(s)) for s in range(100)]
    assert list(_runs_with(log, "forked").values()) == [EXPECTED]


def test_producer_flush_is_a_barrier(hub: Path) -> None:
    ctx = multiprocessing.get_context("fork" if "fork" in METHODS else "spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(workers.log_and_flush, ("flushed", N)) is True
        # The worker is still alive and connected: the events are readable anyway.
        assert list(_runs_with(read_logs(hub), "flushed").values()) == [EXPECTED]
        pool.close()
        pool.join()


def test_close_collects_events_of_producers_that_are_still_running(hub: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(workers.log_scalars_task, [("live", N, k * N) for k in range(2)])
        hyrax_tbhub.close_tensorboard_logger()  # workers are alive, with events maybe still queued
        merged = sorted(p for points in _runs_with(read_logs(hub), "live").values() for p in points)
        assert merged == [(s, s * 0.5) for s in range(2 * N)]
        pool.close()
        pool.join()


@pytest.mark.parametrize("lib", [multiprocessing, multiprocess], ids=["stdlib", "multiprocess"])
@pytest.mark.parametrize("method", METHODS)
def test_leaving_a_with_pool_block_loses_nothing(hub: Path, lib, method: str) -> None:
    """``with Pool()`` ends in terminate(): workers get SIGTERM right after the last result."""
    ctx = lib.get_context(method)
    with ctx.Pool(2) as pool:
        pool.map(workers.log_scalars_task, [("task", 1, k) for k in range(8)])
    hyrax_tbhub.close_tensorboard_logger()
    merged = sorted(p for points in _runs_with(read_logs(hub), "task").values() for p in points)
    assert merged == [(k, k * 0.5) for k in range(8)]


@pytest.mark.parametrize("lib", [multiprocessing, multiprocess], ids=["stdlib", "multiprocess"])
@pytest.mark.parametrize("method", METHODS)
def test_leaving_a_with_pool_block_loses_nothing_when_a_thread_logged_first(
    hub: Path, lib, method: str
) -> None:
    """The SIGTERM flush of pool workers needs the main thread: it must not depend on the main
    thread making the worker's first call (ledger seed 3032 lost a task's events that way)."""
    ctx = lib.get_context(method)
    with ctx.Pool(2) as pool:
        pool.map(workers.log_from_a_thread_first_task, [("tfirst", 1, k) for k in range(8)])
    hyrax_tbhub.close_tensorboard_logger()
    log = read_logs(hub)
    merged = sorted(p for points in _runs_with(log, "tfirst").values() for p in points)
    assert merged == [(k, k * 0.5) for k in range(8)]
