"""Many machines: every descendant of every rank logs, under ``rank_<n>/<name>`` (issue 10).

A rank started by a launcher is no descendant of the owner: it finds the hub through the
process-group store, and its own children (DataLoader workers, spawn children, subprocesses)
must find it through what the rank publishes. The torchrun tests run a real 2 nodes x 2 ranks
job, once with both "nodes" on loopback and once in two network namespaces joined by a veth pair.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import read_logs

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

pytestmark = [pytest.mark.torch]

HERE = Path(__file__).resolve().parent
JOB = HERE / "multihost_job.py"
ROOT = Path(hyrax_tbhub.__file__).resolve().parent.parent


def _env(runtime: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HYRAX_TBHUB") and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["HYRAX_TBHUB_RUNTIME_DIR"] = str(runtime)  # as if on another machine
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
    return env


def check_rank(logs, rank: int, run: str, scalars: int, items: int, child_events: int) -> None:
    """Every event of rank ``rank`` (own run ``run``) and of each of its descendants arrived."""
    assert logs.scalars("job/value", run=run) == [(s, float(rank * 100_000 + s)) for s in range(scalars)]
    assert len(logs.select("job/hist", run=run, kind="histogram")) == 1
    prefix = f"rank_{rank}/"
    workers = sorted(r for r in logs.runs if r.startswith(prefix + "dataloader_worker_"))
    assert workers == [prefix + "dataloader_worker_0", prefix + "dataloader_worker_1"], logs.runs
    got = sorted(step for w in workers for step, _ in logs.scalars("data/item", run=w))
    assert got == list(range(items))
    reads = [v for w in workers for _, v in logs.scalars("data/read_s", run=w)]
    assert len(reads) == items and all(0 <= v < 60 for v in reads)
    children = [r for r in logs.runs if r.startswith(prefix + "SpawnProcess-")]
    assert len(children) == 1, logs.runs
    assert [s for s, _ in logs.scalars("job/child", run=children[0])] == list(range(child_events))
    subs = [r for r in logs.runs if r.startswith(prefix + "python-")]
    assert len(subs) == 1, logs.runs
    assert len(logs.scalars("job/subprocess", run=subs[0])) == 1


@pytest.mark.timeout(300)
@pytest.mark.parametrize("rank_hubs", ["off", "auto"])
def test_descendants_of_a_rank_that_found_the_hub_in_the_store_log(
        logdir: Path, tmp_path: Path, rank_hubs: str) -> None:
    """Rank 1 (own runtime folder, no hub of its own) and its DataLoader workers, spawn child and
    subprocess all log; every event lands under rank_1 and rank_1/<name>."""
    rendezvous = "file://" + str(tmp_path / "store")
    rank1 = subprocess.Popen(
        [sys.executable, str(JOB), "--logdir", str(logdir), "--init-method", rendezvous, "--rank", "1",
         "--world-size", "2", "--scalars", "200", "--items", "6", "--rank-hubs", rank_hubs],
        env=_env(tmp_path / "rt-node1"))
    try:
        dist.init_process_group("gloo", init_method=rendezvous, rank=0, world_size=2)
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
        hyrax_tbhub.serve_ranks(host="127.0.0.1", rank_hubs=None if rank_hubs == "auto" else False)
        dist.barrier()  # served
        dist.barrier()  # rank 1 and its descendants have logged and rank 1 closed
        hyrax_tbhub.close_tensorboard_logger()
        dist.barrier()
        dist.destroy_process_group()
        assert rank1.wait(120) == 0
    finally:
        if rank1.poll() is None:
            rank1.kill()
            rank1.wait(10)
        if dist.is_initialized():
            dist.destroy_process_group()
    logs = read_logs(logdir)
    check_rank(logs, 1, "rank_1", 200, 6, 5)
    assert not list((tmp_path / "rt-node1").glob("*.json")), "rank 1 left its hub file behind"
    # Who wrote rank 1's runs: rank 0's hub (over TCP), or rank 1's own hub (shared folder).
    writer = rank1.pid if rank_hubs == "auto" else os.getpid()
    assert writers(logdir / "rank_1") == {writer}
    assert not list(logdir.glob(".hyrax_tbhub-*")), "the shared-folder marker outlived the hub"


def writers(folder: Path) -> set[int]:
    """The pids of the hubs that wrote the event files below ``folder`` (their names hold it)."""
    return {int(f.name.split(".")[-2]) for f in folder.rglob("events.out.tfevents.*")}
