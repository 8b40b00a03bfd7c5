"""A hub's entry in a Ray cluster's key-value store: how the workers of a Ray job find it.

Ray starts its workers from its own daemons (raylets), on any node of the cluster: they inherit
nothing from the driver. Ray's own integrations reach them through the cluster's internal
key-value store, kept by the GCS: Ray Tune's registry writes there from the driver (once
``ray.init`` has run, from Ray's post-init hooks) and reads it back in every trial. The owner
does the same: it writes its hub's entry under ``hub/<job id>`` in the ``hyrax_tbhub``
namespace, and a worker of that job reads it at its first logging call. The entry holds the
hub's TCP address (other nodes), its Unix socket (workers on the owner's host use that), the
key and the options. Reading and writing the store takes the cluster's credentials, which also
let their holder run any code on every node: the key stays inside the boundary that already
guards everything the job does (docs/threat-model.md).

A worker that found the entry and could not connect reports itself under
``unreachable/<hub id>/<host>-<pid>``; the owner counts those reports when it closes.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, replace
from typing import Any

from .._util.ray import ray_job_id, ray_worker
from .._util.threads import daemon_thread
from .hubfile import HubInfo

__all__ = [
    "NAMESPACE", "entry_key", "find_ray_hub", "publish_ray_entry", "ray_kv", "read_unreachable",
    "report_unreachable", "watch_ray", "withdraw_ray_entry",
]

NAMESPACE = "hyrax_tbhub"
_UNREACHABLE = "unreachable/"


def ray_kv() -> Any:
    """Ray's internal key-value module when this process is connected to a cluster, else None.

    ``import ray`` imports it; it is looked up, never imported here (no import on the logging
    path, and importing the package must never import Ray)."""
    kv = sys.modules.get("ray.experimental.internal_kv")
    if kv is None:
        return None
    try:
        return kv if kv._internal_kv_initialized() else None
    except Exception:
        return None


def entry_key(job_id: str) -> str:
    return f"hub/{job_id}"


def publish_ray_entry(info: HubInfo, unix_address: str) -> str | None:
    """Write ``info`` (a TCP address) as the hub of this driver's Ray job; return the job id."""
    kv = ray_kv()
    job = ray_job_id()
    if kv is None or job is None:
        return None
    entry = {"info": asdict(info), "unix": unix_address}
    kv._internal_kv_put(entry_key(job), json.dumps(entry), True, namespace=NAMESPACE)
    return job


def withdraw_ray_entry(job_id: str, hub_id: str) -> None:
    """Remove the entry of ``hub_id`` if it is still the job's (never raises: Ray may be down)."""
    kv = ray_kv()
    if kv is None:
        return
    try:
        raw = kv._internal_kv_get(entry_key(job_id), namespace=NAMESPACE)
        if raw and json.loads(raw)["info"]["hub_id"] == hub_id:
            kv._internal_kv_del(entry_key(job_id), namespace=NAMESPACE)
        kv._internal_kv_del(f"{_UNREACHABLE}{hub_id}/", del_by_prefix=True, namespace=NAMESPACE)
    except Exception:
        pass


def find_ray_hub() -> HubInfo | None:
    """In a Ray worker: the hub of its job, if the driver published one (never raises)."""
    if not ray_worker():
        return None
    kv = ray_kv()
    job = ray_job_id()
    if kv is None or job is None:
        return None
    try:
        raw = kv._internal_kv_get(entry_key(job), namespace=NAMESPACE)
        if not raw:
            return None
        entry = json.loads(raw)
        info = HubInfo(**entry["info"])
        unix = str(entry.get("unix") or "")
    except Exception:
        return None
    # On the owner's host the Unix socket: no TCP stack in the way, and the same path the
    # owner's own descendants use.
    if unix and info.hostname == socket.gethostname() and os.path.exists(unix):
        info = replace(info, address=unix)
    return info


def report_unreachable(info: HubInfo, name: str) -> bool:
    """Tell the owner that this process found ``info`` and could not reach it (never raises)."""
    kv = ray_kv()
    if kv is None:
        return False
    try:
        key = f"{_UNREACHABLE}{info.hub_id}/{socket.gethostname()}-{os.getpid()}"
        kv._internal_kv_put(key, json.dumps({"name": name, "address": info.address}), True,
                            namespace=NAMESPACE)
        return True
    except Exception:
        return False


def read_unreachable(hub_id: str) -> dict[str, dict[str, Any]]:
    """The reports of processes that could not reach ``hub_id``, by key (never raises)."""
    kv = ray_kv()
    if kv is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    try:
        for key in kv._internal_kv_list(f"{_UNREACHABLE}{hub_id}/", namespace=NAMESPACE):
            raw = kv._internal_kv_get(key, namespace=NAMESPACE)
            if raw:
                out[key.decode() if isinstance(key, bytes) else str(key)] = json.loads(raw)
    except Exception:
        pass
    return out


_poller: threading.Thread | None = None
#: Seconds between two looks at the cluster's store by a worker that has no hub yet (a round
#: trip to the GCS each): a worker on another node sees no local sign of the driver's hub.
POLL_S = 1.0


def watch_ray(
    poke: Callable[[], None], known: Callable[[], Collection[str]], connected: Callable[[], bool]
) -> None:
    """Start (once per process) a thread that calls ``poke()`` when the job's store entry names
    a hub not in ``known()``: the driver may publish it after this worker first looked. It does
    not look while ``connected()``."""
    global _poller
    if _poller is not None and _poller.is_alive():
        return

    def run() -> None:
        looks = 0
        while True:
            # A poll interval, not a wait for anything. After a minute without a hub, every 10 s:
            # a job whose driver never starts one must not cost its GCS a request per worker per
            # second.
            time.sleep(POLL_S if looks < 60 else 10 * POLL_S)
            if connected():
                continue
            looks += 1
            info = find_ray_hub()
            if info is not None and info.hub_id not in known():
                poke()

    _poller = daemon_thread(run, "hyrax_tbhub-ray-watch")
    _poller.start()
