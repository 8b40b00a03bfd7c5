"""The owner's side of engines that start processes it is no ancestor of (Ray; launchers).

``serve_engines(hub)`` runs in ``init_tensorboard_logger``. For Ray it does what Ray's own
integrations do (Tune's registry): if Ray is initialised, publish the hub's entry in the
cluster's key-value store now; if not, from Ray's post-init hooks, which run at the end of every
``ray.init`` in this process. If Ray is not even imported yet, a thread looks every
``_POLL_S`` for it until the hub closes: importing hyrax_tbhub never imports Ray. Before the hub
closes, ``count_unreachable`` turns the reports of workers that found the entry and could not
connect into the hub's ``transport_errors`` counter.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

from .._discovery import launcher
from .._discovery.ray import publish_ray_entry, read_unreachable, withdraw_ray_entry
from .._hub import Hub
from .._util.ray import ray_initialized, ray_module, ray_worker
from .._util.stderr import warn
from .._util.threads import daemon_thread
from .remote import listen_remote
from .state import STATE

__all__ = ["add_report_reader", "count_unreachable", "serve_engines"]

_POLL_S = 0.2  # s between two looks for `ray` in sys.modules: a dict lookup, while Ray is absent
_served: set[tuple[str, str]] = set()  # (hub id, Ray job id) already published
_lock = threading.Lock()
_hooked = False
_counted: set[str] = set()  # keys of the reports already counted


def serve_engines(hub: Hub) -> None:
    """Make ``hub`` findable by the processes engines start for this job (never raises)."""
    # Before close, however it closes (close_tensorboard_logger or the exit hook): the counts
    # must reach the hub while its thread still writes counters.
    hub.before_close(lambda: count_unreachable(hub))
    try:
        launcher.publish_sibling_entry(hub.info(), hub.on_close)
    except Exception as exc:
        warn(f"hyrax_tbhub: could not publish the hub for the launcher's other ranks ({exc!r})")
    if "ray" in sys.modules:
        _ray_ready()
    else:
        daemon_thread(lambda: _wait_for_ray(hub), "hyrax_tbhub-ray-watch").start()


def _wait_for_ray(hub: Hub) -> None:
    while STATE.hub is hub and "ray" not in sys.modules:
        # A poll interval, not a wait for anything: Ray offers nothing to wait on before import.
        threading.Event().wait(_POLL_S)
    if STATE.hub is hub:
        _ray_ready()


def _ray_ready() -> None:
    """Ray is imported: serve now if it is initialised, and at every later ``ray.init``."""
    global _hooked
    with _lock:
        if not _hooked:
            _hooked = True
            hooks = getattr(getattr(ray_module(), "_private", None), "worker", None)
            hooks = getattr(hooks, "_post_init_hooks", None)
            if isinstance(hooks, list):
                hooks.append(_serve_ray_now)
            else:
                warn("hyrax_tbhub: this Ray has no post-init hooks: call init_tensorboard_logger() "
                     "after ray.init() for Ray's workers to find the hub")
    if ray_initialized():
        _serve_ray_now()


def _serve_ray_now() -> None:
    """Publish the current hub for the current Ray job (a Ray post-init hook; never raises)."""
    hub = STATE.hub
    if hub is None or hub.owner_pid != os.getpid() or ray_worker():
        return  # a worker's own hub (a trial that calls init) must not take over its job's entry
    try:
        _serve_ray(hub)
    except Exception as exc:
        warn(f"hyrax_tbhub: could not publish the hub for Ray's workers ({exc!r}); "
             "their logging calls are no-ops")


def _serve_ray(hub: Hub) -> None:
    ray = ray_module()
    host = str(ray.util.get_node_ip_address())
    info = listen_remote(hub, host, None)
    with _lock:
        job = publish_ray_entry(info, hub.address)
        if job is None or (hub.hub_id, job) in _served:
            return
        _served.add((hub.hub_id, job))
    hub.on_close(lambda: withdraw_ray_entry(job, hub.hub_id))


#: hub id -> (reads how many processes reported "unreachable" in a store, how many were counted)
_readers: dict[str, list[tuple[Callable[[], int], list[int]]]] = {}


def add_report_reader(hub: Hub, read: Callable[[], int]) -> None:
    """Count, when ``hub`` closes, the reports ``read()`` returns (a total kept in an engine's
    store: ``serve_ranks`` reads the process group's)."""
    _readers.setdefault(hub.hub_id, []).append((read, [0]))


def count_unreachable(hub: Hub) -> None:
    """Count, under the hub's transport errors, the processes that reported they found this hub
    through their engine and could not reach it (before close; never raises)."""
    for read, counted in _readers.pop(hub.hub_id, []):
        try:
            for _ in range(max(0, read() - counted[0])):
                hub.count_transport_error("a rank found this hub in the process group's store and "
                                          "could not reach it")
        except Exception:
            pass
    if not any(h == hub.hub_id for h, _ in _served):
        return
    try:
        for key, report in read_unreachable(hub.hub_id).items():
            if key in _counted:
                continue
            _counted.add(key)
            hub.count_transport_error(
                f"process {report.get('name')!r} found this hub through Ray and could not reach it "
                f"at {report.get('address')}")
    except Exception:
        pass
