"""What a hub keeps for a long job and against a greedy key holder: open runs, run names.

A job's producers come and go (pool workers, DataLoader workers, short-lived children): the cap
on runs counts the runs open now, not every run the job ever had; what it refuses is counted per
event; and every run name is unique for the hub's whole life, so two processes (a pid the kernel
reused, a DataLoader worker id of another epoch) never share a run.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub import _wire
from hyrax_tbhub._discovery import hubfile
from hyrax_tbhub._events import encode_scalar_records
from hyrax_tbhub._hub.store import Store
from hyrax_tbhub.options import Options
from hyrax_tbhub.testing import OVER_CAP, ROOT_RUN, read_logs

from faults.common import counters
from wire_peers import authenticate, closed_by_peer, recv_exact

pytestmark = pytest.mark.timeout(120)

WALL = 1_700_000_000.0


def _records(tag: str, n: int) -> tuple[object, ...]:
    items = [("s", tag, float(step), step, WALL) for step in range(n)]
    return ("r", "", encode_scalar_records(items), n)


def _hub_info() -> hubfile.HubInfo:
    info = hubfile.read_hub_file(os.environ[hubfile.ENV_INFO])
    assert info is not None
    return info


def _read_frame(sock: socket.socket) -> bytes:
    (length,) = _wire._U32.unpack(recv_exact(sock, 4))
    return recv_exact(sock, length)


class _Peer:
    """A key holder driven by hand: connect, prove the key, say hello, log, say goodbye."""

    def __init__(self, info: hubfile.HubInfo, name: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(info.address)
        authenticate(self.sock, info.key)
        self.sock.sendall(_wire.pack_hello(name, 1))
        self.run = _wire.decode_hub_message(_read_frame(self.sock))[1]["run"]

    def log_and_leave(self, tag: str, events: int) -> None:
        for frame in _wire.pack_batch([_records(tag, events), ("b",)]):
            self.sock.sendall(frame)
        assert closed_by_peer(self.sock, 30)
        self.sock.close()


# -- the cap counts open runs -----------------------------------------------------------------------


def test_a_closed_run_frees_its_slot_in_the_store(tmp_path: Path) -> None:
    store = Store(str(tmp_path), Options(max_runs=2))
    for i in range(10):
        run = store.open_run(f"w{i}")
        assert not run.refused, f"run {i} refused though only one run is open at a time"
        store.write(run, [_records("x", 3)])
        store.end_run(run)
    store.close()
    logs = read_logs(tmp_path)
    assert sorted(logs.runs) == sorted([ROOT_RUN, *(f"w{i}" for i in range(10))])
    assert len(logs.scalars("x")) == 30
    assert logs.counters.get(OVER_CAP, 0) == 0


def test_a_refused_runs_events_are_counted_one_by_one_and_nothing_is_written(tmp_path: Path) -> None:
    store = Store(str(tmp_path), Options(max_runs=1))
    first = store.open_run("a")
    refused = store.open_run("b")
    assert refused.refused and not first.refused
    controls = store.write(refused, [_records("x", 7), ("s", "y", 1.0, 1, WALL), ("d", 4), ("f", 3), ("b",)])
    assert controls == [("f", 3), ("b",)], "a refused producer's flushes are still answered"
    store.end_run(refused)
    store.end_run(first)
    store.close()
    assert not (tmp_path / "b").exists()
    assert read_logs(tmp_path).counters[OVER_CAP] == 7 + 1 + 4


def _log_five(tag: str) -> None:
    hyrax_tbhub.get_tensorboard_logger()  # the name is the process's own
    for step in range(5):
        hyrax_tbhub.get_tensorboard_logger().add_scalar(tag, float(step), step)
    hyrax_tbhub.close_tensorboard_logger()


def test_forty_short_lived_producers_with_max_runs_20_all_land(logdir: Path) -> None:
    """40 processes one after another, 5 events each, under a cap of 20 runs: all 200 land."""
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir), options=Options(max_runs=20))
    ctx = multiprocessing.get_context("fork")
    for i in range(40):
        proc = ctx.Process(target=_log_five, args=("x",), name=f"worker-{i}")
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
    hyrax_tbhub.close_tensorboard_logger()
    logs = read_logs(logdir)
    assert len(logs.scalars("x")) == 200
    assert len([r for r in logs.runs if r != ROOT_RUN]) == 40
    assert logs.counters.get(OVER_CAP, 0) == 0


def test_over_the_cap_every_lost_event_is_counted(logdir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """30 producers open at once with max_runs=20: 20 x 5 events land, 10 x 5 are counted, and
    the refusal is said once."""
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir), options=Options(max_runs=20))
    info = _hub_info()
    peers = [_Peer(info, f"p{i}") for i in range(30)]
    for peer in peers:
        peer.log_and_leave("x", 5)
    hyrax_tbhub.close_tensorboard_logger()
    logs = read_logs(logdir)
    assert len(logs.scalars("x")) == 100
    assert logs.counters[OVER_CAP] == 50
    assert capfd.readouterr().err.count(OVER_CAP) == 1


# -- run names are unique for the hub's life -------------------------------------------------------


def test_a_name_is_never_given_twice_even_after_its_producer_left(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    names = []
    for _ in range(3):
        run = store.open_run("python-1234")  # a pid the kernel reused
        names.append(run.name)
        store.end_run(run)
    store.close()
    assert names == ["python-1234", "python-1234-2", "python-1234-3"]


def test_two_processes_of_one_name_write_two_runs(logdir: Path) -> None:
    """Two processes one after the other with the same name (a pid or a DataLoader worker id
    reused) keep their points apart: each run's steps stay its own."""
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    ctx = multiprocessing.get_context("fork")
    for _ in range(2):
        proc = ctx.Process(target=_log_five, args=("x",), name="dataloader_worker_3")
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
    hyrax_tbhub.close_tensorboard_logger()
    logs = read_logs(logdir)
    assert sorted(r for r in logs.runs if r != ROOT_RUN) == ["dataloader_worker_3", "dataloader_worker_3-2"]
    for run in ("dataloader_worker_3", "dataloader_worker_3-2"):
        assert logs.scalars("x", run=run) == [(s, float(s)) for s in range(5)]
