"""How this process's queued events survive its end: exit, a pool's SIGTERM, and fork.

Each kind of channel registers its flush here (``add_flusher``: the process-wide producer in
connect.py, ``SummaryWriter`` objects' hubs and producers in writers.py); exit and SIGTERM run
them all. Each hook, and the hazard it answers:

``atexit`` (``hook_exit``: ``_at_exit``)
    A normal interpreter exit: the sender thread is a daemon and dies with the process, so what
    is queued would be lost. The owner closes its hub (every producer drained); a producer sends
    its queue and says goodbye. A late channel (_process/late.py) takes the channel's place
    first: a call that a daemon thread or a later exit hook makes meanwhile is still logged,
    not dropped by a channel that is closing.
multiprocessing's and multiprocess's ``Finalize(exitpriority=100)`` (``hook_exit``)
    fork and forkserver children end with ``os._exit``: atexit does not run there, only the
    finalizers of the library that started them, and stdlib ``multiprocessing`` and
    ``multiprocess`` keep separate registries. The same ``_at_exit`` runs from each.
a SIGTERM handler in pool workers (``flush_on_pool_terminate``: ``_flush_then_die``)
    ``Pool.terminate()`` (leaving ``with Pool``) SIGTERMs its workers right after the last
    result, while the last tasks' events may be queued; no exit hook runs on a signal. The
    handler flushes within ``_terminate_budget()``, then dies of SIGTERM (same exit status); a
    SIGALRM set first ends the process 1 s after that budget whatever the flush meets. Only in
    pool workers, and only while SIGTERM has its default action: in a worker stuck in C a
    Python handler would delay the kill that DataLoader's shutdown relies on.
a thread on the signal module's wakeup fd (``_watch_sigterm_off_main``)
    CPython runs a Python handler only on the main thread: a SIGTERM the kernel hands to a user
    thread while the main thread waits in C (a pool worker waiting for a task) never runs it,
    and ``with Pool`` hangs for good. The thread does the handler's work.
one lock for both (``_ending``)
    The handler and the thread may both see one SIGTERM: two flushes at once raced, the second
    found the producer closing and ended the process while the first still sent.
every producer of the process on SIGTERM (``_finish_producers``)
    A pool worker gets its end sentinel and ``terminate()``'s SIGTERM at once, so the signal can
    come at any line of the exit hook, after it swapped the late channel in and before it closed
    the producer it took out. The SIGTERM flush finds producers through ``Producer.instances``,
    not the process state, starts each one's close and waits for their final batches (within
    ``PRODUCER_TERMINATE_BUDGET``; never a join, which could be the interrupted close's own).
``os.register_at_fork(after_in_child=...)`` (``_after_fork_in_child``)
    A forked child inherits the parent's objects but not its threads: the state's lock may be
    held by a parent thread that never runs here, and the child holds copies of the parent's
    hub, producer and SIGTERM-watch sockets (a SIGTERM to the child written to the parent's
    wakeup fd would end the parent). The child resets the state, lets go of those copies, and
    finds the hub like any other descendant.
the pool-worker install at import and in multiprocessing's ``register_after_fork``
(``hook_pool_workers``)
    A signal handler can only be set on the main thread, and a pool worker's first logging
    call may come from another one. So the SIGTERM flush is also installed where the main
    thread is sure to pass: our import (spawn and forkserver workers unpickle their task on it)
    and the after-fork hook fork workers run once their process name is set.

No hook imports anything: an import another thread is in at a fork hangs the child's next
import of that module (``multiprocessing.util`` is imported with this module for that reason).
"""

from __future__ import annotations

import atexit
import math
import multiprocessing.util  # noqa: F401 - loaded for hook_pool_workers (a pool made after our import)
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

from .._discovery import hubfile
from .._hub import Hub
from .._naming import process_name
from .._producer import Producer, producers_of_this_process
from .._util.stderr import warn
from .._util.threads import daemon_thread
from .late import LateOwner, LateProducer
from .state import STATE

__all__ = [
    "PRODUCER_TERMINATE_BUDGET", "add_flusher", "flush_on_pool_terminate", "hook_exit", "hook_pool_workers",
]

#: ``flush(timeout)``: send what is queued and leave the hub; None at exit (usual deadlines).
Flusher = Callable[[float | None], None]
_flushers: list[tuple[Flusher, float]] = []
#: s: on a pool worker's SIGTERM, for every producer of the process to send its queue (and the
#: process-wide producer's share again in connect.py's flusher).
PRODUCER_TERMINATE_BUDGET = 2.0


def add_flusher(flush: Flusher, terminate_timeout: float) -> None:
    """Run ``flush(None)`` at this process's exit and ``flush(terminate_timeout)`` on a pool's SIGTERM.

    ``flush(timeout)`` sends what its producers queued and leaves their hubs; ``timeout`` None
    means "at exit, the usual deadlines". Every kind of channel (the process-wide one, those of
    SummaryWriter objects) registers one, at import: exit and SIGTERM then run the same code.
    """
    _flushers.append((flush, terminate_timeout))


def _flush_all(at_exit: bool) -> None:
    if not at_exit:
        _finish_producers(PRODUCER_TERMINATE_BUDGET)
    for flush, terminate_timeout in list(_flushers):
        try:
            flush(None if at_exit else terminate_timeout)
        except Exception as exc:  # an exit hook must never turn a clean exit into a traceback
            warn(f"hyrax_tbhub: error while flushing at exit: {exc!r}")


def _finish_producers(budget: float) -> None:
    """On SIGTERM: every producer of this process sends what it queued, wherever its life is.

    Found through ``Producer.instances``, not through the process state: a pool worker gets its
    end sentinel and ``terminate()``'s SIGTERM at once, so the signal can come while the exit
    hook (whose code it interrupts) has already swapped the process's channel for the late one
    and not yet closed the producer it took out; looking for that producer in the state found
    nothing to flush, and the worker died with its queue.
    """
    mine = producers_of_this_process()
    for producer in mine:
        producer.begin_close()
    deadline = time.monotonic() + budget
    if not all([p.wait_closed(max(0.0, deadline - time.monotonic())) for p in mine]):
        warn("hyrax_tbhub: the events this process queued before SIGTERM may not all have been sent")


def _terminate_budget() -> float:
    """How long a SIGTERM flush may take: the producers', then each flusher's."""
    return PRODUCER_TERMINATE_BUDGET + sum(budget for _flush, budget in _flushers)


def _at_exit() -> None:
    if STATE.pid != os.getpid():
        return
    hub, channel = STATE.hub, STATE.channel
    late = _late_channel(hub, channel)
    if late is not None:
        # The late channel first, the flush after: a call that a daemon thread (or an exit hook
        # that runs after ours) makes while the hub drains or the producer says goodbye goes to
        # it, not to a channel that is closing (where it would be a no-op, as after a close).
        with STATE.lock:
            STATE.hub = None
            STATE.channel = late
            STATE.idle = False  # notifies
        try:
            if isinstance(late, LateOwner):
                assert hub is not None
                hub.late = late.put_item  # calls that found the hub still published
                hub.close()
            elif isinstance(channel, Producer):
                # A thread that read the channel before the switch calls through it: to the
                # late channel too, not into an outbox that refuses calls once it is closing.
                channel.put_scalar = late.put_scalar
                channel.put_event = late.put_event
                channel.forward_refused(late.put_item)  # for those that resolved the method before
                channel.close()
                STATE.finished_hubs.add(channel.info.hub_id)
                hubfile.withdraw_published()
        except Exception as exc:  # an exit hook must never turn a clean exit into a traceback
            warn(f"hyrax_tbhub: error while flushing at exit: {exc!r}")
    _flush_all(at_exit=True)  # the rest: SummaryWriter objects' hubs and producers


def _late_channel(hub: Hub | None, channel: object) -> LateOwner | LateProducer | None:
    """Where calls go after the exit flush (_process/late.py); None with no hub, or when it is
    in place already (a second exit hook)."""
    try:
        if hub is not None and hub.owner_pid == os.getpid():
            return LateOwner(hub)
        if isinstance(channel, Producer) and channel.pid == os.getpid():
            return LateProducer(channel.info, channel.start_ns)
    except Exception as exc:
        warn(f"hyrax_tbhub: at exit: {exc!r}")
    return None


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


def flush_on_pool_terminate() -> None:
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


# SIGTERM may reach both the main thread's handler and the watch thread: one of them flushes and
# ends the process, the other waits for that. Two flushing at once raced: the second found the
# producer already closing, returned at once and ended the process while the first still sent
# the last batch (an event counted as killed, about once in five fork-Pool-per-epoch runs).
_ending = threading.Lock()


def _flush_before_ending() -> None:
    if _ending.acquire(timeout=_terminate_budget() + 2.0):  # a timeout: the other is stuck past every budget
        _flush_all(at_exit=False)  # held until the process ends: the other never flushes


def _wait_for_sigterm(r: socket.socket) -> None:
    try:
        while signal.SIGTERM not in r.recv(64):
            pass
    except OSError:
        return
    try:
        _flush_before_ending()
    finally:
        # Whichever of this thread and the main thread's handler gets here first ends the
        # process; exit status 128 + SIGTERM, as a shell reports death by SIGTERM.
        os._exit(128 + signal.SIGTERM)


def _flush_then_die(signum: int, frame: object) -> None:
    try:
        # Whatever the flush meets, the process ends 1 s after its budget (_terminate_budget):
        # SIGALRM's default action terminates it without needing this (main) thread to run again.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(math.ceil(_terminate_budget()) + 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        _flush_before_ending()
    finally:
        # Die of SIGTERM as the default action would have: same exit status for the parent.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _forget_sigterm_watch() -> None:
    """In a fork child: let go of the parent's SIGTERM wakeup channel.

    The child inherits the signal module's wakeup fd, which is the parent's socket pair: a
    SIGTERM sent to the child would be written there, read by the parent's watch thread, and end
    the parent. A pool worker child arms its own watch again (hook_pool_workers).
    """
    global _sigterm_watch
    watch = _sigterm_watch
    if watch is None:
        return
    _sigterm_watch = None
    try:
        previous = signal.set_wakeup_fd(-1)
        if previous not in (-1, watch[2].fileno()):
            signal.set_wakeup_fd(previous)  # someone else's since: theirs to keep
    except (ValueError, OSError):
        pass
    for sock in watch[1:]:
        try:
            sock.close()
        except OSError:
            pass


def _after_fork_in_child() -> None:
    _forget_sigterm_watch()
    hub, inherited = STATE.hub, list(Producer.instances)
    # The state first: a thread of the parent may have held the lock at the fork (in a look the
    # child never sees finish), and whatever goes wrong below must not leave the child with it.
    STATE.lock = threading.RLock()
    STATE.looking = 0  # the parent's look, if one was in progress, is not this process's
    STATE.pending.items = []
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
        flush_on_pool_terminate()
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
