"""Engines whose workers are the owner's descendants: every event of 100 tasks lands.

concurrent.futures, joblib with loky, dask.distributed's LocalCluster and pytorch-ignite's
``idist.Parallel`` start their workers from the owner's process (directly or through a server
they started): the workers find the hub through the environment, their parent's hub file or the
generation word. Each engine's test is skipped when the engine is not installed.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import read_logs

pytestmark = [pytest.mark.timeout(300)]

N = 100


def _check(logdir: Path, tag: str = "engine/x", n: int = N) -> None:
    logs = read_logs(logdir)
    assert sorted(e.value for e in logs.entries if e.tag == tag) == [float(i) for i in range(n)]
    assert logs.dropped == 0 and logs.transport_errors == 0


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_concurrent_futures_process_pool_started_before_the_hub(logdir: Path, method: str) -> None:
    import engine_workers

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as pool:
        list(pool.map(engine_workers.log_one, range(2)))  # the workers exist before the hub
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
        list(pool.map(engine_workers.log_one, range(N)))
        hyrax_tbhub.close_tensorboard_logger()
    _check(logdir)


def test_joblib_loky_workers_land_every_event(logdir: Path) -> None:
    joblib = pytest.importorskip("joblib")
    import engine_workers

    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(engine_workers.log_one)(i) for i in range(N))
    hyrax_tbhub.close_tensorboard_logger()  # loky keeps its workers: the close drains them
    _check(logdir)


def test_dask_local_cluster_workers_land_every_event(logdir: Path) -> None:
    distributed = pytest.importorskip("distributed")
    import engine_workers

    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        client.gather(client.map(engine_workers.log_one, range(N)))
        hyrax_tbhub.close_tensorboard_logger()
    _check(logdir)


@pytest.mark.torch
def test_ignite_parallel_ranks_land_every_event(logdir: Path) -> None:
    pytest.importorskip("torch")
    idist = pytest.importorskip("ignite.distributed")
    import engine_workers

    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(engine_workers.ignite_rank, N // 2)
    hyrax_tbhub.close_tensorboard_logger()
    _check(logdir, "engine/ignite")
