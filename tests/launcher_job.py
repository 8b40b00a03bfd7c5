"""A launcher's ranks without a process group: rank 0 starts the hub, its siblings log to it.

Run by tests/test_engines_launchers.py under torchrun or ``accelerate launch``:
``launcher_job.py <folder> <events per rank>``. Ranks wait for each other through files in
``<folder>`` (bounded), never through torch.distributed: there is no process group here.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import hyrax_tbhub


def wait_for(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {path}")
        time.sleep(0.01)


def main() -> None:
    folder, n = Path(sys.argv[1]), int(sys.argv[2])
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if rank == 0:
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(folder / "log"))
        print("served at", hyrax_tbhub.serve_ranks(), flush=True)  # no process group: one host
        (folder / "hub-ready").touch()
    else:
        wait_for(folder / "hub-ready")
    log = hyrax_tbhub.get_tensorboard_logger()
    for i in range(n):
        log.add_scalar("launcher/x", float(rank * n + i), i)
    if rank == 0:
        for other in range(1, world):
            wait_for(folder / f"done-{other}")
    hyrax_tbhub.close_tensorboard_logger()  # rank 0: close the hub; the others: flush and leave
    (folder / f"done-{rank}").touch()


if __name__ == "__main__":
    main()
