"""Live aggregates across workers: who is the straggler, what is the spread, while it runs.

Four spawn pool workers "read files" and log each read time through a SummaryWriter handed to
them; one of them is slow. TensorBoard shows a run per worker, and the hub also writes the run
``all_producers`` with, per window of ``--every`` seconds, the count, mean, min, max, p50 and p95
of ``data/read_time_s`` over every worker's points::

    python examples/live_aggregates.py
    tensorboard --logdir <the printed folder>      # compare all_producers with the worker runs
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time

from hyrax_tbhub import SummaryWriter
from hyrax_tbhub.testing import read_logs

TAG = "data/read_time_s"


def read_files(writer: SummaryWriter, seconds: float, slow: bool) -> int:
    """Read for ``seconds``; return how many reads were logged."""
    deadline = time.perf_counter() + seconds
    reads = 0
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        time.sleep(0.004 if slow else 0.001)  # the straggler's disk is slower
        writer.log_scalar_ts(TAG, time.perf_counter() - start)  # step: microseconds since the hub started
        reads += 1
    return reads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--logdir", help="log folder (default: a new temporary folder)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0, help="how long each worker reads")
    parser.add_argument("--every", type=float, default=0.25, help="aggregation window, seconds")
    args = parser.parse_args(argv)
    logdir = args.logdir or tempfile.mkdtemp(prefix="hyrax_tbhub-aggregates-")

    with SummaryWriter(logdir) as writer:
        writer.aggregate("data/*", every_s=args.every)
        jobs = [(writer, args.seconds, w == args.workers - 1) for w in range(args.workers)]
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            reads = sum(pool.starmap(read_files, jobs))

    logs = read_logs(logdir)
    print(f"{logdir}:")
    for run, tags in logs.counts().items():
        print(f"  run {run:<22} " + ", ".join(f"{tag} x{n}" for tag, n in sorted(tags.items())))
    p95 = [v for _, v in logs.scalars(f"{TAG}/p95", run="all_producers")]
    p50 = [v for _, v in logs.scalars(f"{TAG}/p50", run="all_producers")]
    total = sum(v for _, v in logs.scalars(f"{TAG}/count", run="all_producers"))
    mid50, mid95 = sorted(p50)[len(p50) // 2], sorted(p95)[len(p95) // 2]
    print(f"{reads} reads logged, {total:.0f} aggregated in {len(p95)} windows; median of window p50s "
          f"{mid50 * 1e3:.2f} ms, of window p95s {mid95 * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":  # spawn workers import this file: keep the guard
    raise SystemExit(main())
