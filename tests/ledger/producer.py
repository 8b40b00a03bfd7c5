"""What every producer of a ledger mix runs: log its streams, keep their ledgers, start children.

A *unit* is one process's work (a dict, so that every start method and ``subprocess`` can carry
it): ``threads`` streams, each logging ``chunks`` x ``chunk`` events of its own tag, started
together at a barrier or not, with a ``flush()`` every ``flush_every`` chunks and a ``pause``
between chunks; ``forks`` are forked from the main thread while the streams log, ``children``
are started once they do. Every module used here is imported at the top: an import on a path
other threads run is what a fork can leave locked in the child.
"""

from __future__ import annotations

import faulthandler
import itertools
import json
import multiprocessing.forkserver
import multiprocessing.process
import multiprocessing.resource_tracker
import os
import resource
import signal
import sys
import threading
import time
import weakref
from typing import Any

import multiprocess.forkserver
import multiprocess.process
import multiprocess.resource_tracker

import hyrax_tbhub

from ledger import procs

_mono = time.monotonic_ns


def tag_of(uid: str, j: int) -> str:
    return f"ledger/{uid}/t{j}"


def stream_file(ledger: str, uid: str, j: int | str) -> str:
    return os.path.join(ledger, f"{uid}.t{j}.jsonl")


def unit_file(ledger: str, uid: str) -> str:
    return os.path.join(ledger, f"{uid}.jsonl")


def stack_file(ledger: str, pid: int) -> str:
    return os.path.join(ledger, f"stack.{pid}.txt")


class _Lines:
    """An append-only JSON-lines file: one ``os.write`` per line, so a kill leaves whole lines."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def put(self, **record: Any) -> None:
        os.write(self.fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())

    def close(self) -> None:
        os.close(self.fd)


_stack_fh: Any = None
_stack_pid = 0


def _arm_stack_dump(ledger: str) -> None:
    """SIGUSR1 dumps every thread's stack into the ledger: what a hang was waiting on."""
    global _stack_fh, _stack_pid
    if _stack_pid == os.getpid():
        return
    fh = open(stack_file(ledger, os.getpid()), "w")  # noqa: SIM115 - lives as long as the process
    faulthandler.register(signal.SIGUSR1, file=fh, all_threads=True)
    _stack_fh, _stack_pid = fh, os.getpid()


def log_stream(spec: dict[str, Any], j: int, barrier: threading.Barrier | None,
               first_chunk: threading.Event | None) -> None:
    """Log stream ``j`` of ``spec`` and write its ledger."""
    uid, ledger = spec["uid"], spec["ledger"]
    tag = tag_of(uid, j)
    api = spec["apis"][j]
    out = _Lines(stream_file(ledger, uid, j))
    out.put(k="start", pid=os.getpid(), api=api, tag=tag)
    w = hyrax_tbhub.get_tensorboard_logger()
    add_text, add_scalar = w.add_text, w.add_scalar
    mono = _mono
    flush_every, pause, chunk = spec["flush_every"], spec["pause"], spec["chunk"]
    if barrier is not None:
        barrier.wait(spec["timeout"])
    step = 0
    for c in range(spec["chunks"]):
        hi = step + chunk
        out.put(k="intent", hi=hi)
        ts = [mono()]
        if api == "text":
            for s in range(step, hi):
                add_text(tag, str(s), s)
                ts.append(mono())
        else:
            for s in range(step, hi):
                add_scalar(tag, float(s), s)
                ts.append(mono())
        # Deltas keep the ledger small: ts[i] was read before event lo+i, ts[i+1] after it.
        out.put(k="chunk", lo=step, hi=hi, t0=ts[0], dt=[b - a for a, b in zip(ts, ts[1:], strict=False)])
        step = hi
        if first_chunk is not None:
            first_chunk.set()
        if flush_every and c % flush_every == flush_every - 1:
            t0 = mono()
            ok = w.flush(timeout=spec["timeout"])
            out.put(k="flush", upto=hi, ok=bool(ok), t0=t0, t1=mono())
        if pause:
            time.sleep(pause)  # load shape (spreads a stream over hub switches), not a wait
    out.put(k="end", t=mono())
    out.close()


def run_unit(spec: dict[str, Any]) -> int:
    """The body of every producer process (and of pool tasks and DataLoader items)."""
    _arm_stack_dump(spec["ledger"])
    _forget_inherited_children()
    unit = _Lines(unit_file(spec["ledger"], spec["uid"]))
    unit.put(k="start", pid=os.getpid(), ppid=os.getppid(), kind=spec["kind"], t=_mono())
    if spec["forks"] or spec["children"]:
        procs.preload(False)
    held = _hold_descriptors(spec.get("fds", 0))
    alarm = _arm_alarm(spec, int(spec["alarm"])) if spec.get("alarm") else None
    if spec.get("exit_log"):
        _log_at_exit(spec)
    if spec.get("warm"):
        hyrax_tbhub.get_tensorboard_logger().flush(spec["timeout"])  # connected before any stream
    n = spec["threads"]
    barrier = threading.Barrier(n) if spec["barrier"] and n > 1 else None
    first_chunk = threading.Event()
    # The main thread is one of the streams only when it has nothing else to do.
    in_main = not spec["forks"] and not spec["children"] and spec.get("main_stream", True)
    threads = [
        threading.Thread(target=log_stream, args=(spec, j, barrier, first_chunk),
                         name=f"stream-{j}", daemon=True)
        for j in range(1 if in_main else 0, n)
    ]
    for t in threads:
        t.start()
    handles: list[tuple[dict[str, Any], procs.Handle]] = []
    if spec["forks"]:
        if spec["fork_when"] == "first_chunk":
            first_chunk.wait(spec["timeout"])
        for child in spec["forks"]:  # forked from this thread while the others log
            h = procs.start(child["kind"], child)
            unit.put(k="child", uid=child["uid"], pid=h.pid, kind=child["kind"], t=_mono())
            handles.append((child, h))
    for child in spec["children"]:
        h = procs.start(child["kind"], child)
        unit.put(k="child", uid=child["uid"], pid=h.pid, kind=child["kind"], t=_mono())
        handles.append((child, h))
    if in_main:
        log_stream(spec, 0, barrier, first_chunk)
    deadline = time.monotonic() + spec["timeout"]
    code = 0
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            unit.put(k="hang", what=f"thread {t.name}", t=_mono())
            faulthandler.dump_traceback(file=_stack_fh, all_threads=True)
            code = 3
    for child, h in handles:
        rc = h.join(deadline - time.monotonic())
        if rc is None:
            dump = h.dump_and_kill(stack_file(spec["ledger"], h.pid))
            unit.put(k="hang", what=f"child {child['uid']} ({child['kind']}, pid {h.pid})",
                     uid=child["uid"], pid=h.pid, stack=dump[-4000:], t=_mono())
            code = 3
        else:
            unit.put(k="exit", uid=child["uid"], pid=h.pid, rc=rc, t=_mono())
    if alarm is not None:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
    if spec.get("close_at_end"):
        hyrax_tbhub.close_tensorboard_logger()  # a producer leaves its hub (flush + goodbye)
    unit.put(k="end", rc=code, t=_mono(), fds=len(held))
    unit.close()
    for fd in held:
        os.close(fd)
    return code


def _arm_alarm(spec: dict[str, Any], limit: int) -> _Lines:
    """A 1 ms SIGALRM handler that logs (a profiler or watchdog), from before the first call: it
    fires while that call looks for the hub and connects, and nests in itself. Its stream is
    ``t`` + ``a``: one intent and one chunk line per call, in whatever order nesting writes them."""
    uid = spec["uid"]
    out = _Lines(stream_file(spec["ledger"], uid, "a"))
    tag = f"ledger/{uid}/alarm"
    out.put(k="start", pid=os.getpid(), api="scalar", tag=tag)
    w = hyrax_tbhub.get_tensorboard_logger()
    steps = itertools.count()

    def on_alarm(signum: int, frame: Any) -> None:
        n = next(steps)
        if n >= limit:
            return
        out.put(k="intent", hi=n + 1)
        t0 = _mono()
        w.add_scalar(tag, float(n), n)
        out.put(k="chunk", lo=n, hi=n + 1, t0=t0, dt=[_mono() - t0])

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    return out


def _log_at_exit(spec: dict[str, Any]) -> None:
    """A ``weakref.finalize`` that logs when the process exits (after our own exit hook when
    the finalize registry was made before it): stream ``t`` + ``x``, one event."""
    uid = spec["uid"]
    tag = f"ledger/{uid}/exit"
    path = stream_file(spec["ledger"], uid, "x")

    def log() -> None:
        out = _Lines(path)
        out.put(k="start", pid=os.getpid(), api="scalar", tag=tag)
        out.put(k="intent", hi=1)
        t0 = _mono()
        hyrax_tbhub.get_tensorboard_logger().add_scalar(tag, 0.0, 0)
        out.put(k="chunk", lo=0, hi=1, t0=t0, dt=[_mono() - t0])

    weakref.finalize(_log_at_exit, log)


def _hold_descriptors(n: int) -> list[int]:
    """Open ``n`` descriptors (so that every later one is numbered above them) and keep them."""
    if not n:
        return []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    base = os.open(os.devnull, os.O_RDONLY)
    held = [base]
    try:
        while len(held) < n:
            held.append(os.dup(base))
    except OSError:
        pass  # the hard limit is lower: as many as allowed
    return held


def _forget_inherited_children() -> None:
    """Drop the parent's process handles that a fork by another library (or a bare os.fork) left.

    stdlib multiprocessing clears its list of children only in processes it started itself, and
    ``multiprocess`` only its own. A ``multiprocess`` fork child of the owner kept the owner's stdlib
    children, and its first stdlib ``Process.start()`` polled them: it read the exit status a
    finished forkserver child's server wrote for the owner, which then saw exit code 255 (seed 3029).
    """
    for mod in (multiprocessing.process, multiprocess.process):
        mod._children.clear()
    # The same for the forkserver singletons: a fork child inherits its parent's server pid (not
    # its child: waitpid raises ChildProcessError, seeds 1138, 1194, 1257) and, when another thread
    # of the parent was starting a forkserver child at the fork, its lock held (seed 1237 hung in
    # ensure_running). A child that wants a forkserver must start its own.
    for fsmod in (multiprocessing.forkserver, multiprocess.forkserver):
        server = fsmod._forkserver
        if _inherited_server(server) or server._lock.locked():
            server._forkserver_address = None
            server._forkserver_alive_fd = None
            server._forkserver_pid = None
            server._inherited_fds = None
            server._lock = threading.Lock()
    # And the resource tracker's lock, which a forkserver start takes (seed 1237 hung there).
    for rtmod in (multiprocessing.resource_tracker, multiprocess.resource_tracker):
        tracker = rtmod._resource_tracker
        if tracker._lock.acquire(blocking=False):
            tracker._lock.release()
        else:  # held by a thread of the parent that does not exist here
            tracker._lock = threading.RLock()


def _inherited_server(server: Any) -> bool:
    pid = getattr(server, "_forkserver_pid", None)
    if pid is None:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # our own server (alive, or its status stays for it to see)
    except ChildProcessError:
        return True  # the parent's: not ours to wait for
    return False


def forked_main(spec: dict[str, Any]) -> None:
    """A bare ``os.fork()`` child: no exit hook runs at ``os._exit``, so leave the hub first."""
    code = 1
    try:
        code = run_unit(spec)
        hyrax_tbhub.close_tensorboard_logger()
    except BaseException as exc:  # the parent must see a failure, not a second copy of itself
        try:
            sys.stderr.write(f"ledger: forked unit {spec.get('uid')} failed: {exc!r}\n")
        except Exception:
            pass
        code = 2
    finally:
        os._exit(code)


def subprocess_main() -> int:
    return run_unit(json.loads(sys.argv[1]))


def pool_task(spec: dict[str, Any]) -> int:
    """A pool or executor task: one unit, in whichever worker runs it."""
    run_unit(spec)
    return os.getpid()


class LedgerDataset:
    """A map-style dataset whose item ``i`` runs unit ``i`` in the DataLoader worker reading it."""

    def __init__(self, specs: list[dict[str, Any]]) -> None:
        self.specs = specs

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, i: int) -> int:
        run_unit(self.specs[i])
        return i
