"""A run name for a producer process that a person recognises in TensorBoard's run list."""

from __future__ import annotations

import os
import sys

__all__ = ["producer_name"]


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


def producer_name() -> str:
    """``dataloader_worker_<id>``, ``rank_<n>``, the multiprocessing process name, or the script."""
    worker = _torch_worker_id()
    if worker is not None:
        return f"dataloader_worker_{worker}"
    rank = _torch_rank()
    if rank is not None:
        return f"rank_{rank}"
    name = process_name()
    if name is not None:
        return name
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    script = script.rsplit(".", 1)[0] if script not in ("", "-c", "-m") else "python"
    return f"{script}-{os.getpid()}"
