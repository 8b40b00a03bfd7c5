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
import sys
import threading
from dataclasses import asdict, replace
from typing import Any

from . import _naming, _wire
from ._discovery import HubInfo
from ._stderr import warn
from ._threads import daemon_thread

__all__ = ["STORE_KEY", "find_distributed_hub", "serve_ranks", "tune_tcp"]

STORE_KEY = "hyrax_tbhub/hub"
#: The environment variable ``serve_ranks()`` and the ranks read the launcher's shared key from.
KEY_ENV = "HYRAX_TBHUB_KEY"
_MIN_KEY_BYTES = 16
_warned_no_key: set[str] = set()
_POLL_S = 1.0
#: ms a TCP peer may leave sent data unacknowledged before the connection counts as dead. ACKs
#: come from the peer's kernel, not its (possibly busy) Python, so only a dead host or a cut link
#: goes this long without one; without the bound Linux retransmits for ~15 minutes, and a closing
#: hub would wait its whole close timeout for a node that died.
TCP_USER_TIMEOUT_MS = 5_000
_KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 2))  # s, s, probes


def tune_tcp(sock: socket.socket) -> None:
    """Options of every producer<->hub TCP connection, on both ends (never raises).

    No Nagle delay; a peer whose host died or whose link was cut is detected within seconds,
    both while data is in flight (``TCP_USER_TIMEOUT``) and while idle (keepalive), so its file
    descriptor, run and close-time wait are released.
    """
    for level, name, value in (
        (socket.IPPROTO_TCP, "TCP_NODELAY", 1),
        (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
        *((socket.IPPROTO_TCP, n, v) for n, v in _KEEPALIVE),
        (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", TCP_USER_TIMEOUT_MS),
    ):
        option = getattr(socket, name, None)
        if option is None:
            continue  # not on this platform
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            pass


def _dist() -> Any:
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


def _default_store(dist: Any) -> Any:
    return dist.distributed_c10d._get_default_store()


def _shared_key(key_env: str) -> bytes | None:
    value = os.environ.get(key_env)
    if not value:
        return None
    return value.encode("utf-8")


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
    from ._state import STATE

    hub = STATE.hub
    if hub is None or hub.owner_pid != os.getpid():
        raise RuntimeError(
            "serve_ranks() needs a hub in this process: call init_tensorboard_logger() first"
        )
    if store is None:
        dist = _dist()
        if dist is None:
            raise RuntimeError(
                "serve_ranks() needs torch.distributed.init_process_group() first (or a store)"
            )
        store = _default_store(dist)
    key = _shared_key(key_env) if key_env else None
    if key is not None and len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"the key in ${key_env} has {len(key)} bytes; use at least {_MIN_KEY_BYTES}")
    bind_host = host or os.environ.get("MASTER_ADDR") or socket.gethostname()
    resolved = bind_host if ":" in bind_host else socket.gethostbyname(bind_host)
    checker = None
    if key is None:
        # The key will be in the store: whoever reads it may send anything that frames well.
        try:
            checker = _wire.EventChecker()
        except ImportError:
            warn("hyrax_tbhub: serve_ranks() without a launcher key and without the tensorboard "
                 "package: records from remote ranks are checked for framing only (see "
                 "docs/threat-model.md)")
    bound_host, port = hub.listen_tcp(resolved, key, checker)
    address = f"tcp:{bound_host}:{port}"
    info = dataclasses.replace(hub.info(address), rank_hubs=rank_hubs is not False)
    _naming.mark_rank()  # this rank's descendants log as rank_<n>/...
    hub.on_close(_naming.unmark_rank)
    if info.rank_hubs:
        from ._rank_hub import publish_marker

        publish_marker(hub)
    published: dict[str, Any] = asdict(info)
    if key is not None:
        published["authkey"] = ""  # the ranks have it from their launcher
        published["key_env"] = key_env
    store.set(STORE_KEY, json.dumps(published))
    # An empty value, not a deleted key: a rank's get() on a missing key would block until the
    # store's timeout.
    hub.on_close(lambda: store.set(STORE_KEY, ""))
    return address


def find_distributed_hub() -> HubInfo | None:
    """The hub published in this process's process-group store, if any (never blocks)."""
    dist = _dist()
    if dist is None:
        return None
    try:
        store = _default_store(dist)
        if not store.check([STORE_KEY]):
            return None
        raw = store.get(STORE_KEY)
        if not raw:
            return None
        data = json.loads(raw)
        key_env = data.pop("key_env", None)
        info = HubInfo(**data)
    except Exception:
        return None
    if key_env is not None:
        key = _shared_key(str(key_env))
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


def in_distributed_job() -> bool:
    """A process a launcher started as a rank, or one that joined a process group."""
    return _dist() is not None or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


_poller: threading.Thread | None = None


def watch_store(poke: Any, known: Any) -> None:
    """Start (once) a thread that calls ``poke()`` when a hub not in ``known()`` gets published.

    A rank has no parent that could signal it through the local generation word, and a store
    lookup is a network round trip: too dear for every logging call, cheap once a second.
    """
    global _poller
    if _poller is not None and _poller.is_alive():
        return

    def run() -> None:
        stop = threading.Event()
        while not stop.wait(_POLL_S):
            try:
                info = find_distributed_hub()
            except Exception:
                info = None
            if info is not None and info.hub_id not in known():
                poke()

    _poller = daemon_thread(run, "hyrax_tbhub-store-watch")
    _poller.start()


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
    if _eager is not None or os.environ.get("WORLD_SIZE") is None:
        return
    rank = _naming.job_rank()
    if rank is None or not rank[1]:
        return
    # Imported here, in the importing thread: an import on the poller's thread could leave its
    # module lock held in a child forked at that moment (FACTS).
    import multiprocessing.util  # noqa: F401  (the exit hooks register there)
    import resource  # noqa: F401  (a hub raises its descriptor limit)

    from . import _producer, _rank_hub, _state, _stderr, tensorboardx_logger  # noqa: F401

    def run() -> None:
        stop = threading.Event()
        state = _state.STATE
        while not stop.wait(_POLL_S):
            if state.channel is not None or state.hub is not None:
                return  # found (by this thread or a logging call), or this rank owns the hub
            try:
                info = find_distributed_hub()
                if info is None or info.hub_id in state.finished_hubs:
                    continue
                if state.watch is not None:
                    state.watch.poke()
                _state.channel()
            except Exception:
                continue  # a store that went away: the job is ending

    _eager = daemon_thread(run, "hyrax_tbhub-rank-watch")
    _eager.start()
