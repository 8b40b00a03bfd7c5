"""The locks of the logging path, held across ``fork`` so that a child never inherits them held.

A fork copies every lock in the state it is in, but only the forking thread: a lock another
thread held at that moment stays held in the child for good (a module's import lock, taken
by a thread that was importing, hangs the child's next import of that module). Two rules keep the
logging path clear of that (docs/how-it-works.md has the full audit):

- no import happens on the logging path after the package is imported, except the one that
  cannot be paid up front (tensorboardX, which imports torch: seconds), and that one runs under
  :data:`IMPORT_LOCK`;
- :data:`IMPORT_LOCK` is taken by the forking thread before the fork and released (parent) or
  re-created (child) after it, the pattern CPython's ``logging`` uses for its handlers: a fork
  waits for an import in progress instead of cutting it in half.

The other locks of the logging path are not held across a fork (a fork must not wait for a
producer's connect, nor deadlock against a thread that holds them): the child re-creates them and
abandons every object they guarded (``_process.hooks``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

_PACKAGE = __name__.split(".")[0]
_held: list[Any] = []  # module locks taken by the forking thread, let go of after the fork
_guard_first = False  # the guard's second registration (the one that runs first) is in place


def _wait_for_package_imports(early: bool = False) -> None:
    """Before a fork: wait until no other thread is importing a module of this package."""
    if early and _guard_first:
        return  # the later registration ran already (hooks run in reverse order)
    bootstrap = sys.modules.get("_frozen_importlib")  # importlib._bootstrap, always loaded
    if bootstrap is None:  # pragma: no cover - CPython always has it
        return
    try:
        for name, module in list(sys.modules.items()):
            if name != _PACKAGE and not name.startswith(_PACKAGE + "."):
                continue
            # True only while the module's code runs, under its import lock (_load_unlocked).
            if not getattr(getattr(module, "__spec__", None), "_initializing", False):
                continue
            lock = bootstrap._get_module_lock(name)
            try:
                lock.acquire()  # waits for the importing thread; reentrant for the forker's own
            except bootstrap._DeadlockError:
                continue  # the importing thread waits for this one: forking is all we can do
            _held.append(lock)
    except Exception:  # a fork must never fail for us
        pass


def _let_go_of_imports() -> None:
    while _held:
        try:
            _held.pop().release()
        except Exception:
            pass


if hasattr(os, "register_at_fork"):
    # First, before anything else is imported: from here on a fork waits for the package's import.
    os.register_at_fork(
        before=lambda: _wait_for_package_imports(early=True),
        after_in_parent=_let_go_of_imports, after_in_child=_let_go_of_imports,
    )


# Imported before our hook is registered, on purpose: hooks run in reverse order of registration,
# so logging's (which holds its module lock across the fork) runs after ours. The other order
# would deadlock a fork against a thread that imports under IMPORT_LOCK and logs while at it.
import logging  # noqa: E402, F401
import threading  # noqa: E402

__all__ = ["IMPORT_LOCK"]

#: Held around every lazy import of the logging path and every call into tensorboardX's code
#: (which imports lazily too). Reentrant: such a call may log, or import again.
IMPORT_LOCK = threading.RLock()


def _before_fork() -> None:
    IMPORT_LOCK.acquire()


def _after_fork_in_parent() -> None:
    IMPORT_LOCK.release()


def _after_fork_in_child() -> None:
    # This thread took the lock before the fork, so it owns it here; re-created anyway where
    # CPython allows, as logging does with its handlers' locks.
    reinit = getattr(IMPORT_LOCK, "_at_fork_reinit", None)
    if reinit is not None:
        reinit()
    else:  # pragma: no cover - CPython has had _at_fork_reinit since 3.9
        IMPORT_LOCK.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )
    # Registered again, last, so that it runs first: a fork waits for a thread importing the
    # package before it takes any lock (IMPORT_LOCK, logging's) that such an import could need.
    os.register_at_fork(
        before=_wait_for_package_imports, after_in_parent=_let_go_of_imports,
        after_in_child=_let_go_of_imports,
    )
    _guard_first = True
