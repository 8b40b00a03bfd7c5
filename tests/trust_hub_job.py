"""Jobs that tests/test_trust_hub.py runs as a separate program (often as another user).

``python trust_hub_job.py victim LOGDIR``: prints its pid, waits for a line on stdin (the test
plants what another user would meanwhile), then owns a hub, logs 10 events and closes.
``python trust_hub_job.py pool LOGDIR``: a fork Pool(4) made before the owner's init, then 80
events logged by its workers.
"""

from __future__ import annotations

import multiprocessing
import sys

import hyrax_tbhub


def _log_one(i: int) -> int:
    hyrax_tbhub.get_tensorboard_logger().add_scalar("pool", float(i), i)
    hyrax_tbhub.get_tensorboard_logger().flush()
    return i


def victim(logdir: str) -> None:
    print(multiprocessing.current_process().pid, flush=True)
    sys.stdin.readline()
    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    for step in range(10):
        hyrax_tbhub.get_tensorboard_logger().add_scalar("x", float(step), step)
    hyrax_tbhub.close_tensorboard_logger()


def pool(logdir: str) -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as workers:
        workers.map(_log_one, range(4))  # the workers run (and look for a hub) before there is one
        hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
        workers.map(_log_one, range(80))
        workers.close()
        workers.join()
    hyrax_tbhub.close_tensorboard_logger()


def pool_as(uid: int, logdir: str) -> None:
    """``pool`` as user ``uid``, in a spawned child of a root test: the interpreter lives in a
    folder only root may read, so everything the job needs is imported before giving up root."""
    import importlib
    import os

    for name in ("hyrax_tbhub._process.connect", "hyrax_tbhub._producer", "hyrax_tbhub._hub",
                 "hyrax_tbhub._capture", "multiprocessing.pool", "multiprocessing.popen_fork",
                 "multiprocessing.queues", "multiprocessing.synchronize", "multiprocessing.connection",
                 "tempfile",
                 "json", "mmap", "selectors", "secrets", "hmac", "hashlib", "encodings.idna"):
        importlib.import_module(name)
    for var in ("XDG_RUNTIME_DIR", "TMPDIR", "TEMP", "TMP", "HYRAX_TBHUB_RUNTIME_DIR", "HYRAX_TBHUB_INFO"):
        os.environ.pop(var, None)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    pool(logdir)


if __name__ == "__main__":
    {"victim": victim, "pool": pool}[sys.argv[1]](sys.argv[2])
