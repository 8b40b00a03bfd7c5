"""Time every ``__getitem__`` of a torch Dataset from inside its DataLoader workers.

The dataset calls ``get_tensorboard_logger().log_duration_ts(...)`` exactly as hyrax's datasets
do, and nothing is passed to the workers: each worker finds the hub by itself and writes its own
run (``dataloader_worker_0``, ``dataloader_worker_1``). The main process times whole batches into
the root run. Works with every start method::

    python examples/dataloader_timing.py --context spawn      # or fork, forkserver
    tensorboard --logdir <the printed folder>
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils.data import DataLoader, Dataset

from hyrax_tbhub import close_tensorboard_logger, get_tensorboard_logger, init_tensorboard_logger
from hyrax_tbhub.testing import read_logs

READ_TAG = "FakeFiles/file_read_time_s"
BATCH_TAG = "train/batch_wait_s"


class FakeFiles(Dataset[torch.Tensor]):
    """Pretends every item is a file that takes ~1 ms to read."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        start = time.monotonic_ns()
        time.sleep(0.001)  # stands in for disk latency
        item = torch.full((4,), float(index))
        get_tensorboard_logger().log_duration_ts(READ_TAG, start)
        return item


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--logdir", help="log folder (default: a new temporary folder)")
    parser.add_argument("--context", choices=("fork", "spawn", "forkserver"), default="spawn",
                        help="DataLoader multiprocessing_context (default: spawn)")
    parser.add_argument("--items", type=int, default=64)
    args = parser.parse_args(argv)
    logdir = args.logdir or tempfile.mkdtemp(prefix="hyrax_tbhub-dataloader-")

    init_tensorboard_logger(log_dir=logdir)
    try:
        loader = DataLoader(
            FakeFiles(args.items),
            batch_size=8,
            num_workers=2,
            # A stdlib context (torch cannot use the ``multiprocess`` package's objects).
            multiprocessing_context=args.context,
        )
        logger = get_tensorboard_logger()
        waited = time.monotonic_ns()
        for step, batch in enumerate(loader):
            logger.add_scalar(BATCH_TAG, (time.monotonic_ns() - waited) / 1e9, step)
            assert batch.shape == (8, 4)
            waited = time.monotonic_ns()
    finally:
        close_tensorboard_logger()  # returns once the workers' events are on disk too

    print(f"start method {args.context}; log folder {logdir}")
    print(read_logs(logdir).describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
