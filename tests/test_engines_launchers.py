"""Launchers that start ranks without a process group: siblings on one host find rank 0's hub.

torchrun and ``accelerate launch`` start each rank from their agent: rank 1 is no descendant of
rank 0. Without ``init_process_group`` there is no store either; the ranks find the hub through
an entry rank 0 writes in the per-user runtime folder, keyed by the launcher's run
(``TORCHELASTIC_RUN_ID``, ``MASTER_ADDR``, ``MASTER_PORT``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import read_logs

pytest.importorskip("torch")

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow, pytest.mark.torch]

HERE = Path(__file__).resolve().parent
ROOT = Path(hyrax_tbhub.__file__).resolve().parent.parent
JOB = HERE / "launcher_job.py"
N = 100


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HYRAX_TBHUB") and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
    return env


def _run(cmd: list[str], folder: Path) -> None:
    done = subprocess.run(cmd + [str(JOB), str(folder), str(N)], env=_env(), capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


def _check(folder: Path, world: int) -> None:
    logs = read_logs(folder / "log")
    values = sorted(e.value for e in logs.entries if e.tag == "launcher/x")
    assert values == [float(v) for v in range(world * N)]
    assert logs.transport_errors == 0 and logs.dropped == 0
    assert {f"rank_{r}" for r in range(1, world)} <= set(logs.runs)


@pytest.mark.parametrize("world", [2, 4])
def test_torchrun_ranks_without_a_process_group_log_to_rank_0(tmp_path: Path, world: int) -> None:
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"],
         tmp_path)
    _check(tmp_path, world)


def _accelerate() -> str:
    pytest.importorskip("accelerate")
    exe = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    if exe is None:
        pytest.skip("the accelerate command is not installed")
    return exe


def test_accelerate_launch_cpu_one_process_serves_without_raising(tmp_path: Path) -> None:
    _run([_accelerate(), "launch", "--cpu", "--num_processes=1", "--num_machines=1",
          "--mixed_precision=no", "--dynamo_backend=no"], tmp_path)
    _check(tmp_path, 1)


def test_accelerate_launch_two_ranks_without_a_process_group_log_to_rank_0(tmp_path: Path) -> None:
    _run([_accelerate(), "launch", "--multi_gpu", "--num_processes=2", "--num_machines=1",
          "--mixed_precision=no", "--dynamo_backend=no"], tmp_path)
    _check(tmp_path, 2)
