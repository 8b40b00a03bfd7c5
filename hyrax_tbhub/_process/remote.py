"""The owner's hub made reachable from other hosts: one TCP listener, for every engine.

``serve_ranks`` (torch.distributed ranks) and the Ray owner (``_process/engines.py``) both use
it: the hub listens on ``host`` with the same handshake as on its Unix socket, and the address
goes into the engine's own store. Where the key travels in that store, every record of those
peers must parse as an Event (whoever reads the store may send anything that frames well).
"""

from __future__ import annotations

import socket

from .. import _wire
from .._discovery.hubfile import HubInfo
from .._hub import Hub
from .._util.stderr import warn

__all__ = ["listen_remote"]

_tcp: dict[tuple[str, str, bytes | None], str] = {}  # (hub id, host, key) -> address


def listen_remote(hub: Hub, host: str, key: bytes | None) -> HubInfo:
    """Listen on ``host`` (once per hub, host and key) and describe the hub at that address.

    ``key``: a secret the launcher shared with every process (the store then carries none), or
    None for the hub's own key, which the store then carries.
    """
    resolved = host if ":" in host else socket.gethostbyname(host)
    known = _tcp.get((hub.hub_id, resolved, key))
    if known is None:
        checker = None
        if key is None:
            try:
                checker = _wire.EventChecker()
            except ImportError:
                warn("hyrax_tbhub: a hub served to other hosts without a launcher key and without "
                     "the tensorboard package: records from remote processes are checked for "
                     "framing only (see docs/threat-model.md)")
        bound_host, port = hub.listen_tcp(resolved, key, checker)
        known = _tcp[(hub.hub_id, resolved, key)] = f"tcp:{bound_host}:{port}"
    return hub.info(known)

