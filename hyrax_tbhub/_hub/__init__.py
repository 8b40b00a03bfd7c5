"""The hub: the thread in the owner process that owns every event file of a log folder.

Where a scalar goes, once it reaches the hub:

- from another process: ``server`` (the only module with sockets: listeners, handshakes, frames)
  reads the producer's batch, ``guard`` caps what a key holder may make it keep, and ``store``
  writes it into that producer's run;
- from the owner itself: ``owner.LocalChannel`` puts it on the hub's deque, which the same thread
  drains into ``store`` (the root run);
- ``store`` (runs, sub-runs, counters; no sockets, no threads) hands it to a ``runfile.RunFile``,
  one ``os.write`` per batch, and feeds ``aggregate`` if live aggregates were asked for.
"""

from __future__ import annotations

from .aggregate import attach
from .owner import LocalChannel
from .server import Hub, HubConfig

__all__ = ["Hub", "HubConfig", "LocalChannel", "attach"]
