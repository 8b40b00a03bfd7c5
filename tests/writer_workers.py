"""Functions run in child processes by the SummaryWriter tests (importable under spawn and forkserver)."""

from __future__ import annotations

import os
from typing import Any


def log_items(writer: Any, tag: str, n: int, offset: int = 0) -> int:
    """Log ``n`` scalars ``tag`` = step at steps offset..offset+n-1 through ``writer``; return the pid.

    No flush and no close: what lands depends only on the process's exit hooks.
    """
    for step in range(offset, offset + n):
        writer.add_scalar(tag, float(step), step)
    return os.getpid()


def log_items_task(args: tuple[Any, str, int, int]) -> int:
    return log_items(*args)


def log_to_both(train: Any, val: Any, n: int) -> int:
    for step in range(n):
        train.add_scalar("loss", float(step), step)
        val.add_scalar("loss", -float(step), step)
    return os.getpid()


def torch_spawn_rank(rank: int, writer: Any, n: int) -> None:
    """A ``torch.multiprocessing.spawn`` target: ``fn(i, *args)``."""
    log_items(writer, f"rank/{rank}", n)


def log_then_fork_grandchild(writer: Any, n: int) -> bool:
    """Log as a producer, then fork a grandchild that logs too; both must land in their own runs."""
    log_items(writer, "child", n)
    writer.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            log_items(writer, "grandchild", n)
            # fork children end with os._exit: only the exit hooks we call here would run, so
            # this is what a multiprocessing fork child's finalizers do for it.
            from hyrax_tbhub._process import hooks

            hooks._at_exit()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def log_values(writer: Any, tag: str, values: list[float]) -> int:
    for i, v in enumerate(values):
        writer.add_scalar(tag, v, i)
    writer.flush()
    return os.getpid()


class WriterDataset:
    """A map-style dataset that carries a SummaryWriter and logs every read through it."""

    def __init__(self, writer: Any, size: int) -> None:
        self.writer = writer
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> int:
        self.writer.add_scalar("item", float(i), i)
        return i


def fork_idle_child_then_die(writer: Any, pid_file: str) -> None:
    """Log, fork a child that only waits (up to 60 s, for SIGUSR1), then die by SIGKILL.

    The hub sees this producer's connection end only if no process keeps a copy of its socket:
    the forked child must have dropped the copy it inherited.
    """
    import signal

    writer.add_scalar("before_fork", 1.0, 0)
    writer.flush()
    pid = os.fork()
    if pid == 0:
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
        signal.sigtimedwait([signal.SIGUSR1], 60)
        os._exit(0)
    with open(pid_file + ".tmp", "w") as fh:
        fh.write(str(pid))
    os.replace(pid_file + ".tmp", pid_file)
    os.kill(os.getpid(), signal.SIGKILL)


def log_text_and_scalar(writer: Any, text_size: int) -> int:
    """One text event of about ``text_size`` bytes and one scalar, then a flush; return the pid."""
    writer.add_text("big", "x" * text_size, 0)
    writer.add_scalar("small", 1.0, 0)
    writer.flush()
    return os.getpid()
