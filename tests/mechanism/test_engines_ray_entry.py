"""A Ray worker that finds the owner's hub in Ray's key-value store and cannot reach it.

Moved from tests/test_engines_ray.py, whose other tests check Ray through the public surface only.

Mechanism test (it imports private modules on purpose): discovery through Ray's key-value store
(``_discovery.ray``): the test rewrites the entry the owner published so that its address does not
answer, as a firewall between nodes would.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import read_logs

ray = pytest.importorskip("ray")

# The same ray.init fixture (module scope: one more Ray start-up, ~15 s, for this module).
from test_engines_ray import ray_first  # noqa: E402,F401

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def test_a_worker_that_cannot_reach_the_hub_says_so_and_the_owner_counts_it(
    ray_first: None, logdir: Path  # noqa: F811
) -> None:
    """The job has a hub, the worker finds it and cannot connect (here: a port nobody listens
    on, as a firewall between nodes would make it): one stderr line, one transport error."""
    import json

    import ray_workers
    from ray.experimental import internal_kv

    from hyrax_tbhub._discovery.ray import NAMESPACE, entry_key

    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    key = entry_key(ray.get_runtime_context().get_job_id())
    entry = json.loads(internal_kv._internal_kv_get(key, namespace=NAMESPACE))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    entry["info"]["address"] = f"tcp:127.0.0.1:{closed_port}"
    entry["unix"] = ""
    internal_kv._internal_kv_put(key, json.dumps(entry), True, namespace=NAMESPACE)
    ok, err = ray.get(ray_workers.log_and_capture_stderr.remote(1), timeout=120)
    hyrax_tbhub.close_tensorboard_logger()
    assert not ok
    assert "cannot reach it; the owner counts it under hyrax_tbhub/transport_errors" in err
    assert read_logs(logdir).transport_errors == 1
