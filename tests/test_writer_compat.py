"""Where hyrax_tbhub.SummaryWriter used to differ from tensorboardX's and torch's writers.

Each test compares with the stock writer doing the same calls, read back with TensorBoard's own
event-file reader: ``use_metadata`` on the fast paths, bfloat16 tensors, ``file_writer`` and
``_get_file_writer()`` in the owner and in children, and a writer used after ``close()``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import compat_workers
import pytest
from tb_events import number, read_values

import hyrax_tbhub
from hyrax_tbhub import SummaryWriter

pytestmark = pytest.mark.timeout(120)
tensorboardX = pytest.importorskip("tensorboardX")


@contextmanager
def _ours(kind: str, log_dir: Path) -> Iterator[Any]:
    """Our writer of ``kind``: the SummaryWriter class, or the process-wide handle."""
    if kind == "writer":
        w = SummaryWriter(str(log_dir))
        try:
            yield w
        finally:
            w.close()
    else:
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(log_dir))
        try:
            yield hyrax_tbhub.get_tensorboard_logger()
        finally:
            hyrax_tbhub.close_tensorboard_logger()


def _metadata_calls(w: Any) -> None:
    with w.use_metadata(global_step=7, walltime=1234.5):
        w.add_scalar("plain", 1.5)
        w.add_text("note", "hello")
    with w.use_metadata(global_step=8):
        w.add_scalar("step_only", 2.5)
        w.add_text("step_only", "only a step")
    with w.use_metadata(walltime=4321.0):
        w.add_scalar("wall_only", 3.5, 2)
        w.add_text("wall_only", "only a wall time", 2)
    w.add_scalar("after", 4.5, 3, 99.0)


def _no_now(values: list[Any]) -> list[Any]:
    # A wall time neither given nor from the metadata is the time of the call: not comparable.
    fixed = {"plain", "note/text_summary", "wall_only", "wall_only/text_summary", "after"}
    return [v if v.tag in fixed else v._replace(wall_time=None) for v in values]


@pytest.mark.parametrize("kind", ["writer", "handle"])
def test_use_metadata_sets_step_and_wall_time_of_plain_numbers_and_strings(tmp_path: Path, kind: str) -> None:
    with tensorboardX.SummaryWriter(str(tmp_path / "stock")) as stock:
        _metadata_calls(stock)
    with _ours(kind, tmp_path / "ours") as ours:
        _metadata_calls(ours)
    expected = _no_now(read_values(tmp_path / "stock"))
    assert [(v.tag, v.step) for v in expected][:2] == [("plain", 7), ("note/text_summary", 7)]
    assert _no_now(read_values(tmp_path / "ours")) == expected


@pytest.mark.parametrize("kind", ["writer", "handle"])
def test_use_metadata_raises_as_tensorboardx_when_nested_or_empty(tmp_path: Path, kind: str) -> None:
    with _ours(kind, tmp_path / "ours") as ours:
        with pytest.raises(AssertionError, match="At least one"):
            with ours.use_metadata():
                pass
        with ours.use_metadata(global_step=1):
            with pytest.raises(AssertionError, match="already set"):
                with ours.use_metadata(global_step=2):
                    pass


# -- bfloat16 and float16 tensors ------------------------------------------------------------------

def _tensor_calls(torch: Any, dtype: Any) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """method -> (tag, args after the tag), every tensor of ``dtype``."""
    g = torch.Generator().manual_seed(0)

    def t(*shape: int) -> Any:
        return torch.rand(*shape, generator=g).to(dtype)

    return {
        "add_scalar": ("s", (t(1).squeeze(), 1)),
        "add_histogram": ("h", (t(100), 1)),
        "add_image": ("i", (t(3, 8, 8), 1)),
        "add_images": ("ii", (t(2, 3, 8, 8), 1)),
        "add_pr_curve": ("p", ((t(50) > 0.5).to(dtype), t(50), 1)),
        "add_audio": ("a", (t(1, 400) * 2 - 1, 1)),
        "add_mesh": ("m", (t(1, 4, 3), t(1, 4, 3) * 255, torch.tensor([[[0, 1, 2], [1, 2, 3]]]))),
        "add_tensor": ("t", (t(2, 3), 1)),
    }


@pytest.mark.torch
@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
@pytest.mark.parametrize("method", [
    "add_scalar", "add_histogram", "add_image", "add_images", "add_pr_curve", "add_audio", "add_mesh",
    "add_tensor"])
def test_what_torchs_writer_takes_in_half_precision_ours_takes_as_it_does(
    tmp_path: Path, method: str, dtype_name: str
) -> None:
    """bfloat16 and float16 tensors: where torch's writer logs them, ours logs them too, and a
    bfloat16 tensor logs as torch casts it (to float16)."""
    torch = pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    if method == "add_audio":
        pytest.importorskip("soundfile", reason="tensorboardX's add_audio needs soundfile; torch's does not")
    dtype = getattr(torch, dtype_name)
    tag, args = _tensor_calls(torch, dtype)[method]
    with TorchWriter(str(tmp_path / "torch")) as stock:
        try:
            getattr(stock, method)(tag, *args)
        except Exception as exc:  # torch's writer refuses it: nothing to be compatible with
            pytest.skip(f"torch's writer raises {type(exc).__name__}: {exc}")
    with SummaryWriter(str(tmp_path / "ours")) as ours:
        getattr(ours, method)(tag, *args)
    got = [v._replace(wall_time=None) for v in read_values(tmp_path / "ours")]
    assert got, "nothing logged"
    if dtype_name == "bfloat16":
        cast = tuple(a.to(torch.float16) if isinstance(a, torch.Tensor) and a.dtype == dtype else a
                     for a in args)
        with SummaryWriter(str(tmp_path / "cast")) as ours_cast:
            getattr(ours_cast, method)(tag, *cast)
        assert got == [v._replace(wall_time=None) for v in read_values(tmp_path / "cast")]


# -- file_writer and _get_file_writer() ------------------------------------------------------------

def test_file_writer_takes_summaries_and_events_of_both_libraries(tmp_path: Path) -> None:
    torch_summary = pytest.importorskip("torch.utils.tensorboard.summary")
    from tensorboard.compat.proto.event_pb2 import Event as TorchEvent
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.summary import scalar

    with SummaryWriter(str(tmp_path / "log")) as w:
        fw = w.file_writer
        assert fw is not None and fw.get_logdir() == w.get_logdir()
        fw.add_summary(scalar("tbx", 1.0), 1)
        fw.add_summary(torch_summary.scalar("torch", 2.0), 2, 10.0)
        w._get_file_writer().add_event(Event(summary=scalar("ev", 3.0)), 3, 11.0)
        w._get_file_writer().add_event(TorchEvent(summary=torch_summary.scalar("tev", 4.0)), 4)
        fw.flush()
        assert w.all_writers == {w.get_logdir(): fw}
    assert w.file_writer is None and w.all_writers is None  # as both libraries, after close
    got = {(v.tag, v.step, number(v)) for v in read_values(tmp_path / "log")}
    assert got == {("tbx", 1, 1.0), ("torch", 2, 2.0), ("ev", 3, 3.0), ("tev", 4, 4.0)}


@pytest.mark.parametrize("kind", ["writer", "handle"])
def test_file_writer_honours_use_metadata_as_tensorboardx(tmp_path: Path, kind: str) -> None:
    from tensorboardX.summary import scalar

    def calls(w: Any) -> None:
        with w.use_metadata(global_step=5, walltime=50.0):
            w.file_writer.add_summary(scalar("fw", 1.0))
            w._get_file_writer().add_summary(scalar("gfw", 2.0))

    with tensorboardX.SummaryWriter(str(tmp_path / "stock")) as stock:
        calls(stock)
    with _ours(kind, tmp_path / "ours") as ours:
        calls(ours)
    assert read_values(tmp_path / "ours") == read_values(tmp_path / "stock")


METHODS = [m for m in ("fork", "spawn") if m in multiprocessing.get_all_start_methods()]


@pytest.mark.parametrize("method", METHODS)
def test_file_writer_works_in_a_child_handed_the_writer(tmp_path: Path, method: str) -> None:
    log_dir = tmp_path / "log"
    with SummaryWriter(str(log_dir)) as w:
        with multiprocessing.get_context(method).Pool(1) as pool:
            folder = pool.apply_async(compat_workers.file_writer_calls, (w, "child")).get(60)
    assert Path(folder).parent == log_dir  # the child's own run
    run = Path(folder).name
    got = {(v.run, v.tag, v.step, v.wall_time if v.step != 3 else None) for v in read_values(log_dir)}
    assert got == {(run, "child", 3, None), (run, "child", 4, 1234.5), (run, "child/meta", 9, 99.0),
                   (run, "child/meta/text_summary", 9, 99.0)}


# -- after close() ---------------------------------------------------------------------------------

def test_a_writer_used_after_close_logs_again_into_a_new_file(tmp_path: Path) -> None:
    """As tensorboardX and torch: close() then add_* opens a new event file; nothing is dropped."""
    log_dir = tmp_path / "log"
    w = SummaryWriter(str(log_dir), purge_step=0)
    w.add_scalar("x", 1.0, 0)
    w.close()
    first = sorted(log_dir.glob("*tfevents*"))
    w.add_scalar("x", 2.0, 1)
    w.add_text("t", "late", 1)
    assert w.file_writer is not None
    w.close()
    w.close()  # idempotent
    assert len(sorted(log_dir.glob("*tfevents*"))) == len(first) + 1
    assert {(v.tag, v.step) for v in read_values(log_dir)} == {("x", 0), ("x", 1), ("t/text_summary", 1)}


def test_get_file_writer_after_close_reopens_as_tensorboardx(tmp_path: Path) -> None:
    from tensorboardX.summary import scalar

    w = SummaryWriter(str(tmp_path / "log"))
    w.close()
    assert w.file_writer is None
    w._get_file_writer().add_summary(scalar("late", 1.0), 1)
    w.close()
    assert [(v.tag, v.step) for v in read_values(tmp_path / "log")] == [("late", 1)]


# -- attributes --------------------------------------------------------------------------------------

def test_default_bins_and_export_scalars_to_json_as_tensorboardx(tmp_path: Path) -> None:
    import json

    def calls(w: Any, out: Path) -> None:
        w.add_scalars("pair", {"a": 1.0, "b": 2.0}, 1, 10.0)
        w.export_scalars_to_json(str(out))

    with tensorboardX.SummaryWriter(str(tmp_path / "stock")) as stock:
        calls(stock, tmp_path / "stock.json")
        bins = stock.default_bins
    with SummaryWriter(str(tmp_path / "ours")) as ours:
        assert ours.default_bins == bins
        calls(ours, tmp_path / "ours.json")
        assert ours.scalar_dict == {}  # exported, then emptied, as tensorboardX does

    def keyed(path: Path, folder: Path) -> dict[str, Any]:
        exported = json.loads(path.read_text())
        return {Path(k).relative_to(folder).as_posix(): v for k, v in exported.items()}

    expected = keyed(tmp_path / "stock.json", tmp_path / "stock")
    assert keyed(tmp_path / "ours.json", tmp_path / "ours") == expected


def test_add_audio_takes_torchs_one_row_clip(tmp_path: Path) -> None:
    """torch's add_audio takes a (1, L) clip; tensorboardX reads that as L channels and raises."""
    pytest.importorskip("soundfile", reason="tensorboardX's add_audio needs soundfile")
    np = pytest.importorskip("numpy")
    clip = np.sin(np.linspace(0, 100, 800))
    with SummaryWriter(str(tmp_path / "row")) as w:
        w.add_audio("a", clip.reshape(1, -1), 1, 8000, 5.0)
    with tensorboardX.SummaryWriter(str(tmp_path / "stock")) as stock:
        stock.add_audio("a", clip, 1, 8000, 5.0)
    assert read_values(tmp_path / "row") == read_values(tmp_path / "stock")
