"""A Ray cluster of two nodes in two network namespaces: tasks on both nodes land.

The head (``ray start --head``) runs in namespace ``a`` as host ``h0``, a worker node (``ray start
--address=...``) in namespace ``b`` as host ``h1``; each has its own hyrax_tbhub runtime folder,
the log folder is shared. The driver runs on the head, two jobs: ``ray.init(address=...)`` then
``init_tensorboard_logger()``, and the other way round; tasks are pinned to each node. Workers on
``h1`` find the hub through the cluster's key-value store (published from Ray's post-init hook in
the second job) and reach it over TCP across the veth pair.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import read_logs

pytest.importorskip("ray")
from test_multihost import _netns_or_skip  # noqa: E402

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

HERE = Path(__file__).resolve().parent
ROOT = Path(hyrax_tbhub.__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))
N = 50
PORT = 6391


def _env(tmp: Path, k: int) -> dict[str, str]:
    env = {key: v for key, v in os.environ.items() if not key.startswith("HYRAX_TBHUB")}
    env["HYRAX_TBHUB_RUNTIME_DIR"] = str(tmp / f"rt-host{k}")  # as if on another machine
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray 2.60's head turns token authentication on by default; a joining node and the driver
    # must use it too (the token file in ~/.ray is shared by the two "hosts" of this machine).
    env["RAY_AUTH_MODE"] = "token"
    return env


def _start(net: object, k: int, args: list[str], tmp: Path) -> subprocess.Popen[bytes]:
    cmd = [RAY, "start", "--block", f"--node-ip-address={net.ADDRS[k]}", "--num-cpus=1",  # type: ignore[attr-defined]
           "--object-store-memory=100000000", "--disable-usage-stats", *args]
    out = open(tmp / f"node{k}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(net.command(k, f"h{k}", cmd), env=_env(tmp, k),  # type: ignore[attr-defined]
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 180.0) -> None:
    """Until ``ray start --block`` says its node is up (bounded)."""
    deadline = time.monotonic() + timeout
    while b"block forever" not in log.read_bytes():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the node we started: its process group (ray start --block and the daemons it forked)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def test_ray_two_nodes_in_network_namespaces_land_every_task_in_either_order(tmp_path: Path) -> None:
    """Two jobs on one cluster: ``ray.init()`` before ``init_tensorboard_logger()``, then after."""
    net = _netns_or_skip()
    procs: list[subprocess.Popen[bytes]] = []
    logdir = tmp_path / "log"
    address = f"{net.ADDRS[0]}:{PORT}"
    # Ray's sockets live in its temp folder and AF_UNIX paths are short: not under tmp_path.
    temp_dirs = [tempfile.mkdtemp(prefix="rn", dir="/tmp") for _ in range(2)]
    try:
        procs.append(_start(net, 0, ["--head", f"--port={PORT}", "--include-dashboard=false",
                                     f"--temp-dir={temp_dirs[0]}"], tmp_path))
        _wait_ready(procs[0], tmp_path / "node0.log")
        procs.append(_start(net, 1, [f"--address={address}", f"--temp-dir={temp_dirs[1]}"], tmp_path))
        driver = net.command(0, "h0", [sys.executable, str(HERE / "ray_two_nodes_driver.py"), address,
                                       str(logdir), str(N)])
        done = subprocess.run(driver, env=_env(tmp_path, 0), capture_output=True, text=True,
                              timeout=400)
    finally:
        for proc in reversed(procs):
            _stop(proc)
        net.__exit__()
        for folder in temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)
    lines = [json.loads(ln) for ln in done.stdout.splitlines() if ln.startswith("{")]
    assert done.returncode == 0 and len(lines) == 2, done.stdout[-3000:] + done.stderr[-3000:]
    for result in lines:
        assert result["nodes"] == 2, (tmp_path / "node1.log").read_text()[-3000:]
        assert result["hosts"] == ["h0", "h1"]
        logs = read_logs(logdir / ("ray_first" if result["ray_first"] else "hub_first"))
        values = sorted(e.value for e in logs.entries if e.tag == "ray/node")
        assert values == [float(v) for v in range(2 * N)], result
        assert logs.transport_errors == 0 and logs.dropped == 0
