"""The hyrax-compatible API in one process: names, no-op behaviour, barriers, units."""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import hyrax_tbhub
from hyrax_tbhub import tensorboardx_logger as tbl
from hyrax_tbhub.testing import ROOT_RUN, read_logs

pytestmark = pytest.mark.timeout(60)


def test_public_api_is_exported() -> None:
    for name in ("init_tensorboard_logger", "get_tensorboard_logger", "close_tensorboard_logger",
                 "HyraxSummaryWriter"):
        assert name in hyrax_tbhub.__all__
        assert getattr(hyrax_tbhub, name) is getattr(tbl, name)


def test_writer_method_list_matches_installed_tensorboardx() -> None:
    from tensorboardX import SummaryWriter

    public = {n for n in dir(SummaryWriter) if not n.startswith("_") and callable(getattr(SummaryWriter, n))}
    assert public == set(tbl.WRITER_METHODS)


def test_dir_lists_every_summarywriter_method_and_the_ts_helpers() -> None:
    names = dir(hyrax_tbhub.get_tensorboard_logger())
    for name in tbl.WRITER_METHODS | {"log_scalar_ts", "log_duration_ts"}:
        assert name in names


@pytest.mark.parametrize("with_hub", [False, True])
def test_unknown_attribute_raises_attributeerror_hub_or_not(with_hub: bool, logdir: Path) -> None:
    if with_hub:
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    with pytest.raises(AttributeError):
        hyrax_tbhub.get_tensorboard_logger().definitely_not_a_method  # noqa: B018


def test_module_attributes_follow_the_hub(logdir: Path) -> None:
    assert tbl.tensorboardx_logger is None
    assert tbl.tensorboard_start_ns == 0
    before = time.monotonic_ns()
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    from tensorboardX import SummaryWriter

    assert isinstance(tbl.tensorboardx_logger, SummaryWriter)
    assert before <= tbl.tensorboard_start_ns <= time.monotonic_ns()
    hyrax_tbhub.close_tensorboard_logger()
    assert tbl.tensorboardx_logger is None
    assert tbl.tensorboard_start_ns == 0


def test_drop_in_swap_into_hyrax_module_name(logdir: Path) -> None:
    sys.modules["hyrax.tensorboardx_logger"] = tbl
    try:
        hyrax_logger = importlib.import_module("hyrax.tensorboardx_logger")
        from hyrax.tensorboardx_logger import get_tensorboard_logger, init_tensorboard_logger  # type: ignore

        init_tensorboard_logger(log_dir=str(logdir))
        get_tensorboard_logger().add_scalar("swapped", 1.0, 1)
        hyrax_logger.close_tensorboard_logger()
    finally:
        del sys.modules["hyrax.tensorboardx_logger"]
    assert read_logs(logdir).scalar_series(ROOT_RUN)["swapped"] == [(1, 1.0)]


def test_without_a_hub_calls_are_noops_and_create_no_files(tmp_path: Path) -> None:
    os.chdir(tmp_path)
    w = hyrax_tbhub.get_tensorboard_logger()
    assert w.add_scalar("x", 1.0, 1) is None
    assert w.add_histogram("h", np.arange(10), 1) is None
    assert w.add_text("t", "hello") is None
    w.log_scalar_ts("x", 1.0)
    w.log_duration_ts("d", time.monotonic_ns())
    assert w.flush() is True
    w.close()
    assert w.get_logdir() is None
    hyrax_tbhub.close_tensorboard_logger()  # nothing to close: does nothing
    assert list(tmp_path.iterdir()) == []


def test_handle_taken_before_init_logs_after_init(logdir: Path) -> None:
    early = hyrax_tbhub.get_tensorboard_logger()
    early.add_scalar("before", 1.0, 1)  # no hub yet: dropped by design
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    early.add_scalar("after", 2.0, 2)
    hyrax_tbhub.close_tensorboard_logger()
    log = read_logs(logdir).scalar_series(ROOT_RUN)
    assert log == {"after": [(2, 2.0)]}


def test_every_event_is_on_disk_when_close_returns_and_close_is_idempotent(logdir: Path) -> None:
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(20000):
        w.add_scalar("loss", step / 2, step)
    hyrax_tbhub.close_tensorboard_logger()
    hyrax_tbhub.close_tensorboard_logger()
    points = read_logs(logdir).scalar_series(ROOT_RUN)["loss"]
    assert points == [(s, s / 2) for s in range(20000)]


def test_after_close_calls_are_noops_and_no_new_event_file_appears(logdir: Path) -> None:
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_scalar("x", 1.0, 1)
    kept = tbl.tensorboardx_logger  # a raw writer object kept past close must not write either
    hyrax_tbhub.close_tensorboard_logger()
    files_before = sorted(p for p in logdir.rglob("*") if p.is_file())
    sizes_before = [p.stat().st_size for p in files_before]
    w.add_scalar("x", 2.0, 2)
    w.add_histogram("h", np.arange(5), 1)
    kept.add_scalar("x", 3.0, 3)
    kept.add_text("t", "late")
    files_after = sorted(p for p in logdir.rglob("*") if p.is_file())
    assert files_after == files_before
    assert [p.stat().st_size for p in files_after] == sizes_before


def test_flush_is_a_barrier_in_the_owner(logdir: Path) -> None:
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(5000):
        w.add_scalar("loss", 1.0, step)
    assert w.flush() is True
    assert len(read_logs(logdir).scalar_series(ROOT_RUN)["loss"]) == 5000


def test_init_closes_the_previous_hub_first(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(first))
    hyrax_tbhub.get_tensorboard_logger().add_scalar("x", 1.0, 1)
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(second))
    hyrax_tbhub.get_tensorboard_logger().add_scalar("y", 2.0, 2)
    hyrax_tbhub.close_tensorboard_logger()
    assert read_logs(first).scalar_series(ROOT_RUN) == {"x": [(1, 1.0)]}
    assert read_logs(second).scalar_series(ROOT_RUN) == {"y": [(2, 2.0)]}


def test_ts_helpers_use_microseconds_since_the_hub_started(logdir: Path) -> None:
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    start = tbl.tensorboard_start_ns
    w = hyrax_tbhub.get_tensorboard_logger()
    w.log_scalar_ts("fixed", 3.0, since_tensorboard_start_ns=2_500_000)
    t0 = time.monotonic_ns()
    w.log_scalar_ts("now", 4.0)
    t1 = time.monotonic_ns()
    w.log_duration_ts("dur", t0 - 1_000_000_000)  # started one second before t0
    t2 = time.monotonic_ns()
    hyrax_tbhub.close_tensorboard_logger()
    log = read_logs(logdir).scalar_series(ROOT_RUN)
    assert log["fixed"] == [(2500, 3.0)]
    (step, _), = log["now"]
    assert (t0 - start) // 1000 <= step <= (t1 - start) // 1000
    (dstep, dval), = log["dur"]
    assert (t1 - start) // 1000 <= dstep <= (t2 - start) // 1000
    assert 1.0 <= dval <= 1.0 + (t2 - t0) / 1e9 + 1e-6


def test_all_common_methods_write_the_event_kinds_tensorboardx_writes(logdir: Path) -> None:
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_scalar("np64", np.float64(1.5), np.int64(3))
    w.add_scalar("np32", np.float32(2.5), 4)
    w.add_histogram("hist", np.random.default_rng(0).normal(size=1000), 1)
    w.add_image("img", np.zeros((3, 8, 8), dtype=np.uint8), 1)
    w.add_text("note", "hello", 1)
    w.add_pr_curve("pr", np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.8, 0.3]), 1)
    w.add_scalars("multi", {"a": 1.0, "b": 2.0}, 5)
    w.add_hparams({"lr": 0.1}, {"hparam/acc": 0.9}, name="trial")
    hyrax_tbhub.close_tensorboard_logger()
    logs = read_logs(logdir)
    assert logs.scalar_series(ROOT_RUN) == {"np64": [(3, 1.5)], "np32": [(4, 2.5)]}
    kinds = {e.tag: (e.kind, e.plugin) for e in logs.select(run=ROOT_RUN)}
    assert kinds["hist"] == ("histogram", "histograms") and kinds["img"] == ("image", "images")
    assert kinds["note/text_summary"] == ("text", "text") and kinds["pr"] == ("other", "pr_curves")
    each_once = dict.fromkeys(["np64", "np32", "hist", "img", "note/text_summary", "pr"], 1)
    assert logs.counts()[ROOT_RUN] == each_once
    assert logs.scalars("multi", run="multi/a") == [(5, 1.0)]
    assert logs.scalars("multi", run="multi/b") == [(5, 2.0)]
    assert logs.scalars("hparam/acc", run="trial") == [(0, pytest.approx(0.9))]


def test_add_figure_renders_in_the_caller(logdir: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    fig = plt.figure()
    plt.plot([1, 2, 3])
    hyrax_tbhub.get_tensorboard_logger().add_figure("fig", fig, 1)
    hyrax_tbhub.close_tensorboard_logger()
    assert read_logs(logdir).counts(kind="image")[ROOT_RUN] == {"fig": 1}


@pytest.mark.parametrize(
    "bad",
    [np.arange(3.0), "not a number", None],
    ids=["vector", "string", "none"],
)
def test_bad_scalar_raises_at_the_call_site_like_tensorboardx(bad: object, logdir: Path) -> None:
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(logdir / "reference")) as ref, pytest.raises(Exception) as expected:
        ref.add_scalar("x", bad, 1)
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir / "hub"))
    with pytest.raises(expected.type):
        hyrax_tbhub.get_tensorboard_logger().add_scalar("x", bad, 1)


def test_purge_step_and_filename_suffix_are_honoured(logdir: Path) -> None:
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir), purge_step=7, filename_suffix=".mine")
    hyrax_tbhub.get_tensorboard_logger().add_scalar("x", 1.0, 8)
    hyrax_tbhub.close_tensorboard_logger()
    files = list(logdir.glob("events.out.tfevents.*"))
    assert len(files) == 1 and files[0].name.endswith(".mine")
    assert read_logs(logdir).scalar_series(ROOT_RUN)["x"] == [(8, 1.0)]


def test_comment_and_default_logdir_follow_summarywriter(tmp_path: Path) -> None:
    os.chdir(tmp_path)
    hyrax_tbhub.init_tensorboard_logger(comment="_exp1")
    folder = hyrax_tbhub.get_tensorboard_logger().get_logdir()
    hyrax_tbhub.close_tensorboard_logger()
    assert folder is not None
    rel = Path(folder).relative_to(tmp_path)
    assert rel.parts[0] == "runs" and rel.parts[1].endswith("_exp1")


def test_no_counters_written_when_nothing_went_wrong(logdir: Path) -> None:
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    hyrax_tbhub.get_tensorboard_logger().add_scalar("x", 1.0, 1)
    hyrax_tbhub.close_tensorboard_logger()
    assert read_logs(logdir).counters == {}


def test_threads_log_concurrently_in_the_owner(logdir: Path) -> None:
    import threading

    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))

    def worker(k: int) -> None:
        w = hyrax_tbhub.get_tensorboard_logger()
        for step in range(2000):
            w.add_scalar(f"t{k}", float(step), step)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    hyrax_tbhub.close_tensorboard_logger()
    root = read_logs(logdir).scalar_series(ROOT_RUN)
    for k in range(4):
        assert root[f"t{k}"] == [(s, float(s)) for s in range(2000)]


def test_ts_steps_never_repeat_for_a_tag_so_tensorboard_keeps_every_point(logdir: Path) -> None:
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    w = hyrax_tbhub.get_tensorboard_logger()
    for i in range(3000):  # far more than one call per microsecond
        w.log_scalar_ts("fast", float(i))
    hyrax_tbhub.close_tensorboard_logger()
    points = read_logs(logdir).scalar_series(ROOT_RUN)["fast"]
    steps = [s for s, _ in points]
    assert [v for _, v in points] == [float(i) for i in range(3000)]
    assert all(b > a for a, b in zip(steps, steps[1:], strict=False))
