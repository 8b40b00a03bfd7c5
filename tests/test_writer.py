"""hyrax_tbhub.SummaryWriter: a drop-in writer whose object works in every process it is handed to."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub import SummaryWriter
from hyrax_tbhub.testing import published_hub, read_logs, running_hub

import writer_workers

pytestmark = pytest.mark.timeout(120)

METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]
N = 50


def _values(log_dir: Path, tag: str, run: str) -> list[float]:
    return sorted(v for _, v in read_logs(log_dir).scalars(tag, run=run))


def test_owner_writes_scalars_text_and_histograms_and_close_lands_them(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    import numpy as np

    log_dir = tmp_path / "log"
    with SummaryWriter(log_dir=str(log_dir), purge_step=None) as w:
        for step in range(N):
            w.add_scalar("loss", 1.0 / (step + 1), step)
        w.add_text("note", "hello", 3)
        w.add_histogram("weights", np.arange(10.0), 1)
        w.add_scalars("pair", {"a": 1.0, "b": 2.0}, 0)
        assert w.log_dir == w.logdir == w.get_logdir() == str(log_dir)
    logs = read_logs(log_dir)
    logs.assert_complete()
    assert len(logs.scalars("loss", run=".")) == N
    assert logs.texts("note") == [(3, "hello")]
    logs.assert_logged("weights", count=1, kind="histogram")
    assert {run for run in logs.runs} >= {".", "pair/a", "pair/b"}


def test_calls_after_close_log_again_into_a_new_file(tmp_path: Path) -> None:
    """As tensorboardX and torch: a call after close() reopens the writer (a new hub, a new file)."""
    log_dir = tmp_path / "log"
    w = SummaryWriter(str(log_dir))
    w.add_scalar("x", 1.0, 0)
    w.close()
    files = sorted(p for p in log_dir.rglob("*tfevents*"))
    w.add_scalar("x", 2.0, 1)
    w.add_text("t", "late", 1)
    w.close()
    w.close()  # idempotent
    assert len(sorted(p for p in log_dir.rglob("*tfevents*"))) == len(files) + 1
    assert read_logs(log_dir).scalars("x") == [(0, 1.0), (1, 2.0)]


def test_write_to_disk_false_writes_nothing(tmp_path: Path) -> None:
    w = SummaryWriter(str(tmp_path / "log"), write_to_disk=False)
    w.add_scalar("x", 1.0, 0)
    w.close()
    assert not (tmp_path / "log").exists()


def test_the_default_log_dir_follows_torch_and_tensorboardx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with SummaryWriter(comment="_exp") as w:
        assert w.log_dir.startswith("runs" + os.sep) and w.log_dir.endswith("_exp")
    assert (tmp_path / w.log_dir).is_dir()


def test_log_dir_and_logdir_both_name_the_folder(tmp_path: Path) -> None:
    with SummaryWriter(logdir=str(tmp_path / "a")) as w:
        assert w.log_dir == str(tmp_path / "a")
    with pytest.raises(ValueError):
        SummaryWriter(log_dir=str(tmp_path / "a"), logdir=str(tmp_path / "b"))


def test_pickled_writer_is_a_small_reference_not_a_socket(tmp_path: Path) -> None:
    with SummaryWriter(str(tmp_path / "log")) as w:
        data = pickle.dumps(w)
        assert len(data) < 2000
        assert b"socket" not in data
        copy = pickle.loads(data)  # in the owner itself: logs through the owner's channel
        copy.add_scalar("via_copy", 1.0, 0)
    assert read_logs(tmp_path / "log").scalars("via_copy", run=".") == [(0, 1.0)]


@pytest.mark.parametrize("method", METHODS)
def test_writer_passed_to_a_process_logs_into_its_own_run_without_close(tmp_path: Path, method: str) -> None:
    log_dir = tmp_path / "log"
    ctx = multiprocessing.get_context(method)
    with SummaryWriter(str(log_dir)) as w:
        procs = [ctx.Process(target=writer_workers.log_items, args=(w, "item", N, i * N)) for i in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    logs = read_logs(log_dir)
    logs.assert_complete()
    runs = {e.run for e in logs.select("item")}
    assert len(runs) == 2 and "." not in runs
    assert _values(log_dir, "item", "*") == [float(i) for i in range(2 * N)]


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_writer_pickled_into_pool_arguments_logs_from_every_worker(tmp_path: Path, method: str) -> None:
    if method not in METHODS:
        pytest.skip(f"no {method} here")
    log_dir = tmp_path / "log"
    with SummaryWriter(str(log_dir)) as w:
        with multiprocessing.get_context(method).Pool(2) as pool:
            pids = pool.map(writer_workers.log_items_task, [(w, "item", N, i * N) for i in range(4)])
        assert len(pids) == 4
    logs = read_logs(log_dir)
    logs.assert_complete()
    assert all(e.run.startswith(("SpawnPoolWorker", "ForkServerPoolWorker", "ForkPoolWorker"))
               for e in logs.select("item"))
    assert _values(log_dir, "item", "*") == [float(i) for i in range(4 * N)]


def test_two_writers_train_and_val_keep_their_folders_apart_in_every_process(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with SummaryWriter(str(tmp_path / "train")) as train, SummaryWriter(str(tmp_path / "val")) as val:
        assert train._owned is not None and val._owned is not None
        assert train._owned.hub is not val._owned.hub  # one hub per folder
        train.add_scalar("loss", 10.0, 0)
        p = ctx.Process(target=writer_workers.log_to_both, args=(train, val, N))
        p.start()
        p.join(60)
        assert p.exitcode == 0
    train_logs, val_logs = read_logs(tmp_path / "train"), read_logs(tmp_path / "val")
    assert train_logs.scalars("loss", run=".") == [(0, 10.0)]
    assert sorted(v for _, v in train_logs.scalars("loss", run="*Process-*")) == [float(i) for i in range(N)]
    val_values = sorted(v for _, v in val_logs.scalars("loss", run="*Process-*"))
    assert val_values == sorted(-float(i) for i in range(N))


def test_writers_of_one_folder_share_its_hub_until_the_last_closes(tmp_path: Path) -> None:
    a = SummaryWriter(str(tmp_path / "log"))
    b = SummaryWriter(str(tmp_path / "log"))
    assert running_hub(a) == running_hub(b) is not None
    a.add_scalar("a", 1.0, 0)
    a.close()
    b.add_scalar("b", 2.0, 0)  # still open: b is a user of the same hub
    b.close()
    logs = read_logs(tmp_path / "log")
    assert logs.scalars("a") == [(0, 1.0)] and logs.scalars("b") == [(0, 2.0)]
    assert len(list((tmp_path / "log").glob("*tfevents*"))) == 1


def test_the_process_wide_logger_works_beside_a_writer_and_neither_sees_the_other(tmp_path: Path) -> None:
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(tmp_path / "global"))
    global_hub = published_hub()
    with SummaryWriter(str(tmp_path / "mine")) as w:
        # The writer's hub publishes nothing: descendants still discover the global hub.
        assert published_hub() == global_hub
        assert global_hub is not None and global_hub.log_dir == str(tmp_path / "global")
        hyrax_tbhub.get_tensorboard_logger().add_scalar("global_tag", 1.0, 0)
        w.add_scalar("writer_tag", 2.0, 0)
        ctx = multiprocessing.get_context("spawn")
        p = ctx.Process(target=writer_workers.log_items, args=(w, "child_writer", 3))
        p.start()
        p.join(60)
        assert p.exitcode == 0
    hyrax_tbhub.close_tensorboard_logger()
    g, m = read_logs(tmp_path / "global"), read_logs(tmp_path / "mine")
    assert g.tags() == ["global_tag"]
    assert set(m.tags()) == {"writer_tag", "child_writer"}


def test_owner_that_exits_without_close_still_lands_everything(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import multiprocessing as mp, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import writer_workers
        from hyrax_tbhub import SummaryWriter
        if __name__ == "__main__":
            w = SummaryWriter({str(tmp_path / "log")!r})
            w.add_scalar("owner", 1.0, 0)
            p = mp.get_context("forkserver").Process(target=writer_workers.log_items, args=(w, "child", 20))
            p.start(); p.join(60)
            for i in range(20):
                w.add_scalar("owner_late", float(i), i)
            # no close, no flush: the exit hook closes the hub
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", script], check=True, timeout=90, env=env)
    logs = read_logs(tmp_path / "log")
    logs.assert_complete()
    assert len(logs.scalars("owner_late", run=".")) == 20
    assert len(logs.scalars("child")) == 20


@pytest.mark.skipif("fork" not in METHODS, reason="needs fork")
def test_a_producer_that_forks_gives_the_grandchild_its_own_connection(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with SummaryWriter(str(tmp_path / "log")) as w:
        with ctx.Pool(1) as pool:
            assert pool.apply(writer_workers.log_then_fork_grandchild, (w, N)) is True
    logs = read_logs(tmp_path / "log")
    logs.assert_complete()
    child_runs = {e.run for e in logs.select("child")}
    grandchild_runs = {e.run for e in logs.select("grandchild")}
    assert len(logs.scalars("child")) == N and len(logs.scalars("grandchild")) == N
    assert child_runs.isdisjoint(grandchild_runs)


@pytest.mark.skipif("fork" not in METHODS, reason="needs fork")
def test_forked_child_drops_the_owners_hub_and_logs_as_a_producer(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    with SummaryWriter(str(tmp_path / "log")) as w:
        w.add_scalar("owner", 0.0, 0)
        p = ctx.Process(target=writer_workers.log_items, args=(w, "forked", N))
        p.start()
        p.join(60)
        assert p.exitcode == 0
        # The owner's registry of its hubs is untouched by the child's reset: a copy of the writer
        # unpickled in the owner finds the hub through it.
        pickle.loads(pickle.dumps(w)).add_scalar("owner_copy", 2.0, 0)
    logs = read_logs(tmp_path / "log")
    logs.assert_complete()
    assert len({e.run for e in logs.select("forked")} - {"."}) == 1
    assert len(logs.scalars("forked")) == N and len(logs.scalars("owner", run=".")) == 1
    assert logs.scalars("owner_copy", run=".") == [(0, 2.0)]


def test_a_writer_pickled_after_close_is_a_noop_in_the_child(tmp_path: Path) -> None:
    w = SummaryWriter(str(tmp_path / "log"))
    w.close()
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=writer_workers.log_items, args=(w, "late", 5))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert read_logs(tmp_path / "log").tags() == []


def test_torch_style_positional_and_keyword_arguments_are_accepted(tmp_path: Path) -> None:
    with SummaryWriter(str(tmp_path / "log"), "", None, 10, 120, "") as w:
        w.add_scalar("a", 1.0, 0, None, True, True)  # torch's new_style, double_precision
        w.add_scalar("b", 2.0, 0, new_style=False)
        w.add_hparams({"lr": 0.1}, {"hp/acc": 0.5}, run_name="trial")
        w.add_hparams({"lr": 0.2}, {"hp/acc": 0.6}, "tbx_name")  # tensorboardX's positional name
    logs = read_logs(tmp_path / "log")
    assert logs.scalars("a") == [(0, 1.0)] and logs.scalars("b") == [(0, 2.0)]
    assert logs.scalars("hp/acc", run="trial") == [(0, 0.5)]
    assert logs.scalars("hp/acc", run="tbx_name") == [(0, pytest.approx(0.6))]


@pytest.mark.torch
def test_torch_add_tensor_and_tensor_scalars(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    with SummaryWriter(str(tmp_path / "log")) as w:
        w.add_scalar("t", torch.tensor(3.0), 1)
        w.add_tensor("tensor", torch.ones(2, 2), 1)
    logs = read_logs(tmp_path / "log")
    assert logs.scalars("t") == [(1, 3.0)]
    logs.assert_logged("tensor", count=1)


@pytest.mark.skipif("fork" not in METHODS, reason="needs fork")
def test_a_forked_child_drops_its_copy_of_the_producer_socket(tmp_path: Path) -> None:
    """A producer killed after forking an idle child: its connection must end at the hub at once,
    not when the child exits (the child closed the socket it inherited)."""
    import signal
    import time

    ctx = multiprocessing.get_context("spawn")
    with SummaryWriter(str(tmp_path / "log")) as w:
        hub = running_hub(w)
        assert hub is not None
        pid_file = tmp_path / "child.pid"
        p = ctx.Process(target=writer_workers.fork_idle_child_then_die, args=(w, str(pid_file)))
        p.start()
        # Not p.join(): the idle grandchild inherited the sentinel pipe and would hold it open.
        deadline = time.monotonic() + 60
        while p.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.05)  # polling waitpid, bounded
        assert p.exitcode == -signal.SIGKILL
        child = int(pid_file.read_text())
        try:
            deadline = time.monotonic() + 20
            while hub.connections() and time.monotonic() < deadline:
                time.sleep(0.05)  # polling the condition itself, bounded
            assert not hub.connections(), "the hub still holds the killed producer's connection"
        finally:
            os.kill(child, signal.SIGUSR1)
    assert read_logs(tmp_path / "log").scalars("before_fork") == [(0, 1.0)]
