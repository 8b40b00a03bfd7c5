"""Fault 8: life cycle.

1000 init/close cycles in one process, a producer that follows 100 successive hubs, and two
unrelated hubs on one machine at once: no leaked threads, descriptors, sockets, hub files or
temporary folders, and the two hubs never cross.

Mechanism test (it imports private modules on purpose): the process state's saved hub-file variable
(``_process.state.SAVED_ENV``) across init/close cycles.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub._discovery import hubfile
from hyrax_tbhub._process.state import SAVED_ENV, STATE
from hyrax_tbhub.testing import ROOT_RUN

from faults import common, lifecycle, loggers, procfs

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc and Unix sockets"),
]

TESTS = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch):
    yield from common.private_runtime(monkeypatch)


def test_thousand_init_close_cycles(tmp_path: Path, _runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logdir = tmp_path / "log"
    private_tmp = tmp_path / "tmp"  # anything the library puts in the temp folder shows up here
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    w = hyrax_tbhub.get_tensorboard_logger()
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))  # warm-up: imports, first thread
    hyrax_tbhub.close_tensorboard_logger()
    fds = procfs.open_fds()
    threads = {t.ident for t in threading.enumerate()}
    env_before = os.environ.get(hubfile.ENV_INFO)
    ctx = mp.get_context("fork")
    cycles = 1000
    for i in range(cycles):
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
        w.add_scalar("cycle", float(i), i)
        if i % 100 == 0:  # now and then a producer joins, logs and leaves
            p = ctx.Process(target=loggers.log_scalars_flush, args=(f"producer/{i}", 10), name=f"p{i}")
            p.start()
            p.join(30)
            assert p.exitcode == 0
            p.close()  # the Process object's own pipe
        hyrax_tbhub.close_tensorboard_logger()
    common.record(
        8,
        "cycles",
        cycles=cycles,
        new_fds=len(procfs.new_fds(fds)),
        new_threads=len({t.ident for t in threading.enumerate()} - threads),
        leftovers=len(common.runtime_leftovers(_runtime)),
        tmp=len(list(private_tmp.iterdir())),
    )
    assert procfs.new_fds(fds) == {}
    assert {t.ident for t in threading.enumerate()} <= threads, [t.name for t in threading.enumerate()]
    assert common.runtime_leftovers(_runtime) == []  # no socket or hub file left behind
    assert list(private_tmp.iterdir()) == []  # no temporary folder or file left behind
    assert os.environ.get(hubfile.ENV_INFO) == env_before
    assert SAVED_ENV == [] and STATE.hub is None
    logs = common.read_intact(logdir)
    assert [s for s, _v in logs.scalars("cycle", run=ROOT_RUN)] == list(range(cycles))
    merged = common.merged_scalars(logs)
    for i in range(0, cycles, 100):
        assert len(merged[f"producer/{i}"]) == 10


def test_a_producer_follows_100_hubs_without_leaking(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    req_r, req_w = ctx.Pipe(duplex=False)
    rep_r, rep_w = ctx.Pipe(duplex=False)
    result = tmp_path / "follower.json"
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(tmp_path / "log"))
    p = ctx.Process(target=lifecycle.follow_many_hubs, args=(req_r, rep_w, str(result)), name="follower")
    p.start()
    for i in range(100):
        if i:
            hyrax_tbhub.init_tensorboard_logger(log_dir=str(tmp_path / "log"))
        req_w.send(i)
        assert rep_r.poll(30) and rep_r.recv() == i
        hyrax_tbhub.close_tensorboard_logger()
    req_w.send("stop")
    p.join(30)
    assert p.exitcode == 0
    rep = common.read_report(result)
    common.record(
        8,
        "follow_100",
        hubs=100,
        flushed=sum(rep["flushed"]),
        new_fds=len(rep["new_fds"]),
        threads=rep["threads"],
    )
    assert rep["flushed"] == [True] * 100
    assert rep["new_fds"] == {}, rep["new_fds"]
    assert rep["threads"][1] <= rep["threads"][0] + 1, rep["threads"]  # at most the current sender
    got = common.merged_scalars(common.read_intact(tmp_path / "log"))["cycle"]
    assert sorted(s for s, _v in got) == list(range(100))


def test_two_unrelated_hubs_never_cross(
    tmp_path: Path, _runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two separate programs each own a hub (same user, same runtime folder), while this process
    owns a third; each one's children log only into its own folder."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(TESTS.parent)]))
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(tmp_path / "mine"))
    programs = []
    for label in ("alpha", "beta"):
        ready, go = tmp_path / f"{label}.ready", tmp_path / "go"
        code = (
            f"from faults import lifecycle; lifecycle.unrelated_owner({str(tmp_path / label)!r}, {label!r}, "
            f"{str(ready)!r}, {str(go)!r}, 4)"
        )
        programs.append((label, ready, subprocess.Popen([sys.executable, "-c", code], cwd=str(tmp_path))))
    try:
        infos = {label: common.read_report(ready, 60) for label, ready, _p in programs}
        # Both hubs are up: their hub files and sockets live side by side with this process's own.
        files = sorted(e.name for e in _runtime.iterdir())
        assert len([f for f in files if f.endswith(".json")]) == 3, files
        (tmp_path / "go").write_text("go")
        ctx = mp.get_context("fork")
        mine = [
            ctx.Process(target=loggers.log_scalars_flush, args=(f"mine/{i}", 300), name=f"mine-{i}")
            for i in range(3)
        ]
        for p in mine:
            p.start()
        for label, ready, proc in programs:
            assert proc.wait(120) == 0, label
            assert json.loads(Path(f"{ready}.done").read_text())["exitcodes"] == [0] * 4
        for p in mine:
            p.join(30)
            assert p.exitcode == 0
    finally:
        for _label, _ready, proc in programs:
            if proc.poll() is None:
                proc.kill()
    hyrax_tbhub.close_tensorboard_logger()
    for label in ("alpha", "beta"):
        tags = common.merged_scalars(common.read_intact(tmp_path / label))
        assert set(tags) == {f"{label}/{i}" for i in range(4)} | {f"{label}/owner"}, (label, sorted(tags))
        assert all(len(points) == 300 for points in tags.values())
    tags = common.merged_scalars(common.read_intact(tmp_path / "mine"))
    common.record(8, "unrelated", hubs=3, crossed=0, leftovers=len(common.runtime_leftovers(_runtime)))
    assert set(tags) == {f"mine/{i}" for i in range(3)}
    assert common.runtime_leftovers(_runtime) == [], "a hub left its socket or hub file behind"
    assert infos["alpha"]["pid"] != infos["beta"]["pid"]
