"""hyrax's idiom inside a Lightning job: ``get_tensorboard_logger()`` from any process of a job
that uses ``TensorBoardHubLogger`` writes into that logger's folder, each process its own run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import read_logs

pytest.importorskip("torch")
pl = pytest.importorskip("pytorch_lightning")

from hyrax_tbhub.integrations.lightning import TensorBoardHubLogger  # noqa: E402

import lightning_workers  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.timeout(300)]


def test_get_tensorboard_logger_in_dataloader_workers_lands_in_the_loggers_folder(tmp_path: Path) -> None:
    logger = TensorBoardHubLogger(str(tmp_path), name="exp")
    size = 32
    # The dataset logs each read through the process-wide handle, as hyrax's datasets do.
    model = lightning_workers.TinyModel(hyrax_tbhub.get_tensorboard_logger(), size=size, num_workers=2)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=logger, log_every_n_steps=1,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model)
    logger.close()
    logs = read_logs(logger.log_dir)
    logs.assert_complete()
    reads = logs.select("data/read")
    assert len(reads) == 2 * size  # every item of both epochs
    assert all(re.fullmatch(r"dataloader_worker_[01](-\d+)?", e.run) for e in reads), {e.run for e in reads}
    assert sorted(e.value for e in reads) == sorted(float(i) for i in range(size) for _ in range(2))
    assert len(logs.scalars("train_loss", run=".")) == 2 * size // 4  # the logger's own events, beside


def test_a_process_that_already_has_a_hub_keeps_it(tmp_path: Path) -> None:
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(tmp_path / "mine"))
    logger = TensorBoardHubLogger(str(tmp_path), name="exp")
    try:
        assert hyrax_tbhub.get_tensorboard_logger().get_logdir() == str(tmp_path / "mine")
    finally:
        logger.close()
    assert hyrax_tbhub.get_tensorboard_logger().get_logdir() == str(tmp_path / "mine")
    hyrax_tbhub.close_tensorboard_logger()
