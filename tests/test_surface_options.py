"""``SummaryWriter(..., options=Options(...))``: the writer's hub and every process it is handed
to use those options (they travel with the writer's small reference, as the hub file carries
``init_tensorboard_logger``'s)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from hyrax_tbhub import Options, SummaryWriter
from hyrax_tbhub.testing import read_logs

import writer_workers

pytestmark = pytest.mark.timeout(120)

TEXT_BYTES = 4096  # well over the tiny bound below, well under the default one


@pytest.mark.parametrize("bounded", [True, False], ids=["tiny_queue_max_bytes", "default_options"])
def test_a_spawned_childs_producer_uses_the_writers_options(tmp_path: Path, bounded: bool) -> None:
    """With queue_max_bytes below the size of one text event, the child can never queue it: it
    drops it and counts the drop, while its scalar lands. The same child of a writer with the
    default options lands both (the contrast: the drop is the options', not the child's)."""
    log_dir = tmp_path / "log"
    options = Options(queue_max_bytes=1024) if bounded else None
    with SummaryWriter(str(log_dir), options=options) as w:
        ctx = multiprocessing.get_context("spawn")
        p = ctx.Process(target=writer_workers.log_text_and_scalar, args=(w, TEXT_BYTES), name="child")
        p.start()
        p.join(60)
        assert p.exitcode == 0
    logs = read_logs(log_dir)
    [child] = [run for run in logs.runs if run != "."]
    assert logs.scalars("small", run=child) == [(0, 1.0)]
    if bounded:
        assert logs.texts("big", run=child) == []
        assert logs.counters.get(f"hyrax_tbhub/dropped/{child}") == 1, logs.counters
    else:
        assert [step for step, _ in logs.texts("big", run=child)] == [0]
        assert logs.dropped == 0, logs.counters


def test_options_must_be_an_options_object(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="hyrax_tbhub.Options"):
        SummaryWriter(str(tmp_path / "log"), options={"queue_max_bytes": 1024})  # type: ignore[arg-type]


def test_writers_of_one_folder_share_the_first_ones_options(tmp_path: Path) -> None:
    first = SummaryWriter(str(tmp_path / "log"), options=Options(close_timeout=7.0))
    second = SummaryWriter(str(tmp_path / "log"), options=Options(close_timeout=9.0))
    try:
        assert first._owned is second._owned
        assert first._owned is not None and first._owned.hub.config.options.close_timeout == 7.0
    finally:
        second.close()
        first.close()


def test_the_lightning_logger_hands_its_options_to_its_writer(tmp_path: Path) -> None:
    pytest.importorskip("pytorch_lightning")
    from hyrax_tbhub.integrations.lightning import TensorBoardHubLogger

    logger = TensorBoardHubLogger(str(tmp_path), name="exp", version=0, options=Options(close_timeout=7.0))
    try:
        owned = logger.experiment._owned
        assert owned is not None and owned.hub.config.options.close_timeout == 7.0
    finally:
        logger.close()
