"""The knobs of a hub and of its producers, as one frozen object.

Set them where the hub starts (``init_tensorboard_logger(..., options=Options(...))`` or
``SummaryWriter(..., options=...)``); every process that logs to that hub uses the hub's options:
they travel in the hub file with the address and key, so a
descendant inherits them with nothing handed to it. Ranks on other machines use the defaults:
the torch.distributed store is not authenticated, so options never travel through it.
docs/how-it-works.md says why each default.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["Options"]

_MIB = 1024 * 1024


@dataclass(frozen=True)
class Options:
    """Bounds and deadlines of one hub and of every producer that logs to it.

    Producer side (each process that logs to the hub from elsewhere):

    - ``queue_max_events``, ``queue_max_bytes``: what one producer holds while its sender is
      behind; past either, events are dropped and counted under ``hyrax_tbhub/dropped/<run>``.
    - ``batch_events``, ``batch_bytes``: the most one frame carries; a full batch also wakes the
      sender early.
    - ``send_interval``: seconds between looks at the queue when nothing woke the sender;
      ``send_min_gap``: seconds at least between two sends while busy (keeps batches large).
    - ``connect_timeout``: seconds for connect and handshake; ``exit_timeout``: seconds a process
      exit waits for its queued events to be sent; ``final_batch_wait``: seconds at most a call
      waits while its producer sends its final batch.

    Hub side:

    - ``handshake_timeout``: seconds the hub waits for a peer to prove the key and say hello.
    - ``close_timeout``: seconds ``close`` waits for producers to send what they queued.
    - ``max_pending_handshakes``: unauthenticated connections held at once (oldest dropped).
    - ``max_runs``: runs open at once per hub (a run is open while its producer is connected);
      ``max_subruns``: sub-runs per run. Past them events are counted, one by one, under
      ``hyrax_tbhub/over_cap``.
    - ``max_peer_connections``: connections one holder may keep open (a pid on the Unix
      socket, an address on TCP); more are closed at accept and counted under
      ``hyrax_tbhub/strangers``.
    """

    queue_max_events: int = 200_000
    queue_max_bytes: int = 64 * _MIB
    batch_events: int = 2048
    batch_bytes: int = 4 * _MIB
    send_interval: float = 0.05
    send_min_gap: float = 0.005
    connect_timeout: float = 10.0
    exit_timeout: float = 10.0
    final_batch_wait: float = 0.02
    handshake_timeout: float = 10.0
    close_timeout: float = 30.0
    max_pending_handshakes: int = 512
    max_runs: int = 16_384
    max_subruns: int = 1024
    max_peer_connections: int = 256

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "int":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"Options.{field.name} must be an int >= 1, not {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0
            ):
                raise ValueError(f"Options.{field.name} must be a finite number >= 0, not {value!r}")

    def replace(self, **changes: Any) -> Options:
        """A copy with ``changes`` (checked as the constructor checks them)."""
        return dataclasses.replace(self, **changes)

    def to_wire(self) -> dict[str, int | float]:
        """The fields as plain JSON values, for a hub file or a store entry."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any] | None) -> Options:
        """Options from :meth:`to_wire` output of this or another version of the package.

        Fields this version does not know are ignored and missing ones take their default, so a
        child running a newer or older hyrax_tbhub still joins. A value out of range raises
        ``ValueError``; the caller decides what that means (a producer falls back to defaults).
        """
        if not data:
            return DEFAULT_OPTIONS
        if not isinstance(data, Mapping):
            raise TypeError(f"options must be a mapping, not {type(data).__name__}")
        known = {field.name for field in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})


#: The options of a hub started without any.
DEFAULT_OPTIONS = Options()
