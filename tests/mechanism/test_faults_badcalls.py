"""Fault 6: bad calls.

Where the caller is at fault (an argument that cannot be converted or pickled, a step out of range,
a tensor that cannot be read), the call raises at the call site, as tensorboardX does, and logging
keeps working. Legal but unusual input (NaN, inf, odd tags, figures, large images) lands exactly as
tensorboardX would write it. Where the hub is at fault (it cannot write, one of its methods
raises), the error is counted under ``hyrax_tbhub/errors/<run>``, said once, and the hub lives on.

Mechanism test (it imports private modules on purpose): the hub's write path
(``_hub.runfile.RunFile.add``, ``_hub.store.Run.write_pending``), into which faults are injected.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub import _hub
from hyrax_tbhub.options import Options
from hyrax_tbhub.testing import ROOT_RUN, dropped_tag, errors_tag

from faults import badcalls, common, loggers
from readback import read_log

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc and Unix sockets"),
]


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch):
    yield from common.private_runtime(monkeypatch)


def _run_child(target, args, name: str = "child") -> None:
    p = mp.get_context("fork").Process(target=target, args=args, name=name)
    p.start()
    p.join(60)
    assert p.exitcode == 0, (name, p.exitcode)


@pytest.mark.parametrize("case", sorted(badcalls.CALLER_FAULTS))
def test_caller_at_fault_raises_at_the_call_site_in_a_producer(hub: Path, tmp_path: Path, case: str) -> None:
    if "tensor" in case:
        pytest.importorskip("torch")
    result = tmp_path / "r.json"
    _run_child(badcalls.bad_call, (case, str(result)), name="bad")
    rep = common.read_report(result)
    hyrax_tbhub.close_tensorboard_logger()
    problems = []
    if rep["raised"] is None:
        problems.append("no error at the call site")
    if not (rep["before_flush"] and rep["after_flush"]):
        problems.append(f"flush failed after the bad call ({rep})")
    try:
        run = common.scalars_by_run(hub)["bad"]  # fails on a corrupt record
        read_log(hub)  # tensorboard's own reader accepts every file
    except Exception as exc:
        problems.append(f"the run cannot be read back: {exc!r}")
    else:
        if run.get("good/after") != [(1, 2.0)]:
            problems.append("the next good event was lost")
        if any(t.startswith("bad/") for t in run):
            problems.append(
                f"the bad call was written: {[(t, v) for t, v in run.items() if t.startswith('bad/')]}"
            )
        if common.counters(hub).get(errors_tag("bad"), 0):
            problems.append("the hub counted an error for what the caller got wrong")
    common.record(6, f"producer:{case}", problems=problems)
    assert not problems, f"{case}: " + "; ".join(problems)


@pytest.mark.parametrize("case", sorted(badcalls.CALLER_FAULTS))
def test_caller_at_fault_raises_at_the_call_site_in_the_owner(hub: Path, case: str) -> None:
    if "tensor" in case:
        pytest.importorskip("torch")
    w = hyrax_tbhub.get_tensorboard_logger()
    problems = []
    try:
        badcalls.CALLER_FAULTS[case](w)
        problems.append("no error at the call site")
    except Exception:
        pass
    w.add_scalar("good/after", 2.0, 1)
    if not w.flush(10):
        problems.append("flush failed after the bad call")
    hyrax_tbhub.close_tensorboard_logger()
    try:
        root = common.scalars_by_run(hub)[ROOT_RUN]
        read_log(hub)
    except Exception as exc:
        problems.append(f"the root run cannot be read back: {exc!r}")
    else:
        if root.get("good/after") != [(1, 2.0)]:
            problems.append("the next good event was lost")
        if any(t.startswith("bad/") for t in root):
            problems.append(
                f"the bad call was written: {[(t, v) for t, v in root.items() if t.startswith('bad/')]}"
            )
        if common.counters(hub).get(errors_tag("root")):
            problems.append("the hub counted an error for what the caller got wrong")
    common.record(6, f"owner:{case}", problems=problems)
    assert not problems, f"{case}: " + "; ".join(problems)


def test_nan_inf_and_odd_tags_land_as_tensorboardx_writes_them(hub: Path, tmp_path: Path) -> None:
    from tensorboardX.summary import _clean_tag

    result = tmp_path / "r.json"
    _run_child(badcalls.odd_values_and_tags, (str(result),), name="../../odd run name")
    rep = common.read_report(result)
    assert rep["flush"] and rep["dropped"] == 0
    hyrax_tbhub.close_tensorboard_logger()
    # The odd process name became a run folder inside the log folder.
    runs = common.scalars_by_run(hub)
    assert set(runs) == {".", "odd_run_name"} or all(not r.startswith("..") for r in runs), runs
    (run,) = [r for r in runs if r != "."]
    got = runs[run]
    assert math.isnan(got["v/nan"][0][1]) and math.isnan(got["v/np_nan"][0][1])
    assert got["v/inf"] == [(1, math.inf)] and got["v/-inf"] == [(1, -math.inf)]
    assert got["v/big"] == [(1, math.inf)]  # float32 overflow, as protobuf stores it
    assert (
        got["v/np_int"] == [(1, 7.0)] and got["v/int"] == [(1, float(2**40))] and got["v/bool"] == [(1, 1.0)]
    )
    common.record(
        6,
        "odd",
        values=9,
        tags=len(badcalls.ODD_TAGS),
        tags_ok=sum(got.get(_clean_tag(t)) == [(i, float(i))] for i, t in enumerate(badcalls.ODD_TAGS)),
    )
    for i, tag in enumerate(badcalls.ODD_TAGS):
        assert got.get(_clean_tag(tag)) == [(i, float(i))], repr(tag)
    for folder, _dirs, _files in os.walk(tmp_path):
        assert Path(folder).resolve().is_relative_to(tmp_path.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", "r.json"]
    read_log(hub)


def test_figure_and_large_image_land(hub: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = tmp_path / "r.json"
    _run_child(badcalls.figure_and_images, (str(result), 2500), name="pictures")  # ~19 MB of PNG noise
    rep = common.read_report(result)
    assert rep["flush"] and rep["dropped"] == 0
    hyrax_tbhub.close_tensorboard_logger()
    images = common.read_intact(hub).counts(kind="image").get("pictures")
    common.record(6, "figure", images=images)
    assert images == {"fig/line": 1, "img/huge": 1}


def test_event_larger_than_the_producer_may_queue(logdir: Path, tmp_path: Path) -> None:
    """An image bigger than Options.queue_max_bytes can never be sent. The caller is told: at the
    call site, or at least by a counted drop and a message that says why (not "logging too fast")."""
    hub = logdir
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(hub), options=Options(queue_max_bytes=1 << 20))
    result, err = tmp_path / "r.json", tmp_path / "err.txt"
    _run_child(badcalls.oversized_event, (str(result), str(err), 1200), name="oversized")  # ~4 MB PNG
    rep = common.read_report(result)
    hyrax_tbhub.close_tensorboard_logger()
    common.record(6, "oversized", raised=rep["raised"], dropped=rep["dropped"], message=err.read_text()[:200])
    assert rep["flush"] is True
    assert common.scalars_by_run(hub)["oversized"]["good/after"] == [(1, 1.0)]
    if rep["raised"] is None:
        assert rep["dropped"] == 1
        assert common.counters(hub).get(dropped_tag("oversized")) == 1
        message = err.read_text()
        assert "max_bytes" in message or "too large" in message or "larger than" in message, message


def test_a_hub_method_that_raises_is_counted_and_the_hub_lives(
    hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Producers hand the hub framed records; the hub's own work on them starts at RunFile.add.
    real = _hub.runfile.RunFile.add

    def cursed(self, data, *args):
        if f"{os.sep}cursed{os.sep}" in self.path and b"cursed" in data:  # not the "fine" records
            raise RuntimeError("the hub cannot take this record")
        return real(self, data, *args)

    monkeypatch.setattr(_hub.runfile.RunFile, "add", cursed)
    _run_child(badcalls.log_cursed, (str(tmp_path / "r.json"),), name="cursed")
    assert common.hub_thread_alive()
    _run_child(loggers.survivor, ("after/fine", 100, str(tmp_path / "s.json")), name="after")
    hyrax_tbhub.close_tensorboard_logger()
    runs = common.scalars_by_run(hub)
    common.record(6, "hub_method_raises", lost=10, counted=common.counters(hub).get(errors_tag("cursed")))
    assert runs["cursed"]["fine"] == [(s, float(s)) for s in range(10)]
    assert "cursed" not in runs["cursed"]
    assert runs["after"]["after/fine"] == [(s, s * 0.5) for s in range(100)]
    assert common.counters(hub)[errors_tag("cursed")] == 10
    assert capfd.readouterr().err.count("could not be written") == 1


def test_run_folder_cannot_be_created(hub: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Something else took the producer's run folder name (a file): its events are counted as errors."""
    (hub / "blocked").write_text("not a folder")
    _run_child(loggers.survivor, ("blocked/x", 50, str(tmp_path / "b.json")), name="blocked")
    assert common.read_report(tmp_path / "b.json")["flush"] is True
    assert common.hub_thread_alive()
    _run_child(loggers.survivor, ("after/fine", 100, str(tmp_path / "s.json")), name="after")
    hyrax_tbhub.close_tensorboard_logger()
    common.record(6, "blocked_folder", lost=50, counted=common.counters(hub).get(errors_tag("blocked")))
    assert common.counters(hub)[errors_tag("blocked")] == 50
    assert common.scalars_by_run(hub)["after"]["after/fine"] == [(s, s * 0.5) for s in range(100)]
    assert capfd.readouterr().err.count("could not be written") == 1


def test_a_write_that_raises_something_unexpected_does_not_kill_the_hub(
    hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug or a MemoryError while writing one run's files: that run's batch is lost and counted,
    the hub thread lives on and serves everyone else."""
    real = _hub.store.Run.write_pending
    fired = []

    def flaky(self):
        if self.name == "doomed" and not fired:
            fired.append(1)
            raise MemoryError("simulated")
        return real(self)

    monkeypatch.setattr(_hub.store.Run, "write_pending", flaky)
    _run_child(loggers.survivor, ("doomed/x", 50, str(tmp_path / "d.json")), name="doomed")
    common.wait_until(lambda: fired, 5, "the fault to fire")
    common.record(6, "unexpected_write_error", hub_alive=common.hub_thread_alive())
    assert common.hub_thread_alive(), "the hub thread died"
    _run_child(loggers.survivor, ("after/fine", 100, str(tmp_path / "s.json")), name="after")
    assert common.read_report(tmp_path / "s.json")["flush"] is True
    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_scalar("owner/fine", 1.0, 1)
    hyrax_tbhub.close_tensorboard_logger()
    runs = common.scalars_by_run(hub)
    assert runs["after"]["after/fine"] == [(s, s * 0.5) for s in range(100)]
    assert runs["."]["owner/fine"] == [(1, 1.0)]
    assert common.counters(hub).get(errors_tag("doomed"), 0) >= 1
