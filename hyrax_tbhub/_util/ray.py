"""Is this process part of a Ray job, and which of Ray's workers is it? (Ray is never imported.)

Only a process that already imported ``ray`` can be a Ray driver or worker: a Ray worker's main
program is Ray's own ``default_worker.py``, which imports it before any user code runs. Every
function here reads ``sys.modules`` and returns None/False when Ray is not there or not ready.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["ray_context", "ray_initialized", "ray_job_id", "ray_module", "ray_worker", "ray_worker_name"]


def ray_module() -> Any:
    return sys.modules.get("ray")


def ray_initialized() -> bool:
    ray = ray_module()
    if ray is None:
        return False
    try:
        return bool(ray.is_initialized())
    except Exception:
        return False


def ray_context() -> Any:
    """``ray.get_runtime_context()`` (Ray's public API), or None outside an initialised Ray."""
    if not ray_initialized():
        return None
    try:
        return ray_module().get_runtime_context()
    except Exception:
        return None


def ray_worker() -> bool:
    """A process a raylet started for a job (task, actor, Pool or Tune worker), not a driver.

    Raylets put ``RAY_RAYLET_PID`` into the environment of every worker they start (Ray watches
    its raylet through it); a driver never has it, and ``ray`` is imported before user code.
    """
    return "RAY_RAYLET_PID" in os.environ and ray_module() is not None


def ray_job_id() -> str | None:
    ctx = ray_context()
    if ctx is None:
        return None
    try:
        return str(ctx.get_job_id())
    except Exception:
        return None


def ray_worker_name() -> str | None:
    """A run name for a Ray worker: ``ray_<actor name>``, ``ray_<ActorClass>-<actor id>`` or
    ``ray_worker-<worker id>``. A task worker runs many different tasks over its life, so the name
    of the task that logged first would mislead: it is named after the worker."""
    if not ray_worker():
        return None
    ctx = ray_context()
    if ctx is None:
        return None
    try:
        actor_id = ctx.get_actor_id()
        if actor_id:
            name = ctx.get_actor_name()
            if name:
                return f"ray_{name}"
            task = str(ctx.get_task_name() or "")
            cls = task.split(".", 1)[0] if "." in task else "actor"
            return f"ray_{cls}-{str(actor_id)[:8]}"
        return f"ray_worker-{str(ctx.get_worker_id())[:8]}"
    except Exception:
        return None
