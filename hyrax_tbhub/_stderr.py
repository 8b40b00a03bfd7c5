"""The one way the library speaks to the user outside the log: a line on stderr that never raises."""

from __future__ import annotations

import sys

__all__ = ["warn"]


def warn(message: str) -> None:
    # Called from exit hooks, signal handlers and the hub thread: a closed or broken stderr must
    # not turn a report into an exception of its own.
    try:
        print(message, file=sys.stderr, flush=True)
    except Exception:
        pass
