"""How this process joins a hub: rediscovery on a logging call, and leaving it again.

A process that has no channel yet but could still gain one (a child of multiprocessing, a
process that inherited a hub's address, a rank, a Ray worker) watches the per-user hub
generation (one mapped 8-byte word every hub start bumps) and looks again as soon as it changes;
a rank also looks in its process group's store, a Ray worker in its cluster's store.

Where it looks, in order: the hub file of its ancestry (``_discovery/hubfile.py``), the process
group's store (``_discovery/store.py``), the Ray job's entry (``_discovery/ray.py``), the hub a
sibling rank of the same launcher run published on this host (``_discovery/launcher.py``).
A process that found a hub through its engine and cannot reach it says so on stderr and reports
itself through the engine's store, where the owner counts it (``_process/engines.py``).
"""

from __future__ import annotations

import os
import sys
import threading

# Every module the logging path needs is imported here, never in a call: an import that another
# thread is doing when a fork happens leaves its lock held in the child (see _util/forksafe.py).
from .._channel import Channel
from .._counters import TRANSPORT_ERRORS
from .._discovery import hubfile
from .._discovery.launcher import find_sibling_hub
from .._discovery.ray import find_ray_hub, report_unreachable, watch_ray
from .._discovery.store import (
    find_distributed_hub,
    in_distributed_job,
    report_unreachable_in_store,
    torch_distributed,
    watch_store,
)
from .._naming import launched_as_rank, producer_name
from .._producer import Producer, local_start_ns
from .._util.ray import ray_worker
from .._util.stderr import warn
from . import hooks
from .late import LateProducer
from .rank_hub import start_rank_hub
from .state import STATE

__all__ = ["close_producer", "rediscover"]


def rediscover() -> Channel | None:
    """Look for a hub; return the channel to log to, or None while there is none.

    The one entry of every logging call that has no channel yet. Three parts, each in its own
    function: this one decides whether to look at all and makes a look safe to re-enter;
    :func:`_find` says where a hub is; :func:`_join` starts this process's producer for it.

    Reentrant: a signal handler that logs while its thread looks gets the pending calls'
    channel and its calls go to what the look finds (_process/pending.py).
    """
    watch = STATE.watch
    if watch is not None and not watch.changed():
        return STATE.channel  # the watching fast path, as in _look: no lock, no thread id
    me = threading.get_ident()
    if STATE.looking == me:
        return STATE.pending
    with STATE.lock:
        STATE.looking = me
        try:
            found = _look()
        finally:
            STATE.looking = 0
        if STATE.pending.items:
            STATE.pending.hand_over(found)
        return found


def _look() -> Channel | None:
    """Look for a hub (under ``STATE.lock``); the channel to log to, or None while there is none.

    Every thread that calls while a look is in progress waits for it and logs to what it found:
    the watch's generation is settled only by a look that found nothing (never while a channel
    exists), so until then every caller sees "changed" and queues on the lock behind the first.
    """
    watch = STATE.watch
    if watch is not None and not watch.changed():
        return STATE.channel  # None, unless another thread published one since our caller looked
    with STATE.lock:
        if STATE.channel is not None:
            return STATE.channel
        if STATE.hub is not None:
            return None  # the owner logs through its own hub or not at all
        watch = STATE.watch
        if watch is not None and not watch.changed():
            return None  # another thread looked while we waited, and found nothing
        may_gain = True
        if watch is None:
            may_gain = _may_gain_hub()
            if may_gain:
                try:
                    watch = STATE.watch = hubfile.GenerationWatch()
                except (OSError, ValueError):
                    pass
        # Read before looking, so a hub that starts in between is not missed.
        generation = watch.current() if watch is not None else 0
        found = _find()
        if STATE.channel is not None:  # this rank now runs its own hub (_process/rank_hub.py)
            return STATE.channel
        if found is None:
            if watch is not None:
                watch.settle(generation)
            STATE.idle = not may_gain  # notifies
            return None
        return _join(found[0], found[1], watch, generation)


def _find() -> tuple[hubfile.HubInfo, str | None] | None:
    """Where this process's hub is: its description, and the hub file it was read from (None when
    it came from an engine's store); None when there is none this process has not left already.

    Finding is not free of effects, on purpose. A rank's look starts its store watch (a Ray
    worker's, its cluster watch): a thread that pokes the generation watch when an entry appears
    later, since a hub started on another host bumps no word on this one. And a rank that finds
    rank 0's entry and rank 0's marker in a shared log folder serves a hub of its own
    (_process/rank_hub.py), started here because only that look can tell: ``STATE.channel`` is
    then that hub's channel, and this returns None.
    """
    found = hubfile.find_hub()
    if found is not None and found[0].hub_id not in STATE.finished_hubs:
        return found
    info = _find_distributed()
    if STATE.channel is not None:
        return None
    if info is None or info.hub_id in STATE.finished_hubs:
        info = _find_by_engine()
    if info is None or info.hub_id in STATE.finished_hubs:
        return None
    return info, None


def _join(
    info: hubfile.HubInfo, found_at: str | None, watch: hubfile.GenerationWatch | None, generation: int
) -> Channel | None:
    """Start and publish this process's producer for the hub ``info`` (under ``STATE.lock``).

    None, said once, when this process cannot use that hub (it is then left for good).
    """
    if not threading.main_thread().is_alive():
        # Interpreter shutdown has begun (threading's shutdown ran; atexit hooks and
        # finalizers run now): a sender thread may not start any more (Python 3.12 refuses it)
        # and no exit flush would send its queue. The first call of a process made this late
        # goes through the same path as calls made after an exit flush: each is sent and
        # confirmed before it returns, or counted and said once.
        late = LateProducer(info, local_start_ns(info))
        STATE.channel = late
        return late
    try:
        producer = Producer(info, _on_producer_gone)
    except Exception as exc:
        # A hub description this process cannot use (a bad address in a hub file or store
        # entry): logging must not raise for it. That hub is left for good, said once.
        STATE.finished_hubs.add(info.hub_id)
        warn(f"hyrax_tbhub: cannot use the hub at {info.address!r} ({exc!r}); logging here is a no-op")
        if watch is not None:
            watch.settle(generation)
        return None
    # Children of ranks. Before the channel is visible: whoever sees it may start
    # a child at once, and that child must find the hub.
    hubfile.publish_for_descendants(info, found_at)
    STATE.channel = producer
    STATE.lost_hub = False
    # The watch stays unsettled (it says "changed") while the channel exists: a call that read
    # the word just before the handle stopped watching then looks, finds this channel and logs,
    # so the watching fast path needs no second check of the channel. The look after this
    # producer ends settles it.
    producer.start()
    STATE.notify()
    hooks.hook_exit()
    hooks.flush_on_pool_terminate()
    return producer


def _find_distributed() -> hubfile.HubInfo | None:
    if "torch.distributed" not in sys.modules:
        return None
    if in_distributed_job() and STATE.watch is not None:
        watch = STATE.watch
        watch_store(watch.poke, lambda: STATE.finished_hubs)
    info = find_distributed_hub()
    if info is not None and info.hub_id not in STATE.finished_hubs:
        if start_rank_hub(info):
            return None
        _via_engine[info.hub_id] = "torch.distributed"
    return info


#: Hubs found through an engine's store rather than ancestry: hub id -> engine. A process that
#: cannot reach one of them reports itself there (item of _on_producer_gone).
_via_engine: dict[str, str] = {}


def _find_by_engine() -> hubfile.HubInfo | None:
    """The hub of this process's Ray job, or of a sibling rank of its launcher run."""
    if ray_worker():
        if STATE.watch is not None:
            watch = STATE.watch
            watch_ray(watch.poke, lambda: STATE.finished_hubs, lambda: STATE.channel is not None)
        info = find_ray_hub()
        if info is not None:
            _via_engine[info.hub_id] = "ray"
            return info
    if torch_distributed() is None:
        # Only without a process group: with one, rank 0's store entry decides (and may ask
        # this rank to run a hub of its own).
        info = find_sibling_hub()
        if info is not None:
            _via_engine[info.hub_id] = "launcher"
            return info
    return None


def _may_gain_hub() -> bool:
    """Could an ancestor start a hub later that this process should follow?

    Children of multiprocessing (pools, forkservers started before init) and processes that
    inherited a hub's address may; a top-level process only gets one by calling init itself.
    """
    if os.environ.get(hubfile.ENV_INFO):
        return True
    if launched_as_rank():
        return True  # a rank of a distributed job: rank 0 may serve a hub (serve_ranks)
    if ray_worker():
        return True  # the job's driver may publish a hub in the cluster's store
    if "torch.distributed" in sys.modules and in_distributed_job():
        return True
    for modname in ("multiprocessing", "multiprocess"):
        mod = sys.modules.get(modname)
        if mod is None:
            continue
        try:
            if mod.parent_process() is not None or mod.current_process().name != "MainProcess":
                return True
        except Exception:
            continue
    return False


def _on_producer_gone(producer: Producer) -> None:
    if producer.lost and producer.run_name is None:
        _unreachable(producer)
    STATE.finished_hubs.add(producer.info.hub_id)
    hubfile.withdraw_published()
    if producer.lost:
        STATE.lost_hub = True
    if STATE.channel is producer:
        STATE.channel = None
        STATE.notify()


def _unreachable(producer: Producer) -> None:
    """A hub exists for this job but this process never got through to it: never silent."""
    info = producer.info
    engine = _via_engine.get(info.hub_id)
    reported = (engine == "ray" and report_unreachable(info, producer_name())) or (
        engine == "torch.distributed" and report_unreachable_in_store(info.hub_id))
    where = (f"the owner counts it under {TRANSPORT_ERRORS}" if reported
             else "nothing in the log can count it")
    warn(f"hyrax_tbhub: this process ({producer_name()}) found the hub of its job at {info.address} "
         f"{'through ' + engine + ' ' if engine else ''}and cannot reach it; {where}; "
         "its logging calls are no-ops")


def close_producer(timeout: float | None = None) -> None:
    """Flush and leave the hub (``close_tensorboard_logger()`` in a producer, or process exit)."""
    ch = STATE.channel
    if isinstance(ch, Producer) and ch.pid == os.getpid():
        ch.close(timeout)
        STATE.finished_hubs.add(ch.info.hub_id)
        hubfile.withdraw_published()
        if STATE.channel is ch:
            STATE.channel = None
            STATE.notify()


def _leave(timeout: float | None) -> None:
    """This process's flush (hooks.py): at exit an owner closes its hub; a producer sends its queue."""
    if timeout is None and STATE.hub is not None and STATE.close_owner is not None:
        STATE.close_owner()
    else:
        close_producer(timeout)


hooks.add_flusher(_leave, terminate_timeout=hooks.PRODUCER_TERMINATE_BUDGET)
