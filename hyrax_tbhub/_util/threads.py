"""The library's own threads, started so that they never take a signal meant for the process.

A signal sent to a process (``Pool.terminate()``'s SIGTERM, Ctrl-C's SIGINT) goes to any one of
its threads that does not block it. When that is one of ours while the main thread waits in a C
call (a pool worker waits on its task queue's semaphore), a Python handler never runs: CPython
runs handlers only on the main thread, and only the receiving thread's call is interrupted. The
worker then outlives ``terminate()`` and ``Pool.__exit__`` waits for it forever (seen: a spawn
pool worker with our SIGTERM flush installed, its main thread in ``SemLock.__enter__``). With
every asynchronous signal blocked in our threads, the kernel delivers them to a thread that can
act: the main thread's call returns with EINTR and the handler runs, or the default action
applies to the whole process as it would without us.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

__all__ = ["StartOnce", "daemon_thread"]

# Synchronous signals belong to the thread that caused them; KILL and STOP cannot be blocked.
_SYNCHRONOUS = {
    getattr(signal, name)
    for name in ("SIGKILL", "SIGSTOP", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS",
                 "SIGABRT")
    if hasattr(signal, name)
}
_ASYNC_SIGNALS = frozenset(signal.valid_signals()) - _SYNCHRONOUS


def _block_async_signals() -> None:
    if _ASYNC_SIGNALS and hasattr(signal, "pthread_sigmask"):
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, _ASYNC_SIGNALS)
        except (OSError, ValueError):
            pass


def daemon_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """A daemon thread running ``target`` with every asynchronous signal blocked."""

    def run() -> None:
        _block_async_signals()
        target()

    return threading.Thread(target=run, name=name, daemon=True)


class StartOnce:
    """A daemon thread that several threads, or a signal handler, may ask to start: it starts once.

    ``Thread.start()`` raises when called a second time and is not safe to race (two callers can
    both pass its "not started yet" check): a producer's sender is started by the code that made
    it, and also by a close that comes first on another thread.
    """

    __slots__ = ("thread", "_lock")

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self.thread = daemon_thread(target, name)
        self._lock = threading.Lock()

    def start(self, wait: float = -1) -> None:
        """Start the thread unless it was; ``wait``: how long another start may hold the lock
        (-1: as long as it takes). A signal handler passes 0: the code it interrupted may hold
        the lock, and starts the thread itself once the handler returns."""
        got = self._lock.acquire(False) if wait == 0 else self._lock.acquire(True, wait)
        if not got:
            return
        try:
            if self.thread.ident is None:
                self.thread.start()
        finally:
            self._lock.release()
