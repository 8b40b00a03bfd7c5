"""The one way the library speaks to the user outside the log: a line on stderr that never raises."""

from __future__ import annotations

import os
import traceback

__all__ = ["warn", "warn_internal"]


def warn(message: str) -> None:
    # Straight to fd 2 with os.write, not through sys.stderr: its buffer has a lock, and a fork
    # while another thread printed leaves that lock held in the child, whose next warning would
    # then hang it. Called from exit hooks, signal handlers and the hub thread too: a closed or
    # broken stderr must not turn a report into an exception of its own.
    data = (message.rstrip("\n") + "\n").encode("utf-8", "backslashreplace")
    try:
        while data:
            data = data[os.write(2, data):]
    except Exception:
        pass


def warn_internal(where: str, exc: BaseException, counted_as: str) -> None:
    """Say that ``exc`` is a bug of hyrax_tbhub (not the user's input, not the transport):
    one line, followed by its traceback."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    warn(f"hyrax_tbhub: internal error (a bug in hyrax_tbhub, please report it) in {where}: "
         f"{exc!r}; {counted_as}\n{tb}")
