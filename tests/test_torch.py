"""torch DataLoader workers log through the hub under every start method."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import read_logs

import workers

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.timeout(180)]

METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]
SIZE = 64


@pytest.mark.parametrize("persistent", [False, True], ids=["restart-each-epoch", "persistent"])
@pytest.mark.parametrize("method", METHODS)
def test_dataloader_workers_log_every_item_of_every_epoch(hub: Path, method: str, persistent: bool) -> None:
    dataset = workers.TimedDataset(SIZE)
    loader = DataLoader(
        dataset,
        batch_size=8,
        num_workers=2,
        multiprocessing_context=multiprocessing.get_context(method),
        persistent_workers=persistent,
    )
    seen = []
    for epoch in range(2):
        dataset.epoch_offset = epoch * SIZE  # reaches the workers when they restart, or not at all
        for batch in loader:
            seen.extend(batch.tolist())
    del loader  # shuts down persistent workers: their events must land as well
    hyrax_tbhub.close_tensorboard_logger()

    assert sorted(seen) == sorted(list(range(SIZE)) * 2)
    log = read_logs(hub).scalars_by_run()
    runs = {run: tags for run, tags in log.items() if "item" in tags}
    # Workers restarted each epoch are new processes, and a run name is never given twice in a
    # hub's life: the second epoch's workers write dataloader_worker_<id>-2.
    expected = {"dataloader_worker_0", "dataloader_worker_1"}
    assert set(runs) == (expected if persistent else expected | {f"{r}-2" for r in expected})
    values = sorted(v for tags in runs.values() for _, v in tags["item"])
    assert values == sorted([float(i) for i in range(SIZE)] * 2)
    durations = [v for tags in runs.values() for _, v in tags["DataProvider/file_read_time_s"]]
    assert len(durations) == 2 * SIZE and all(0 <= d < 60 for d in durations)
    for tags in runs.values():  # microsecond steps from one clock: never backwards within a run
        steps = [s for s, _ in tags["DataProvider/file_read_time_s"]]
        assert steps == sorted(steps)


def test_dataloader_without_a_hub_is_a_noop(tmp_path: Path) -> None:
    loader = DataLoader(workers.TimedDataset(16), batch_size=4, num_workers=2,
                        multiprocessing_context=multiprocessing.get_context("spawn"))
    assert sum(len(b) for b in loader) == 16
    assert list(tmp_path.iterdir()) == []
