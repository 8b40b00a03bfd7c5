"""A ``logging.Handler`` that sends log records to TensorBoard's text plugin, from any process.

::

    import logging
    from hyrax_tbhub.logging_handler import TensorBoardHandler

    logging.getLogger().addHandler(TensorBoardHandler(logging.WARNING))

Attach it once (in the main process, before starting workers; forked and spawned children that
configure logging the same way get their own). Each record becomes one text point, tag
``logs/<LEVELNAME>`` by default, in the run of the process that logged it (the owner's records go
to the root run, a DataLoader worker's to ``dataloader_worker_<id>``...). The handler looks up the
hub on every record, like ``get_tensorboard_logger()``: records logged before the hub exists or
after it closes are skipped, cheaply.

Why the event is encoded here rather than with ``get_tensorboard_logger().add_text``: that runs
tensorboardX's summary builder, and importing tensorboardX imports torch when torch is installed:
seconds in every pool or spawn worker the first time it logs a record. A text event is a fixed
protobuf shape; :func:`encode_text_event` writes the same bytes tensorboardX would
(``tests/test_logging_handler.py`` compares them) and the hub stores them as they are.

TensorBoard shows 10 sampled text points per run and tag unless started with
``--samples_per_plugin text=1000`` (or more).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Literal

from ._events import encode_text_event
from ._process.connect import rediscover
from ._process.state import STATE

__all__ = ["TensorBoardHandler", "encode_text_event"]

StepPolicy = Literal["time", "count"] | Callable[[logging.LogRecord], int]

class TensorBoardHandler(logging.Handler):
    """Log records as TensorBoard text, from whichever process logs them.

    ``level`` is the usual threshold; ``levels`` (names or numbers), if given, keeps only records
    of exactly those levels. ``tag`` is a ``str.format`` template over the record's attributes
    (``"logs/{levelname}"``, ``"logs/{name}"``, ``"logs/{processName}"``...). ``step`` is
    ``"time"`` (whole microseconds since the hub started, the clock of ``log_scalar_ts``, so text
    lines up with timed scalars), ``"count"`` (0, 1, 2... per tag in each process) or a function
    of the record. With ``verbatim`` (default) the formatted record is shown as a code block:
    TensorBoard renders text as Markdown, which would eat the ``_`` of tag names and the line
    breaks of tracebacks; with ``verbatim=False`` it is sent as is.

    ``emit`` never raises into the logging call: errors go to ``handleError`` as for every
    handler (printed to stderr when ``logging.raiseExceptions`` is true).
    """

    def __init__(
        self,
        level: int | str = logging.NOTSET,
        *,
        tag: str = "logs/{levelname}",
        levels: Iterable[int | str] | None = None,
        step: StepPolicy = "time",
        verbatim: bool = True,
    ) -> None:
        super().__init__(level)
        if not (callable(step) or step in ("time", "count")):
            raise ValueError(f"step must be 'time', 'count' or a function of the record, not {step!r}")
        self.tag = tag
        self.levels: frozenset[int] | None = None if levels is None else frozenset(
            _level_number(lv) for lv in levels
        )
        self.step = step
        self.verbatim = verbatim
        self._counts: dict[str, int] = {}
        self._count_pid = 0
        # A record logged while this thread is inside emit (a library logging from our own call
        # path) must not recurse into another emit.
        self._busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._busy, "active", False):
            return
        self._busy.active = True
        try:
            # The no-hub path first and cheap: the same checks as HyraxSummaryWriter's no-op path.
            st = STATE
            ch = st.channel
            if ch is None:
                if st.idle:
                    return
                ch = rediscover()
                if ch is None:
                    return
            if self.levels is not None and record.levelno not in self.levels:
                return
            tag = self.tag.format_map(record.__dict__)
            text = self.format(record)
            if self.verbatim:
                text = _code_block(text)
            step = self._step(record, tag, ch.start_ns)
            ch.put_event("", encode_text_event(tag, text, step, record.created))
        except Exception:
            self.handleError(record)
        finally:
            self._busy.active = False

    def _step(self, record: logging.LogRecord, tag: str, start_ns: int) -> int:
        policy = self.step
        if policy == "time":
            return (time.monotonic_ns() - start_ns) // 1000
        if policy == "count":
            if self._count_pid != os.getpid():  # a forked child counts its own records from 0
                self._count_pid = os.getpid()
                self._counts = {}
            n = self._counts.get(tag, 0)
            self._counts[tag] = n + 1
            return n
        assert callable(policy)
        return int(policy(record))


def _level_number(level: int | str) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown logging level {level!r}")
    return number


def _code_block(text: str) -> str:
    # A fence longer than any backtick run inside, so the text cannot close it early.
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"
