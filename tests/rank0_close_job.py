"""One rank of a job that ends the usual way: a barrier, then rank 0 closes and reads the log.

Every rank logs scalars and iterates a DataLoader whose workers log each item they load; then
every rank passes a barrier and rank 0 calls ``close_tensorboard_logger()``. The other ranks wait
at a second barrier until rank 0 has read the log folder back (so that nothing but rank 0's
close can have brought their events to disk), then close at exit. Rank 0 writes what it found,
per rank, to ``--report`` (JSON). Run by torchrun from tests/test_rank0_close.py and
scripts/rank0_close.py.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time

import hyrax_tbhub

TAG_RANK = "job/value"
TAG_ITEM = "data/item"
TAG_EPOCH = "job/epoch"
TAGS = (TAG_RANK, TAG_ITEM, TAG_EPOCH)


class LoggedItems:
    """A dataset whose items log as they load, as hyrax's datasets do."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        hyrax_tbhub.get_tensorboard_logger().add_scalar(TAG_ITEM, float(index), index)
        return index


def run_rank(args: argparse.Namespace) -> None:
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        hyrax_tbhub.init_tensorboard_logger(log_dir=args.logdir)
        hyrax_tbhub.serve_ranks(rank_hubs=None if args.rank_hubs == "auto" else False)
    dist.barrier()  # the hub is served before any rank logs

    w = hyrax_tbhub.get_tensorboard_logger()
    ctx = multiprocessing.get_context("spawn")
    loader: DataLoader[int] = DataLoader(
        LoggedItems(args.items), batch_size=None, num_workers=2, multiprocessing_context=ctx,  # type: ignore[arg-type]
        persistent_workers=args.persistent,
    )
    for epoch in range(args.epochs):
        for index in loader:
            w.add_scalar(TAG_RANK, float(index), epoch * args.items + index)
        if epoch == args.epochs - 1:
            dist.barrier()  # lined up, so that the next line decides who reaches the last barrier last
            if rank:
                # The other ranks are slower than rank 0 (a workload's shape, not a wait for
                # anything): they reach the barrier last, their summary just logged.
                time.sleep(args.slower_s)
        w.add_scalar(TAG_EPOCH, float(epoch), epoch)  # an epoch's summary: the last thing before the barrier
    dist.barrier()  # the end of training: every event above was logged before it
    if rank == 0:
        t0 = time.monotonic()
        hyrax_tbhub.close_tensorboard_logger()
        close_s = time.monotonic() - t0
        sizes = _sizes(args.logdir)  # the log as it is when close returns (reading takes long)
        found = _count(_snapshot(args.logdir, sizes, args.report + ".snapshot"), world)
        with open(args.report + ".tmp", "w") as fh:
            expected = {TAG_RANK: args.epochs * args.items, TAG_ITEM: args.epochs * args.items,
                        TAG_EPOCH: args.epochs}
            json.dump({"found": found, "close_s": close_s, "world": world, "expected": expected}, fh)
        os.replace(args.report + ".tmp", args.report)
    dist.barrier()  # the other ranks close only once rank 0 has looked
    dist.destroy_process_group()


def _sizes(logdir: str) -> dict[str, int]:
    return {os.path.join(folder, f): os.stat(os.path.join(folder, f)).st_size
            for folder, _dirs, files in os.walk(logdir) for f in files if "tfevents" in f}


def _snapshot(logdir: str, sizes: dict[str, int], dest: str) -> str:
    """A copy of the log folder holding only the bytes each event file had then."""
    for path, size in sizes.items():
        target = os.path.join(dest, os.path.relpath(path, logdir))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(path, "rb") as src, open(target, "wb") as dst:
            dst.write(src.read(size))
    return dest


def _count(logdir: str, world: int) -> dict[str, dict[str, int]]:
    """{rank: {tag: events}} over the rank's runs, as the log folder holds them now."""
    from hyrax_tbhub.testing import read_logs

    logs = read_logs(logdir)
    found: dict[str, dict[str, int]] = {str(r): dict.fromkeys(TAGS, 0) for r in range(world)}
    for e in logs.select(kind="scalar"):
        if e.tag not in TAGS:
            continue
        head = e.run.split("/", 1)[0]
        rank = head[5:] if head.startswith("rank_") else "0"
        found[rank][e.tag] += 1
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logdir", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--persistent", action="store_true")
    parser.add_argument("--slower-s", type=float, default=0.2, help="extra work of ranks > 0 at the end")
    parser.add_argument("--rank-hubs", choices=["auto", "off"], default="auto")
    run_rank(parser.parse_args(argv))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import rank0_close_job  # spawn workers unpickle LoggedItems by this module's name

    rank0_close_job.main()
