"""Functions run in child processes by the tests (importable under spawn and forkserver)."""

from __future__ import annotations

import os
import threading

import hyrax_tbhub


def log_scalars(tag: str, n: int, offset: int = 0) -> int:
    """Log ``n`` scalars ``tag`` = step * 0.5 at steps offset..offset+n-1; return the pid."""
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(offset, offset + n):
        w.add_scalar(tag, step * 0.5, step)
    return os.getpid()


def log_scalars_task(args: tuple[str, int, int]) -> int:
    return log_scalars(*args)


def log_and_flush(tag: str, n: int) -> bool:
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(n):
        w.add_scalar(tag, step * 0.5, step)
    return w.flush()


def log_flush_and_stay(tag: str, n: int, leave: threading.Event) -> None:
    """Log and flush ``n`` scalars, then stay connected until ``leave`` is set (60 s at most)."""
    assert log_and_flush(tag, n)
    leave.wait(60)


def logging_to_a_hub_before_and_after_a_call(tag: str) -> tuple[bool, bool]:
    """In a fresh child: whether it logs to a hub before its first call, and after it."""
    from hyrax_tbhub.testing import logging_to_a_hub

    before = logging_to_a_hub()
    hyrax_tbhub.get_tensorboard_logger().add_scalar(tag, 1.0, 0)
    return before, logging_to_a_hub()


def log_in_thread_then_fork_child(tag: str, n: int) -> bool:
    """Log from two threads while forking a child that logs too; all three must land."""
    import threading

    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_scalar(tag + "/warm", 0.0, 0)
    w.flush()
    stop = threading.Event()

    def spin() -> None:
        step = 0
        while not stop.is_set() and step < n:
            w.add_scalar(tag + "/thread", float(step), step)
            step += 1

    t = threading.Thread(target=spin)
    t.start()
    pid = os.fork()
    if pid == 0:  # the child inherited a live connection: it must open its own
        code = 0
        try:
            log_scalars(tag + "/child", 100)
            hyrax_tbhub.close_tensorboard_logger()
        except BaseException:
            code = 1
        os._exit(code)
    t.join(60)
    stop.set()
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def nested_spawn(tag: str, n: int) -> int:
    """A spawned child that itself spawns a grandchild; both log."""
    import multiprocessing as mp

    log_scalars(tag + "/child", n)
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=log_scalars, args=(tag + "/grandchild", n))
    p.start()
    p.join(60)
    return p.exitcode if p.exitcode is not None else -1


class TimedDataset:
    """A map-style dataset whose reads are timed and logged from whichever process reads."""

    def __init__(self, size: int, epoch_offset: int = 0) -> None:
        self.size = size
        self.epoch_offset = epoch_offset

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        import time

        start = time.monotonic_ns()
        w = hyrax_tbhub.get_tensorboard_logger()
        w.add_scalar("item", float(index), self.epoch_offset + index)
        w.log_duration_ts("DataProvider/file_read_time_s", start)
        return index


def log_ts_points(tags: list[str], n: int, ready: object, go: object) -> int:
    """Log ``n`` points per tag with time-based steps once every worker is ready."""
    w = hyrax_tbhub.get_tensorboard_logger()
    w.flush()  # connected before the race starts
    ready.set()  # type: ignore[attr-defined]
    go.wait(60)  # type: ignore[attr-defined]
    for i in range(n):
        for tag in tags:
            w.log_scalar_ts(tag, float(i))
    return os.getpid()


def log_from_a_thread_first_task(args: tuple[str, int, int]) -> int:
    """A task whose worker's first logging call comes from a thread, not the main thread."""
    tag, n, start = args
    first = threading.Thread(target=log_scalars, args=(tag + "_thread", 1, start))
    first.start()
    first.join()
    return log_scalars(tag, n, start)
