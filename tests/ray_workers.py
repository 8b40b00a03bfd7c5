"""Code that runs inside Ray's workers (imported by them: Ray pickles these by reference)."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import ray

from hyrax_tbhub import get_tensorboard_logger


@ray.remote
def log_task(i: int) -> int:
    get_tensorboard_logger().add_scalar("ray/task", float(i), i)
    return os.getpid()


@ray.remote
class Logger:
    def log(self, i: int) -> int:
        get_tensorboard_logger().add_scalar("ray/actor", float(i), i)
        return os.getpid()


def pool_log(i: int) -> int:
    get_tensorboard_logger().add_scalar("ray/pool", float(i), i)
    return os.getpid()


@ray.remote
def log_and_capture_stderr(i: int) -> tuple[bool, str]:
    """Log, flush, and return flush()'s answer with what hyrax_tbhub wrote on fd 2 meanwhile."""
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            logger = get_tensorboard_logger()
            logger.add_scalar("ray/unreachable", float(i), i)
            ok = bool(logger.flush())
            # The line is written by the sender thread once it gave up: wait for it (bounded).
            deadline = time.monotonic() + 30
            while b"cannot reach it" not in _read(tmp) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        return ok, tmp.read().decode("utf-8", "replace")


def _read(tmp: Any) -> bytes:
    return os.pread(tmp.fileno(), 1 << 16, 0)


def node_of(_: Any = None) -> str:
    return str(ray.get_runtime_context().get_node_id())


def tune_trial(config: dict[str, Any]) -> None:
    """A Ray Tune function trainable: 25 scalars per trial."""
    from ray import tune

    k = int(config["k"])
    logger = get_tensorboard_logger()
    for i in range(25):
        logger.add_scalar("ray/tune", float(k * 25 + i), i)
    tune.report({"k": k})
