"""Descendants of a process that found the hub without the environment: they find it too."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.timeout(120)
def test_grandchildren_of_a_forkserver_child_started_before_init_log(tmp_path: Path) -> None:
    """A forkserver child whose server predates the hub finds it through its logical parent's
    hub file, not the environment; it republishes that route, so its own spawn children log too."""
    import multiprocessing

    import hyrax_tbhub
    from hyrax_tbhub.testing import read_logs

    import workers

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no forkserver here")
    ctx = multiprocessing.get_context("forkserver")
    warm = ctx.Process(target=workers.log_scalars, args=("ignored", 1))  # the server starts now
    warm.start()
    warm.join(60)
    logdir = tmp_path / "log"
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    p = ctx.Process(target=workers.nested_spawn, args=("n", 50))
    p.start()
    p.join(90)
    assert p.exitcode == 0
    hyrax_tbhub.close_tensorboard_logger()
    log = read_logs(logdir).scalars_by_run()
    expected = [(s, s * 0.5) for s in range(50)]
    assert [tags["n/child"] for tags in log.values() if "n/child" in tags] == [expected]
    assert [tags["n/grandchild"] for tags in log.values() if "n/grandchild" in tags] == [expected]
