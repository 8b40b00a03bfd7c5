"""Lightning with two CPU ranks (ddp_spawn, gloo): every rank and every DataLoader worker logs.

Lightning's ``TensorBoardLogger`` writes from rank zero only; ``TensorBoardHubLogger`` (same
constructor) writes every rank's metrics, each rank in its own run (``rank_0``, ``rank_1``), and
its ``experiment`` can be handed to a Dataset so that DataLoader workers log too::

    pip install "hyrax_tbhub[lightning]" -c <(echo torch==2.13.0)    # keep your torch
    python examples/lightning_ddp.py
    tensorboard --logdir <the printed folder>
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from hyrax_tbhub.integrations.lightning import TensorBoardHubLogger
from hyrax_tbhub.testing import read_logs


class Line(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """y = 2x + 1; every read is timed through the writer the dataset carries."""

    def __init__(self, writer: Any, n: int) -> None:
        self.writer = writer
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.monotonic_ns()
        x = torch.tensor([i / self.n])
        self.writer.log_duration_ts("data/read_time_s", start)
        return x, 2 * x + 1


class Regression(pl.LightningModule):
    def __init__(self, writer: Any, n: int) -> None:
        super().__init__()
        self.writer = writer
        self.n = n
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)  # lands from both ranks
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.2)

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(Line(self.writer, self.n), batch_size=4, num_workers=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--logdir", help="save_dir (default: a new temporary folder)")
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    save_dir = args.logdir or tempfile.mkdtemp(prefix="hyrax_tbhub-lightning-")

    logger = TensorBoardHubLogger(save_dir, name="regression")
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=args.epochs,
                         logger=logger, log_every_n_steps=1, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Regression(logger.experiment, args.items))
    logger.close()  # every rank's and worker's events are on disk when it returns

    logs = read_logs(logger.log_dir)
    print(f"{logger.log_dir}:")
    for run, tags in logs.counts().items():
        print(f"  run {run:<22} " + ", ".join(f"{tag} x{n}" for tag, n in sorted(tags.items())))
    return 0


if __name__ == "__main__":  # ddp_spawn's ranks import this file: keep the guard
    raise SystemExit(main())
