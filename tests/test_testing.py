"""hyrax_tbhub.testing: capture_logs() and read_logs() as a user's test would use them."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import multiprocess
import pytest

import hyrax_tbhub
from hyrax_tbhub import Options, tensorboardx_logger
from hyrax_tbhub.testing import (
    DROPPED_PREFIX,
    ERRORS_PREFIX,
    INTERNAL_ERRORS,
    OVER_CAP,
    REJECTED,
    RESERVED_PREFIX,
    ROOT_RUN,
    STRANGERS,
    TRANSPORT_ERRORS,
    CapturedLogs,
    LoggedEvent,
    capture_logs,
    dropped_tag,
    errors_tag,
    logging_to_a_hub,
    published_hub,
    read_logs,
    reset_logging,
    running_hub,
    wait_until,
)

sys.path.insert(0, os.path.dirname(__file__))

import workers  # noqa: E402  (importable by name in spawn and forkserver children)
from readback import read_log  # noqa: E402

# Python 3.12+ warns on every fork of a process with threads (the hub is one): not silenced
# here, as users see it too; docs/fork-safety.md says why these forks are safe.
pytestmark = [pytest.mark.timeout(120)]

JOIN_S = 60


def _log_then_capture_inside() -> None:
    """In a producer of an outer hub: a nested capture, then logging to the outer hub again."""
    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_scalar("outer/before", 1.0, 0)
    with capture_logs() as inner:
        w.add_scalar("inner", 2.0, 0)
    assert inner.scalars("inner") == [(0, 2.0)]
    w.add_scalar("outer/after", 3.0, 1)


def _run_process(ctx_name: str, target: object, args: tuple[object, ...] = ()) -> None:
    import multiprocessing

    p = multiprocessing.get_context(ctx_name).Process(target=target, args=args)
    p.start()
    p.join(JOIN_S)
    assert p.exitcode == 0, f"{ctx_name} child ended with {p.exitcode}"


# -- the owner alone ---------------------------------------------------------------------------------


def test_owner_scalars_text_and_histogram() -> None:
    np = pytest.importorskip("numpy")
    with capture_logs() as logs:
        w = hyrax_tbhub.get_tensorboard_logger()
        for step in range(5):
            w.add_scalar("loss", 1.0 / (step + 1), step)
        w.add_text("notes", "hello *world*", 7)
        w.add_histogram("weights", np.arange(10.0), 2)
        w.add_scalar("has space", 4.0, 1)
    assert logs.runs == [ROOT_RUN]
    assert logs.scalars("loss") == [(s, pytest.approx(1.0 / (s + 1))) for s in range(5)]
    assert logs.texts("notes") == [(7, "hello *world*")]
    assert logs.texts("notes/text_summary") == logs.texts("notes")  # the stored tag works too
    (hist,) = logs.assert_logged("weights", count=1, kind="histogram")
    assert hist.step == 2 and hist.value is None and hist.summary.histo.num == 10
    assert logs.scalars("has space") == [(1, 4.0)]  # tensorboardX stores it as has_space
    assert logs.tags() == ["has_space", "loss", "notes/text_summary", "weights"]
    assert {e.kind for e in logs.entries} == {"scalar", "text", "histogram"}
    assert all(isinstance(e, LoggedEvent) and e.run == ROOT_RUN and e.wall_time > 0 for e in logs.entries)
    assert logs.counters == {} and logs.dropped == 0 and logs.problems == []
    logs.assert_complete()


def test_nothing_logged() -> None:
    with capture_logs() as logs:
        pass
    assert logs.entries == [] and logs.runs == [ROOT_RUN] and logs.tags() == []
    assert logs.counts() == {}
    logs.assert_not_logged("anything")


def test_log_scalar_ts_steps_are_microseconds_since_start() -> None:
    import time

    with capture_logs() as logs:
        start = time.monotonic_ns()
        hyrax_tbhub.get_tensorboard_logger().log_duration_ts("t/duration_s", start)
        elapsed_us = (time.monotonic_ns() - tensorboardx_logger.tensorboard_start_ns) // 1000
    ((step, value),) = logs.scalars("t/duration_s")
    assert 0 <= step <= elapsed_us and value >= 0.0


def test_add_scalars_sub_runs() -> None:
    with capture_logs() as logs:
        hyrax_tbhub.get_tensorboard_logger().add_scalars("loss", {"train": 1.0, "val": 2.0}, 3)
    assert logs.scalars("loss", run="loss/train") == [(3, 1.0)]
    assert logs.scalars("loss", run="loss/*") == [(3, 1.0), (3, 2.0)]


# -- producers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ctx_name", ["fork", "spawn", "forkserver"])
def test_captures_child_processes(ctx_name: str) -> None:
    with capture_logs() as logs:
        hyrax_tbhub.get_tensorboard_logger().add_scalar("main/step", 1.0, 0)
        _run_process(ctx_name, workers.log_scalars, ("child/value", 5))
    assert logs.scalars("main/step", run=ROOT_RUN) == [(0, 1.0)]
    (child_run,) = [r for r in logs.runs if r != ROOT_RUN]
    assert logs.scalars("child/value", run=child_run) == [(s, s * 0.5) for s in range(5)]
    logs.assert_complete()


def test_captures_a_multiprocess_spawn_pool() -> None:
    with capture_logs() as logs:
        with multiprocess.get_context("spawn").Pool(2) as pool:
            pool.map(workers.log_scalars_task, [("pool/value", 4, 10 * i) for i in range(4)], chunksize=1)
            pool.close()
            pool.join()
    found = logs.assert_logged("pool/value", count=16, run="SpawnPoolWorker-*")
    assert sorted(e.step for e in found) == sorted(s for i in range(4) for s in range(10 * i, 10 * i + 4))
    assert all(r.startswith("SpawnPoolWorker-") for r in logs.runs if r != ROOT_RUN)


def test_a_producer_captures_and_then_logs_to_its_hub_again(hub: Path) -> None:
    _run_process("fork", _log_then_capture_inside)
    hyrax_tbhub.close_tensorboard_logger()
    outer = read_logs(hub)
    assert outer.scalars("outer/before") == [(0, 1.0)]
    assert outer.scalars("outer/after") == [(1, 3.0)]
    outer.assert_not_logged("inner")


# -- life cycle and state -----------------------------------------------------------------------------


def test_refuses_while_this_process_owns_a_hub(hub: Path) -> None:
    with pytest.raises(RuntimeError, match="close_tensorboard_logger"):
        with capture_logs():
            pass  # pragma: no cover
    # The caller's hub is untouched.
    hyrax_tbhub.get_tensorboard_logger().add_scalar("still/works", 1.0, 0)
    hyrax_tbhub.close_tensorboard_logger()
    assert read_log(hub)["."]["still/works"] == [(0, 1.0)]


def test_state_after_the_block() -> None:
    with capture_logs() as logs:
        assert running_hub() is not None
        with pytest.raises(RuntimeError, match="after"):
            logs.entries  # noqa: B018
    assert running_hub() is None and tensorboardx_logger.tensorboard_start_ns == 0
    assert os.environ.get("HYRAX_TBHUB_INFO") is None
    hyrax_tbhub.get_tensorboard_logger().add_scalar("ignored", 1.0, 0)  # a no-op again, no error


def test_temporary_folder_removed_unless_kept(tmp_path: Path) -> None:
    with capture_logs() as logs:
        hyrax_tbhub.get_tensorboard_logger().add_scalar("x", 1.0, 0)
    assert not os.path.exists(logs.log_dir)
    assert logs.scalars("x") == [(0, 1.0)]  # read before removal

    with capture_logs(keep=True) as kept:
        hyrax_tbhub.get_tensorboard_logger().add_scalar("x", 1.0, 0)
    assert os.path.isdir(kept.log_dir)
    assert read_log(kept.log_dir)["."]["x"] == [(0, 1.0)]

    given = tmp_path / "given"
    with capture_logs(given, filename_suffix=".mine") as mine:
        hyrax_tbhub.get_tensorboard_logger().add_scalar("x", 1.0, 0)
    assert mine.log_dir == str(given.resolve())
    assert [p.name for p in given.iterdir() if p.name.endswith(".mine")]

    with capture_logs(logdir=str(tmp_path / "alias")):
        pass
    assert (tmp_path / "alias").is_dir()


def test_an_exception_in_the_block_propagates_and_closes_the_hub() -> None:
    with pytest.raises(ZeroDivisionError):
        with capture_logs() as logs:
            hyrax_tbhub.get_tensorboard_logger().add_scalar("x", 1.0, 0)
            1 / 0  # noqa: B018
    assert running_hub() is None
    with pytest.raises(RuntimeError):
        logs.entries  # noqa: B018


def test_code_under_test_that_closes_the_hub_is_fine() -> None:
    with capture_logs() as logs:
        hyrax_tbhub.get_tensorboard_logger().add_scalar("x", 1.0, 0)
        hyrax_tbhub.close_tensorboard_logger()
    assert logs.scalars("x") == [(0, 1.0)]


def test_code_under_test_that_opens_its_own_hub_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="read_logs"):
        with capture_logs():
            hyrax_tbhub.init_tensorboard_logger(log_dir=str(tmp_path / "own"))
            hyrax_tbhub.get_tensorboard_logger().add_scalar("x", 1.0, 0)
    hyrax_tbhub.close_tensorboard_logger()
    assert read_logs(tmp_path / "own").scalars("x") == [(0, 1.0)]


# -- assertions -----------------------------------------------------------------------------------------


def test_assertion_helpers() -> None:
    with capture_logs() as logs:
        w = hyrax_tbhub.get_tensorboard_logger()
        for step in range(3):
            w.add_scalar("a", float(step), step)
    assert len(logs.assert_logged("a")) == 3
    logs.assert_logged("a", count=3, kind="scalar", run=".")
    logs.assert_logged("a", at_least=2)
    with pytest.raises(AssertionError, match=r"exactly 2 entries of tag 'a'.*found 3(.|\n)*run \."):
        logs.assert_logged("a", count=2)
    with pytest.raises(AssertionError, match="'b'"):
        logs.assert_logged("b")
    with pytest.raises(AssertionError, match="logged 3 times"):
        logs.assert_not_logged("a")
    logs.assert_not_logged("a", run="worker*")
    assert logs.counts() == {".": {"a": 3}}
    assert "a" in logs.describe()


# -- reading ----------------------------------------------------------------------------------------------


def encode_scalar(tag: str, value: float, step: int, wall_time: float) -> bytes:
    """One scalar event as tensorboardX's protobuf class serialises it."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)])
    return Event(wall_time=wall_time, step=step, summary=summary).SerializeToString()


def _write_records(path: Path, records: list[bytes]) -> None:
    """An event file framed by tensorboardX's own TFRecord writer."""
    from tensorboardX.record_writer import RecordWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = RecordWriter(str(path))
    for record in records:
        writer.write(record)
    writer.close()


def test_read_logs_counters_are_kept_apart(tmp_path: Path) -> None:
    _write_records(tmp_path / "events.out.tfevents.1.host", [
        encode_scalar("real", 1.0, 1, 10.0),
        encode_scalar(dropped_tag("worker"), 3, 5, 11.0),
        encode_scalar(dropped_tag("worker"), 7, 6, 12.0),
        encode_scalar(errors_tag("worker"), 1, 6, 12.0),
        encode_scalar(TRANSPORT_ERRORS, 2, 6, 12.0),
    ])
    _write_records(tmp_path / "worker" / "events.out.tfevents.1.host", [encode_scalar("w", 2.0, 0, 10.0)])
    logs = read_logs(tmp_path)
    assert logs.runs == [ROOT_RUN, "worker"]
    assert logs.tags() == ["real", "w"]
    assert logs.counters == {
        dropped_tag("worker"): 7.0,
        errors_tag("worker"): 1.0,
        TRANSPORT_ERRORS: 2.0,
    }
    assert (logs.dropped, logs.errors, logs.transport_errors) == (7, 1, 2)
    with pytest.raises(AssertionError, match="not complete"):
        logs.assert_complete()


def test_read_logs_reads_only_the_runs_asked_for(tmp_path: Path) -> None:
    """``runs=`` skips other runs' files (the fast path for big logs); counters need the root run."""
    _write_records(tmp_path / "events.out.tfevents.1.host", [
        encode_scalar("owner", 1.0, 1, 10.0),
        encode_scalar(dropped_tag("worker_0"), 4, 1, 11.0),
    ])
    for run in ("worker_0", "worker_1", "other"):
        _write_records(tmp_path / run / "events.out.tfevents.1.host", [encode_scalar(run, 2.0, 0, 10.0)])
    (tmp_path / "other" / "events.out.tfevents.2.host").write_bytes(b"not a record")
    logs = read_logs(tmp_path, runs="worker_*")
    assert logs.runs == ["worker_0", "worker_1"]
    assert logs.tags() == ["worker_0", "worker_1"] and logs.counters == {} and logs.problems == []
    root = read_logs(tmp_path, runs=ROOT_RUN)
    assert root.runs == [ROOT_RUN] and root.counters == {DROPPED_PREFIX + "worker_0": 4.0}
    assert read_logs(tmp_path, runs=[ROOT_RUN, "other"]).runs == [ROOT_RUN, "other"]
    assert len(read_logs(tmp_path).problems) == 1


def test_scalar_series_scalars_by_run_and_counts_by_kind(tmp_path: Path) -> None:
    with capture_logs(tmp_path / "log") as logs:
        w = hyrax_tbhub.get_tensorboard_logger()
        w.add_scalar("a", 1.0, 0)
        w.add_scalar("a", 2.0, 1)
        w.add_scalar("b", 3.0, 0)
        w.add_text("note", "hi", 0)
        _run_process("spawn", workers.log_scalars, ("child", 2))
    assert logs.scalar_series(ROOT_RUN) == {"a": [(0, 1.0), (1, 2.0)], "b": [(0, 3.0)]}
    (child_run,) = [r for r in logs.runs if r != ROOT_RUN]
    assert logs.scalar_series(child_run) == {"child": [(0, 0.0), (1, 0.5)]}
    assert set(logs.scalar_series()) == {"a", "b", "child"}
    assert logs.scalars_by_run() == {run: logs.scalar_series(run) for run in logs.runs}
    assert logs.counts(kind="text") == {ROOT_RUN: {"note/text_summary": 1}}
    assert logs.counts(kind="scalar") == {ROOT_RUN: {"a": 2, "b": 1}, child_run: {"child": 2}}


def test_counter_names_are_the_hubs() -> None:
    """The exported counter tags are the ones the hub writes (a dropped event lands under them)."""
    assert RESERVED_PREFIX == "hyrax_tbhub/"  # the documented prefix of every counter tag
    assert all(name.startswith(RESERVED_PREFIX) for name in (
        DROPPED_PREFIX, ERRORS_PREFIX, TRANSPORT_ERRORS, INTERNAL_ERRORS, REJECTED, STRANGERS, OVER_CAP))
    assert (dropped_tag("w"), errors_tag("w")) == (DROPPED_PREFIX + "w", ERRORS_PREFIX + "w")
    with capture_logs(options=Options(queue_max_events=1, send_interval=5.0, send_min_gap=5.0)) as logs:
        _run_process("fork", workers.log_scalars, ("flood", 500))
    (run,) = [r for r in logs.runs if r != ROOT_RUN]
    assert logs.counters[dropped_tag(run)] == logs.dropped > 0


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_read_logs_reports_bad_records(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    _write_records(path, [encode_scalar("a", float(i), i, 10.0) for i in range(3)])
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-3]
    else:
        data[-6] ^= 0xFF  # inside the last record's payload
    path.write_bytes(bytes(data))
    logs = read_logs(tmp_path)
    assert logs.scalars("a") == [(0, 0.0), (1, 1.0)]
    (problem,) = logs.problems
    assert ("truncated" if damage == "truncate" else "corrupt") in problem
    with pytest.raises(AssertionError, match="not complete"):
        logs.assert_complete()


def test_read_logs_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_logs(tmp_path / "nope")


def test_tensor_scalars_and_other_kinds_are_decoded(tmp_path: Path) -> None:
    pb = pytest.importorskip("tensorboard.compat.proto.event_pb2")
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto

    def value(tag: str, plugin: str, tensor: TensorProto) -> bytes:
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=plugin))
        v = Summary.Value(tag=tag, metadata=meta, tensor=tensor)
        return pb.Event(step=4, wall_time=1.0, summary=Summary(value=[v])).SerializeToString()

    _write_records(tmp_path / "events.out.tfevents.1.host", [
        value("f", "scalars", TensorProto(dtype=1, float_val=[1.5])),
        value("d", "scalars", TensorProto(dtype=2, tensor_content=struct.pack("<d", 2.5))),
        value("pr", "pr_curves", TensorProto(dtype=1, float_val=[1.0, 2.0])),
        value("raw", "", TensorProto(dtype=1, float_val=[1.0])),
    ])
    logs = read_logs(tmp_path)
    assert logs.scalars("f") == [(4, 1.5)] and logs.scalars("d") == [(4, 2.5)]
    kinds = {e.tag: (e.kind, e.plugin) for e in logs.entries}
    assert kinds["pr"] == ("other", "pr_curves") and kinds["raw"] == ("tensor", "")


def test_agrees_with_tensorboard_reader() -> None:
    pytest.importorskip("tensorboard")
    with capture_logs(keep=True) as logs:
        w = hyrax_tbhub.get_tensorboard_logger()
        for step in range(20):
            w.add_scalar("loss", step * 0.25, step)
        _run_process("spawn", workers.log_scalars, ("child", 7))
    expected = read_log(logs.log_dir)
    ours = {run: {tag: logs.scalars(tag, run=run) for tag in logs.tags(run)} for run in logs.runs}
    assert ours == expected


def test_captured_logs_is_a_plain_object() -> None:
    # Users may build one in their own helpers; the empty one reports it has not been read.
    empty = CapturedLogs(log_dir="/nowhere")
    with pytest.raises(RuntimeError):
        empty.runs  # noqa: B018


# -- watching a live hub ----------------------------------------------------------------------------------


def test_running_hub_sees_producers_join_and_leave(hub: Path) -> None:
    """The probe's joined runs are the runs the producers' events land in; once they exit, the hub
    holds no connection of theirs."""
    import multiprocessing

    probe = running_hub()
    assert probe is not None and probe.alive and probe.log_dir == str(hub)
    assert probe.connections() == 0 and probe.joined_runs() == [] and probe.strangers_rejected == 0
    ctx = multiprocessing.get_context()
    leave = ctx.Event()
    procs = [ctx.Process(target=workers.log_flush_and_stay, args=(f"probe/{i}", 3, leave)) for i in range(2)]
    for p in procs:
        p.start()
    try:
        wait_until(lambda: len(probe.joined_runs()) == 2, JOIN_S, "both producers to join")
        joined = sorted(probe.joined_runs())
        assert probe.connections() >= 2
    finally:
        leave.set()
        for p in procs:
            p.join(JOIN_S)
    assert [p.exitcode for p in procs] == [0, 0]
    wait_until(lambda: probe.connections() == 0, JOIN_S, "the exited producers' connections to close")
    hyrax_tbhub.close_tensorboard_logger()
    assert not probe.alive
    logs = read_logs(hub)
    logs.assert_complete()
    assert joined == [r for r in logs.runs if r != ROOT_RUN]
    landed = sorted(e.tag for e in logs.entries if e.run in joined)
    assert landed == sorted(["probe/0", "probe/1"] * 3)


def test_published_hub_is_the_one_children_find(hub: Path) -> None:
    published, probe = published_hub(), running_hub()
    assert published is not None and probe is not None
    expected = (str(hub), probe.address, os.getpid())
    assert (published.log_dir, published.address, published.owner_pid) == expected
    assert os.path.isfile(published.hub_file)
    hyrax_tbhub.close_tensorboard_logger()
    assert published_hub() is None and running_hub() is None


def test_wait_until_names_what_it_waited_for() -> None:
    wait_until(lambda: True, 0, "nothing")
    with pytest.raises(TimeoutError, match="waiting for the impossible"):
        wait_until(lambda: False, 0.05, "the impossible")


def test_reset_logging_closes_the_hub_so_the_next_test_can_capture(tmp_path: Path) -> None:
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(tmp_path / "left_open"))
    hyrax_tbhub.get_tensorboard_logger().add_scalar("first", 1.0, 0)
    reset_logging()
    assert running_hub() is None and published_hub() is None
    assert read_logs(tmp_path / "left_open").scalars("first") == [(0, 1.0)]
    with capture_logs() as logs:  # raises if this process still owned a hub
        hyrax_tbhub.get_tensorboard_logger().add_scalar("second", 2.0, 0)
    assert logs.scalars("second") == [(0, 2.0)]


def test_logging_to_a_hub_says_whether_calls_reach_a_hub() -> None:
    """In the owner from init to close; in a spawned child once its first call found the hub."""
    import multiprocessing

    assert not logging_to_a_hub()
    with capture_logs() as logs:
        assert logging_to_a_hub()
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            before, after = pool.apply(workers.logging_to_a_hub_before_and_after_a_call, ("child",))
    assert not logging_to_a_hub()
    assert (before, after) == (False, True)
    assert logs.scalars("child") == [(0, 1.0)]
