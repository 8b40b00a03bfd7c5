"""The coordinator process of one measurement: it owns the writer or the hub, starts the producers
behind a barrier and times the whole run."""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any

from .config import SETUP_TIMEOUT_S, RunSpec
from .producer import flush_rounds, log_stream, payloads, peak_rss_mib, producer_main


def deadline_left(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"timed out waiting for {what}")
    return left


def stop(proc: SpawnProcess, grace_s: float = 5.0) -> None:
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
                target=producer_main,
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
            stop(proc)

    def release(self) -> float:
        """Wait until every producer is ready, let them go, and return the start time."""
        try:
            self._barrier.wait(timeout=min(SETUP_TIMEOUT_S, deadline_left(self._deadline, "setup")))
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
            left = deadline_left(self._deadline, "producer reports")
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
            proc.join(deadline_left(self._deadline, "producers to exit"))
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
        "owner_peak_mib": peak_rss_mib(),
        "producer_peak_mib": max(peaks) if peaks else None,
    }


def _run_in_process(writer: Any, spec: RunSpec) -> tuple[list[float], list[float], list[dict[str, float]]]:
    """The owner logs every stream itself; returns (per-call ns per chunk, flush latencies, costs)."""
    if spec.flush_rounds:
        pool = payloads(spec.kind, seed=0)
        return [], flush_rounds(writer, spec.kind, spec.flush_rounds, spec.flush_batch, pool), []
    pools = [payloads(spec.kind, seed=i) for i in range(spec.streams)]
    per_call: list[float] = []
    costs: list[dict[str, float]] = []
    for pool in pools:
        chunks, cost = log_stream(writer, spec.kind, spec.per_producer, spec.chunk, pool)
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
    listener.join(deadline_left(deadline, "the queue to drain"))
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


def coordinator_main(spec: RunSpec, log_dir: str, timeout_s: float, conn: Connection) -> None:
    """Body of the coordinator process: one measurement, its outcome sent back through ``conn``."""
    try:
        deadline = time.monotonic() + timeout_s
        outcome = _COORDINATORS[spec.contender](mp.get_context("spawn"), spec, log_dir, deadline)
        conn.send({"ok": outcome})
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()
