"""Starting, joining with a bound, and killing every process kind of a ledger mix.

One small handle type covers stdlib ``multiprocessing`` and ``multiprocess`` processes, a bare
``os.fork()`` and a ``subprocess`` running Python, so the runner and producers (which start
grandchildren and fork children) treat them alike: every wait is bounded, and a process that
outlives its bound gets its stacks dumped (SIGUSR1: faulthandler, registered by the producer)
before it is killed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

import multiprocess

#: Kinds that start one process running :func:`ledger.producer.run_unit`.
PROCESS_KINDS = (
    "mp-fork", "mp-spawn", "mp-forkserver",
    "mpx-fork", "mpx-spawn", "mpx-forkserver",
    "mp-default", "subprocess",
)
#: Kinds a producer may use to fork a child while its other threads log.
FORK_KINDS = ("os.fork", "mp-fork", "mpx-fork")

# Imported before any fork: the runner forks while its own threads run pools and executors, and
# producers fork while their streams log; a module imported lazily by a harness thread would be
# left locked in the child. The harness must expose such hazards in hyrax_tbhub only.
_PRELOAD = (
    "concurrent.futures.process", "multiprocessing.connection", "multiprocessing.pool",
    "multiprocessing.popen_fork", "multiprocessing.popen_forkserver", "multiprocessing.popen_spawn_posix",
    "multiprocessing.forkserver", "multiprocessing.queues", "multiprocessing.synchronize",
    "multiprocessing.resource_tracker", "multiprocess.connection", "multiprocess.pool",
    "multiprocess.popen_fork", "multiprocess.popen_forkserver", "multiprocess.popen_spawn_posix",
    "multiprocess.forkserver", "multiprocess.queues", "multiprocess.synchronize",
    "multiprocess.resource_tracker", "subprocess", "selectors",
)


def preload(torch_too: bool) -> None:
    import importlib

    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    if torch_too:
        try:
            import torch.utils.data  # noqa: F401
        except Exception:
            pass


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        import torch.utils.data  # noqa: F401
    except Exception:
        return False
    return True


def walk(unit: dict[str, Any]) -> list[dict[str, Any]]:
    out = [unit]
    for c in unit["forks"] + unit["children"]:
        out.extend(walk(c))
    return out



HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/


def context(kind: str) -> Any:
    """The multiprocessing context of ``mp-<method>`` / ``mpx-<method>`` (``default``: the default)."""
    lib_name, method = kind.split("-", 1)
    lib = multiprocessing if lib_name in ("mp", "pool", "ppe", "torch") else multiprocess
    if method == "default":
        return lib.get_context()
    return lib.get_context(method)


class Handle:
    """A started process: ``pid``, ``join(timeout) -> exit code or None``, ``kill()``."""

    def __init__(self, kind: str, obj: Any, pid: int) -> None:
        self.kind = kind
        self.obj = obj
        self.pid = pid
        self.exitcode: int | None = None

    def join(self, timeout: float) -> int | None:
        timeout = max(0.0, timeout)
        if self.exitcode is not None:
            return self.exitcode
        if self.kind == "subprocess":
            try:
                self.exitcode = self.obj.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        elif self.kind == "os.fork":
            self.exitcode = _wait_forked(self.pid, self.obj, timeout)
        else:
            self.obj.join(timeout)
            self.exitcode = self.obj.exitcode
        return self.exitcode

    def dump_and_kill(self, stack_file: str) -> str:
        """Dump the stacks of a process that overran its bound, kill it, return the dump."""
        try:
            os.kill(self.pid, signal.SIGUSR1)
        except OSError:
            pass
        # faulthandler writes from its C signal handler: the dump is complete once it stops growing.
        text = _wait_for_dump(stack_file, 3.0)
        self.kill()
        self.join(10.0)
        return text

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass


def _wait_forked(pid: int, fd: int | None, timeout: float) -> int | None:
    if fd is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            return None
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, 0 if fd is not None else os.WNOHANG)
        except ChildProcessError:
            return -1
        if done:
            break
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)  # no pidfd on this kernel: poll the exit status until the bound
    if fd is not None:
        os.close(fd)
    return os.waitstatus_to_exitcode(status)


def _wait_for_dump(path: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        if size and size == last:
            break
        last = size
        time.sleep(0.05)  # polling a file that a signal handler writes: no event to wait on
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def start(kind: str, spec: dict[str, Any]) -> Handle:
    """Start ``spec`` (a unit) in a new process of ``kind``."""
    from ledger import producer  # noqa: PLC0415 - the producer module imports this one

    if kind == "subprocess":
        code = (
            "import sys; sys.path[:0] = " + repr([HERE, *sys.path]) + "\n"
            "from ledger.producer import subprocess_main\n"
            "sys.exit(subprocess_main())\n"
        )
        popen = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)])
        return Handle(kind, popen, popen.pid)
    if kind == "os.fork":
        pid = os.fork()
        if pid == 0:
            producer.forked_main(spec)  # never returns
        try:
            fd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            fd = None
        return Handle(kind, fd, pid)
    ctx = context(kind)
    p = ctx.Process(target=producer.run_unit, args=(spec,), name=f"ledger-{spec['uid']}", daemon=False)
    p.start()
    return Handle(kind, p, p.pid)
