"""The shape of ``test_exit_flush_sigterm.py``, run as ``python exit_flush_workers.py sigterm_in_exit_flush
LOGDIR WHERE EVENTS`` in a fresh interpreter (the owner); prints one JSON line.

It traces the package's exit hook and the producer's close line by line (their code objects are
private), and SIGTERMs a pool-worker-named child at each line.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def _report(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def _exit_flush_target(where: str) -> Any:
    from hyrax_tbhub._process import hooks
    from hyrax_tbhub._producer import Producer

    return {"at_exit": hooks._at_exit, "producer_close": Producer.close}[where].__code__


def _terminated_in_exit_flush(where: str, line: int, events: int) -> None:
    """A pool worker's body: log, then end normally with SIGTERM arriving (as ``terminate()``
    sends it) when the exit flush reaches ``line`` lines into the function ``where``."""
    import signal

    import hyrax_tbhub

    log = hyrax_tbhub.get_tensorboard_logger()
    for i in range(events):
        log.add_scalar(f"exit/{where}/{line}", float(i), i)
    code = _exit_flush_target(where)
    fired = False

    def on_line(frame: Any, event: str, arg: Any) -> Any:
        nonlocal fired
        if event == "line" and not fired and frame.f_lineno - code.co_firstlineno == line:
            fired = True
            os.kill(os.getpid(), signal.SIGTERM)
        return on_line

    sys.settrace(lambda frame, event, arg: on_line if frame.f_code is code else None)


def sigterm_in_exit_flush(logdir: str, where: str, events: int) -> None:
    """One pool-worker-named fork child per line of the exit flush function ``where``, each
    SIGTERMed at that line of its normal exit (a ``Pool`` worker that got its end sentinel while
    ``terminate()`` signals it): reports each child's exit code by line."""
    import multiprocessing as mp

    import hyrax_tbhub

    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    ctx = mp.get_context("fork")
    code = _exit_flush_target(where)
    lines = max(line for _start, _end, line in code.co_lines() if line is not None) - code.co_firstlineno
    exits: dict[int, int | None] = {}
    for line in range(1, lines + 1):
        child = ctx.Process(target=_terminated_in_exit_flush, args=(where, line, events),
                            name=f"ForkPoolWorker-{line}")
        child.start()
        child.join(60)
        exits[line] = child.exitcode
        if child.exitcode is None:
            child.kill()
            child.join(10)
    hyrax_tbhub.close_tensorboard_logger()
    _report({"exits": exits})


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    globals()[name](*[int(a) if a.isdigit() else a for a in args])
