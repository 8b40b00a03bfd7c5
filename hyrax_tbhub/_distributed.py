"""Ranks on other machines: the hub is found through torch.distributed's rendezvous store.

The owner (usually rank 0) calls :func:`serve_ranks` after ``init_tensorboard_logger`` and
``torch.distributed.init_process_group``. The hub then also listens on TCP, on the address the
job already uses to reach rank 0 (``MASTER_ADDR``), and publishes its address and key under
``hyrax_tbhub/hub`` in the process group's store. A process that finds no hub on its own machine
and belongs to a process group reads that key. No protocol of our own finds the hub.

The store (TCPStore) has no authentication: anyone who can reach ``MASTER_ADDR:MASTER_PORT`` can
read it. When the launcher shares a secret with every rank (``HYRAX_TBHUB_KEY`` by default, set by
the job script on every node), the store carries only the address and the name of that variable.
Without one, the store carries the hub's TCP key too, and whoever can read the store can write log
events into this run; that is all it can do (docs/threat-model.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
from dataclasses import asdict
from typing import Any

from . import _naming
from ._discovery.launcher import launcher_on_one_host
from ._discovery.store import (
    KEY_ENV,
    MIN_KEY_BYTES,
    POLL_S,
    STORE_KEY,
    UNREACHABLE_KEY,
    default_store,
    find_distributed_hub,
    shared_key,
    torch_distributed,
)
from ._process.connect import rediscover
from ._process.engines import add_report_reader
from ._process.rank_hub import publish_marker
from ._process.rank_sync import confirm_ranks
from ._process.remote import listen_remote
from ._process.state import STATE
from ._util.threads import daemon_thread

__all__ = ["serve_ranks", "watch_as_rank"]


def serve_ranks(
    host: str | None = None,
    store: Any = None,
    key_env: str | None = KEY_ENV,
    *,
    rank_hubs: bool | None = None,
) -> str:
    """Let ranks on other machines log to this process's hub; return the address they use.

    Call it in the process that called ``init_tensorboard_logger`` (rank 0), once
    ``torch.distributed`` is initialised. ``host`` is the interface to listen on (default:
    ``MASTER_ADDR``, which every rank already reaches); ``store`` defaults to the default process
    group's store. The address is withdrawn when the hub closes.

    ``key_env`` names an environment variable that holds a secret the launcher gave every rank
    (at least 16 bytes; e.g. ``export HYRAX_TBHUB_KEY=$(openssl rand -hex 32)`` in the job
    script). When it is set, ranks prove that key and the store carries no secret. When it is not
    (or ``key_env=None``), the hub's own random key is published in the store: whoever can read
    the store can then write log events into this run, and nothing more.

    ``rank_hubs``: None (default) lets every rank that sees this hub's log folder (a shared
    file system) run a hub of its own that writes its runs there, so this process pays nothing
    for other ranks' events; False sends every rank's events to this hub over TCP.
    """
    hub = STATE.hub
    if hub is None or hub.owner_pid != os.getpid():
        raise RuntimeError(
            "serve_ranks() needs a hub in this process: call init_tensorboard_logger() first"
        )
    if store is None:
        dist = torch_distributed()
        if dist is None:
            if launcher_on_one_host():
                # Every rank is on this host: they find the hub without a store (a sibling
                # entry, _discovery/launcher.py; or they are this process's descendants).
                return hub.address
            raise RuntimeError(
                "serve_ranks() serves ranks on other hosts through torch.distributed's store: call "
                "torch.distributed.init_process_group() first (or pass store=); ranks on this host "
                "need no serve_ranks()"
            )
        store = default_store(dist)
    key = shared_key(key_env) if key_env else None
    if key is not None and len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the key in ${key_env} has {len(key)} bytes; use at least {MIN_KEY_BYTES}")
    bind_host = host or os.environ.get("MASTER_ADDR") or socket.gethostname()
    # The key is in the store when the launcher shared none: records are then checked as Events.
    served = listen_remote(hub, bind_host, key)
    info = dataclasses.replace(served, rank_hubs=rank_hubs is not False)
    _naming.mark_rank()  # this rank's descendants log as rank_<n>/...
    hub.on_close(_naming.unmark_rank)
    if info.rank_hubs:
        publish_marker(hub)
        hub.before_close(lambda: _confirm_ranks(hub, store))
    published: dict[str, Any] = asdict(info)
    published.pop("options")  # ranks do not take options from the store (_discovery/store.py)
    if key is not None:
        published["authkey"] = ""  # the ranks have it from their launcher
        published["key_env"] = key_env
    store.set(STORE_KEY, json.dumps(published))
    # An empty value, not a deleted key: a rank's get() on a missing key would block until the
    # store's timeout.
    hub.on_close(lambda: store.set(STORE_KEY, ""))
    # Ranks that find this entry and cannot connect count themselves here (_process/connect.py).
    add_report_reader(hub, lambda: int(store.add(UNREACHABLE_KEY + hub.hub_id, 0)))
    return served.address


def _confirm_ranks(hub: Any, store: Any) -> None:
    # Rank 0's close: every rank hub's events first (the log is complete when close returns).
    unconfirmed = confirm_ranks(hub.hub_id, store, hub.config.options.close_timeout)
    hub.store.tally.ranks_unconfirmed = len(unconfirmed)


_eager: threading.Thread | None = None


def watch_as_rank() -> None:
    """In a launcher's rank (torchrun), find a served hub without waiting for a logging call.

    A rank's DataLoader workers log from the first batch on, often before the rank itself logs
    anything: were the rank to look only in its own first call, it would not yet have published
    the route its workers need (every event they logged meanwhile would be lost). So a rank polls
    the store once a second, from when its process group exists until it has a channel. Started
    once, at import, only in the rank itself; a fork or spawn child never inherits it.
    """
    global _eager
    if _eager is not None or os.environ.get(_naming.ENV_WORLD_SIZE) is None:
        return
    rank = _naming.job_rank()
    if rank is None or not rank[1]:
        return
    def run() -> None:
        while True:
            time.sleep(POLL_S)  # a poll interval, not a wait for anything
            if STATE.channel is not None or STATE.hub is not None:
                return  # found (by this thread or a logging call), or this rank owns the hub
            try:
                info = find_distributed_hub()
                if info is None or info.hub_id in STATE.finished_hubs:
                    continue
                if STATE.watch is not None:
                    STATE.watch.poke()
                rediscover()
            except Exception:
                continue  # a store that went away: the job is ending

    _eager = daemon_thread(run, "hyrax_tbhub-rank-watch")
    _eager.start()
