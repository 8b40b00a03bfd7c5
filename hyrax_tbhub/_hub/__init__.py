"""The hub: the thread in the owner process that owns every event file of a log folder.

``server`` runs the thread (listeners, handshakes, frames; the only module with sockets),
``store`` keeps the runs, their files and the counters, ``guard`` caps what a key holder may make
it keep, ``runfile`` writes one event file, ``aggregate`` computes live aggregates, ``owner`` is the
owner process's channel into its own hub.
"""

from __future__ import annotations

from .aggregate import attach
from .owner import LocalChannel
from .server import Hub, HubConfig

__all__ = ["Hub", "HubConfig", "LocalChannel", "attach"]
