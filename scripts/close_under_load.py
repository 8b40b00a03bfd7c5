"""How long close_tensorboard_logger() takes while a producer logs flat out.

    PYTHONPATH=. python scripts/close_under_load.py [--rounds 8] [--burners 2]

Each round: start a hub, fork a child that logs scalars in a tight loop (its queue fills up to
Options.queue_max_events), wait until the child's producer has joined and its queue is full, then
time close_tensorboard_logger(). ``--burners N`` runs N CPU-bound processes alongside, as a loaded
CI machine would. Prints one line per round and the median and maximum.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from typing import Any

import hyrax_tbhub
from hyrax_tbhub._process.state import STATE


def _burn() -> None:
    while True:
        pass


def _flood(ready: Any) -> None:
    w = hyrax_tbhub.get_tensorboard_logger()
    step = 0
    told = False
    while True:
        w.add_scalar("flood", float(step), step)
        step += 1
        if not told and step % 1024 == 0:
            ch = STATE.channel
            if ch is not None and len(getattr(ch, "_dq", ())) >= ch.options.queue_max_events - 1024:
                ready.send("full")
                told = True
        if told and STATE.channel is None:
            break  # the hub drained us: the round is over
    ready.send(step)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--burners", type=int, default=0)
    args = ap.parse_args()
    ctx = mp.get_context("fork")
    burners = [ctx.Process(target=_burn, daemon=True) for _ in range(args.burners)]
    for b in burners:
        b.start()
    times = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                hyrax_tbhub.init_tensorboard_logger(log_dir=os.path.join(tmp, f"log{r}"))
                ready_r, ready_w = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_flood, args=(ready_w,), daemon=True)
                p.start()
                if not ready_r.poll(60):
                    raise SystemExit("the producer's queue never filled")
                ready_r.recv()
                t0 = time.monotonic()
                hyrax_tbhub.close_tensorboard_logger()
                times.append(time.monotonic() - t0)
                p.join(30)
                if p.is_alive():
                    p.kill()
                print(f"round {r}: close {times[-1]:.3f} s", flush=True)
    finally:
        for b in burners:
            b.kill()
    print(f"close: median {statistics.median(times):.3f} s, max {max(times):.3f} s "
          f"({args.rounds} rounds, {args.burners} burners, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
