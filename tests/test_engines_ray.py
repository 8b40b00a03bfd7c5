"""Ray: tasks, actors and Ray's Pool find the driver's hub with ``ray.init()`` called first.

Ray's workers are started by its daemons, not by the owner: they inherit nothing from it. The
owner publishes its hub in the cluster's key-value store (the way Ray Tune's registry reaches its
trials) and each worker reads it at its first logging call. One ``ray.init`` serves the module
(Ray takes ~15 s to start on this machine).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import read_logs

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

HERE = Path(__file__).resolve().parent
N = 100


@pytest.fixture(scope="module")
def ray_first() -> Iterator[None]:
    """``ray.init()`` before any hub exists: the usual order, at the top of a script."""
    saved = os.environ.get("PYTHONPATH")
    # Only so that the workers can import tests/ray_workers.py; nothing of hyrax_tbhub's.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), saved) if p)
    assert "HYRAX_TBHUB_INFO" not in os.environ
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _values(logdir: Path, tag: str) -> list[float]:
    return sorted(e.value for e in read_logs(logdir).entries if e.tag == tag)


def test_ray_tasks_started_before_the_hub_land_every_event(ray_first: None, logdir: Path) -> None:
    import ray_workers

    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    pids = set(ray.get([ray_workers.log_task.remote(i) for i in range(N)], timeout=120))
    hyrax_tbhub.close_tensorboard_logger()
    logs = read_logs(logdir)
    assert _values(logdir, "ray/task") == [float(i) for i in range(N)]
    assert logs.transport_errors == 0 and logs.dropped == 0
    assert len({r for r in logs.runs if r.startswith("ray_worker-")}) == len(pids)


def test_ray_actors_land_every_event_in_a_run_named_after_the_actor(ray_first: None, logdir: Path) -> None:
    import ray_workers

    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    actors = [ray_workers.Logger.options(name=f"logger{k}").remote() for k in range(2)]
    ray.get([actors[i % 2].log.remote(i) for i in range(N)], timeout=120)
    hyrax_tbhub.close_tensorboard_logger()
    for actor in actors:
        ray.kill(actor)
    logs = read_logs(logdir)
    assert _values(logdir, "ray/actor") == [float(i) for i in range(N)]
    assert {"ray_logger0", "ray_logger1"} <= set(logs.runs)
    assert logs.transport_errors == 0 and logs.dropped == 0


def test_ray_pool_workers_land_every_event(ray_first: None, logdir: Path) -> None:
    import ray_workers
    from ray.util.multiprocessing import Pool

    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    with Pool(2) as pool:
        pool.map(ray_workers.pool_log, range(N))
        hyrax_tbhub.close_tensorboard_logger()  # while the pool's actors live: they are drained
    assert _values(logdir, "ray/pool") == [float(i) for i in range(N)]
    assert any(r.startswith("ray_PoolActor-") for r in read_logs(logdir).runs)


def test_ray_tune_trials_land_every_event(ray_first: None, logdir: Path, tmp_path: Path) -> None:
    tune = pytest.importorskip("ray.tune")
    import ray_workers

    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    tuner = tune.Tuner(
        ray_workers.tune_trial,
        param_space={"k": tune.grid_search([0, 1, 2, 3])},
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0),
    )
    results = tuner.fit()
    assert not results.errors
    hyrax_tbhub.close_tensorboard_logger()
    assert _values(logdir, "ray/tune") == [float(i) for i in range(N)]
