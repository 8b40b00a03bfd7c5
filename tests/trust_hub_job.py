"""Jobs that tests/test_trust_hub.py runs as a separate program (often as another user).

``python trust_hub_job.py victim LOGDIR``: prints its pid, waits for a line on stdin (the test
plants what another user would meanwhile), then owns a hub, logs 10 events and closes.
``python trust_hub_job.py pool LOGDIR``: a fork Pool(4) made before the owner's init, then 80
events logged by its workers.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable

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


def _log_many(events: int) -> None:
    for step in range(events):
        hyrax_tbhub.get_tensorboard_logger().add_scalar("good", float(step), step)
    hyrax_tbhub.close_tensorboard_logger()


def fdhub(logdir: str, limit: str, options: str) -> None:
    """Own a hub with the descriptor limit at ``limit`` while the test holds connections to it.

    Prints the hub file's path, then on each line from stdin: ``owner`` (open 64 files as the
    owner's code would, close them, report), ``start`` (start another producer that logs 1,000
    events), ``join`` (wait for it, report), ``close``.
    """
    import json
    import os
    import resource

    from hyrax_tbhub._process.state import STATE
    from hyrax_tbhub.options import Options

    resource.setrlimit(resource.RLIMIT_NOFILE, (int(limit), int(limit)))
    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir, options=Options.from_wire(json.loads(options)))
    print(os.environ["HYRAX_TBHUB_INFO"], flush=True)
    producer = None
    for line in sys.stdin:
        command = line.strip()
        report: dict[str, object] = {}
        if command == "owner":
            opened = []
            try:
                for _ in range(64):
                    opened.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            for fd in opened:
                os.close(fd)
            peers = STATE.hub._peers if STATE.hub is not None else None
            report = {"owner_opened": len(opened), "listening": getattr(peers, "listening", None),
                      "accept_failures": getattr(peers, "accept_failures", None)}
        elif command == "start":
            producer = multiprocessing.get_context("fork").Process(target=_log_many, args=(1000,))
            producer.start()
        elif command == "join":
            assert producer is not None
            producer.join(60)
            report = {"producer_exit": producer.exitcode}
        elif command == "close":
            hyrax_tbhub.close_tensorboard_logger()
            break
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    jobs: dict[str, Callable[..., None]] = {"victim": victim, "pool": pool, "fdhub": fdhub}
    jobs[sys.argv[1]](*sys.argv[2:])
