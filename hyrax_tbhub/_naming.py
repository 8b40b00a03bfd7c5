"""A run name for a producer process that a person recognises in TensorBoard's run list.

In a distributed job a run says which rank it comes from: ``rank_<n>`` for the rank itself,
``rank_<n>/<name>`` (``rank_1/dataloader_worker_0``) for its descendants, so that eight ranks'
workers neither collide nor look alike. A DataLoader worker has no process group, so the rank
travels to descendants in the environment: ``HYRAX_TBHUB_RANK=<rank>:<pid of the rank>``, set by
the rank itself (at import, when it creates its producer or hub, and before it forks). The pid
tells the rank from its descendants, which inherit the variable (and, when forked, an initialised
process group that would otherwise make them look like the rank).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from ._util.ray import ray_worker_name

__all__ = [
    "ENV_LAUNCHER_RANK", "ENV_RANK", "ENV_WORLD_SIZE", "job_rank", "launched_as_rank", "mark_rank",
    "process_name", "producer_name", "unmark_rank",
]

ENV_RANK = "HYRAX_TBHUB_RANK"
#: A launcher's variables in each rank it starts (torchrun's, and pytorch-ignite's idist's for the
#: ranks it spawns): the rank, and the number of ranks.
ENV_LAUNCHER_RANK = "RANK"
ENV_WORLD_SIZE = "WORLD_SIZE"


def launched_as_rank(env: Mapping[str, str] = os.environ) -> bool:
    """A launcher started this process as a rank (or an ancestor, whose environment it inherited)."""
    return ENV_LAUNCHER_RANK in env and ENV_WORLD_SIZE in env


def _torch_worker_id() -> int | None:
    # Only look if torch is already imported: importing it here would cost seconds.
    data = sys.modules.get("torch.utils.data")
    if data is None:
        return None
    try:
        info = data.get_worker_info()
    except Exception:
        return None
    return None if info is None else int(info.id)


def _torch_rank() -> int | None:
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return None
    try:
        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:
        return None
    return None


def _marker() -> tuple[int, int] | None:
    raw = os.environ.get(ENV_RANK, "")
    rank, sep, pid = raw.partition(":")
    if not sep or not rank.isdigit() or not pid.isdigit():
        return None
    return int(rank), int(pid)


def _env_rank() -> int | None:
    # Set by torchrun (and by pytorch-ignite's idist for the ranks it spawns).
    raw = os.environ.get(ENV_LAUNCHER_RANK, "")
    return int(raw) if raw.isdigit() and ENV_WORLD_SIZE in os.environ else None


def job_rank() -> tuple[int, bool] | None:
    """``(rank, is_the_rank_itself)`` for a process of a distributed job; None outside one."""
    marker = _marker()
    if marker is not None and marker[1] != os.getpid():
        return marker[0], False  # a descendant of that rank
    rank = _torch_rank()
    if rank is not None:
        return rank, True
    rank = _env_rank()
    if rank is not None:
        # A launcher's rank before init_process_group. (A descendant of a rank that never
        # imported hyrax_tbhub before starting it cannot be told from the rank: documented.)
        return rank, True
    return None


def mark_rank() -> None:
    """If this process is a rank, tell the descendants it starts from now on (never raises)."""
    try:
        found = job_rank()
        if found is not None and found[1]:
            value = f"{found[0]}:{os.getpid()}"
            if os.environ.get(ENV_RANK) != value:
                os.environ[ENV_RANK] = value
        elif found is None:
            unmark_rank()  # no longer a rank (its process group was destroyed)
    except Exception:
        pass


def unmark_rank() -> None:
    """Withdraw this process's own marker: children it starts from now on are no rank's."""
    marker = _marker()
    if marker is not None and marker[1] == os.getpid():
        os.environ.pop(ENV_RANK, None)


def process_name() -> str | None:
    """The multiprocessing (or multiprocess) name of this process; None in a main process."""
    for modname in ("multiprocessing", "multiprocess"):
        mod = sys.modules.get(modname)
        if mod is None:
            continue
        try:
            name = mod.current_process().name
        except Exception:
            continue
        if name and name != "MainProcess":
            return str(name)
    return None


def _leaf_name() -> str:
    worker = _torch_worker_id()
    if worker is not None:
        return f"dataloader_worker_{worker}"
    name = process_name()
    if name is not None:
        return name
    name = ray_worker_name()
    if name is not None:
        return name
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    script = script.rsplit(".", 1)[0] if script not in ("", "-c", "-m") else "python"
    return f"{script}-{os.getpid()}"


def producer_name() -> str:
    """``rank_<n>``, ``[rank_<n>/]dataloader_worker_<id>``, ``[rank_<n>/]<process name>``, or
    ``[rank_<n>/]<script>-<pid>``."""
    rank = job_rank()
    if rank is not None:
        mark_rank()
    # A DataLoader worker is never the rank itself, even when torchrun's RANK is its only clue.
    if rank is not None and rank[1] and _torch_worker_id() is None:
        return f"rank_{rank[0]}"
    leaf = _leaf_name()
    return leaf if rank is None else f"rank_{rank[0]}/{leaf}"


if hasattr(os, "register_at_fork"):
    # A forked child inherits an initialised process group: without the marker it would name
    # itself after the rank.
    os.register_at_fork(before=mark_rank)
mark_rank()
