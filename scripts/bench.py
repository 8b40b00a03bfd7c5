"""Side-by-side benchmark of hyrax_tbhub against the ways people log from several processes today.

Run as ``python scripts/bench.py`` (from a checkout: the benchmark is not part of the installed
package); ``--quick`` is a smoke run of about half a minute. Every contender logs the same events
in the same run of this script:

(a) tensorboardX ``SummaryWriter`` in one process: the single-process baseline;
(b) the usual hand-made fix: producers ``put`` into one ``multiprocessing.Queue``, a thread of the
    parent feeds one ``SummaryWriter`` (what stdlib ``QueueListener`` does);
(c) one ``SummaryWriter`` per process, each in its own folder;
(d) hyrax_tbhub with the same producers.

Each measurement runs in a fresh *coordinator* process so that peak memory, module state and the
hub of one run cannot leak into the next. Producers are ``spawn`` children of the coordinator and
wait on a barrier, so the clock starts when all of them have finished importing. Events are
counted back from the event files with TensorBoard's own reader, not assumed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hyrax_tbhub._tools.progress import Progress

__all__ = ["main"]

CONTENDERS: dict[str, str] = {
    "a": "(a) tensorboardX, one process",
    "b": "(b) mp.Queue + thread + 1 writer",
    "c": "(c) one writer per process",
    "d": "(d) hyrax_tbhub",
}
# A process with no hub: a top-level one knows it never gets one; a multiprocessing child may still.
NOHUB_TOP = "top_level"
NOHUB_CHILD = "spawn_child"
NOHUB_WHERE = {NOHUB_TOP: "top-level process", NOHUB_CHILD: "spawned multiprocessing child"}

# Same tags in every producer, as in real training code: each producer's steps are its own counter.
_TAGS: dict[str, tuple[str, str, str, str]] = {
    "scalar": ("loss", "lr", "time/read_s", "accuracy"),
    "histogram": ("weights/conv1", "weights/conv2", "grads/conv1", "grads/conv2"),
    "image": ("samples/input", "samples/recon", "samples/target", "samples/diff"),
}

# Targets of the issue. Memory has no number there: a hub must not cost more than the writer it
# replaces, so it is held against the in-process writer (a) and, for producers, against (c),
# whose producers each hold a whole SummaryWriter.
TARGET_SPEEDUP_4 = 10.0
TARGET_CALLER_US = 2.0
TARGET_CALLER_MEAN_US = 1.5  # one producer, mean over the whole loop, sender included
TARGET_NOHUB_RATIO = 2.0
TARGET_SCALING_16_4 = 0.8
TARGET_SINGLE_RATIO = 1.0
TARGET_HUB_MEM_RATIO = 1.5
TARGET_PRODUCER_MEM_RATIO = 1.25

_SETUP_TIMEOUT_S = 180.0  # 16 spawned interpreters importing tensorboardX and torch on 2 cores


# --------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run; ``--quick`` shrinks all of them."""

    producers: tuple[int, ...] = (1, 4, 16)
    events_per_producer: int = 100_000
    # Caps producers * events so 16 producers log what 4 do. Large enough that starting and
    # ending 16 processes on 2 cores (~0.2 s) does not hide the throughput being compared.
    max_total: int = 400_000
    media_producers: int = 4
    hist_per_producer: int = 1_000
    image_per_producer: int = 500
    chunk: int = 1_000
    nohub_calls: int = 200_000
    nohub_repeats: int = 7
    flush_rounds: int = 20
    flush_batch: int = 100
    repeats: int = 1
    contenders: str = "abcd"
    timeout_s: float = 600.0
    exit_floor: bool = True  # also time (d) with producers that log nothing
    media: bool = True  # histogram and image runs

    def scalar_events(self, producers: int) -> int:
        return max(1, min(self.events_per_producer, self.max_total // max(producers, 1)))


# A spawned process that imports tensorboardX imports torch with it when installed (~2 s of CPU), so
# the smoke run keeps the process count down rather than only the event count.
QUICK = Config(
    producers=(2,),
    events_per_producer=200,
    max_total=400,
    media_producers=1,
    hist_per_producer=20,
    image_per_producer=10,
    chunk=50,
    nohub_calls=20_000,
    nohub_repeats=3,
    flush_rounds=5,
    flush_batch=10,
    timeout_s=240.0,
    exit_floor=False,
)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One measurement. ``producers == 0`` means the owner logs everything itself."""

    contender: str
    kind: str
    producers: int
    per_producer: int  # events per producer; (a) logs producers * per_producer in-process
    chunk: int
    flush_rounds: int = 0  # > 0: flush-latency mode, flush_batch events then one timed flush()
    flush_batch: int = 0

    @property
    def streams(self) -> int:
        """Event streams to log: (a) replays every producer's stream in its single process."""
        return max(self.producers, 1)

    @property
    def expected(self) -> int:
        return self.streams * self.per_producer

    @property
    def mode(self) -> str:
        if self.flush_rounds:
            return "flush"
        return "exit-floor" if self.per_producer == 0 else "throughput"

    @property
    def label(self) -> str:
        return f"{self.mode} {self.kind} P={self.producers} {CONTENDERS[self.contender]}"


@dataclasses.dataclass
class RunResult:
    """Figures of one measurement, as written to ``--json``."""

    contender: str
    kind: str
    producers: int
    per_producer: int
    expected: int
    counted: int = 0
    lost: int = 0
    seconds: float | None = None
    calls_done_s: float | None = None  # until the last producer reported its last call returned
    events_per_s: float | None = None
    caller_us_median: float | None = None
    caller_us_worst_chunk: float | None = None
    # Whole-loop figures, mean over the producers (streams) of each one's per-call mean; see _log_stream.
    caller_us_mean: float | None = None
    caller_us_mean_worst: float | None = None  # the slowest producer's loop mean
    caller_us_flushed: float | None = None
    caller_cpu_us: float | None = None
    owner_peak_mib: float | None = None
    producer_peak_mib: float | None = None
    flush_us: list[float] = dataclasses.field(default_factory=list)
    flush_failed: int = 0  # flush() calls that returned False (hyrax_tbhub: not everything on disk)
    run_dirs: int = 0
    error: str | None = None
    mode: str = "throughput"


# --------------------------------------------------------------------------- producer side


def _peak_rss_mib() -> float | None:
    """Peak resident memory of this process in MiB.

    ``ru_maxrss`` is wrong for spawned children on Linux: the exec that follows the (v)fork keeps
    the parent's high-water mark (measured: a spawn child of a 500 MiB parent reports 500 MiB).
    ``VmHWM`` belongs to the address space and starts afresh at exec, so it is used where it exists.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _payloads(kind: str, seed: int) -> list[Any]:
    """A small pool of values, built before the clock starts so that only logging is timed."""
    if kind == "scalar":
        return [math.sin(seed + i / 7) for i in range(64)]
    import numpy as np

    rng = np.random.default_rng(seed)
    if kind == "histogram":
        return [rng.standard_normal(1000) for _ in range(8)]
    return [rng.integers(0, 256, size=(3, 64, 64), dtype=np.uint8) for _ in range(8)]


# One loop per kind: the attribute lookup per call stays in the loop, as in user code.
def _scalar_loop(writer: Any, tags: Sequence[str], pool: Sequence[Any], start: int, end: int) -> None:
    for step in range(start, end):
        writer.add_scalar(tags[step & 3], pool[step & 63], step)


def _histogram_loop(writer: Any, tags: Sequence[str], pool: Sequence[Any], start: int, end: int) -> None:
    for step in range(start, end):
        writer.add_histogram(tags[step & 3], pool[step & 7], step)


def _image_loop(writer: Any, tags: Sequence[str], pool: Sequence[Any], start: int, end: int) -> None:
    for step in range(start, end):
        writer.add_image(tags[step & 3], pool[step & 7], step)


_LOOPS: dict[str, Callable[[Any, Sequence[str], Sequence[Any], int, int], None]] = {
    "scalar": _scalar_loop,
    "histogram": _histogram_loop,
    "image": _image_loop,
}


def _log_stream(
    writer: Any, kind: str, events: int, chunk: int, pool: Sequence[Any]
) -> tuple[list[float], dict[str, float]]:
    """Log ``events`` events, then flush once; the cost per call (ns) of each timed chunk, and
    the whole loop's cost.

    The median of chunks hides what the library's own threads do (hyrax_tbhub's sender encodes
    every event, holding the GIL the caller needs), so the loop is also timed whole:
    ``loop_ns`` is its wall time per call, the sender's share included for as long as it ran
    during the loop; ``flushed_ns`` adds one ``flush()``, so that what was still queued counts
    too; ``cpu_ns`` is the CPU time of the whole process (every thread) over both, per call.
    ``loop_end`` (``perf_counter``, one clock for every process of the machine) says when the
    last call returned.
    """
    loop, tags = _LOOPS[kind], _TAGS[kind]
    per_call: list[float] = []
    cpu0 = time.process_time_ns()
    begin = time.perf_counter_ns()
    for start in range(0, events, chunk):
        end = min(start + chunk, events)
        t0 = time.perf_counter_ns()
        loop(writer, tags, pool, start, end)
        per_call.append((time.perf_counter_ns() - t0) / (end - start))
    loop_end = time.perf_counter_ns()
    writer.flush()
    flushed = time.perf_counter_ns()
    cpu = time.process_time_ns() - cpu0
    n = max(events, 1)
    cost = {"loop_ns": (loop_end - begin) / n, "flushed_ns": (flushed - begin) / n, "cpu_ns": cpu / n,
            "loop_end": loop_end / 1e9}
    return per_call, cost


def _flush_rounds(writer: Any, kind: str, rounds: int, batch: int, pool: Sequence[Any]) -> list[float]:
    """Log ``batch`` events then time one ``flush()``, ``rounds`` times; microseconds per flush.

    A flush that reports failure (hyrax_tbhub returns False) is recorded as a negative latency.
    """
    loop, tags = _LOOPS[kind], _TAGS[kind]
    latencies: list[float] = []
    for r in range(rounds):
        loop(writer, tags, pool, r * batch, (r + 1) * batch)
        t0 = time.perf_counter_ns()
        ok = writer.flush()
        elapsed = (time.perf_counter_ns() - t0) / 1e3
        latencies.append(-elapsed if ok is False else elapsed)
    return latencies


class _QueueWriter:
    """What the hand-made fix (b) hands to a child: every call becomes one queue item."""

    def __init__(self, work: Any) -> None:
        self._work = work

    def add_scalar(self, tag: str, value: Any, step: int) -> None:
        self._work.put(("add_scalar", tag, value, step))

    def add_histogram(self, tag: str, values: Any, step: int) -> None:
        self._work.put(("add_histogram", tag, values, step))

    def add_image(self, tag: str, image: Any, step: int) -> None:
        self._work.put(("add_image", tag, image, step))

    def flush(self) -> None:
        """Nothing to do: a queue offers no cross-process flush (QueueListener has none)."""


def _producer_writer(spec: RunSpec, idx: int, log_dir: str, work: Any) -> tuple[Any, Callable[[], None]]:
    """The writer a producer of ``spec.contender`` logs to, and what it must call when done."""
    if spec.contender == "b":
        return _QueueWriter(work), lambda: None
    if spec.contender == "c":
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(log_dir=os.path.join(log_dir, f"producer_{idx:02d}"))
        return writer, writer.close
    if spec.contender == "d":
        import hyrax_tbhub

        if spec.kind != "scalar":
            # Histograms and images run tensorboardX's summary code in the producer; importing it
            # (and torch with it, when installed) is setup, as it is for (c), not a cost per call.
            import tensorboardX  # noqa: F401
        # Nothing to close: the owner's close_tensorboard_logger() is the contract under test.
        return hyrax_tbhub.get_tensorboard_logger(), lambda: None
    raise ValueError(f"contender {spec.contender!r} has no producers")


def _producer_main(spec: RunSpec, idx: int, log_dir: str, barrier: Any, results: Any, work: Any) -> None:
    """Body of a producer process: set up, wait for the start, log, report."""
    try:
        writer, finish = _producer_writer(spec, idx, log_dir, work)
        pool = _payloads(spec.kind, seed=idx)
        barrier.wait(timeout=_SETUP_TIMEOUT_S)
        per_call: list[float] = []
        flush_us: list[float] = []
        costs: list[dict[str, float]] = []
        if spec.flush_rounds:
            flush_us = _flush_rounds(writer, spec.kind, spec.flush_rounds, spec.flush_batch, pool)
        else:
            per_call, cost = _log_stream(writer, spec.kind, spec.per_producer, spec.chunk, pool)
            costs.append(cost)
        finish()
        results.put({"idx": idx, "per_call_ns": per_call, "flush_us": flush_us, "costs": costs,
                     "peak_mib": _peak_rss_mib()})
    except BaseException:
        barrier.abort()  # the coordinator learns at once instead of at the setup timeout
        results.put({"idx": idx, "error": traceback.format_exc()})


# --------------------------------------------------------------------------- coordinator side


def _deadline_left(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"timed out waiting for {what}")
    return left


def _stop(proc: SpawnProcess, grace_s: float = 5.0) -> None:
    """End a child of ours that overstayed: SIGTERM, then SIGKILL."""
    if proc.is_alive():
        proc.terminate()
        proc.join(grace_s)
    if proc.is_alive():
        proc.kill()
        proc.join(grace_s)


class _ProducerGroup:
    """Spawned producers behind a start barrier, with bounded waits for everything."""

    def __init__(self, ctx: SpawnContext, spec: RunSpec, log_dir: str, deadline: float, work: Any) -> None:
        self._spec, self._deadline = spec, deadline
        self._barrier = ctx.Barrier(spec.producers + 1)
        self._results = ctx.Queue()
        self._procs = [
            ctx.Process(
                target=_producer_main,
                args=(spec, i, log_dir, self._barrier, self._results, work),
                name=f"bench-producer-{i}",
                daemon=True,  # never outlive a coordinator that failed
            )
            for i in range(spec.producers)
        ]

    def __enter__(self) -> _ProducerGroup:
        for proc in self._procs:
            proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            _stop(proc)

    def release(self) -> float:
        """Wait until every producer is ready, let them go, and return the start time."""
        try:
            self._barrier.wait(timeout=min(_SETUP_TIMEOUT_S, _deadline_left(self._deadline, "setup")))
        except threading.BrokenBarrierError:
            raise RuntimeError(f"a producer failed during setup:\n{self._first_error()}") from None
        return time.perf_counter()

    def _first_error(self) -> str:
        try:
            msg = self._results.get(timeout=10)
        except queue.Empty:
            return "(no report; setup timed out)"
        return str(msg.get("error", msg))

    def collect(self) -> list[dict[str, Any]]:
        """Every producer's report, failing fast if one died without reporting."""
        reports: dict[int, dict[str, Any]] = {}
        while len(reports) < len(self._procs):
            left = _deadline_left(self._deadline, "producer reports")
            try:
                msg = self._results.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [
                    f"producer {i} exit code {p.exitcode}"
                    for i, p in enumerate(self._procs)
                    if p.exitcode not in (None, 0) and i not in reports
                ]
                if dead:
                    raise RuntimeError("; ".join(dead)) from None
                continue
            if "error" in msg:
                raise RuntimeError(f"producer {msg['idx']} failed:\n{msg['error']}")
            reports[msg["idx"]] = msg
        return list(reports.values())

    def join(self) -> None:
        for proc in self._procs:
            proc.join(_deadline_left(self._deadline, "producers to exit"))
            if proc.is_alive():
                raise TimeoutError(f"{proc.name} did not exit")
            if proc.exitcode != 0:
                raise RuntimeError(f"{proc.name} exited with code {proc.exitcode}")

    def run(self) -> tuple[float, float, list[dict[str, Any]]]:
        """Start, collect and join; return the start time, the time of the last report, the reports."""
        t0 = self.release()
        reports = self.collect()
        t_done = time.perf_counter()
        self.join()
        return t0, t_done, reports


def _outcome(
    t0: float,
    t_done: float,
    t1: float,
    per_call: list[float],
    reports: list[dict[str, Any]],
    costs: list[dict[str, float]] | None = None,
) -> dict[str, Any]:
    peaks = [r["peak_mib"] for r in reports if r.get("peak_mib") is not None]
    costs = (costs or []) + [c for r in reports for c in r.get("costs", ())]
    if costs:  # when the last call returned, not when the last report (sent after a flush) came
        t_done = max(c["loop_end"] for c in costs)
    return {
        "seconds": t1 - t0,
        "calls_done_s": t_done - t0,
        "costs": costs,
        "per_call_ns": per_call + [x for r in reports for x in r["per_call_ns"]],
        "flush_us": [x for r in reports for x in r["flush_us"]],
        "owner_peak_mib": _peak_rss_mib(),
        "producer_peak_mib": max(peaks) if peaks else None,
    }


def _run_in_process(writer: Any, spec: RunSpec) -> tuple[list[float], list[float], list[dict[str, float]]]:
    """The owner logs every stream itself; returns (per-call ns per chunk, flush latencies, costs)."""
    if spec.flush_rounds:
        pool = _payloads(spec.kind, seed=0)
        return [], _flush_rounds(writer, spec.kind, spec.flush_rounds, spec.flush_batch, pool), []
    pools = [_payloads(spec.kind, seed=i) for i in range(spec.streams)]
    per_call: list[float] = []
    costs: list[dict[str, float]] = []
    for pool in pools:
        chunks, cost = _log_stream(writer, spec.kind, spec.per_producer, spec.chunk, pool)
        per_call += chunks
        costs.append(cost)
    return per_call, [], costs


def _coord_single(ctx: SpawnContext, spec: RunSpec, log_dir: str, deadline: float) -> dict[str, Any]:
    """(a): one SummaryWriter; the end is ``close()`` returning (only close drains its queue)."""
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(log_dir=log_dir)
    t0 = time.perf_counter()
    per_call, flush_us, costs = _run_in_process(writer, spec)
    t_done = time.perf_counter()
    writer.close()
    outcome = _outcome(t0, t_done, time.perf_counter(), per_call, [], costs)
    outcome["flush_us"] = flush_us
    return outcome


def _drain(work: Any, writer: Any, failures: list[BaseException]) -> None:
    """The listener thread of (b): one queue item, one writer call, until the ``None`` sentinel."""
    try:
        while (item := work.get()) is not None:
            getattr(writer, item[0])(*item[1:])
    except BaseException as exc:  # re-raised by the coordinator, which owns the outcome
        failures.append(exc)


def _coord_queue(ctx: SpawnContext, spec: RunSpec, log_dir: str, deadline: float) -> dict[str, Any]:
    """(b): the end is the queue drained and the writer closed, after the producers exited."""
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(log_dir=log_dir)
    work = ctx.Queue()  # unbounded, like QueueHandler's
    failures: list[BaseException] = []
    listener = threading.Thread(target=_drain, args=(work, writer, failures), daemon=True)
    listener.start()
    with _ProducerGroup(ctx, spec, log_dir, deadline, work) as group:
        t0, t_done, reports = group.run()
    work.put(None)  # after every producer's items: they exited, so their feeders emptied
    listener.join(_deadline_left(deadline, "the queue to drain"))
    if listener.is_alive():
        raise TimeoutError("listener thread still draining")
    if failures:
        raise failures[0]
    writer.close()
    return _outcome(t0, t_done, time.perf_counter(), [], reports)


def _coord_per_process(ctx: SpawnContext, spec: RunSpec, log_dir: str, deadline: float) -> dict[str, Any]:
    """(c): the end is every producer having closed its writer and exited."""
    with _ProducerGroup(ctx, spec, log_dir, deadline, None) as group:
        t0, t_done, reports = group.run()
    return _outcome(t0, t_done, time.perf_counter(), [], reports)


def _coord_hub(ctx: SpawnContext, spec: RunSpec, log_dir: str, deadline: float) -> dict[str, Any]:
    """(d): the end is ``close_tensorboard_logger()`` returning, after the producers exited."""
    import hyrax_tbhub

    hyrax_tbhub.init_tensorboard_logger(log_dir=log_dir)
    if spec.producers == 0:
        t0 = time.perf_counter()
        per_call, flush_us, costs = _run_in_process(hyrax_tbhub.get_tensorboard_logger(), spec)
        t_done = time.perf_counter()
        reports: list[dict[str, Any]] = []
    else:
        per_call, flush_us, costs = [], [], []
        with _ProducerGroup(ctx, spec, log_dir, deadline, None) as group:
            t0, t_done, reports = group.run()
    hyrax_tbhub.close_tensorboard_logger()
    outcome = _outcome(t0, t_done, time.perf_counter(), per_call, reports, costs)
    outcome["flush_us"] += flush_us
    return outcome


_COORDINATORS: dict[str, Callable[[SpawnContext, RunSpec, str, float], dict[str, Any]]] = {
    "a": _coord_single,
    "b": _coord_queue,
    "c": _coord_per_process,
    "d": _coord_hub,
}


def _coordinator_main(spec: RunSpec, log_dir: str, timeout_s: float, conn: Connection) -> None:
    """Body of the coordinator process: one measurement, its outcome sent back through ``conn``."""
    try:
        deadline = time.monotonic() + timeout_s
        outcome = _COORDINATORS[spec.contender](mp.get_context("spawn"), spec, log_dir, deadline)
        conn.send({"ok": outcome})
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def nohub_figures(calls: int, repeats: int) -> dict[str, float]:
    """Cost of a call with no hub next to a plain call, in this process (which must have no hub)."""
    import hyrax_tbhub

    logger = hyrax_tbhub.get_tensorboard_logger()  # the handle is taken once, as in user code

    def plain(a: object, b: object, c: object) -> None:
        return None

    timers = {
        "plain_ns": timeit.Timer("f('x', 1.0, 3)", globals={"f": plain}),
        "nohub_ns": timeit.Timer("log.add_scalar('x', 1.0, 3)", globals={"log": logger}),
        "empty_loop_ns": timeit.Timer("pass"),
    }
    best = {name: math.inf for name in timers}
    for _ in range(repeats):  # interleaved so that a noisy moment hits all of them alike
        for name, timer in timers.items():
            best[name] = min(best[name], timer.timeit(calls) / calls * 1e9)
    return best


def _nohub_main(calls: int, repeats: int, conn: Connection) -> None:
    """Body of the spawned no-hub process: a child of multiprocessing may still gain a hub."""
    try:
        conn.send({"ok": nohub_figures(calls, repeats)})
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def _clean_env() -> dict[str, str]:
    """Our environment without a hub address, with this copy of the package importable."""
    import hyrax_tbhub

    env = dict(os.environ)
    try:
        from hyrax_tbhub._discovery.hubfile import ENV_INFO
    except ImportError:  # the hub's address moved: nothing to strip then
        pass
    else:
        env.pop(ENV_INFO, None)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(hyrax_tbhub.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def _nohub_top_level(calls: int, repeats: int, timeout_s: float) -> dict[str, Any]:
    """The same figures in a top-level interpreter: no multiprocessing parent, no hub to look for."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "from bench import nohub_figures\n"
        f"json.dump(nohub_figures({calls}, {repeats}), sys.stdout)\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s, env=_clean_env()
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {timeout_s:.0f} s"}
    if proc.returncode != 0:
        return {"error": f"exit code {proc.returncode}\n{proc.stderr}"}
    try:
        return {"ok": json.loads(proc.stdout)}
    except ValueError:
        return {"error": f"unreadable answer: {proc.stdout!r}\n{proc.stderr}"}


# --------------------------------------------------------------------------- parent side


def _in_child(target: Callable[..., None], args: tuple[Any, ...], timeout_s: float) -> dict[str, Any]:
    """Run ``target(*args, conn)`` in a fresh spawned process and return what it sent."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, send), name="bench-coordinator")
    proc.start()
    send.close()  # so that a child dying without a word reads as EOF, not as silence
    try:
        if not recv.poll(timeout_s):
            raise TimeoutError(f"no answer within {timeout_s:.0f} s")
        msg: dict[str, Any] = recv.recv()
    except EOFError:
        proc.join(10)
        msg = {"error": f"process died without an answer (exit code {proc.exitcode})"}
    except TimeoutError as exc:
        msg = {"error": str(exc)}
    finally:
        recv.close()
        proc.join(30)
        _stop(proc)
    return msg


@contextmanager
def _quiet_tensorboard() -> Iterator[None]:
    """TensorBoard's reader warns about every extra event file in a run; not our business here."""
    logger = logging.getLogger("tensorboard")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def count_events(root: str) -> tuple[int, int]:
    """User events (scalars, histograms, images) readable below ``root``, and the run count."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hyrax_tbhub._counters import RESERVED_PREFIX

    total = runs = 0
    with _quiet_tensorboard():
        for dirpath, _dirs, files in os.walk(root):
            if not any(name.startswith("events.out.tfevents") for name in files):
                continue
            runs += 1
            acc = EventAccumulator(dirpath, size_guidance={"scalars": 0, "histograms": 0, "images": 0})
            acc.Reload()
            tags = acc.Tags()
            for category, read in (
                ("scalars", acc.Scalars),
                ("histograms", acc.Histograms),
                ("images", acc.Images),
            ):
                total += sum(len(read(t)) for t in tags[category] if not t.startswith(RESERVED_PREFIX))
    return total, runs


def _measure(spec: RunSpec, timeout_s: float) -> RunResult:
    """One measurement in a fresh coordinator, counted back from its own temporary log root."""
    result = RunResult(spec.contender, spec.kind, spec.producers, spec.per_producer, spec.expected)
    result.mode = spec.mode
    with tempfile.TemporaryDirectory(prefix="hyrax_tbhub_bench_", ignore_cleanup_errors=True) as root:
        msg = _in_child(_coordinator_main, (spec, root, timeout_s), timeout_s + 60)
        try:
            result.counted, result.run_dirs = count_events(root)
        except Exception:  # a half-written file must not hide the coordinator's own error
            result.error = f"counting failed:\n{traceback.format_exc()}"
    result.lost = result.expected - result.counted
    if "error" in msg:
        result.error = msg["error"] + (f"\n{result.error}" if result.error else "")
        return result
    _fill(result, msg["ok"])
    return result


def _fill(result: RunResult, outcome: dict[str, Any]) -> None:
    result.seconds = outcome["seconds"]
    result.calls_done_s = outcome["calls_done_s"]
    if result.expected and result.seconds > 0:
        result.events_per_s = result.counted / result.seconds
    per_call = outcome["per_call_ns"]
    if per_call:
        result.caller_us_median = statistics.median(per_call) / 1e3
        result.caller_us_worst_chunk = max(per_call) / 1e3
    costs = outcome.get("costs") or []
    if costs and result.per_producer:
        result.caller_us_mean = statistics.fmean(c["loop_ns"] for c in costs) / 1e3
        result.caller_us_mean_worst = max(c["loop_ns"] for c in costs) / 1e3
        result.caller_us_flushed = statistics.fmean(c["flushed_ns"] for c in costs) / 1e3
        result.caller_cpu_us = statistics.fmean(c["cpu_ns"] for c in costs) / 1e3
    result.owner_peak_mib = outcome["owner_peak_mib"]
    result.producer_peak_mib = outcome["producer_peak_mib"]
    result.flush_us = [abs(x) for x in outcome["flush_us"]]
    result.flush_failed = sum(1 for x in outcome["flush_us"] if x < 0)


def _plan(cfg: Config) -> list[RunSpec]:
    """Every measurement, contenders side by side within each scenario."""
    specs: list[RunSpec] = []
    single = [c for c in "ad" if c in cfg.contenders]
    specs += [RunSpec(c, "scalar", 0, cfg.max_total, cfg.chunk) for c in single]
    for producers in cfg.producers:
        n = cfg.scalar_events(producers)
        specs += [RunSpec(c, "scalar", producers, n, cfg.chunk) for c in cfg.contenders]
    media = (("histogram", cfg.hist_per_producer), ("image", cfg.image_per_producer)) if cfg.media else ()
    for kind, n in media:
        chunk = max(1, min(cfg.chunk // 10, n))  # media calls are slow: fewer calls per chunk
        specs += [RunSpec(c, kind, cfg.media_producers, n, chunk) for c in cfg.contenders]
    flush_events = cfg.flush_rounds * cfg.flush_batch
    flush = {"a": 0, "d": 1}  # (a) flushes in-process; (d) from one producer
    specs += [
        RunSpec(c, "scalar", p, flush_events, cfg.chunk, cfg.flush_rounds, cfg.flush_batch)
        for c, p in flush.items()
        if c in cfg.contenders
    ]
    if cfg.exit_floor:
        # What releasing the barrier, letting producers exit and closing costs with nothing logged:
        # (b)'s producers hold no logging library, so its floor is that of bare spawned interpreters.
        floors = [c for c in "bd" if c in cfg.contenders]
        specs += [RunSpec(c, "scalar", p, 0, cfg.chunk) for p in cfg.producers for c in floors]
    return specs


def _run_all(cfg: Config, progress: Progress) -> tuple[list[RunResult], dict[str, dict[str, Any]]]:
    results: list[RunResult] = []
    for _ in range(cfg.repeats):  # repeats interleave, so slow drift of the machine hits everyone
        for spec in _plan(cfg):
            progress.advance(note=spec.label)
            results.append(_measure(spec, cfg.timeout_s))
    nohub: dict[str, dict[str, Any]] = {}
    if "d" in cfg.contenders:
        progress.advance(note="no-hub call, top-level process")
        nohub[NOHUB_TOP] = _nohub_top_level(cfg.nohub_calls, cfg.nohub_repeats, cfg.timeout_s)
        progress.advance(note="no-hub call, spawned child")
        nohub[NOHUB_CHILD] = _in_child(_nohub_main, (cfg.nohub_calls, cfg.nohub_repeats), cfg.timeout_s)
    return results, nohub


# --------------------------------------------------------------------------- summary


def _best(results: list[RunResult]) -> list[RunResult]:
    """One row per measurement: the fastest repeat, with the worst loss and any error kept."""
    groups: dict[tuple[str, str, int, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.mode, r.kind, r.producers, r.contender), []).append(r)
    best: list[RunResult] = []
    for group in groups.values():
        ok = [r for r in group if r.error is None and r.events_per_s is not None]
        pick = dataclasses.replace(max(ok, key=lambda r: r.events_per_s or 0.0) if ok else group[0])
        pick.lost = max(r.lost for r in group)
        pick.error = next((r.error for r in group if r.error), None)
        best.append(pick)
    return best


def _find(
    rows: list[RunResult], contender: str, kind: str, producers: int, mode: str = "throughput"
) -> RunResult | None:
    key = (mode, contender, kind, producers)
    return next((r for r in rows if (r.mode, r.contender, r.kind, r.producers) == key), None)


@dataclasses.dataclass
class Target:
    name: str
    measured: str
    threshold: str
    ratio: float | None
    passed: bool | None  # None: not measured in this run
    info: bool = False  # shown for context, not one of the targets


def _ratio_target(
    name: str, num: float | None, den: float | None, limit: float, at_least: bool, unit: str
) -> Target:
    op = ">=" if at_least else "<="
    if num is None or den is None or den == 0:
        return Target(name, "n/a", f"{op} {limit:g}x", None, None)
    ratio = num / den
    passed = ratio >= limit if at_least else ratio <= limit
    return Target(name, f"{_num(num)} vs {_num(den)} {unit}", f"{op} {limit:g}x", ratio, passed)


def _eps(row: RunResult | None) -> float | None:
    return row.events_per_s if row is not None and row.error is None and row.lost == 0 else None


def _targets(rows: list[RunResult], nohub: dict[str, dict[str, Any]]) -> list[Target]:
    p4_a, p4_d = _find(rows, "a", "scalar", 4), _find(rows, "d", "scalar", 4)
    targets = [
        _ratio_target(
            "throughput, 4 producers: (d) vs (a)", _eps(p4_d), _eps(p4_a), TARGET_SPEEDUP_4, True, "events/s"
        ),
    ]
    caller = p4_d.caller_us_median if p4_d is not None else None
    targets.append(
        Target(
            "caller cost, 4 producers: (d) median",
            "n/a" if caller is None else f"{caller:.2f} us",
            f"<= {TARGET_CALLER_US:g} us",
            None if caller is None else caller / TARGET_CALLER_US,
            None if caller is None else caller <= TARGET_CALLER_US,
        )
    )
    p1_d = _find(rows, "d", "scalar", 1)
    mean = p1_d.caller_us_mean if p1_d is not None and p1_d.error is None else None
    targets.append(
        Target(
            "caller cost, 1 producer: (d) mean over the loop",
            "n/a" if mean is None else f"{mean:.2f} us",
            f"<= {TARGET_CALLER_MEAN_US:g} us",
            None if mean is None else mean / TARGET_CALLER_MEAN_US,
            None if mean is None else mean <= TARGET_CALLER_MEAN_US,
        )
    )
    for where, label in NOHUB_WHERE.items():
        ok = nohub.get(where, {}).get("ok", {})
        targets.append(
            _ratio_target(
                f"no-hub call vs plain Python call, {label}",
                ok.get("nohub_ns"),
                ok.get("plain_ns"),
                TARGET_NOHUB_RATIO,
                False,
                "ns",
            )
        )
    targets.append(
        _ratio_target(
            "no collapse: (d) 16 vs 4 producers",
            _eps(_find(rows, "d", "scalar", 16)),
            _eps(p4_d),
            TARGET_SCALING_16_4,
            True,
            "events/s",
        )
    )
    targets.append(
        _ratio_target(
            "single process: (d) owner only vs (a)",
            _eps(_find(rows, "d", "scalar", 0)),
            _eps(_find(rows, "a", "scalar", 0)),
            TARGET_SINGLE_RATIO,
            True,
            "events/s",
        )
    )
    targets += _memory_targets(rows)
    targets += _floor_target(rows)
    lost = sum(max(r.lost, 0) for r in rows if r.contender == "d")
    errors = sum(1 for r in rows if r.contender == "d" and r.error)
    targets.append(
        Target(
            "(d) every event on disk, no errors",
            f"{lost} lost, {errors} errors",
            "0",
            None,
            lost == 0 and errors == 0 and any(r.contender == "d" for r in rows),
        )
    )
    return targets


def _floor_target(rows: list[RunResult]) -> list[Target]:
    """The headline ratio once the exit floor is taken out: how fast is the logging itself."""
    a, d = _find(rows, "a", "scalar", 4), _find(rows, "d", "scalar", 4)
    floor = _find(rows, "d", "scalar", 4, mode="exit-floor")
    if a is None or d is None or floor is None or floor.error or d.seconds is None or floor.seconds is None:
        return []
    net = d.seconds - floor.seconds
    target = _ratio_target(
        "(info) throughput, 4 producers, exit floor subtracted: (d) vs (a)",
        d.counted / net if net > 0 else None,
        _eps(a),
        TARGET_SPEEDUP_4,
        True,
        "events/s",
    )
    target.info = True
    return [target]


def _memory_targets(rows: list[RunResult]) -> list[Target]:
    """Worst ratio over the scenarios where both sides ran."""
    hub_pairs: list[tuple[float, float]] = []
    prod_pairs: list[tuple[float, float]] = []
    for d in (r for r in rows if r.contender == "d" and r.mode == "throughput" and r.error is None):
        a, c = _find(rows, "a", d.kind, d.producers), _find(rows, "c", d.kind, d.producers)
        if a is not None and a.owner_peak_mib and d.owner_peak_mib:
            hub_pairs.append((d.owner_peak_mib, a.owner_peak_mib))
        if c is not None and c.producer_peak_mib and d.producer_peak_mib:
            prod_pairs.append((d.producer_peak_mib, c.producer_peak_mib))

    def worst(pairs: list[tuple[float, float]]) -> tuple[float | None, float | None]:
        return max(pairs, key=lambda p: p[0] / p[1]) if pairs else (None, None)

    return [
        _ratio_target(
            "memory: hub process peak vs (a) process, worst",
            *worst(hub_pairs),
            TARGET_HUB_MEM_RATIO,
            False,
            "MiB",
        ),
        _ratio_target(
            "memory: producer peak vs (c) producer, worst",
            *worst(prod_pairs),
            TARGET_PRODUCER_MEM_RATIO,
            False,
            "MiB",
        ),
    ]


# --------------------------------------------------------------------------- output


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0 and abs(value) >= 10:
        return f"{value:,.0f}"
    return f"{value:.{digits or 2}f}"


def _meta() -> dict[str, Any]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for dist in ("hyrax_tbhub", "tensorboardX", "tensorboard", "numpy", "protobuf", "crc32c"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    # The tree measured is the one imported (a checkout on PYTHONPATH need not be installed).
    import hyrax_tbhub

    versions["hyrax_tbhub"] = hyrax_tbhub.__version__
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }


def _producers_cell(r: RunResult) -> str:
    if r.contender == "a":
        if r.producers == 0:
            return "in-process"
        return f"in-process ({r.producers} stream{'s' if r.producers > 1 else ''})"
    return "owner only" if r.producers == 0 else str(r.producers)


def _lost_cell(r: RunResult) -> str:
    if r.error:
        return "**ERROR**"
    return f"**LOST {r.lost}**" if r.lost else "0"


def _throughput_table(rows: list[RunResult]) -> list[str]:
    lines = [
        "| events | contender | producers | events/producer | expected | counted | LOST | calls done s "
        "| end-to-end s | events/s | caller us (mean, loop) | caller us (mean, loop + flush) "
        "| process CPU us/call | caller us (median chunk) | caller us (worst chunk) | hub/owner MiB "
        "| producer MiB (max) |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.mode != "throughput":
            continue
        cells = [
            r.kind,
            CONTENDERS[r.contender],
            _producers_cell(r),
            f"{r.per_producer:,}",
            f"{r.expected:,}",
            f"{r.counted:,}",
            _lost_cell(r),
            _num(r.calls_done_s, 2),
            _num(r.seconds, 2),
            _num(r.events_per_s),
            _num(r.caller_us_mean, 2),
            _num(r.caller_us_flushed, 2),
            _num(r.caller_cpu_us, 2),
            _num(r.caller_us_median, 2),
            _num(r.caller_us_worst_chunk, 2),
            _num(r.owner_peak_mib, 1),
            _num(r.producer_peak_mib, 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _exit_floor_table(rows: list[RunResult]) -> list[str]:
    floors = [r for r in rows if r.mode == "exit-floor"]
    if not floors:
        return []
    lines = [
        "### Exit floor: producers that log nothing",
        "",
        "Part of every end-to-end time above that has producers: the barrier, the producers' exit "
        "(interpreter teardown) and the close; (b) holds no logging library in its producers.",
        "",
        "| contender | producers | end-to-end s | hub/owner MiB | producer MiB (max) | LOST |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in floors:
        cells = [
            CONTENDERS[r.contender],
            str(r.producers),
            _num(r.seconds, 2),
            _num(r.owner_peak_mib, 1),
            _num(r.producer_peak_mib, 1),
            _lost_cell(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _flush_table(rows: list[RunResult]) -> list[str]:
    notes = {"a": "in-process; does not wait for queued events", "d": "from a producer"}
    lines = [
        "| writer | flushes | median us | max us | returned False | LOST | note |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        if r.mode == "flush":
            median = statistics.median(r.flush_us) if r.flush_us else None
            worst = max(r.flush_us) if r.flush_us else None
            lines.append(
                f"| {CONTENDERS[r.contender]} | {len(r.flush_us)} | {_num(median, 1)} "
                f"| {_num(worst, 1)} | {r.flush_failed} | {_lost_cell(r)} | {notes.get(r.contender, '')} |"
            )
    return lines


def _nohub_table(nohub: dict[str, dict[str, Any]]) -> list[str]:
    if not nohub:
        return ["(not measured)"]
    lines = [
        "| call (min over repeats, loop included) | "
        + " | ".join(f"{w} ns" for w in NOHUB_WHERE.values())
        + " |",
        "|---|" + "---:|" * len(NOHUB_WHERE),
    ]
    calls = {
        "empty_loop_ns": "empty loop",
        "plain_ns": "plain Python `f('x', 1.0, 3)`",
        "nohub_ns": "`get_tensorboard_logger().add_scalar('x', 1.0, 3)`, no hub",
    }
    for key, label in calls.items():
        cells = [_num(nohub.get(w, {}).get("ok", {}).get(key), 1) for w in NOHUB_WHERE]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for where, label in NOHUB_WHERE.items():
        if "error" in nohub.get(where, {}):
            lines += [
                "",
                f"**ERROR** measuring the no-hub call in a {label}:",
                "```",
                nohub[where]["error"].rstrip(),
                "```",
            ]
    return lines


def _targets_table(targets: list[Target]) -> list[str]:
    lines = ["| target | measured | threshold | ratio | result |", "|---|---|---|---:|---|"]
    for t in targets:
        verdict = "n/a" if t.passed is None else ("PASS" if t.passed else "**MISS**")
        verdict = f"({verdict.strip('*')})" if t.info else verdict
        ratio = "-" if t.ratio is None else f"{t.ratio:.2f}x"
        lines.append(f"| {t.name} | {t.measured} | {t.threshold} | {ratio} | {verdict} |")
    return lines


def _errors(rows: list[RunResult]) -> list[str]:
    lines: list[str] = []
    for r in rows:
        if r.error:
            lines += [
                f"### ERROR in {r.mode} {r.kind} P={r.producers} {CONTENDERS[r.contender]}",
                "```",
                r.error.rstrip(),
                "```",
            ]
    return lines


def format_report(
    meta: dict[str, Any],
    cfg: Config,
    rows: list[RunResult],
    nohub: dict[str, dict[str, Any]],
    targets: list[Target],
) -> str:
    v = meta["versions"]
    lines = [
        "## hyrax_tbhub benchmark",
        "",
        f"{meta['date']} · {meta['implementation']} {meta['python']} · {meta['platform']} · "
        f"{meta['cpu_count']} CPUs · tensorboardX {v['tensorboardX']} · hyrax_tbhub {v['hyrax_tbhub']} · "
        f"repeats {cfg.repeats} (fastest shown)",
        "",
        "End-to-end: from the release of the start barrier until every event is on disk "
        "(close returned), producers' exit included; calls done: until the last producer's last call "
        "returned. Events counted back with TensorBoard's EventAccumulator, "
        "`hyrax_tbhub/*` excluded. Caller cost, per producer (averaged over producers): the mean "
        "over its whole logging loop (wall time / calls; the library's own threads in that process, "
        "such as hyrax_tbhub's sender, take their share of it while the loop runs), the same with one "
        "flush() after the loop (what was still queued is counted too; (b) has no flush), the "
        "process's CPU time (every thread) over both per call, and the median and worst of chunks of "
        f"{cfg.chunk} calls (media: fewer), which hide the sender's work.",
        "",
        *_throughput_table(rows),
        "",
        *_exit_floor_table(rows),
        "### flush()",
        "",
        *_flush_table(rows),
        "",
        "### Call with no hub",
        "",
        *_nohub_table(nohub),
        "",
        "### Targets",
        "",
        *_targets_table(targets),
    ]
    if any(r.lost for r in rows):
        lines += ["", "**EVENTS WERE LOST**: see the LOST column (negative: more events than logged)."]
    errors = _errors(rows)
    if errors:
        lines += ["", *errors]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line


def _producer_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("producer counts must be >= 1")
    return values


def _contender_set(text: str) -> str:
    if not text or set(text) - set(CONTENDERS):
        raise argparse.ArgumentTypeError(f"pick from {''.join(CONTENDERS)}, e.g. 'ad'")
    return "".join(c for c in CONTENDERS if c in text)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _parser() -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(
        prog="python scripts/bench.py",
        description="Benchmark hyrax_tbhub side by side with tensorboardX and the usual multiprocess fixes.",
    )
    p.add_argument("--quick", action="store_true", help="tiny event counts: checks that everything runs")
    p.add_argument(
        "--json",
        metavar="PATH",
        help="also write every figure as JSON to PATH ('-': stdout, the table then goes to stderr)",
    )
    p.add_argument("--producers", type=_producer_list, help=f"producer counts (default {d.producers})")
    p.add_argument("--events-per-producer", type=_positive, help=f"scalars (default {d.events_per_producer})")
    p.add_argument("--max-total", type=_positive, help=f"cap on scalars per scenario (default {d.max_total})")
    p.add_argument("--media-producers", type=_positive, help=f"default {d.media_producers}")
    p.add_argument("--hist-per-producer", type=_positive, help=f"default {d.hist_per_producer}")
    p.add_argument("--image-per-producer", type=_positive, help=f"default {d.image_per_producer}")
    p.add_argument("--chunk", type=_positive, help=f"calls per timed chunk (default {d.chunk})")
    p.add_argument("--repeats", type=_positive, help="run everything N times, keep the fastest (default 1)")
    p.add_argument("--contenders", type=_contender_set, help="subset of 'abcd' (default all)")
    p.add_argument("--timeout", type=float, help=f"seconds per measurement (default {d.timeout_s:g})")
    p.add_argument(
        "--no-media", dest="media", action="store_false", default=None, help="skip histograms, images"
    )
    p.add_argument(
        "--no-exit-floor",
        dest="exit_floor",
        action="store_false",
        default=None,
        help="skip timing (d) with producers that log nothing",
    )
    p.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    return p


def _config(args: argparse.Namespace) -> Config:
    cfg = QUICK if args.quick else Config()
    overrides = {
        "producers": args.producers,
        "events_per_producer": args.events_per_producer,
        "max_total": args.max_total,
        "media_producers": args.media_producers,
        "hist_per_producer": args.hist_per_producer,
        "image_per_producer": args.image_per_producer,
        "chunk": args.chunk,
        "repeats": args.repeats,
        "contenders": args.contenders,
        "timeout_s": args.timeout,
        "media": args.media,
        "exit_floor": args.exit_floor,
    }
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def _write_json(path: str, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2, allow_nan=False, default=str) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every run worked and nothing was lost, 1 otherwise (2: --strict miss)."""
    args = _parser().parse_args(argv)
    cfg = _config(args)
    report_stream = sys.stderr if args.json == "-" else sys.stdout
    # Imported here, not at the top: spawned producers of (a)-(c) re-run this file and must not
    # carry hyrax_tbhub.
    from hyrax_tbhub._tools.progress import Progress

    progress = Progress(len(_plan(cfg)) * cfg.repeats + 2 * ("d" in cfg.contenders), "bench", sys.stderr)
    try:
        results, nohub = _run_all(cfg, progress)
    finally:
        progress.close()
    rows = _best(results)
    targets = _targets(rows, nohub)
    meta = _meta()
    report_stream.write(format_report(meta, cfg, rows, nohub, targets))
    report_stream.flush()
    if args.json:
        _write_json(
            args.json,
            {
                "meta": meta,
                "config": dataclasses.asdict(cfg),
                "runs": [dataclasses.asdict(r) for r in rows],
                "all_repeats": [dataclasses.asdict(r) for r in results] if cfg.repeats > 1 else [],
                "nohub": {where: msg.get("ok") for where, msg in nohub.items()},
                "nohub_errors": {where: msg["error"] for where, msg in nohub.items() if "error" in msg},
                "targets": [dataclasses.asdict(t) for t in targets],
            },
        )
    failed = any(r.error or r.lost or r.flush_failed for r in rows)
    failed = failed or any("error" in msg for msg in nohub.values())
    if failed:
        sys.stderr.write("bench: some measurements failed or lost events (see the report)\n")
        return 1
    if args.strict and any(t.passed is False and not t.info for t in targets):
        return 2
    return 0


# The guard matters: spawned children re-run this file as ``__mp_main__``.
if __name__ == "__main__":
    raise SystemExit(main())
