"""Ranks that cannot see the hub locally find it through torch.distributed's store.

Mechanism test (it imports private modules on purpose): discovery through torch.distributed's store
(``_discovery.store``: the entry rank 0 publishes, with or without the key) and the mapping of a
remote hub's clock (``_producer.local_start_ns``).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import read_logs

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

from hyrax_tbhub._discovery.store import STORE_KEY, default_store  # noqa: E402
from hyrax_tbhub._process.state import STATE  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.timeout(180)]

N = 300

RANK1 = textwrap.dedent("""
    import sys
    import torch.distributed as dist
    import hyrax_tbhub

    dist.init_process_group("gloo", init_method=sys.argv[1], rank=1, world_size=2)
    dist.barrier()  # rank 0 serves the hub before this barrier
    w = hyrax_tbhub.get_tensorboard_logger()
    for s in range(int(sys.argv[2])):
        w.add_scalar("remote", s * 0.5, s)
    w.log_scalar_ts("remote_ts", 1.0)
    w.add_text("note", "from rank 1")
    hyrax_tbhub.close_tensorboard_logger()  # a producer's close: flush and leave
    dist.barrier()
    dist.destroy_process_group()
""")


@pytest.mark.parametrize("launcher_key", [False, True], ids=["key_in_store", "launcher_key"])
def test_a_rank_with_no_local_hub_logs_through_the_store(
    logdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launcher_key: bool
) -> None:
    """With a launcher key (HYRAX_TBHUB_KEY on both ends) the store carries no key at all."""
    rendezvous = "file://" + str(tmp_path / "store")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYRAX_TBHUB")}
    env["HYRAX_TBHUB_RUNTIME_DIR"] = str(tmp_path / "elsewhere")  # as if on another machine
    monkeypatch.delenv("HYRAX_TBHUB_KEY", raising=False)
    if launcher_key:
        shared = secrets.token_hex(32)
        env["HYRAX_TBHUB_KEY"] = shared
        monkeypatch.setenv("HYRAX_TBHUB_KEY", shared)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    script = tmp_path / "rank1.py"
    script.write_text(RANK1)
    rank1 = subprocess.Popen([sys.executable, str(script), rendezvous, str(N)], env=env)
    try:
        dist.init_process_group("gloo", init_method=rendezvous, rank=0, world_size=2)
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
        address = hyrax_tbhub.serve_ranks(host="127.0.0.1")
        assert address.startswith("tcp:127.0.0.1:")
        published = json.loads(default_store(dist).get(STORE_KEY))
        assert (published["authkey"] == "") is launcher_key
        dist.barrier()
        dist.barrier()  # rank 1 has logged and closed
        hyrax_tbhub.close_tensorboard_logger()
        dist.destroy_process_group()
        assert rank1.wait(60) == 0
    finally:
        if rank1.poll() is None:
            rank1.kill()
            rank1.wait(10)
        if dist.is_initialized():
            dist.destroy_process_group()
    log = read_logs(logdir).scalars_by_run()
    assert log["rank_1"]["remote"] == [(s, s * 0.5) for s in range(N)]
    assert len(log["rank_1"]["remote_ts"]) == 1


def test_serve_ranks_needs_a_hub_and_a_process_group_for_ranks_on_other_hosts(
    logdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(RuntimeError, match="init_tensorboard_logger"):
        hyrax_tbhub.serve_ranks()
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    if not dist.is_initialized():
        # One process (accelerate launch --cpu): nothing to serve, nothing to raise.
        monkeypatch.delenv("WORLD_SIZE", raising=False)
        assert hyrax_tbhub.serve_ranks() == STATE.hub.address  # type: ignore[union-attr]
        # Every rank on this host: they find the hub without a store.
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert hyrax_tbhub.serve_ranks() == STATE.hub.address  # type: ignore[union-attr]
        # Ranks on other hosts: one line that says what to do.
        monkeypatch.setenv("WORLD_SIZE", "4")
        with pytest.raises(RuntimeError, match="init_process_group.*ranks on this host need no"):
            hyrax_tbhub.serve_ranks()


def test_remote_ts_steps_map_the_hubs_wall_clock_start() -> None:
    import socket
    import time

    from hyrax_tbhub._discovery.hubfile import HubInfo
    from hyrax_tbhub._producer import local_start_ns

    wall_start = time.time_ns() - 5_000_000_000  # the hub started 5 s ago, by the wall clock
    info = HubInfo(address="tcp:10.0.0.1:1", authkey="00", start_ns=123, logdir="/x", owner_pid=1,
                   hub_id="h", start_wall_ns=wall_start, hostname=socket.gethostname() + "-other")
    since = time.monotonic_ns() - local_start_ns(info)
    assert 4.9e9 < since < 5.5e9
    local = HubInfo(**{**info.__dict__, "hostname": socket.gethostname()})
    assert local_start_ns(local) == 123  # same machine: the shared monotonic clock
