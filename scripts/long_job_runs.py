"""A long job's runs: many short-lived processes, each logging a few events, one hub.

    PYTHONPATH=. python scripts/long_job_runs.py [--processes 20000] [--events 2] [--parallel 4]

The owner starts a hub with the default options and forks ``--processes`` children (bare
``os.fork``, ``--parallel`` alive at a time, as workers come and go over a long run); each logs
``--events`` scalars and exits. The kernel reuses pids well before 20,000 on a default
``pid_max`` of 32,768, and the default ``max_runs`` is 16,384. Prints what landed, what the hub
counted, how many runs, how many distinct pids, and the time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import hyrax_tbhub
from hyrax_tbhub.testing import OVER_CAP, ROOT_RUN, read_logs


def _child(events: int) -> None:
    try:
        writer = hyrax_tbhub.get_tensorboard_logger()
        for step in range(events):
            writer.add_scalar("x", float(step), step)
        hyrax_tbhub.close_tensorboard_logger()
    finally:
        os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    logdir = tempfile.mkdtemp(prefix="hyrax_tbhub_longjob_")
    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    started = time.monotonic()
    live: set[int] = set()
    pids: set[int] = set()
    for _ in range(args.processes):
        while len(live) >= args.parallel:
            pid, _status = os.wait()
            live.discard(pid)
        pid = os.fork()
        if pid == 0:
            _child(args.events)
        live.add(pid)
        pids.add(pid)
    for pid in live:
        os.waitpid(pid, 0)
    hyrax_tbhub.close_tensorboard_logger()
    elapsed = time.monotonic() - started
    logs = read_logs(logdir)
    runs = [r for r in logs.runs if r != ROOT_RUN]
    print(f"processes {args.processes}, distinct pids {len(pids)}, events logged "
          f"{args.processes * args.events}, on disk {len(logs.scalars('x'))}, runs {len(runs)}, "
          f"over_cap {int(logs.counters.get(OVER_CAP, 0))}, {elapsed:.0f} s; log in {logdir}")


if __name__ == "__main__":
    main()
