"""Tests for ``hyrax-tbhub inspect`` (hyrax_tbhub._tools.inspect).

Logs are written with plain tensorboardX writers and fixed wall times, so the table and the JSON can
be compared exactly.

Mechanism test (it imports private modules on purpose): the report model of ``hyrax-tbhub inspect``
(``_tools.inspect.inspect_logdir`` and its dataclasses), beside the command itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboardX import SummaryWriter  # noqa: E402

from hyrax_tbhub._tools.inspect import inspect_logdir, main  # noqa: E402
from hyrax_tbhub.testing import TRANSPORT_ERRORS, dropped_tag, errors_tag  # noqa: E402

pytestmark = pytest.mark.timeout(60)

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def _writer(path: Path, suffix: str) -> SummaryWriter:
    # A unique suffix per writer: two writers in one directory within a second share a file name.
    return SummaryWriter(str(path), filename_suffix=f".{suffix}")


def _write_sample(logdir: Path) -> None:
    """The hub's layout: root run with the owner's data and the hub counters, one run per producer."""
    root = _writer(logdir, "root")
    for step in range(10):
        root.add_scalar("train/loss", 1.0 / (step + 1), step, walltime=T0 + step)
    root.add_histogram("train/weights", np.arange(100, dtype=np.float64), 3, walltime=T0 + 20)
    root.add_image("train/sample", np.zeros((3, 8, 8), dtype=np.float32), 4, walltime=T0 + 21)
    root.add_text("notes", "hello", 0, walltime=T0 + 22)
    # Counters: the latest value is the total.
    root.add_scalar(dropped_tag("dataloader_worker_0"), 3, 1, walltime=T0 + 30)
    root.add_scalar(dropped_tag("dataloader_worker_0"), 5, 2, walltime=T0 + 31)
    root.add_scalar(errors_tag("dataloader_worker_1"), 2, 1, walltime=T0 + 32)
    root.add_scalar(dropped_tag("gone_worker"), 4, 1, walltime=T0 + 33)
    root.add_scalar(TRANSPORT_ERRORS, 1, 1, walltime=T0 + 34)
    root.close()

    w0 = _writer(logdir / "dataloader_worker_0", "w0")
    for step in range(5):
        w0.add_scalar("DataProvider/file_read_time_s", 0.01 * step, step, walltime=T0 + 100 + step)
    w0.close()

    w1 = _writer(logdir / "dataloader_worker_1", "w1")
    for step in (10, 11, 12):
        w1.add_scalar("DataProvider/file_read_time_s", 0.02, step, walltime=T0 + 200 + step)
    w1.close()

    # add_scalars opens one writer per key in nested folders: runs "worker/loss/train" and ".../val";
    # the parent writer itself writes a file with no summaries (run "worker").
    nested = _writer(logdir / "worker", "nested")
    nested.add_scalars("loss", {"train": 1.0, "val": 2.0}, 7, walltime=T0 + 300)
    nested.close()


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    logdir = tmp_path / "logs"
    _write_sample(logdir)
    return logdir


def _run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


EXPECTED_TABLE = """\
logdir {logdir}
7 runs, 6 event files, 28 points; dropped 9, errors 2, transport errors 1

run .  (1 event file; dropped -, errors -)
  tag                                      kind         count  steps   wall time (UTC)
  hyrax_tbhub/dropped/dataloader_worker_0  scalar           2  1..2    2023-11-14T22:13:50.000Z .. 2023-11-14T22:13:51.000Z
  hyrax_tbhub/dropped/gone_worker          scalar           1  1..1    2023-11-14T22:13:53.000Z .. 2023-11-14T22:13:53.000Z
  hyrax_tbhub/errors/dataloader_worker_1   scalar           1  1..1    2023-11-14T22:13:52.000Z .. 2023-11-14T22:13:52.000Z
  hyrax_tbhub/transport_errors             scalar           1  1..1    2023-11-14T22:13:54.000Z .. 2023-11-14T22:13:54.000Z
  notes/text_summary                       text             1  0..0    2023-11-14T22:13:42.000Z .. 2023-11-14T22:13:42.000Z
  train/loss                               scalar          10  0..9    2023-11-14T22:13:20.000Z .. 2023-11-14T22:13:29.000Z
  train/sample                             image            1  4..4    2023-11-14T22:13:41.000Z .. 2023-11-14T22:13:41.000Z
  train/weights                            histogram        1  3..3    2023-11-14T22:13:40.000Z .. 2023-11-14T22:13:40.000Z

run dataloader_worker_0  (1 event file; dropped 5, errors -)
  tag                                      kind         count  steps   wall time (UTC)
  DataProvider/file_read_time_s            scalar           5  0..4    2023-11-14T22:15:00.000Z .. 2023-11-14T22:15:04.000Z

run dataloader_worker_1  (1 event file; dropped -, errors 2)
  tag                                      kind         count  steps   wall time (UTC)
  DataProvider/file_read_time_s            scalar           3  10..12  2023-11-14T22:16:50.000Z .. 2023-11-14T22:16:52.000Z

run gone_worker  (0 event files; dropped 4, errors -)
  (no event files: this run is only named by a hub counter)

run worker  (1 event file; dropped -, errors -)
  (no summary data)

run worker/loss/train  (1 event file; dropped -, errors -)
  tag                                      kind         count  steps   wall time (UTC)
  loss                                     scalar           1  7..7    2023-11-14T22:18:20.000Z .. 2023-11-14T22:18:20.000Z

run worker/loss/val  (1 event file; dropped -, errors -)
  tag                                      kind         count  steps   wall time (UTC)
  loss                                     scalar           1  7..7    2023-11-14T22:18:20.000Z .. 2023-11-14T22:18:20.000Z
"""  # noqa: E501  (the table is wider than the code)


def test_table_lists_runs_tags_counts_ranges_and_counters(sample: Path, capsys: Any) -> None:
    code, out, err = _run_main(capsys, str(sample))
    assert code == 0
    assert err == ""
    assert out == EXPECTED_TABLE.format(logdir=sample.resolve())


def _tag(kind: str, count: int, steps: tuple[int, int], walls: tuple[float, float]) -> dict[str, Any]:
    from hyrax_tbhub._tools.inspect import utc_iso

    plugin = {"scalar": "scalars", "histogram": "histograms", "image": "images", "text": "text"}[kind]
    return {
        "kind": kind,
        "plugin": plugin,
        "count": count,
        "step_min": steps[0],
        "step_max": steps[1],
        "step_regressions": 0,
        "wall_time_min": walls[0],
        "wall_time_max": walls[1],
        "wall_time_min_utc": utc_iso(walls[0]),
        "wall_time_max_utc": utc_iso(walls[1]),
    }


def test_json_has_documented_keys_and_exact_content(sample: Path, capsys: Any) -> None:
    code, out, err = _run_main(capsys, "--json", str(sample))
    assert code == 0
    assert err == ""
    data = json.loads(out)
    assert list(data) == [
        "format", "logdir", "transport_errors", "internal_errors", "rejected", "strangers", "over_cap",
        "total_dropped", "total_errors", "runs", "problems",
    ]  # fmt: skip
    assert [data[k] for k in ("internal_errors", "rejected", "strangers", "over_cap")] == [None] * 4
    assert data["format"] == "hyrax_tbhub.inspect/1"
    assert data["logdir"] == str(sample.resolve())
    assert (data["transport_errors"], data["total_dropped"], data["total_errors"]) == (1, 9, 2)
    assert data["problems"] == []
    assert list(data["runs"]) == [
        ".", "dataloader_worker_0", "dataloader_worker_1", "gone_worker",
        "worker", "worker/loss/train", "worker/loss/val",
    ]  # fmt: skip

    root = data["runs"]["."]
    assert root["path"] == str(sample.resolve())
    assert (root["dropped"], root["errors"]) == (None, None)
    assert root["tags"]["train/loss"] == _tag("scalar", 10, (0, 9), (T0, T0 + 9))
    assert root["tags"]["train/weights"] == _tag("histogram", 1, (3, 3), (T0 + 20, T0 + 20))
    assert root["tags"]["train/sample"] == _tag("image", 1, (4, 4), (T0 + 21, T0 + 21))
    assert root["tags"]["notes/text_summary"] == _tag("text", 1, (0, 0), (T0 + 22, T0 + 22))
    assert root["tags"][dropped_tag("dataloader_worker_0")]["count"] == 2
    [root_file] = root["event_files"]
    assert root_file["file"].startswith("events.out.tfevents.") and root_file["file"].endswith(".root")
    assert root_file["size_bytes"] == root_file["bytes_read"] == (sample / root_file["file"]).stat().st_size
    assert root_file["records"] == 19  # file_version + 18 summaries

    w0 = data["runs"]["dataloader_worker_0"]
    assert (w0["dropped"], w0["errors"]) == (5, None)  # the latest value, not the sum
    assert w0["tags"] == {"DataProvider/file_read_time_s": _tag("scalar", 5, (0, 4), (T0 + 100, T0 + 104))}
    assert w0["event_files"][0]["file"].startswith("dataloader_worker_0/events.out.tfevents.")
    w1 = data["runs"]["dataloader_worker_1"]
    assert (w1["dropped"], w1["errors"]) == (None, 2)
    assert w1["tags"] == {"DataProvider/file_read_time_s": _tag("scalar", 3, (10, 12), (T0 + 210, T0 + 212))}

    gone = data["runs"]["gone_worker"]
    assert (gone["dropped"], gone["event_files"], gone["tags"]) == (4, [], {})
    assert data["runs"]["worker"]["tags"] == {}
    assert data["runs"]["worker/loss/train"]["tags"] == {
        "loss": _tag("scalar", 1, (7, 7), (T0 + 300, T0 + 300))
    }


def test_library_function_returns_dataclasses(sample: Path) -> None:
    report = inspect_logdir(sample)
    assert report.event_file_count == 6
    assert report.runs["dataloader_worker_0"].dropped == 5
    assert report.runs["."].counters[TRANSPORT_ERRORS] == 1
    loss = report.runs["."].tags["train/loss"]
    assert (loss.kind, loss.count, loss.step_min, loss.step_max) == ("scalar", 10, 0, 9)
    assert report.problems == []


def test_every_hub_wide_counter_is_reported(tmp_path: Path, capsys: Any) -> None:
    """internal_errors, rejected, strangers and over_cap: in the JSON and, when not zero, the table."""
    with SummaryWriter(str(tmp_path)) as w:
        w.add_scalar("kept", 1.0, 0)
        for n, tag in enumerate(("internal_errors", "rejected", "strangers", "over_cap"), start=1):
            w.add_scalar(f"hyrax_tbhub/{tag}", float(n), 0)
    report = inspect_logdir(tmp_path)
    assert (report.internal_errors, report.rejected, report.strangers, report.over_cap) == (1, 2, 3, 4)
    code, out, _err = _run_main(capsys, str(tmp_path))
    assert code == 0
    assert "internal errors 1, rejected 2, strangers 3, over cap 4" in out.splitlines()[1]


def test_steps_going_backwards_are_flagged(tmp_path: Path, capsys: Any) -> None:
    # TensorBoard's Rust loader serves steps 5,6,7,1,2,9,3 as 1,2,3: worth a warning in the table.
    w = _writer(tmp_path, "x")
    for i, step in enumerate((5, 6, 7, 1, 2, 9, 3)):
        w.add_scalar("shared", float(i), step, walltime=T0 + i)
    w.close()
    tag = inspect_logdir(tmp_path).runs["."].tags["shared"]
    assert (tag.count, tag.step_min, tag.step_max, tag.step_regressions) == (7, 1, 9, 2)
    code, out, _ = _run_main(capsys, str(tmp_path))
    assert code == 0
    assert "[step went backwards 2x: TensorBoard hides earlier points]" in out


def test_missing_folder_exits_2(tmp_path: Path, capsys: Any) -> None:
    code, out, err = _run_main(capsys, str(tmp_path / "nope"))
    assert (code, out) == (2, "")
    assert err == f"hyrax-tbhub inspect: no such directory: {tmp_path / 'nope'}\n"


def test_file_instead_of_folder_exits_2(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "f.txt").write_text("x")
    code, out, err = _run_main(capsys, str(tmp_path / "f.txt"))
    assert (code, out) == (2, "")
    assert "not a directory" in err


def test_folder_without_event_files_exits_1(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("not an event file")
    code, out, err = _run_main(capsys, "--json", str(tmp_path))
    assert (code, out) == (1, "")
    assert err == f"hyrax-tbhub inspect: no event files (*tfevents*) found under {tmp_path.resolve()}\n"


def _single_file_logdir(tmp_path: Path, steps: int) -> Path:
    logdir = tmp_path / "logs"
    w = _writer(logdir, "one")
    for step in range(steps):
        w.add_scalar("train/loss", float(step), step, walltime=T0 + step)
    w.close()
    [path] = logdir.glob("*tfevents*")
    return path


def _record_offsets(path: Path) -> list[int]:
    """Start offset of every record, from TensorBoard's reader (payload + 16 bytes of framing)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    offsets, pos = [], 0
    for record in RawEventFileLoader(str(path)).Load():
        offsets.append(pos)
        pos += len(record) + 16
    assert pos == path.stat().st_size
    return offsets


def test_truncated_last_record_is_reported_and_the_rest_counted(tmp_path: Path, capsys: Any) -> None:
    path = _single_file_logdir(tmp_path, 10)
    offsets = _record_offsets(path)
    size = path.stat().st_size
    cut = offsets[-1] + (size - offsets[-1]) // 2  # the last record (step 9) cut in half
    with open(path, "r+b") as f:
        f.truncate(cut)

    code, out, err = _run_main(capsys, "--json", str(path.parent))
    assert code == 0
    data = json.loads(out)
    loss = data["runs"]["."]["tags"]["train/loss"]
    assert (loss["count"], loss["step_min"], loss["step_max"]) == (9, 0, 8)
    [problem] = data["problems"]
    assert problem["kind"] == "truncated"
    assert problem["run"] == "."
    assert problem["file"] == path.name
    assert (problem["offset"], problem["unread_bytes"]) == (offsets[-1], cut - offsets[-1])
    [file_report] = data["runs"]["."]["event_files"]
    assert (file_report["size_bytes"], file_report["bytes_read"], file_report["records"]) == (
        cut, offsets[-1], 10,
    )  # fmt: skip
    assert err.startswith(f"WARNING: {path.name}: truncated: last record at byte {offsets[-1]} is cut short")
    assert err.count("\n") == 1

    code, out, err = _run_main(capsys, str(path.parent))  # the table says so too, still exit 0
    assert code == 0
    assert "1 damaged file (see warnings)" in out
    assert "train/loss  scalar           9  0..8" in out
    assert err.startswith("WARNING: ")


def test_truncated_inside_header_is_reported(tmp_path: Path, capsys: Any) -> None:
    path = _single_file_logdir(tmp_path, 3)
    offsets = _record_offsets(path)
    with open(path, "r+b") as f:
        f.truncate(offsets[-1] + 5)  # only 5 bytes of the last record's 12-byte header
    report = inspect_logdir(path.parent)
    [problem] = report.problems
    assert (problem.kind, problem.offset, problem.unread_bytes) == ("truncated", offsets[-1], 5)
    assert report.runs["."].tags["train/loss"].count == 2


def test_corrupt_byte_in_the_middle_is_reported_and_the_part_before_counted(
    tmp_path: Path, capsys: Any
) -> None:
    path = _single_file_logdir(tmp_path, 10)
    offsets = _record_offsets(path)
    data = bytearray(path.read_bytes())
    # Records: 0 = file_version, 1..10 = steps 0..9. Flip a payload byte of record 6 (step 5).
    data[offsets[6] + 14] ^= 0xFF
    path.write_bytes(bytes(data))

    code, out, err = _run_main(capsys, "--json", str(path.parent))
    assert code == 0
    report = json.loads(out)
    loss = report["runs"]["."]["tags"]["train/loss"]
    # TensorBoard's reader stops at the bad CRC: steps 0..4 are readable, nothing after.
    assert (loss["count"], loss["step_min"], loss["step_max"]) == (5, 0, 4)
    [problem] = report["problems"]
    assert (problem["kind"], problem["offset"]) == ("corrupt", offsets[6])
    assert problem["unread_bytes"] == len(data) - offsets[6]
    assert "fails its data CRC" in problem["message"]
    assert err.startswith(f"WARNING: {path.name}: corrupt: record at byte {offsets[6]} fails its data CRC")


def test_corrupt_length_header_is_not_mistaken_for_truncation(tmp_path: Path) -> None:
    path = _single_file_logdir(tmp_path, 10)
    offsets = _record_offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[3] + 6] ^= 0x40  # the length now claims far more bytes than the file has
    path.write_bytes(bytes(data))
    report = inspect_logdir(path.parent)
    [problem] = report.problems
    assert (problem.kind, problem.offset) == ("corrupt", offsets[3])
    assert "header" in problem.message
    assert report.runs["."].tags["train/loss"].count == 2


def test_damaged_file_does_not_hide_other_runs(sample: Path, capsys: Any) -> None:
    [w0_file] = (sample / "dataloader_worker_0").glob("*tfevents*")
    with open(w0_file, "r+b") as f:
        f.truncate(w0_file.stat().st_size - 3)
    code, out, err = _run_main(capsys, "--json", str(sample))
    assert code == 0
    data = json.loads(out)
    assert data["runs"]["dataloader_worker_0"]["tags"]["DataProvider/file_read_time_s"]["count"] == 4
    assert data["runs"]["dataloader_worker_1"]["tags"]["DataProvider/file_read_time_s"]["count"] == 3
    assert data["runs"]["."]["tags"]["train/loss"]["count"] == 10
    assert [p["run"] for p in data["problems"]] == ["dataloader_worker_0"]
    assert err.startswith("WARNING: dataloader_worker_0/")


def test_module_runs_as_a_script(sample: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hyrax_tbhub._tools.inspect", "--json", str(sample)],
        capture_output=True,
        text=True,
        timeout=50,
        env={**os.environ, "PYTHONWARNINGS": "error::ResourceWarning"},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["runs"]["dataloader_worker_1"]["errors"] == 2
