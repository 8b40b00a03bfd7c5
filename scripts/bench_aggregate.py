"""What live aggregates cost the hub: per event aggregated, per event skipped, per window written.

Part 1 times the hub's hooks directly on what the hub gets (batches of 2048 framed scalar records
as producers send them, and the owner's scalar items): the median call of ``--repeats`` x 50, per
event; windows: the best of ``--repeats``, per (tag, window). Part 2 runs the
whole thing: ``--producers`` spawn processes log ``--events`` scalars each into one hub, with and
without an aggregate of every tag, and reports the owner process's CPU time (the hub thread does
all of the owner's work there) per event.

    python scripts/bench_aggregate.py [--events 100000] [--producers 4] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hyrax_tbhub import SummaryWriter, _aggregate  # noqa: E402
from hyrax_tbhub._events import encode_scalar_records  # noqa: E402
from hyrax_tbhub._hub import Hub  # noqa: E402

BATCH = 2048


def _hooks(repeats: int, tags: int) -> dict[str, float]:
    folder = tempfile.mkdtemp(prefix="bench_aggregate-")
    try:
        hub = Hub(folder)  # not started: only its aggregator is exercised, on this thread
        _aggregate.attach(hub, "read/*", 1.0)
        agg = hub.store.aggregator
        assert agg is not None
        wall = time.time()
        match = [("s", f"read/t{i % tags}", float(i), 1_000 + i, wall) for i in range(BATCH)]
        miss = [("s", f"loss/t{i % tags}", float(i), 1_000 + i, wall) for i in range(BATCH)]
        blob_match, blob_miss = encode_scalar_records(match), encode_scalar_records(miss)
        rounds = 50
        agg.records(blob_match)  # warm the tag caches, as a running hub has them
        agg.records(blob_miss)
        agg.scalars(match)

        def timed(fn: Any, setup: Any = None) -> float:
            """Median over repeats x rounds calls, us per event; setup is not timed."""
            spent = []
            for _ in range(repeats * rounds):
                if setup is not None:
                    setup()
                t0 = time.perf_counter()
                fn()
                spent.append(time.perf_counter() - t0)
            return statistics.median(spent) / BATCH * 1e6

        def fresh() -> None:
            agg.tick(None)  # ends every window: the next batch starts an exact one

        out = {
            "records_matching_exact_us": timed(lambda: agg.records(blob_match), fresh),
            "records_matching_sketch_us": timed(lambda: agg.records(blob_match)),  # windows past the cap
            "records_not_matching_us": timed(lambda: agg.records(blob_miss)),
            "owner_scalars_matching_us": timed(lambda: agg.scalars(match), fresh),
        }

        # Per window: close `tags` windows, each holding `per` values (exact path and sketch path).
        def windows(per: int) -> float:
            values = [("s", f"read/t{i % tags}", float(i % 997) + 0.5, 0, wall) for i in range(per * tags)]
            best = float("inf")
            for _ in range(repeats):
                agg.tick(None)
                agg.scalars(values)
                t0 = time.perf_counter()
                agg.tick(None)
                best = min(best, time.perf_counter() - t0)
            return best / tags * 1e6

        out["window_100_values_us"] = windows(100)
        out["window_2000_values_us"] = windows(2000)
        out["window_10000_values_us"] = windows(10_000)  # past the exact cap: the sketch answers
        hub.abandon_in_child()  # close its sockets and files without a hub thread
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _produce(writer: Any, n: int, start: Any) -> None:
    start.wait()
    for i in range(n):
        writer.add_scalar(f"read/t{i % 8}", float(i), i)


def _end_to_end(events: int, producers: int, with_aggregate: bool) -> dict[str, float]:
    folder = tempfile.mkdtemp(prefix="bench_aggregate-")
    try:
        ctx = multiprocessing.get_context("spawn")
        start = ctx.Event()
        writer = SummaryWriter(folder)
        if with_aggregate:
            writer.aggregate("*", every_s=0.1)
        procs = [ctx.Process(target=_produce, args=(writer, events, start)) for _ in range(producers)]
        for p in procs:
            p.start()
        time.sleep(1.0)  # let the children import before the CPU clock starts
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        start.set()
        for p in procs:
            p.join()
        writer.close()
        t1 = time.perf_counter()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        total = events * producers
        return {"owner_cpu_us_per_event": cpu / total * 1e6, "end_to_end_s": t1 - t0, "events": total}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="scalars per producer")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tags", type=int, default=8, help="distinct tags in the hook benchmark")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"hooks": _hooks(args.repeats, args.tags)}
    result["end_to_end"] = {
        "without": _end_to_end(args.events, args.producers, False),
        "with": _end_to_end(args.events, args.producers, True),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    h = result["hooks"]
    print(f"CPython {sys.version.split()[0]} · {os.cpu_count()} CPUs · batches of {BATCH} records, "
          f"{args.tags} tags · median of {args.repeats * 50} calls (windows: best of {args.repeats})")
    print(f"per event, producer record, tag matches, exact: {h['records_matching_exact_us']:.3f} us")
    print(f"per event, producer record, matches, sketch:    {h['records_matching_sketch_us']:.3f} us")
    print(f"per event, producer record, tag does not match: {h['records_not_matching_us']:.3f} us")
    print(f"per event, owner scalar, tag matches:           {h['owner_scalars_matching_us']:.3f} us")
    print(f"per window and tag, 100 values (exact):         {h['window_100_values_us']:.1f} us")
    print(f"per window and tag, 2000 values (exact):        {h['window_2000_values_us']:.1f} us")
    print(f"per window and tag, 10000 values (sketch):      {h['window_10000_values_us']:.1f} us")
    e = result["end_to_end"]
    print(f"end to end, {args.producers} spawn producers x {args.events} scalars, owner CPU per event: "
          f"{e['without']['owner_cpu_us_per_event']:.3f} us without, "
          f"{e['with']['owner_cpu_us_per_event']:.3f} us with an aggregate of every tag (every_s=0.1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
