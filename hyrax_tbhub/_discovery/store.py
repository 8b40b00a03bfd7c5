"""A served hub's entry in the torch.distributed store: how a rank on another machine finds it.

``serve_ranks()`` (in ``_distributed``) publishes the hub's address under ``STORE_KEY`` in the
process group's store; a process that finds no hub on its own machine and belongs to a process
group reads it here. The store (TCPStore) has no authentication: when the launcher shares a key
with every rank (``KEY_ENV``), the entry names that variable instead of carrying a key.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

from .._naming import launched_as_rank
from .._util.stderr import warn
from .._util.threads import daemon_thread
from .hubfile import HubInfo

__all__ = [
    "KEY_ENV", "MIN_KEY_BYTES", "STORE_KEY", "UNREACHABLE_KEY", "default_store", "find_distributed_hub",
    "in_distributed_job", "report_unreachable_in_store", "torch_distributed", "shared_key", "watch_store",
]

STORE_KEY = "hyrax_tbhub/hub"
#: ``UNREACHABLE_KEY + <hub id>``: how many ranks found that hub here and could not reach it.
UNREACHABLE_KEY = "hyrax_tbhub/unreachable/"
#: The environment variable ``serve_ranks()`` and the ranks read the launcher's shared key from.
KEY_ENV = "HYRAX_TBHUB_KEY"
MIN_KEY_BYTES = 16
_warned_no_key: set[str] = set()
#: Seconds between two looks at the store by a rank's watch threads (a network round trip each).
POLL_S = 1.0


def torch_distributed() -> Any:
    # Never import torch here: only a process that already did can be part of a process group.
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return None
    try:
        if dist.is_available() and dist.is_initialized():
            return dist
    except Exception:
        return None
    return None


def default_store(dist: Any) -> Any:
    return dist.distributed_c10d._get_default_store()


def shared_key(key_env: str) -> bytes | None:
    value = os.environ.get(key_env)
    if not value:
        return None
    return value.encode("utf-8")


def find_distributed_hub() -> HubInfo | None:
    """The hub published in this process's process-group store, if any (never blocks)."""
    dist = torch_distributed()
    if dist is None:
        return None
    try:
        store = default_store(dist)
        if not store.check([STORE_KEY]):
            return None
        raw = store.get(STORE_KEY)
        if not raw:
            return None
        data = json.loads(raw)
        key_env = data.pop("key_env", None)
        # Whoever can write the store could set every rank's bounds and deadlines (a queue of 1,
        # a connect timeout of days): the store is not authenticated, so its options are not
        # taken. A rank and its descendants use the defaults (docs/threat-model.md).
        data.pop("options", None)
        info = HubInfo(**data)
    except Exception:
        return None
    if key_env is not None:
        key = shared_key(str(key_env))
        if key is None:
            if info.hub_id not in _warned_no_key:
                _warned_no_key.add(info.hub_id)
                warn(f"hyrax_tbhub: the hub at {info.address} wants the key in ${key_env}, which is "
                     "not set in this process; logging here is a no-op")
            return None
        info = replace(info, authkey=key.hex())
    if info.owner_pid == os.getpid() and info.hostname == socket.gethostname():
        return None  # our own hub
    return info


def report_unreachable_in_store(hub_id: str) -> bool:
    """Count this process, in the process group's store, as one that could not reach ``hub_id``
    (the owner reads the count when it closes; never raises)."""
    dist = torch_distributed()
    if dist is None:
        return False
    try:
        default_store(dist).add(UNREACHABLE_KEY + hub_id, 1)
        return True
    except Exception:
        return False


def in_distributed_job() -> bool:
    """A process a launcher started as a rank, or one that joined a process group."""
    return torch_distributed() is not None or launched_as_rank()


_poller: threading.Thread | None = None


def watch_store(poke: Callable[[], None], known: Callable[[], Collection[str]]) -> None:
    """Start (once) a thread that calls ``poke()`` when a hub not in ``known()`` gets published.

    A rank has no parent that could signal it through the local generation word, and a store
    lookup is a network round trip: too dear for every logging call, cheap once a second.
    """
    global _poller
    if _poller is not None and _poller.is_alive():
        return

    def run() -> None:
        while True:
            time.sleep(POLL_S)  # a poll interval, not a wait for anything
            try:
                info = find_distributed_hub()
            except Exception:
                info = None
            if info is not None and info.hub_id not in known():
                poke()

    _poller = daemon_thread(run, "hyrax_tbhub-store-watch")
    _poller.start()
