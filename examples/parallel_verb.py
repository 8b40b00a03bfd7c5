"""A spawn-based parallel verb: a ``multiprocess`` Pool whose tasks each log what they did.

This is the shape of a hyrax verb that fans work out to a pool: the verb opens the log, the
tasks log from the workers with ``get_tensorboard_logger()`` and nothing handed to them, and
each worker gets its own run (``SpawnPoolWorker-1``...). Under spawn a worker starts without
any of the parent's globals, which is exactly where a plain global SummaryWriter drops every
call::

    python examples/parallel_verb.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import multiprocess as mp

from hyrax_tbhub import close_tensorboard_logger, get_tensorboard_logger, init_tensorboard_logger
from hyrax_tbhub.testing import read_logs

ITEMS_TAG = "verb/items_per_task"
DURATION_TAG = "verb/task_duration_s"


def process_chunk(task: tuple[int, list[int]]) -> int:
    """One unit of the verb's work; runs in a pool worker."""
    index, chunk = task
    start = time.monotonic_ns()
    total = sum(x * x for x in chunk)
    logger = get_tensorboard_logger()
    logger.add_scalar(ITEMS_TAG, len(chunk), index)
    logger.add_scalar(DURATION_TAG, (time.monotonic_ns() - start) / 1e9, index)
    return total


def run_verb(tasks: int, workers: int) -> int:
    chunks = [(i, list(range(i * 100, (i + 1) * 100))) for i in range(tasks)]
    with mp.get_context("spawn").Pool(workers) as pool:
        results = pool.map(process_chunk, chunks, chunksize=1)
        # Leaving a ``with Pool`` block terminates the workers (SIGTERM): close and join first,
        # so they exit normally and send what they logged.
        pool.close()
        pool.join()
    get_tensorboard_logger().add_scalar("verb/total", float(sum(results)), 0)
    return sum(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--logdir", help="log folder (default: a new temporary folder)")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    logdir = args.logdir or tempfile.mkdtemp(prefix="hyrax_tbhub-verb-")

    init_tensorboard_logger(log_dir=logdir)
    try:
        total = run_verb(args.tasks, args.workers)
    finally:
        close_tensorboard_logger()

    print(f"verb result {total}; log folder {logdir}")
    print(read_logs(logdir).describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
