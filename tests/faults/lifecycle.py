"""Point 8, life cycle: a long-lived producer following many hubs, an unrelated owner program."""

from __future__ import annotations

import os
import threading
from typing import Any

import hyrax_tbhub
from hyrax_tbhub._discovery import hubfile

from faults.common import SAFETY_S, report, wait_until
from faults.loggers import log_scalars_flush
from faults.procfs import new_fds, open_fds


def follow_many_hubs(requests: Any, replies: Any, result: str) -> None:
    """A long-lived producer: for each request, log one point to whatever hub is current, flush,
    reply; at the end report how many threads and descriptors it holds (they must not grow)."""
    w = hyrax_tbhub.get_tensorboard_logger()
    baseline: dict[str, Any] | None = None
    flushed = []
    while True:
        if not requests.poll(SAFETY_S):
            break
        msg = requests.recv()
        if msg == "stop":
            break
        w.add_scalar("cycle", float(msg), int(msg))
        flushed.append(bool(w.flush(30)))
        if baseline is None:
            baseline = {"fds": open_fds(), "threads": threading.active_count()}
        replies.send(msg)
    report(
        result,
        {
            "flushed": flushed,
            "new_fds": new_fds(baseline["fds"]) if baseline else {},
            "threads": [baseline["threads"] if baseline else 0, threading.active_count()],
        },
    )


def unrelated_owner(logdir: str, label: str, ready_file: str, go_file: str, children: int) -> None:
    """Run as a separate program: own a hub, wait for ``go_file``, have children log, close.

    Children are fork and spawn processes logging ``<label>/<i>``; the owner logs ``<label>/owner``.
    """
    import multiprocessing

    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    report(ready_file, {"pid": os.getpid(), "hub_file": os.environ[hubfile.ENV_INFO]})
    wait_until(lambda: os.path.exists(go_file), SAFETY_S, "the go file")
    procs = []
    for i in range(children):
        ctx = multiprocessing.get_context("spawn" if i % 2 else "fork")
        p = ctx.Process(target=log_scalars_flush, args=(f"{label}/{i}", 300), name=f"{label}-{i}")
        p.start()
        procs.append(p)
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(300):
        w.add_scalar(f"{label}/owner", float(step), step)
    codes = []
    for p in procs:
        p.join(SAFETY_S)
        codes.append(p.exitcode)
    hyrax_tbhub.close_tensorboard_logger()
    report(ready_file + ".done", {"exitcodes": codes})
