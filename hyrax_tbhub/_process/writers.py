"""Per-process registry of :class:`hyrax_tbhub.SummaryWriter` hubs and producers.

Kept apart from ``state`` (the process-wide hub of ``init_tensorboard_logger``): a writer's hub
is reached only through the writer object handed to a process, never through discovery, so the
two never meet. The same three facts shape it:
- a process has at most one producer per writer hub (one run per producer process), shared by
  every writer object of that hub in the process;
- fork and forkserver children end with ``os._exit``: the writers' flush is registered with
  hooks.py, which runs it at every kind of exit and on a pool worker's SIGTERM;
- a forked child inherits the parent's hubs, producers and writer objects but not their threads:
  ``os.register_at_fork`` drops the inherited sockets and files and turns every writer object
  into one that connects as a producer on its next call.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

# Imported here, not in the first logging call: an import running in one thread while another
# forks leaves the module's import lock held in the child, and DataLoader workers fork
# from processes whose threads log.
from .._hub import Hub, HubConfig, LocalChannel
from .._producer import Producer
from ..options import DEFAULT_OPTIONS, Options
from . import hooks
from .pending import PendingCalls

if TYPE_CHECKING:
    from .._channel import Channel
    from .._discovery.hubfile import HubInfo

__all__ = ["OwnedHub", "channel_for", "open_hub", "release_hub", "track"]


class OwnedHub:
    """A hub this process runs for one log folder, shared by its writers of that folder."""

    __slots__ = ("hub", "channel", "users", "key")

    def __init__(self, hub: Hub, channel: LocalChannel, key: str) -> None:
        self.hub = hub
        self.channel = channel
        self.users = 1
        self.key = key


_pid = os.getpid()
# Reentrant: a signal handler that logs through a writer object may run on the thread that holds
# it (while the first call of that writer connects).
_lock = threading.RLock()
_owned: dict[str, OwnedHub] = {}  # absolute log folder -> its hub
_owned_by_id: dict[str, OwnedHub] = {}
_producers: dict[str, Producer] = {}  # hub id -> this process's producer for it
_finished: set[str] = set()  # hubs whose producer here ended: a dead hub is not asked again
_connecting: dict[str, tuple[int, PendingCalls]] = {}  # hub id -> (thread connecting, its handler's calls)
_writers: weakref.WeakSet[Any] = weakref.WeakSet()  # every live writer object, for fork


def track(writer: Any) -> None:
    """Remember ``writer`` so a fork can reset it (it must have ``_after_fork()``)."""
    _writers.add(writer)


def open_hub(
    logdir: str,
    suffix: str,
    purge_step: int | None,
    writer_kwargs: dict[str, Any],
    options: Options = DEFAULT_OPTIONS,
) -> OwnedHub:
    """The hub of ``logdir`` in this process: started now, or shared with an earlier writer.

    Two writers of one folder must share it: two hubs would both write the folder's runs (the
    root run and ``dataloader_worker_0`` twice), and TensorBoard drops points of a run whose
    steps go back.
    """
    key = os.path.abspath(logdir)
    with _lock:
        owned = _owned.get(key)
        if owned is not None:
            owned.users += 1
            return owned
        hub = Hub(logdir, HubConfig(options, filename_suffix=suffix), purge_step=purge_step)
        channel = LocalChannel(hub, writer_kwargs)
        hub.start(publish=False)
        owned = OwnedHub(hub, channel, key)
        _owned[key] = owned
        _owned_by_id[hub.hub_id] = owned
    hooks.hook_exit()
    return owned


def release_hub(owned: OwnedHub) -> None:
    """One writer of ``owned`` closed; the last one closes the hub (everything on disk)."""
    with _lock:
        owned.users -= 1
        if owned.users > 0:
            return
        if _owned.get(owned.key) is owned:
            del _owned[owned.key]
        _owned_by_id.pop(owned.hub.hub_id, None)
    owned.hub.close()


def channel_for(info: HubInfo) -> Channel | None:
    """Where a writer of the hub ``info`` logs from this process; None if that hub is gone."""
    if info.owner_pid == os.getpid():
        owned = _owned_by_id.get(info.hub_id)
        return None if owned is None else owned.channel
    producer = _producers.get(info.hub_id)
    if producer is not None:
        return producer
    if info.hub_id in _finished:
        return None
    connecting = _connecting.get(info.hub_id)
    if connecting is not None and connecting[0] == threading.get_ident():
        return connecting[1]
    with _lock:
        producer = _producers.get(info.hub_id)
        if producer is not None:
            return producer
        # A signal handler that logs through a writer of this hub while this thread connects
        # gets the pending calls' channel (as the process-wide handle does, _process/pending.py).
        held = PendingCalls()
        _connecting[info.hub_id] = (threading.get_ident(), held)
        try:
            producer = Producer(info, _on_producer_gone)
        finally:
            _connecting.pop(info.hub_id, None)
        _producers[info.hub_id] = producer
        producer.start()
        held.hand_over(producer)
    hooks.hook_exit()
    hooks.flush_on_pool_terminate()
    return producer


def _on_producer_gone(producer: Producer) -> None:
    # Called from the producer's sender thread when it said goodbye or lost the hub.
    _finished.add(producer.info.hub_id)
    if _producers.get(producer.info.hub_id) is producer:
        del _producers[producer.info.hub_id]


def close_producers(timeout: float | None = None) -> None:
    """Send what this process's writer producers queued and leave their hubs."""
    for producer in list(_producers.values()):
        if producer.pid == os.getpid():
            producer.close(timeout)


def _leave(timeout: float | None) -> None:
    """The writers' flush (hooks.py): producers send their queues; at exit owned hubs close too."""
    if _pid != os.getpid():
        return
    close_producers(timeout)
    if timeout is None:
        for owned in list(_owned.values()):
            owned.users = 1
            release_hub(owned)


hooks.add_flusher(_leave, terminate_timeout=1.0)


def _after_fork_in_child() -> None:
    global _pid, _lock, _owned, _owned_by_id, _producers, _finished
    for owned in _owned.values():
        owned.hub.abandon_in_child()
    for producer in _producers.values():
        producer.abandon_in_child()
    _pid = os.getpid()
    _lock = threading.RLock()
    _owned, _owned_by_id, _producers, _finished = {}, {}, {}, set()
    _connecting.clear()
    for writer in list(_writers):
        writer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
