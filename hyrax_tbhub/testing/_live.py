"""Looking at the live hub from a test: who is connected, what is published, waiting for it.

Tests of multiprocess logging need to wait for a real condition (every producer joined, every dead
one's connection dropped) instead of sleeping; these helpers name those conditions so a test does
not reach into the hub's internals, which change between releases.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._discovery import hubfile
from .._process.state import STATE
from ..tensorboardx_logger import close_tensorboard_logger

if TYPE_CHECKING:
    from .._hub import Hub

_POLL_S = 0.005


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Return as soon as ``condition()`` is true; raise TimeoutError naming ``what`` after ``timeout`` s.

    The condition is polled every few milliseconds: for conditions no event announces (a
    connection the hub dropped, a file that appeared), in place of a ``sleep`` that guesses.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(_POLL_S)


class HubProbe:
    """A read-only view of the hub this process owns (from :func:`running_hub`).

    ``connections()`` and ``joined_runs()`` read the hub's state as its thread changes it: use them
    in a :func:`wait_until` condition, e.g. ``wait_until(lambda: probe.connections() == 0, 10,
    "every dead producer's connection to be dropped")``.
    """

    __slots__ = ("_hub",)

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HubProbe) and other._hub is self._hub

    def __hash__(self) -> int:
        return id(self._hub)

    @property
    def log_dir(self) -> str:
        """The folder the hub writes (``log_dir`` of ``init_tensorboard_logger``)."""
        return self._hub.logdir

    @property
    def address(self) -> str:
        """Where producers connect: a Unix socket path, or ``tcp:host:port`` once ranks are served."""
        return self._hub.address

    @property
    def alive(self) -> bool:
        """The hub's thread is still running (False once closed, or if it died)."""
        return self._hub._thread.is_alive()

    @property
    def strangers_rejected(self) -> int:
        """Connections the hub cut before they proved the key (the ``STRANGERS`` counter's value)."""
        return self._hub.strangers_rejected

    def connections(self) -> int:
        """Producer connections open now, in the handshake or joined."""
        return len(self._hub._conns)

    def joined_runs(self) -> list[str]:
        """The runs (folders below the log folder) of the producers connected now that said hello."""
        conns = list(self._hub._conns.values())  # the hub thread adds and drops them meanwhile
        return [c.run.name for c in conns if c.run is not None]


def logging_to_a_hub() -> bool:
    """Whether this process's logging calls go to a hub now: the one it owns, or one it found and
    joined. A pure read (it does not make the process look for a hub): a distributed rank or a
    worker can poll it to wait until it found the hub by itself."""
    return STATE.channel is not None


def running_hub(writer: Any = None) -> HubProbe | None:
    """The hub this process owns (started by ``init_tensorboard_logger`` or ``capture_logs``), or None.

    With a ``hyrax_tbhub.SummaryWriter``: the hub that writer opened for its own log folder, if it
    is in this process and still open (writers of one folder share one hub: equal probes).
    """
    if writer is None:
        hub = STATE.hub
    else:
        owned = getattr(writer, "_owned", None)
        hub = None if owned is None else owned.hub
    if hub is None or hub.owner_pid != os.getpid():
        return None
    return HubProbe(hub)


@dataclass(frozen=True)
class PublishedHub:
    """The hub that processes started from here now will find: the hub file named in the
    environment (``HYRAX_TBHUB_INFO``) and what it says."""

    hub_file: str
    log_dir: str
    address: str
    owner_pid: int


def published_hub() -> PublishedHub | None:
    """The hub this process's environment hands to the processes it starts, or None if there is none
    (or its file is gone, or is not this user's own)."""
    path = os.environ.get(hubfile.ENV_INFO)
    info = hubfile.read_hub_file(path) if path else None
    if path is None or info is None:
        return None
    return PublishedHub(hub_file=path, log_dir=info.logdir, address=info.address, owner_pid=info.owner_pid)


def reset_logging() -> None:
    """Close the hub this process owns, if any, and forget the hubs it left: the next test starts
    as a fresh interpreter would (a process that closed a hub otherwise stops looking for one).

    For an autouse pytest fixture of a suite whose tests start hubs::

        import pytest
        from hyrax_tbhub.testing import reset_logging

        @pytest.fixture(autouse=True)
        def _fresh_logging():
            yield
            reset_logging()
    """
    close_tensorboard_logger()
    with STATE.lock:
        STATE.idle = False
        STATE.watch = None
        STATE.finished_hubs.clear()
