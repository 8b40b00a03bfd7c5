"""Code the engines' workers run (importable by spawned and remote workers)."""

from __future__ import annotations

import os

import hyrax_tbhub


def log_one(i: int, tag: str = "engine/x") -> int:
    """Log one scalar ``tag`` = i at step i; return the pid of the process that logged it."""
    hyrax_tbhub.get_tensorboard_logger().add_scalar(tag, float(i), i)
    return os.getpid()


def ignite_rank(local_rank: int, n: int) -> None:
    """An ignite rank (idist.Parallel): log ``n`` scalars of its own."""
    import ignite.distributed as idist

    rank = idist.get_rank()
    for i in range(n):
        log_one(rank * n + i, "engine/ignite")


class LoggingDataset:
    """A map-style dataset whose ``__getitem__`` logs, as hyrax's datasets do (in DataLoader
    workers)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, object]:
        import torch

        log_one(i, "engine/trainer_item")
        return {"x": torch.tensor([float(i)]), "labels": torch.tensor([0.0])}
