"""The parent's side: one measurement in a fresh coordinator, its events counted back with
TensorBoard's reader, and the plan of every measurement."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import statistics
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .config import NOHUB_CHILD, NOHUB_TOP, Config, RunResult, RunSpec
from .coordinator import coordinator_main, stop
from .nohub import nohub_main, nohub_top_level

if TYPE_CHECKING:
    from hyrax_tbhub._tools.progress import Progress


def in_child(target: Callable[..., None], args: tuple[Any, ...], timeout_s: float) -> dict[str, Any]:
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
        stop(proc)
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


def measure(spec: RunSpec, timeout_s: float) -> RunResult:
    """One measurement in a fresh coordinator, counted back from its own temporary log root."""
    result = RunResult(spec.contender, spec.kind, spec.producers, spec.per_producer, spec.expected)
    result.mode = spec.mode
    with tempfile.TemporaryDirectory(prefix="hyrax_tbhub_bench_", ignore_cleanup_errors=True) as root:
        msg = in_child(coordinator_main, (spec, root, timeout_s), timeout_s + 60)
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


def plan(cfg: Config) -> list[RunSpec]:
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


def run_all(cfg: Config, progress: Progress) -> tuple[list[RunResult], dict[str, dict[str, Any]]]:
    results: list[RunResult] = []
    for _ in range(cfg.repeats):  # repeats interleave, so slow drift of the machine hits everyone
        for spec in plan(cfg):
            progress.advance(note=spec.label)
            results.append(measure(spec, cfg.timeout_s))
    nohub: dict[str, dict[str, Any]] = {}
    if "d" in cfg.contenders:
        progress.advance(note="no-hub call, top-level process")
        nohub[NOHUB_TOP] = nohub_top_level(cfg.nohub_calls, cfg.nohub_repeats, cfg.timeout_s)
        progress.advance(note="no-hub call, spawned child")
        nohub[NOHUB_CHILD] = in_child(nohub_main, (cfg.nohub_calls, cfg.nohub_repeats), cfg.timeout_s)
    return results, nohub
