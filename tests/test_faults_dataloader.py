"""Fault 2: DataLoader shutdown, restarts and errors.

torch terminates workers that do not exit in time, starts new workers every epoch with
``persistent_workers=False``, and re-raises a worker's exception in the main process. Nothing
may hang, and every event a worker logged (its ledger says the call returned) lands if that
worker exited normally.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from pathlib import Path

import pytest

import hyrax_tbhub

from faults import common, dataloader

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

pytestmark = [
    pytest.mark.faults,
    pytest.mark.torch,
    pytest.mark.timeout(150),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc and Unix sockets"),
]


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch):
    yield from common.private_runtime(monkeypatch)


def _landed(logdir: Path) -> set[tuple[str, int]]:
    """Every (tag, step) in every run; a duplicate would mean an event was written twice."""
    seen = [(e.tag, e.step) for e in common.read_intact(logdir).select(kind="scalar")]
    assert len(seen) == len(set(seen)), "an event landed twice"
    return set(seen)


def _record(test: str, normal: list, other: list, landed: set, **extra) -> None:
    """Ledger rows of normally exiting workers and of the others, and how many of each landed."""
    common.record(
        2,
        test,
        normal_logged=len(normal),
        normal_landed=len(set(normal) & landed),
        other_logged=len(other),
        other_landed=len(set(other) & landed),
        **extra,
    )


def _loader(dataset, ctx: str, **kwargs) -> DataLoader:
    return DataLoader(dataset, batch_size=1, num_workers=2, multiprocessing_context=ctx, **kwargs)


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_workers_restart_every_epoch(hub: Path, tmp_path: Path, ctx: str) -> None:
    """persistent_workers=False: 3 epochs, 6 worker processes; every item of every epoch lands."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    epochs, n = 3, 40
    for epoch in range(epochs):
        ds = dataloader.LoggingDataset(n, f"epoch{epoch}", str(ledger))
        got = [int(x) for x in _loader(ds, ctx, persistent_workers=False)]
        assert got == list(range(n))
    t0 = time.monotonic()
    hyrax_tbhub.close_tensorboard_logger()
    close_s = time.monotonic() - t0
    ledgers = dataloader.read_ledgers(ledger)
    landed = _landed(hub)
    _record(
        f"restart_{ctx}",
        [r for rows in ledgers.values() for r in rows],
        [],
        landed,
        workers=len(ledgers),
        epochs=epochs,
    )
    assert close_s < 10
    assert len(ledgers) == 2 * epochs  # new worker processes every epoch
    assert landed == {(f"epoch{e}", i) for e in range(epochs) for i in range(n)}


def test_worker_exception_nothing_hangs_and_events_land(hub: Path, tmp_path: Path) -> None:
    """A worker raises in __getitem__: the main process gets the error, workers shut down normally."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    ds = dataloader.LoggingDataset(30, "items", str(ledger), raise_index=7)
    it = iter(_loader(ds, "fork"))
    workers = list(it._workers)
    got = []
    with pytest.raises(ValueError, match="item 7 is broken"):
        for x in it:
            got.append(int(x))
    assert got == list(range(7))
    it._shutdown_workers()
    assert [w.exitcode for w in workers] == [0, 0]
    hyrax_tbhub.close_tensorboard_logger()
    logged = {row for rows in dataloader.read_ledgers(ledger).values() for row in rows}
    landed = _landed(hub)
    _record("exception", list(logged), [], landed)
    assert {("items", i) for i in range(7)} <= logged
    assert logged <= landed


def test_worker_stuck_in_getitem_is_terminated(
    hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker stuck in __getitem__ at shutdown is terminated by torch; the other worker's events land."""
    monkeypatch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 1.0)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    # batch_size=1, two workers: worker 1 loads the odd items, and gets stuck in item 9.
    ds = dataloader.LoggingDataset(40, "items", str(ledger), hang_index=9)
    it = iter(_loader(ds, "fork"))
    workers = list(it._workers)
    got = [int(next(it)) for _ in range(8)]
    assert got == list(range(8))
    common.wait_until(
        lambda: ("items", 9) in {r for rows in dataloader.read_ledgers(ledger).values() for r in rows},
        20,
        "worker 1 to reach the item it hangs in",
    )
    t0 = time.monotonic()
    it._shutdown_workers()
    shutdown_s = time.monotonic() - t0
    assert shutdown_s < 10
    assert not any(w.is_alive() for w in workers)
    hyrax_tbhub.close_tensorboard_logger()
    ledgers = dataloader.read_ledgers(ledger)
    normal = ledgers[workers[0].pid]
    landed = _landed(hub)
    _record("stuck_in_getitem", normal, ledgers.get(workers[1].pid, []), landed, shutdown_s=shutdown_s)
    assert normal and all(step % 2 == 0 for _tag, step in normal)
    assert set(normal) <= landed


def test_worker_cannot_exit_in_time_is_terminated(
    hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that cannot exit (a non-daemon thread) is terminated; all events still land."""
    monkeypatch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 1.0)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    ds = dataloader.LoggingDataset(40, "items", str(ledger))
    loader = _loader(ds, "fork", worker_init_fn=functools.partial(dataloader.worker_init_hang_at_exit, 1))
    it = iter(loader)
    workers = list(it._workers)
    assert [int(x) for x in it] == list(range(40))
    common.wait_until(lambda: not any(w.is_alive() for w in workers), 15, "the stuck worker to be terminated")
    hyrax_tbhub.close_tensorboard_logger()
    ledgers = dataloader.read_ledgers(ledger)
    landed = _landed(hub)
    _record("cannot_exit", ledgers.get(workers[0].pid, []), ledgers.get(workers[1].pid, []), landed)
    # Both workers' exit hooks ran (the stuck one was terminated in threading's shutdown, after them).
    assert landed == {("items", i) for i in range(40)}


def test_worker_sigkilled_mid_epoch(hub: Path, tmp_path: Path) -> None:
    """A worker killed by the OOM killer (SIGKILL): torch raises in the main process; nothing hangs."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    ds = dataloader.LoggingDataset(10_000, "items", str(ledger))
    it = iter(_loader(ds, "fork"))
    workers = list(it._workers)
    for _ in range(50):
        next(it)
    os.kill(workers[1].pid, signal.SIGKILL)
    # torch reports the death from its SIGCHLD handler, at whatever line runs then, or as a
    # broken connection first: accept either, and let the handler fire before going on.
    errors: list[BaseException] = []
    try:
        for _ in range(10_000):
            next(it)
    except (RuntimeError, ConnectionError) as exc:
        errors.append(exc)
    try:
        common.wait_until(lambda: workers[1].exitcode is not None, 10, "the killed worker to be reaped")
        it._shutdown_workers()
    except RuntimeError as exc:
        errors.append(exc)
        it._shutdown_workers()
    assert errors and all(isinstance(e, ConnectionError) or "DataLoader worker" in str(e) for e in errors)
    assert workers[0].exitcode == 0
    hyrax_tbhub.close_tensorboard_logger()
    ledgers = dataloader.read_ledgers(ledger)
    landed = _landed(hub)
    _record("sigkilled", ledgers[workers[0].pid], ledgers.get(workers[1].pid, []), landed)
    assert set(ledgers[workers[0].pid]) <= landed
