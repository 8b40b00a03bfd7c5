"""A SummaryWriter carried by a Dataset into DataLoader workers, and passed to torch.multiprocessing.spawn."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from hyrax_tbhub import SummaryWriter
from hyrax_tbhub.testing import read_logs

import writer_workers

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.timeout(180)]

METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]
SIZE = 40


@pytest.mark.parametrize("persistent", [False, True], ids=["restart-each-epoch", "persistent"])
@pytest.mark.parametrize("method", METHODS)
def test_dataloader_workers_log_through_the_writer_their_dataset_carries(
    tmp_path: Path, method: str, persistent: bool
) -> None:
    log_dir = tmp_path / "log"
    with SummaryWriter(str(log_dir)) as writer:
        loader = DataLoader(
            writer_workers.WriterDataset(writer, SIZE),
            batch_size=4,
            num_workers=2,
            multiprocessing_context=multiprocessing.get_context(method),
            persistent_workers=persistent,
        )
        seen = []
        for epoch in range(2):
            for batch in loader:
                seen.extend(batch.tolist())
            writer.add_scalar("epoch", float(epoch), epoch)
        del loader
    assert sorted(seen) == sorted(list(range(SIZE)) * 2)
    logs = read_logs(log_dir)
    logs.assert_complete()
    expected = {"dataloader_worker_0", "dataloader_worker_1"}  # then "-2" for restarted workers
    assert {e.run for e in logs.select("item")} == (
        expected if persistent else expected | {f"{r}-2" for r in expected}
    )
    assert sorted(v for _, v in logs.scalars("item")) == sorted([float(i) for i in range(SIZE)] * 2)
    assert logs.scalars("epoch", run=".") == [(0, 0.0), (1, 1.0)]


def test_torch_multiprocessing_spawn_ranks_log_through_a_writer_argument(tmp_path: Path) -> None:
    import torch.multiprocessing as tmp

    log_dir = tmp_path / "log"
    with SummaryWriter(str(log_dir)) as writer:
        tmp.spawn(writer_workers.torch_spawn_rank, args=(writer, 30), nprocs=2, join=True)
    logs = read_logs(log_dir)
    logs.assert_complete()
    for rank in range(2):
        assert len(logs.scalars(f"rank/{rank}")) == 30
    assert len({e.run for e in logs.entries}) == 2
