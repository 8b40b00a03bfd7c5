"""Rank 0's close returns with the whole job's log on disk (torchrun, hubs per rank or TCP).

The usual end of training: every rank and its DataLoader workers logged, the other ranks reached
the final barrier last (their epoch summary just logged), and rank 0 calls
``close_tensorboard_logger()``. When that returns, rank 0 snapshots the log folder while the other
ranks still wait: every event of every rank and worker must be in it. Before rank 0's close
asked the rank hubs to flush, the other ranks' last events were still in their hubs' queues.
``scripts/rank0_close.py`` runs the same job 20 times and reports N of 20.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch.distributed")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import rank0_close  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torchrun on loopback")]

REPETITIONS = 2
JOB_TIMEOUT = 240.0


@pytest.mark.timeout(REPETITIONS * JOB_TIMEOUT + 60)
@pytest.mark.parametrize("mode", ["auto", "off"], ids=["hub-per-rank", "tcp-to-rank0"])
def test_every_rank_event_is_on_disk_when_rank0_close_returns(tmp_path: Path, mode: str) -> None:
    for rep in range(REPETITIONS):
        workdir = tmp_path / str(rep)
        workdir.mkdir()
        result = rank0_close.run_once(workdir, nproc=2, mode=mode, items=40, epochs=2, persistent=True,
                                      timeout=JOB_TIMEOUT)
        assert result["complete"], f"repetition {rep}: missing {result['missing']}; {result['stderr']}"
