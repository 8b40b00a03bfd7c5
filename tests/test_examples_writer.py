"""The SummaryWriter, aggregate and Lightning examples, run as a user would, and what they logged."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyrax_tbhub.testing import read_logs

from test_examples import run_example  # tests/ is on sys.path (conftest)

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_torch_migration(tmp_path: Path, context: str) -> None:
    pytest.importorskip("torch")
    logdir = tmp_path / "log"
    run_example("torch_migration.py", logdir, "--context", context, "--items", "32")
    train, val = read_logs(logdir / "train"), read_logs(logdir / "val")
    train.assert_complete()
    assert len(train.scalars("loss", run=".")) == 8  # 4 batches x 2 epochs
    # Workers are not persistent: each epoch's are new processes, and a run name is never given
    # twice in a hub's life (steps of two processes must not share a run), so epoch 2 gets "-2".
    assert {e.run for e in train.select("data/read_time_s")} == {
        "dataloader_worker_0", "dataloader_worker_1", "dataloader_worker_0-2", "dataloader_worker_1-2"
    }
    assert len(train.scalars("data/read_time_s")) == 64
    assert [s for s, _ in val.scalars("loss", run=".")] == [0, 1]


def test_live_aggregates(tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    out = run_example("live_aggregates.py", logdir, "--workers", "3", "--seconds", "0.6", "--every", "0.2")
    logs = read_logs(logdir)
    logs.assert_complete()
    tag = "data/read_time_s"
    reads = len(logs.scalars(tag))
    assert sum(v for _, v in logs.scalars(f"{tag}/count", run="all_producers")) == reads
    assert len({e.run for e in logs.select(tag)}) == 3
    worst = max(v for _, v in logs.scalars(tag))
    assert max(v for _, v in logs.scalars(f"{tag}/max", run="all_producers")) == pytest.approx(worst)
    assert f"{reads} reads logged, {reads} aggregated" in out


def test_lightning_ddp(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_lightning")
    logdir = tmp_path / "log"
    out = run_example("lightning_ddp.py", logdir, "--items", "16", "--epochs", "1")
    (version,) = (logdir / "regression").iterdir()
    logs = read_logs(version)
    assert {e.run for e in logs.select("train_loss")} == {"rank_0", "rank_1"}
    assert len(logs.scalars("data/read_time_s")) == 16
    assert "rank_1" in out
