"""One rank of a multi-host job: run by torchrun in tests/test_multihost.py, or by a test directly.

Every rank logs scalars and a histogram, runs a DataLoader with two spawn workers that time their
reads, and starts a spawn child and a Python subprocess that log too; rank 0 owns the hub. The
test reads the shared log folder back and checks every event of every process under its run name.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time

import hyrax_tbhub

SUBPROCESS = (
    "import hyrax_tbhub\n"
    "w = hyrax_tbhub.get_tensorboard_logger()\n"
    "w.add_scalar('job/subprocess', 1.0, 0)\n"
    "hyrax_tbhub.close_tensorboard_logger()\n"
)


class TimedReads:
    """A dataset whose items time a small file read and log it, as hyrax's datasets do."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        start = time.monotonic_ns()
        with open(__file__, "rb") as fh:
            fh.read(4096)
        w = hyrax_tbhub.get_tensorboard_logger()
        w.log_duration_ts("data/read_s", start)
        w.add_scalar("data/item", float(index), index)
        return index


def child(n: int) -> None:
    w = hyrax_tbhub.get_tensorboard_logger()
    for s in range(n):
        w.add_scalar("job/child", float(s), s)


def run_rank(args: argparse.Namespace) -> None:
    import numpy as np
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    if args.init_method:
        dist.init_process_group("gloo", init_method=args.init_method, rank=args.rank,
                                world_size=args.world_size)
    else:
        dist.init_process_group("gloo")
    rank = dist.get_rank()
    owner = rank == 0 and not args.no_owner
    if owner:
        hyrax_tbhub.init_tensorboard_logger(log_dir=args.logdir)
        hyrax_tbhub.serve_ranks(rank_hubs=None if args.rank_hubs == "auto" else False)
    dist.barrier()  # the hub is served before any rank logs

    w = hyrax_tbhub.get_tensorboard_logger()
    for s in range(args.scalars):
        w.add_scalar("job/value", float(rank * 100_000 + s), s)
    w.add_histogram("job/hist", np.arange(100, dtype=np.float64) + rank, 0)
    ctx = multiprocessing.get_context(args.context)
    loader: DataLoader[int] = DataLoader(TimedReads(args.items), batch_size=None, num_workers=2,  # type: ignore[arg-type]
                                         multiprocessing_context=ctx)
    assert sorted(loader) == list(range(args.items))
    proc = ctx.Process(target=child, args=(args.child_events,))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0, proc.exitcode
    subprocess.run([sys.executable, "-c", SUBPROCESS], check=True, timeout=120)

    if not owner:
        hyrax_tbhub.close_tensorboard_logger()  # a rank's close: everything it logged is sent
    dist.barrier()
    if owner:
        hyrax_tbhub.close_tensorboard_logger()
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logdir", required=True)
    parser.add_argument("--scalars", type=int, default=500)
    parser.add_argument("--items", type=int, default=12)
    parser.add_argument("--child-events", type=int, default=5)
    parser.add_argument("--rank-hubs", choices=["auto", "off"], default="auto")
    parser.add_argument("--context", choices=["spawn", "fork", "forkserver"], default="spawn",
                        help="start method of the DataLoader workers and of the child")
    parser.add_argument("--init-method", default="")
    parser.add_argument("--rank", type=int, default=-1)
    parser.add_argument("--world-size", type=int, default=-1)
    parser.add_argument("--no-owner", action="store_true", help="the test process owns the hub")
    run_rank(parser.parse_args(argv))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import multihost_job  # spawn workers unpickle TimedReads by this module's name

    multihost_job.main()
