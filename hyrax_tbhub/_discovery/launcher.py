"""Ranks of one launcher run on one host, before (or without) a process group: siblings.

torchrun (and ``accelerate launch``, which runs it) starts every rank from its agent: rank 1
inherits nothing from rank 0, and without ``init_process_group`` there is no store to publish
in. The ranks share the launcher's environment though: ``TORCHELASTIC_RUN_ID``, ``MASTER_ADDR``
and ``MASTER_PORT`` name the run (the port is held by the run's rendezvous while it lasts, so
two runs on one host never share all three). A rank that calls ``init_tensorboard_logger``
writes its hub file a second time as ``launcher-<digest of the three>.json`` in the per-user
runtime folder (0700; the file 0600, as every hub file) and bumps the generation word; its
siblings on this host read it at their first logging call. Rank 0's entry wins over another
rank's. Ranks on other hosts need ``serve_ranks()`` and a process group.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

from .._naming import ENV_LAUNCHER_RANK, ENV_WORLD_SIZE, launched_as_rank
from .hubfile import HubInfo, _pid_alive, _write_private, bump_generation, read_hub_file, runtime_dir

__all__ = ["find_sibling_hub", "launcher_on_one_host", "launcher_run", "publish_sibling_entry"]

_RUN_VARS = ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")


def launcher_run() -> str | None:
    """A digest naming this process's launcher run, or None outside a launcher's ranks."""
    env = os.environ
    if not launched_as_rank(env) or not env.get("MASTER_PORT"):
        return None
    joined = "\0".join(env.get(name, "") for name in _RUN_VARS)
    return hashlib.sha256(joined.encode("utf-8", "backslashreplace")).hexdigest()[:24]


def launcher_on_one_host() -> bool:
    """No rank of this job runs on another host: a single process (``accelerate launch --cpu``
    runs one, with no ``RANK``), or a launcher's ranks all local (``LOCAL_WORLD_SIZE`` equal to
    ``WORLD_SIZE``)."""
    env = os.environ
    world = env.get(ENV_WORLD_SIZE)
    if world is None or world == "1":
        return True
    return env.get("LOCAL_WORLD_SIZE") == world


def _entry(run: str) -> Path:
    return runtime_dir() / f"launcher-{run}.json"


def publish_sibling_entry(info: HubInfo, on_close: Callable[[Callable[[], None]], None]) -> None:
    """In a launcher's rank that starts a hub: let its siblings on this host find it."""
    run = launcher_run()
    if run is None:
        return
    path = _entry(run)
    if os.environ.get(ENV_LAUNCHER_RANK) != "0":
        current = read_hub_file(path)
        if current is not None and current.owner_pid != os.getpid() and _pid_alive(current.owner_pid):
            return  # another rank's hub (rank 0's, or the first one) stays the run's
    _write_private(path, info)
    bump_generation()  # siblings that already looked look again

    def withdraw() -> None:
        current = read_hub_file(path)
        if current is not None and current.hub_id == info.hub_id:
            try:
                path.unlink()
            except OSError:
                pass

    on_close(withdraw)


def find_sibling_hub() -> HubInfo | None:
    """The hub a sibling rank of this launcher run published on this host (never raises)."""
    run = launcher_run()
    if run is None:
        return None
    try:
        info = read_hub_file(_entry(run))
    except OSError:
        return None
    if info is None or info.owner_pid == os.getpid() or info.hostname != socket.gethostname():
        return None  # our own, or a runtime folder shared with another host
    if not _pid_alive(info.owner_pid):
        return None
    return info
