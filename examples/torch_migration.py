"""torch.utils.tensorboard code, moved to hyrax_tbhub by changing one import line.

Ordinary PyTorch training code: a ``train`` and a ``val`` writer, and a Dataset that times its
reads with the writer it was given. With ``torch.utils.tensorboard`` the reads logged inside the
DataLoader workers are lost or corrupt the log (a writer cannot be handed to another process);
with ``hyrax_tbhub.SummaryWriter`` each worker writes its own run next to the main process's::

    python examples/torch_migration.py --context spawn      # or fork, forkserver
    tensorboard --logdir <the printed folder>
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from torch.utils.data import DataLoader, Dataset

# from torch.utils.tensorboard import SummaryWriter      <- before
from hyrax_tbhub import SummaryWriter  # <- after: the whole migration
from hyrax_tbhub.testing import read_logs


class TimedFiles(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Pretends every item is a file that takes ~1 ms to read, and logs how long each read took."""

    def __init__(self, n: int, writer: SummaryWriter) -> None:
        self.n = n
        self.writer = writer  # travels into every DataLoader worker with the dataset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        time.sleep(0.001)  # stands in for disk latency
        x = torch.full((4,), index / self.n)
        self.writer.add_scalar("data/read_time_s", time.perf_counter() - start, index)
        return x, x.sum(dim=0, keepdim=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--logdir", help="log folder (default: a new temporary folder)")
    parser.add_argument("--context", choices=("fork", "spawn", "forkserver"), default="spawn",
                        help="DataLoader multiprocessing_context (default: spawn)")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    logdir = args.logdir or tempfile.mkdtemp(prefix="hyrax_tbhub-migration-")

    train = SummaryWriter(os.path.join(logdir, "train"))
    val = SummaryWriter(os.path.join(logdir, "val"))
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TimedFiles(args.items, train), batch_size=8, num_workers=2,
                        multiprocessing_context=args.context)
    step = 0
    for epoch in range(args.epochs):
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            train.add_scalar("loss", loss.item(), step)
            step += 1
        with torch.no_grad():
            val.add_scalar("loss", torch.nn.functional.mse_loss(model(x), y).item(), epoch)
    del loader
    train.close()  # returns once every process's events are on disk
    val.close()

    for name in ("train", "val"):
        logs = read_logs(os.path.join(logdir, name))
        print(f"{os.path.join(logdir, name)}:")
        for run, tags in logs.counts().items():
            print(f"  run {run:<22} " + ", ".join(f"{tag} x{n}" for tag, n in sorted(tags.items())))
    return 0


if __name__ == "__main__":  # spawn and forkserver workers import this file: keep the guard
    raise SystemExit(main())
