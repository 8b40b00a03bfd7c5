"""A producer killed without a goodbye: what it logged is on disk or counted, exactly.

The hub reads a killed producer's ledger (a few words of shared memory it was handed with the
producer's HELLO) when the connection ends without a goodbye, and counts what never arrived under
``hyrax_tbhub/producer_killed/<run>``. Each scenario kills workers mid-stream, the way an engine
does (SIGKILL, ``Pool.terminate()``, joblib's abort with loky), and checks, over every worker:

    calls returned  <=  on disk + producer_killed + dropped  <=  calls started

(a call the kill cut in half may or may not count; nothing else may be missing). Workers are
killed once their producer finished its handshake: a producer killed before the hub holds its
ledger is counted as a transport error only (docs/how-it-works.md).

Mechanism test (it imports private modules on purpose): the killed producer's ledger
(``_producer.ledger``, ``_hub.liveness``: shared memory handed over with the HELLO).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from pathlib import Path

import killed_workers
import pytest

import hyrax_tbhub
from hyrax_tbhub._counters import DROPPED, PRODUCER_KILLED

from faults import common
from readback import read_log

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memfd and SCM_RIGHTS"),
]

WORKERS = 3
AT_LEAST = 3000  # events each worker logged before it is killed: mid-stream, queue not empty


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch):
    yield from common.private_runtime(monkeypatch)


def _every_worker_logged(counts_dir: Path, n: int) -> bool:
    counts = killed_workers.read_counts(str(counts_dir))
    return len(counts) >= WORKERS and all(returned >= n and ok for _s, returned, ok in counts.values())


def _account(logdir: Path, counts_dir: Path) -> tuple[int, int, int, int, int]:
    """(calls returned, on disk, counted killed, counted dropped, calls started) over all workers."""
    counts = killed_workers.read_counts(str(counts_dir))
    started = sum(c[0] for c in counts.values())
    returned = sum(c[1] for c in counts.values())
    logs = common.read_intact(logdir)
    on_disk = sum(1 for e in logs.select(kind="scalar") if e.tag == killed_workers.TAG)
    counters = logs.counters
    killed = int(sum(v for t, v in counters.items() if t.startswith(PRODUCER_KILLED)))
    dropped = int(sum(v for t, v in counters.items() if t.startswith(DROPPED)))
    return returned, on_disk, killed, dropped, started


def _check_exact(logdir: Path, counts_dir: Path) -> int:
    returned, on_disk, killed, dropped, started = _account(logdir, counts_dir)
    accounted = on_disk + killed + dropped
    assert returned <= accounted <= started, (
        f"{returned} calls returned, {started} started; on disk {on_disk} + killed {killed} + "
        f"dropped {dropped} = {accounted}"
    )
    return killed


def test_sigkill_mid_stream_every_event_is_on_disk_or_counted_as_killed(tmp_path: Path) -> None:
    logdir, counts_dir = tmp_path / "log", tmp_path / "counts"
    counts_dir.mkdir()
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=killed_workers.log_until_killed, args=(str(counts_dir),), name=f"victim-{i}")
             for i in range(WORKERS)]
    for p in procs:
        p.start()
    common.wait_until(lambda: _every_worker_logged(counts_dir, AT_LEAST), 90, "every worker logging")
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        p.join(10)
        assert p.exitcode == -signal.SIGKILL
    hyrax_tbhub.close_tensorboard_logger()
    killed = _check_exact(logdir, counts_dir)
    assert killed > 0, "workers killed while logging flat out had nothing queued"
    # TensorBoard's own reader sees the same events (one run per victim, steps never go back).
    tb = read_log(logdir)
    on_disk_tb = sum(len(tags.get(killed_workers.TAG, [])) for run, tags in tb.items())
    assert on_disk_tb == _account(logdir, counts_dir)[1]


def test_pool_terminate_mid_stream_every_event_is_on_disk_or_counted(tmp_path: Path) -> None:
    logdir, counts_dir = tmp_path / "log", tmp_path / "counts"
    counts_dir.mkdir()
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    pool = mp.get_context("spawn").Pool(WORKERS)
    try:
        args = (str(counts_dir),)
        results = [pool.apply_async(killed_workers.log_until_killed, args) for _ in range(WORKERS)]
        common.wait_until(lambda: _every_worker_logged(counts_dir, AT_LEAST), 90, "every worker logging")
    finally:
        pool.terminate()
        pool.join()
    assert not any(r.ready() and r.successful() for r in results)
    hyrax_tbhub.close_tensorboard_logger()
    _check_exact(logdir, counts_dir)


def test_joblib_loky_abort_every_event_is_on_disk_or_counted_as_killed(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    logdir, counts_dir = tmp_path / "log", tmp_path / "counts"
    counts_dir.mkdir()
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    tasks = [joblib.delayed(killed_workers.log_until_killed)(str(counts_dir)) for _ in range(WORKERS - 1)]
    tasks.append(joblib.delayed(killed_workers.fail_when_others_logged)(str(counts_dir), AT_LEAST))
    with pytest.raises(RuntimeError, match="the engine aborts"):
        joblib.Parallel(n_jobs=WORKERS, backend="loky")(tasks)
    # joblib's abort kills the other workers (SIGKILL); wait until they are gone.
    counts = killed_workers.read_counts(str(counts_dir))
    common.wait_until(lambda: not any(_alive(pid) for pid in counts), 30, "the aborted workers to die")
    hyrax_tbhub.close_tensorboard_logger()
    killed = _check_exact(logdir, counts_dir)
    assert killed > 0, "loky's kill of workers logging flat out took nothing"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_hub_keeps_only_a_sealed_shared_memory_ledger_and_closes_every_other_descriptor() -> None:
    """A key holder can attach any descriptors to its HELLO: the hub has room for one (the
    kernel closes the others), keeps it only if it is a sealed memfd (a pipe or a plain file
    could block or shrink under the hub), and closes it otherwise."""
    import array
    import socket

    from hyrax_tbhub._hub.liveness import HubLedger, recv_hello
    from hyrax_tbhub._producer.ledger import Ledger

    pipe_r, pipe_w = os.pipe()
    unsealed = os.memfd_create("plain")
    os.ftruncate(unsealed, 64)
    ledger = Ledger(shared=True)
    assert ledger.fd is not None
    ledger.words[0] = 7

    def hand_over(fds: list[int]) -> HubLedger | None:
        a, b = socket.socketpair()
        try:
            before = _open_fds()
            a.sendmsg([b"hello"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            data, got = recv_hello(b, 4096)
            assert data == b"hello"
            kept = _open_fds() - before
            assert kept == ({got.fd} if got is not None else set()), "a descriptor was kept"
            return got
        finally:
            a.close()
            b.close()

    try:
        assert hand_over([pipe_r]) is None
        assert hand_over([unsealed]) is None
        got = hand_over([ledger.fd, pipe_r, unsealed])
        assert got is not None
        assert got.lost() == (7, 0)
        got.received = 5
        assert got.lost() == (2, 0)
        got.close()
    finally:
        for fd in (pipe_r, pipe_w, unsealed):
            os.close(fd)
        ledger.close_fd()


def _open_fds() -> set[int]:
    fds = set()
    for fd in range(4096):
        try:
            os.fstat(fd)
        except OSError:
            continue
        fds.add(fd)
    return fds


def test_a_sync_frame_round_trips_and_its_answer_is_not_a_producer_flush() -> None:
    from hyrax_tbhub import _wire

    assert _wire.decode_hub_message(_wire.pack_sync(42)[4:]) == ("sync", 42)
    assert 42 | _wire.SYNC_BIT > 1 << 62  # above any seq a producer's own flush() ever uses
