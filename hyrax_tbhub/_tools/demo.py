"""``hyrax-tbhub demo``: a small pipeline logging from three kinds of process into one log.

- loader workers (spawn) read shard files and time each read, as DataLoader workers do;
- a parallel step runs in a ``multiprocess`` spawn pool, as hyrax's parallel verbs do;
- the main loop logs training metrics.

Then the hub is closed and what landed is read back from the files and printed.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from .. import close_tensorboard_logger, get_tensorboard_logger, init_tensorboard_logger
from .progress import Progress

SHARD_BYTES = 64 * 1024


def _make_shards(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = random.Random(0)
    for i in range(count):
        path = folder / f"shard_{i:04d}.bin"
        path.write_bytes(rng.randbytes(SHARD_BYTES))
        paths.append(str(path))
    return paths


def loader_worker(paths: list[str], done: multiprocessing.Queue[int]) -> None:
    """Read shards and time every read, like a DataLoader worker's ``__getitem__``."""
    log = get_tensorboard_logger()
    for path in paths:
        start = time.monotonic_ns()
        with open(path, "rb") as fh:
            nbytes = len(fh.read())
        log.log_duration_ts("DataProvider/file_read_time_s", start)
        log.log_scalar_ts("DataProvider/bytes_read", nbytes)
        done.put(1)


def parallel_step(chunk: int) -> float:
    """One task of a spawn-based parallel verb: compute, and log how long it took."""
    log = get_tensorboard_logger()
    start = time.monotonic_ns()
    total = sum(math.sqrt(i) for i in range(20000 * (chunk + 1)))
    log.log_duration_ts("parallel/chunk_time_s", start)
    log.add_scalar("parallel/result", total, chunk)
    return total


def run_pipeline(logdir: Path, shards: int, workers: int, steps: int) -> None:
    init_tensorboard_logger(log_dir=str(logdir))
    log = get_tensorboard_logger()
    data = _make_shards(Path(tempfile.mkdtemp(prefix="hyrax_tbhub_demo_")), shards)
    ctx = multiprocessing.get_context("spawn")
    done: multiprocessing.Queue[int] = ctx.Queue()
    procs = [
        ctx.Process(target=loader_worker, args=(data[i::workers], done), name=f"loader_worker_{i}")
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    bar = Progress(shards, "reading shards")
    for _ in range(shards):
        done.get(timeout=120)
        bar.advance()
    bar.close()
    for p in procs:
        p.join(60)

    import multiprocess

    with multiprocess.get_context("spawn").Pool(2) as pool:
        results = pool.map(parallel_step, range(8))
        pool.close()
        pool.join()
    log.add_scalar("parallel/total", sum(results), 0)

    bar = Progress(steps, "training")
    loss = 2.0
    for step in range(steps):
        loss = loss * 0.995 + random.random() * 0.01
        log.add_scalar("training/loss", loss, step)
        log.add_scalar("training/lr", 1e-3 * (0.5 ** (step // 200)), step)
        if step % 100 == 0:
            log.add_histogram("training/weights", [random.gauss(0, 1) for _ in range(256)], step)
        bar.advance()
    bar.close()
    close_tensorboard_logger()
    for path in data:
        os.unlink(path)
    os.rmdir(os.path.dirname(data[0]))


def _print_summary(logdir: Path) -> None:
    try:
        from .inspect import inspect_logdir
    except ImportError:
        inspect_logdir = None  # type: ignore[assignment]
    if inspect_logdir is not None:
        try:
            report = inspect_logdir(logdir)
        except ImportError:
            report = None
        if report is not None:
            print(f"\nWhat landed in {logdir} (read back from the event files):")
            for run in report.runs.values():
                tags = [t for t in run.tags.values() if not t.tag.startswith("hyrax_tbhub/")]
                listed = ", ".join(f"{t.tag} x{t.count}" for t in tags)
                print(f"  {run.name:<22} {listed}")
            dropped = sum(run.dropped or 0 for run in report.runs.values())
            print(f"  dropped events: {dropped}, transport errors: {report.transport_errors or 0}")
            return
    print(f"\nLog written to {logdir} (install tensorboard to read it back: pip install tensorboard)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hyrax-tbhub demo", description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", type=Path, default=Path("runs") / "hyrax_tbhub_demo")
    parser.add_argument("--shards", type=int, default=96)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.logdir.exists() and any(args.logdir.iterdir()):
        import shutil

        shutil.rmtree(args.logdir)  # a fresh log each time, so the counts below are this run's
    started = time.monotonic()
    run_pipeline(args.logdir, args.shards, args.workers, args.steps)
    _print_summary(args.logdir)
    print(f"\nDone in {time.monotonic() - started:.1f} s. Look at it with:")
    print(f"  tensorboard --logdir {args.logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
