"""Per-process state: which channel logging calls go to, and how it survives fork and exit.

Three facts shape this module (FACTS):
- fork and forkserver children end with ``os._exit``: atexit does not run there, only the
  finalizers of the multiprocessing library that started them, and stdlib ``multiprocessing``
  and ``multiprocess`` keep separate registries. A producer registers with all three.
- a forked child inherits the parent's objects but not its threads: ``os.register_at_fork``
  resets the state in the child, which then finds the hub like any other descendant.
- a process may start before the hub exists (pool workers, forkserver children): a process with
  no channel that could still gain one watches the per-user hub generation (one mapped 8-byte
  word every hub start bumps) and looks again as soon as it changes.
"""

from __future__ import annotations

import atexit
import multiprocessing.util  # noqa: F401 - loaded for hook_pool_workers (a pool made after our import)
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

# Every module the logging path needs is imported here, never in a call: an import that another
# thread is doing when a fork happens leaves its lock held in the child (see _forksafe).
from . import _discovery
from ._distributed import find_distributed_hub, in_distributed_job, watch_store
from ._naming import process_name
from ._producer import Producer
from ._rank_hub import start_rank_hub  # at import: no import on the logging path (fork safety)
from ._stderr import warn
from ._threads import daemon_thread

if TYPE_CHECKING:
    from ._channel import Channel
    from ._hub import Hub

__all__ = ["STATE", "channel", "rediscover"]

class _ProcessState:
    __slots__ = (
        "pid", "channel", "hub", "_idle", "idle_hooks", "watch", "finished_hubs", "lock", "exit_hooked",
        "lost_hub", "close_owner",
    )

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.channel: Channel | None = None
        self.hub: Hub | None = None
        # True when this process has no hub and nothing to look for: a top-level process that
        # has not called init. Logging calls then return after one attribute check.
        self._idle = False
        self.idle_hooks: list[Callable[[], None]] = []
        self.watch: _discovery.GenerationWatch | None = None
        self.finished_hubs: set[str] = set()  # hubs this process already left: never rejoin them
        self.lock = threading.Lock()
        self.exit_hooked = False
        # The hub went away under a producer of this process (not a clean close): flush() says
        # False from then on, since what was logged since went nowhere. Cleared by a new hub.
        self.lost_hub = False
        # close_tensorboard_logger, set by tensorboardx_logger (which imports this module): the
        # exit hook of an owner calls it without importing anything at exit.
        self.close_owner: Callable[[], None] | None = None

    @property
    def idle(self) -> bool:
        return self._idle

    @idle.setter
    def idle(self, value: bool) -> None:
        self._idle = value
        self.notify()

    def notify(self) -> None:
        """Tell the hooks (the handle's fast paths) that channel, idle or watch changed."""
        for hook in self.idle_hooks:
            hook()


STATE = _ProcessState()


def channel() -> Channel | None:
    """The channel of this process, looking for a hub if there is none yet."""
    ch = STATE.channel
    if ch is not None:
        return ch
    return rediscover()


def rediscover() -> Channel | None:
    """Look for a hub; return the channel to log to, or None while there is none.

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
                    watch = STATE.watch = _discovery.GenerationWatch()
                except (OSError, ValueError):
                    pass
        # Read before looking, so a hub that starts in between is not missed.
        generation = watch.current() if watch is not None else 0
        found = _discovery.find_hub()
        info = found[0] if found is not None else None
        found_at = found[1] if found is not None else None
        if info is None or info.hub_id in STATE.finished_hubs:
            info, found_at = _find_distributed(), None
            if STATE.channel is not None:  # this rank now runs its own hub (_rank_hub.py)
                return STATE.channel
        if info is None or info.hub_id in STATE.finished_hubs:
            if watch is not None:
                watch.settle(generation)
            STATE.idle = not may_gain  # notifies
            return None
        producer = Producer(info, _on_producer_gone)
        # Issue 10: children of ranks. Before the channel is visible: whoever sees it may start
        # a child at once, and that child must find the hub.
        _discovery.publish_for_descendants(info, found_at)
        STATE.channel = producer
        STATE.lost_hub = False
        # The watch stays unsettled (it says "changed") while the channel exists: a call that read
        # the word just before the handle stopped watching then looks, finds this channel and logs,
        # so the watching fast path needs no second check of the channel. The look after this
        # producer ends settles it.
        producer.start()
        STATE.notify()
        hook_exit()
        _flush_on_pool_terminate()
        return producer


def _find_distributed() -> _discovery.HubInfo | None:
    if "torch.distributed" not in sys.modules:
        return None
    if in_distributed_job() and STATE.watch is not None:
        watch = STATE.watch
        watch_store(watch.poke, lambda: STATE.finished_hubs)
    info = find_distributed_hub()
    if info is not None and info.hub_id not in STATE.finished_hubs:
        if start_rank_hub(info):
            return None
    return info


def _may_gain_hub() -> bool:
    """Could an ancestor start a hub later that this process should follow?

    Children of multiprocessing (pools, forkservers started before init) and processes that
    inherited a hub's address may; a top-level process only gets one by calling init itself.
    """
    if os.environ.get(_discovery.ENV_INFO):
        return True
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return True  # a rank of a distributed job: rank 0 may serve a hub (serve_ranks)
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
    STATE.finished_hubs.add(producer.info.hub_id)
    _discovery.withdraw_published()
    if producer.lost:
        STATE.lost_hub = True
    if STATE.channel is producer:
        STATE.channel = None
        STATE.notify()


def close_producer(timeout: float | None = None) -> None:
    """Flush and leave the hub (``close_tensorboard_logger()`` in a producer, or process exit)."""
    ch = STATE.channel
    if isinstance(ch, Producer) and ch.pid == os.getpid():
        ch.close(timeout)
        STATE.finished_hubs.add(ch.info.hub_id)
        _discovery.withdraw_published()
        if STATE.channel is ch:
            STATE.channel = None
            STATE.notify()


def _at_exit() -> None:
    if STATE.pid != os.getpid():
        return
    try:
        if STATE.hub is not None and STATE.close_owner is not None:
            STATE.close_owner()
        else:
            close_producer()
    except Exception as exc:  # an exit hook must never turn a clean exit into a traceback
        warn(f"hyrax_tbhub: error while flushing at exit: {exc!r}")


def hook_exit() -> None:
    """Make sure queued events are sent however this process ends normally."""
    hook_pool_workers()
    if STATE.exit_hooked:
        return
    STATE.exit_hooked = True
    atexit.register(_at_exit)
    for modname in ("multiprocessing.util", "multiprocess.util"):
        # Only a library that is already imported can have started this process; looked up, not
        # imported (no import on the logging path).
        util = sys.modules.get(modname)
        if util is None:
            continue
        try:
            # exitpriority >= 0 runs in the child's _exit_function, before os._exit.
            util.Finalize(None, _at_exit, exitpriority=100)
        except Exception:
            pass


def _flush_on_pool_terminate() -> None:
    """In a multiprocessing pool worker, send what is queued before SIGTERM ends the process.

    Leaving ``with Pool(...)`` calls ``terminate()``, which SIGTERMs the workers right after the
    last result arrives: the events of the last tasks may still be queued, and no exit hook runs
    on a signal. Only pool workers get this (terminate is their normal end) and only when SIGTERM
    still has its default action: a Python handler runs between bytecodes of the main thread, so
    in a worker stuck in C it would delay the kill, which DataLoader's shutdown relies on.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if "PoolWorker" not in (process_name() or ""):
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _flush_then_die)
            _watch_sigterm_off_main()
    except (ValueError, OSError):
        pass


# (pid, read end, write end) of the wakeup channel of this process's SIGTERM watch.
_sigterm_watch: tuple[int, socket.socket, socket.socket] | None = None


def _watch_sigterm_off_main() -> None:
    """Make SIGTERM end the process even when the main thread cannot run the Python handler.

    CPython runs a Python handler only on the main thread. When the kernel hands the signal to
    another thread (one of the user's: ours block it) while the main thread waits in C (a pool
    worker waiting on its task queue), the handler never runs and the worker outlives
    ``terminate()``: ``with Pool`` then hangs for good. The signal module's wakeup fd receives the
    signal number whichever thread took it; a thread of ours waits on it and does the handler's
    work: flush, then end the process. Called on the main thread, right after the handler is set.
    """
    global _sigterm_watch
    watch = _sigterm_watch
    if watch is not None and watch[0] == os.getpid():
        return
    inherited = -1 if watch is None else watch[2].fileno()  # a fork child's copy of the parent's
    r, w = socket.socketpair()
    w.setblocking(False)
    try:
        old = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):
        r.close()
        w.close()
        return
    if old not in (-1, inherited):  # someone else's (an event loop): theirs to keep
        signal.set_wakeup_fd(old)
        r.close()
        w.close()
        return
    _sigterm_watch = (os.getpid(), r, w)
    daemon_thread(lambda: _wait_for_sigterm(r), "hyrax_tbhub-sigterm").start()


def _wait_for_sigterm(r: socket.socket) -> None:
    try:
        while signal.SIGTERM not in r.recv(64):
            pass
    except OSError:
        return
    try:
        writers = sys.modules.get("hyrax_tbhub._writers")
        if writers is not None:
            writers.close_producers(timeout=1.5)
        close_producer(timeout=2.0)
    except Exception:
        pass
    finally:
        # Whichever of this thread and the main thread's handler gets here first ends the
        # process; exit status 128 + SIGTERM, as a shell reports death by SIGTERM.
        os._exit(128 + signal.SIGTERM)


def _flush_then_die(signum: int, frame: object) -> None:
    try:
        # Whatever the flush meets, the process ends within 3 s: SIGALRM's default action
        # terminates it without needing this (main) thread to run again.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(3)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        close_producer(timeout=2.0)
    finally:
        # Die of SIGTERM as the default action would have: same exit status for the parent.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _after_fork_in_child() -> None:
    hub, inherited = STATE.hub, list(Producer.instances)
    # The state first: a thread of the parent may have held the lock at the fork (in a look the
    # child never sees finish), and whatever goes wrong below must not leave the child with it.
    STATE.lock = threading.Lock()
    STATE.pid = os.getpid()
    STATE.channel = None
    STATE.hub = None
    STATE.watch = None
    STATE.finished_hubs = set()
    STATE.lost_hub = False
    # The parent's finalizer entries are cleared by multiprocessing in its children but not by a
    # bare os.fork(); either way this process registers its own when it first logs.
    STATE.exit_hooked = False
    if hub is not None:
        try:
            hub.abandon_in_child()
        except Exception as exc:
            warn(f"hyrax_tbhub: after fork, while letting go of the parent's hub: {exc!r}")
    # Every producer object of the parent, not only the published one: a fork while another
    # thread was still building one (its socket connected, not yet published) must not leave our
    # copy of that socket open, or the parent's connection outlives the parent.
    for producer in inherited:
        try:
            producer.abandon_in_child()
        except Exception as exc:
            warn(f"hyrax_tbhub: after fork, while letting go of the parent's producer: {exc!r}")
    STATE.idle = False  # notifies


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _install_pool_terminate_flush(_obj: object = None) -> None:
    try:
        _flush_on_pool_terminate()
    except Exception:  # a hook at import or in a child's bootstrap must never fail it
        pass


# The flush on terminate needs the main thread, but a pool worker's first logging call may come
# from another thread (the ledger's seed 3032 lost a task's last events that way). So it is also
# installed where the main thread is sure to pass: at our import (spawn and forkserver workers
# import us on their main thread while unpickling a task) and in multiprocessing's own after-fork
# hook, which fork workers run on their main thread once their process name is set.
_after_fork_hooked: set[str] = set()


def hook_pool_workers() -> None:
    """Register the flush with the after-fork registry of each multiprocessing library loaded.

    Called at import and again by init and by every new producer (through ``hook_exit``): a
    ``multiprocess`` imported after us is hooked before it forks any pool worker of ours. Looked
    up in ``sys.modules``, never imported here (no import on the logging path).
    """
    for modname in ("multiprocessing.util", "multiprocess.util"):
        util = sys.modules.get(modname)
        if util is None or modname in _after_fork_hooked:
            continue
        try:
            # The registry holds its key weakly: this module-level function lives as long as we do.
            util.register_after_fork(_install_pool_terminate_flush, _install_pool_terminate_flush)
        except Exception:
            continue
        _after_fork_hooked.add(modname)


_install_pool_terminate_flush()
# stdlib's registry is imported for it (~20 ms, once) at the top of this module.
hook_pool_workers()
