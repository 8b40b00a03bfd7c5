"""Every rank of ``torch.multiprocessing.spawn`` logs its own training loss.

Most training code logs from rank 0 only and drops the rest. Here each rank is a spawned child
that logs ``training/loss`` with ``get_tensorboard_logger()``; with ``torch.distributed``
initialised (gloo, with a file rendezvous: the default) the runs are named ``rank_0`` and ``rank_1``, so
TensorBoard draws one curve per rank. ``--no-distributed`` skips the process group: the runs are
then named after the spawned processes::

    python examples/torch_spawn_ranks.py
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing

from hyrax_tbhub import close_tensorboard_logger, get_tensorboard_logger, init_tensorboard_logger
from hyrax_tbhub.testing import read_logs

LOSS_TAG = "training/loss"
WORLD_SIZE = 2


def train(rank: int, rendezvous: str, steps: int, distributed: bool) -> None:
    """One rank: fit y = 3x on its own shard, averaging gradients across ranks."""
    if distributed:
        dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(rank)
        x = torch.randn(64, 1)
        y = 3.0 * x
        weight = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.SGD([weight], lr=0.1)
        logger = get_tensorboard_logger()
        for step in range(steps):
            optimizer.zero_grad()
            loss = ((x * weight - y) ** 2).mean()
            loss.backward()
            if distributed:
                assert weight.grad is not None
                dist.all_reduce(weight.grad)
                weight.grad /= WORLD_SIZE
            optimizer.step()
            logger.add_scalar(LOSS_TAG, loss.item(), step)
    finally:
        if distributed:
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--logdir", help="log folder (default: a new temporary folder)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-distributed", dest="distributed", action="store_false",
                        help="do not initialise torch.distributed (runs named after the processes)")
    args = parser.parse_args(argv)
    logdir = args.logdir or tempfile.mkdtemp(prefix="hyrax_tbhub-ranks-")

    # A file rendezvous on one machine: no port to pick, so no race with another program for it.
    rendezvous = "file://" + os.path.join(tempfile.mkdtemp(prefix="hyrax_tbhub-rdv-"), "store")
    init_tensorboard_logger(log_dir=logdir)
    try:
        torch.multiprocessing.spawn(
            train, args=(rendezvous, args.steps, args.distributed), nprocs=WORLD_SIZE, join=True
        )
    finally:
        close_tensorboard_logger()

    print(f"{WORLD_SIZE} ranks, distributed={args.distributed}; log folder {logdir}")
    print(read_logs(logdir).describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
