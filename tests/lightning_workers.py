"""A small LightningModule for the logger tests (importable by the ranks ddp_spawn starts)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset


class ItemDataset(Dataset):  # type: ignore[type-arg]
    """Regression data; each read is logged through the writer it carries (DataLoader workers)."""

    def __init__(self, writer: Any, size: int) -> None:
        self.writer = writer
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.writer.log_scalar_ts("data/read", float(i))
        x = torch.tensor([float(i) / self.size])
        return x, 2 * x + 1


class TinyModel(pl.LightningModule):
    def __init__(self, writer: Any, size: int = 32, lr: float = 0.1, num_workers: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["writer"])
        self.writer = writer
        self.size = size
        self.num_workers = num_workers
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def test_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        return DataLoader(ItemDataset(self.writer, 8), batch_size=4)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        return DataLoader(ItemDataset(self.writer, self.size), batch_size=4, num_workers=self.num_workers)
