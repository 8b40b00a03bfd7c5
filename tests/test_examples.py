"""Run every example as a user would (a script in a fresh interpreter) and check what it logged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hyrax_tbhub.testing import ROOT_RUN, read_logs

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RUN_TIMEOUT_S = 90


def run_example(name: str, logdir: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYRAX_TBHUB_INFO")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--logdir", str(logdir), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env,
        cwd=str(logdir.parent),
    )
    assert proc.returncode == 0, (
        f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    assert "hyrax_tbhub:" not in proc.stderr, proc.stderr  # the hub warns there about drops and errors
    assert str(logdir) in proc.stdout  # it printed what landed
    return proc.stdout


def producer_runs(log: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    return {run: tags for run, tags in log.items() if run.startswith(prefix)}


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_dataloader_timing(tmp_path: Path, context: str) -> None:
    pytest.importorskip("torch")
    logdir = tmp_path / "log"
    out = run_example("dataloader_timing.py", logdir, "--context", context, "--items", "32")
    log = read_logs(logdir).scalars_by_run()
    assert [step for step, _ in log["."]["train/batch_wait_s"]] == list(range(4))
    workers = producer_runs(log, "dataloader_worker_")
    assert sorted(workers) == ["dataloader_worker_0", "dataloader_worker_1"]
    reads = [p for tags in workers.values() for p in tags["FakeFiles/file_read_time_s"]]
    assert len(reads) == 32
    assert all(value >= 0.001 for _, value in reads)  # each read sleeps 1 ms
    for tags in workers.values():  # steps are microseconds since the hub started: increasing per run
        steps = [s for s, _ in tags["FakeFiles/file_read_time_s"]]
        assert steps == sorted(steps) and steps[0] > 0
    assert "dataloader_worker_1" in out


def test_parallel_verb(tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    out = run_example("parallel_verb.py", logdir, "--tasks", "6")
    log = read_logs(logdir).scalars_by_run()
    workers = producer_runs(log, "SpawnPoolWorker-")
    assert workers and set(log) == {".", *workers}
    items = sorted(p for tags in workers.values() for p in tags.get("verb/items_per_task", []))
    assert items == [(i, 100.0) for i in range(6)]
    assert sum(len(tags.get("verb/task_duration_s", [])) for tags in workers.values()) == 6
    assert log["."]["verb/total"] == [(0, pytest.approx(float(sum(x * x for x in range(600)))))]
    assert "verb/items_per_task" in out


def test_torch_spawn_ranks(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    logdir = tmp_path / "log"
    run_example("torch_spawn_ranks.py", logdir, "--steps", "10")
    log = read_logs(logdir).scalars_by_run()
    assert sorted(producer_runs(log, "rank_")) == ["rank_0", "rank_1"]
    for rank in ("rank_0", "rank_1"):
        losses = log[rank]["training/loss"]
        assert [s for s, _ in losses] == list(range(10))
        assert losses[-1][1] < losses[0][1]  # it trains


def test_torch_spawn_ranks_without_a_process_group(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    logdir = tmp_path / "log"
    run_example("torch_spawn_ranks.py", logdir, "--steps", "3", "--no-distributed")
    runs = producer_runs(read_logs(logdir).scalars_by_run(), "SpawnProcess-")
    assert len(runs) == 2 and all(len(tags["training/loss"]) == 3 for tags in runs.values())


def test_hyrax_swap(tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    out = run_example("hyrax_swap.py", logdir, "--items", "8")
    assert "hyrax.tensorboardx_logger is hyrax_tbhub.tensorboardx_logger" in out
    log = read_logs(logdir).scalars_by_run()
    workers = producer_runs(log, "SpawnPoolWorker-")
    for tag in ("DataProvider/file_read_time_s", "DataCache/cache_hit_s"):
        assert sum(len(tags.get(tag, [])) for tags in workers.values()) == 8
    hits = sorted(v for tags in workers.values() for _, v in tags["DataCache/cache_hit_s"])
    assert hits == [0.0] * 4 + [1.0] * 4
    assert log["."]["verb/items"] == [(0, 8.0)]


def test_logging_handler(tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    out = run_example("logging_handler.py", logdir, "--items", "6")
    logs = read_logs(logdir)
    texts = logs.counts(kind="text")
    assert texts.get(ROOT_RUN) == {"logs/WARNING/text_summary": 1, "logs/ERROR/text_summary": 1}
    worker_texts = [texts.get(run, {}) for run in logs.runs if run.startswith("SpawnPoolWorker-")]
    assert sum(t.get("logs/WARNING/text_summary", 0) for t in worker_texts) == 2  # items 0 and 3
    assert sum(t.get("logs/ERROR/text_summary", 0) for t in worker_texts) == 1  # item 4
    assert not any("logs/INFO/text_summary" in t for t in worker_texts)  # INFO is not a chosen level
    assert "ValueError: item 4 is broken" in out and "logged before the hub exists" not in out
