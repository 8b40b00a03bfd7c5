"""A real TensorBoard server (default Rust loader) serves every point several workers logged.

TensorBoard purges earlier points of a (run, tag) when a lower step arrives, so producers
sharing a run with time-based steps lose data in the UI; one run per producer must not.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import ROOT_RUN, read_logs

import workers

pytest.importorskip("tensorboard")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from screenshot import expected_scalars, running_tensorboard, wait_for_scalars  # noqa: E402

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

TAGS = ["DataProvider/file_read_time_s", "training/loss"]
POINTS = 400
WORKERS = 3


def _served(base: str, run: str, tag: str, want: int, deadline_s: float = 60) -> list[list[float]]:
    """The points the server has for (run, tag), once it has loaded ``want`` (or at the deadline).

    The data server loads in the background: a tag is listed before all its points are read.
    """
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    deadline = time.monotonic() + deadline_s
    while True:
        with urllib.request.urlopen(f"{base}/data/plugin/scalars/scalars?{query}", timeout=10) as resp:
            points = json.loads(resp.read())
        if len(points) >= want or time.monotonic() > deadline:
            return points
        time.sleep(0.1)  # polling a condition with a deadline, not a guess at a duration


def test_tensorboard_server_serves_every_point_of_every_spawn_worker(logdir: Path) -> None:
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    readies = [ctx.Event() for _ in range(WORKERS)]
    procs = [ctx.Process(target=workers.log_ts_points, args=(TAGS, POINTS, r, go)) for r in readies]
    for p in procs:
        p.start()
    for r in readies:
        assert r.wait(60)
    go.set()  # all workers log the same tags at once, interleaving their time-based steps
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    hyrax_tbhub.close_tensorboard_logger()

    expected = expected_scalars(logdir)
    worker_runs = [run for run in read_logs(logdir).runs if run != ROOT_RUN]
    assert len(worker_runs) == WORKERS
    with running_tensorboard(logdir, 60, ("--samples_per_plugin", f"scalars={POINTS * 10}")) as base:
        wait_for_scalars(base, expected, 90)
        total = 0
        for run in worker_runs:
            for tag in TAGS:
                points = _served(base, run.replace(os.sep, "/"), tag, POINTS)
                steps = [int(p[1]) for p in points]
                assert [p[2] for p in points] == [float(i) for i in range(POINTS)], (run, tag)
                assert steps == sorted(steps)
                total += len(points)
    assert total == WORKERS * len(TAGS) * POINTS
