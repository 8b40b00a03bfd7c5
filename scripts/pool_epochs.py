"""A new fork ``Pool(5)`` every epoch for many epochs: every event on disk, the owner flat.

    PYTHONPATH=. python scripts/pool_epochs.py [--epochs 2500] [--tasks 10] [--every 250]

Each epoch makes a fork ``multiprocessing.Pool(5)``, maps ``--tasks`` tasks whose workers log one
scalar each, and leaves the pool (``with``: terminate). Once the hub has ended the workers' runs,
the owner's open descriptors and RSS are sampled. Printed every ``--every`` epochs and at the end:
epochs, seconds, descriptors (first sample, last, max), RSS MiB (first, last, max), then the
events read back from disk (TensorBoard's own reader is not needed: the hub's files are read with
hyrax_tbhub.testing, which fails on a damaged record) against those logged, and the hub's
counters. Exit status 0 only when every event is on disk, nothing is counted as lost and the
descriptor count ends where it started.

0.3.0 hung after about 400 epochs: the after-fork path of a worker closed a descriptor number the
owner had just closed and reused for the next pool's pipes.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time

import hyrax_tbhub
from hyrax_tbhub._process.state import STATE
from hyrax_tbhub.testing import read_logs


def _task(i: int) -> int:
    hyrax_tbhub.get_tensorboard_logger().add_scalar("task", float(i), i)
    return i


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=2500)
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--logdir", default=None)
    args = p.parse_args()
    logdir = args.logdir or tempfile.mkdtemp(prefix="pool_epochs_")
    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    hub = STATE.hub
    assert hub is not None
    ctx = mp.get_context("fork")
    fds: list[int] = []
    rss: list[float] = []
    t0 = time.monotonic()

    def line(epoch: int) -> str:
        return (f"epoch {epoch:5d}  {time.monotonic() - t0:7.1f} s  fds first/last/max "
                f"{fds[0]}/{fds[-1]}/{max(fds)}  RSS MiB first/last/max "
                f"{rss[0]:.1f}/{rss[-1]:.1f}/{max(rss):.1f}")

    for epoch in range(args.epochs):
        lo = epoch * args.tasks
        with ctx.Pool(5) as pool:
            got = pool.map(_task, range(lo, lo + args.tasks), chunksize=1)
        if got != list(range(lo, lo + args.tasks)):
            print(f"epoch {epoch}: wrong results {got}", flush=True)
            return 1
        deadline = time.monotonic() + 60
        while hub._conns and time.monotonic() < deadline:  # the workers' runs ended
            time.sleep(0.002)
        fds.append(len(os.listdir("/proc/self/fd")))
        rss.append(_rss_mib())
        if (epoch + 1) % args.every == 0:
            print(line(epoch + 1), flush=True)
    hyrax_tbhub.close_tensorboard_logger()
    print(line(args.epochs), flush=True)
    logs = read_logs(logdir)
    steps = sorted(e.step for e in logs.select(kind="scalar") if e.tag == "task")
    expected = list(range(args.epochs * args.tasks))
    counters = logs.counters
    print(f"events: {len(steps)} on disk of {len(expected)} logged; every one: {steps == expected}; "
          f"damaged records: {len(logs.problems)}; counters: {counters or 'none'}; log: {logdir}",
          flush=True)
    ok = steps == expected and not logs.problems and not any(counters.values()) and fds[-1] == fds[0]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
