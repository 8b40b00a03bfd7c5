"""A hub exists for the job but a process cannot reach it: one line on stderr and a counter.

The process found the hub through its engine's store (here a torch.distributed rank through the
process group's store; Ray workers in tests/mechanism/test_engines_ray_entry.py) and the address
does not answer, as when a firewall stands between the hosts. It says so on stderr and adds
itself to a count in that store; the owner reads the count when it closes and writes it under
``hyrax_tbhub/transport_errors``. A process of a job that has no hub stays silent.

Mechanism test (it imports private modules on purpose): discovery through torch.distributed's store
(``_discovery.store``): the test rewrites the published entry so the address does not answer, and
waits on the process state for the rank to give up.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import read_logs

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

from hyrax_tbhub._discovery.store import STORE_KEY, default_store  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.timeout(240)]

HERE = Path(__file__).resolve().parent.parent  # tests/

RANK1 = """
import sys, time
import torch.distributed as dist
import hyrax_tbhub
from hyrax_tbhub._process.state import STATE

dist.init_process_group("gloo", init_method=sys.argv[1], rank=1, world_size=2)
dist.barrier()  # rank 0 served, at an address nobody answers
w = hyrax_tbhub.get_tensorboard_logger()
deadline = time.monotonic() + 60
step = 0
while not STATE.finished_hubs and time.monotonic() < deadline:
    w.add_scalar("lost", 1.0, step)  # each call looks again once the store watch saw the hub
    step += 1
    time.sleep(0.05)  # polling a condition, bounded by the deadline
print("gave up:", bool(STATE.finished_hubs), flush=True)
dist.barrier()  # reported
dist.barrier()  # rank 0 closed
dist.destroy_process_group()
"""


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_rank_that_cannot_reach_the_served_hub_says_so_and_rank_0_counts_it(
        logdir: Path, tmp_path: Path) -> None:
    from test_multihost import _env

    script = tmp_path / "rank1.py"
    script.write_text(RANK1)
    rendezvous = "file://" + str(tmp_path / "store")
    rank1 = subprocess.Popen([sys.executable, str(script), rendezvous], env=_env(tmp_path / "rt-node1"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        dist.init_process_group("gloo", init_method=rendezvous, rank=0, world_size=2)
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
        hyrax_tbhub.serve_ranks(host="127.0.0.1", key_env=None, rank_hubs=False)
        store = default_store(dist)
        entry = json.loads(store.get(STORE_KEY))
        entry["address"] = f"tcp:127.0.0.1:{_closed_port()}"  # as if a firewall were in the way
        store.set(STORE_KEY, json.dumps(entry))
        dist.barrier()
        dist.barrier()  # rank 1 gave up and reported
        hyrax_tbhub.close_tensorboard_logger()
        dist.barrier()
        dist.destroy_process_group()
    finally:
        out, err = rank1.communicate(timeout=120)
    assert rank1.returncode == 0, err.decode()[-3000:]
    assert b"gave up: True" in out
    lines = [ln for ln in err.decode().splitlines() if "cannot reach it" in ln]
    assert len(lines) == 1 and "the owner counts it under hyrax_tbhub/transport_errors" in lines[0]
    assert read_logs(logdir).transport_errors == 1


def test_a_process_of_a_job_without_a_hub_stays_silent(tmp_path: Path) -> None:
    code = "import hyrax_tbhub as h; w = h.get_tensorboard_logger(); w.add_scalar('x', 1.0, 0); w.flush()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in __import__("os").environ.items()
                               if not k.startswith("HYRAX_TBHUB")})
    assert done.returncode == 0 and done.stderr == ""
