"""The same calls made through the writer in a spawn or fork child land as the stock writer's.

A child handed ``hyrax_tbhub.SummaryWriter`` (or using the process-wide handle) runs one call of
each kind (``compat_workers.scenario``: plain and tensor scalars, text, ``use_metadata``,
histograms of bfloat16 and numpy values, an image, a PR curve, ``add_scalars``, ``file_writer``
summaries, custom scalars); the stock ``tensorboardX.SummaryWriter`` runs the same calls in this
process. Read back with TensorBoard's event-file reader, the child's run holds the same summary
values: tags, steps, wall times, payloads, plugin names and contents.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import compat_workers
import pytest
from tb_events import read_values

import hyrax_tbhub
from hyrax_tbhub import SummaryWriter

pytestmark = [pytest.mark.timeout(240), pytest.mark.torch]
tensorboardX = pytest.importorskip("tensorboardX")
pytest.importorskip("torch")

METHODS = [m for m in ("fork", "spawn") if m in multiprocessing.get_all_start_methods()]


def _relative(values: list[Any], run: str) -> list[Any]:
    """The values of ``run`` and its sub-runs, with run names relative to it ("." for itself)."""
    out = []
    for v in values:
        if v.tag == "custom_scalars__config__":
            v = v._replace(wall_time=None)  # add_custom_scalars takes no wall time: the time of the call
        if run == ".":
            out.append(v)
        elif v.run == run:
            out.append(v._replace(run="."))
        elif v.run.startswith(run + "/"):
            out.append(v._replace(run=v.run[len(run) + 1:]))
    return sorted(out)


@pytest.mark.parametrize("kind", ["writer", "handle"])
@pytest.mark.parametrize("method", METHODS)
def test_a_child_logs_what_the_stock_writer_logs(tmp_path: Path, method: str, kind: str) -> None:
    with tensorboardX.SummaryWriter(str(tmp_path / "stock")) as stock:
        compat_workers.scenario(stock, cast_bfloat16=True)
    expected = _relative(read_values(tmp_path / "stock"), ".")

    log_dir = tmp_path / "ours"
    ctx = multiprocessing.get_context(method)
    if kind == "writer":
        w = SummaryWriter(str(log_dir))
        with ctx.Pool(1) as pool:
            folder = pool.apply_async(compat_workers.scenario_in_child, (w,)).get(180)
        w.close()
    else:
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(log_dir))
        try:
            with ctx.Pool(1) as pool:
                folder = pool.apply_async(compat_workers.scenario_in_child, (None,)).get(180)
        finally:
            hyrax_tbhub.close_tensorboard_logger()
    run = Path(folder).relative_to(log_dir).as_posix()
    assert run != "."  # the child's own run
    got = _relative(read_values(log_dir), run)
    assert got == expected
    assert {v.tag for v in got} >= {"scalar/plain", "meta/text/text_summary", "histogram/bfloat16",
                                     "pr", "pair", "file_writer/summary", "custom_scalars__config__"}
