"""Helpers and child-process functions of the fault suite (tests/test_faults_*.py).

Everything a child runs lives here so that spawn and forkserver children can import it by name.
Children report back through small JSON files written atomically (a SIGKILLed child leaves no
half-written report and holds no lock anybody else needs) or through a one-way Pipe.

Nothing here sleeps to synchronise: waits are on pipes, events, files or process exit, each
bounded by a deadline. Where a child must stay busy or stuck until the test kills it, it blocks
on an Event nobody sets, with a long timeout as a safety net.
"""

from __future__ import annotations

import gc
import json
import math
import os
import resource
import signal
import socket
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hyrax_tbhub
from hyrax_tbhub._discovery import hubfile
from hyrax_tbhub._process.state import STATE

SAFETY_S = 120.0  # a child left behind by a broken test gives up after this long

# -- plumbing used by the tests -------------------------------------------------------------------


RECORD_ENV = "HYRAX_TBHUB_FAULT_RECORD"


def record(point: int, test: str, **figures: Any) -> None:
    """Append one test's measurements to the file named by $HYRAX_TBHUB_FAULT_RECORD (if set).

    scripts/fault_table.py runs the suite with it set and turns the records into the README's table.
    """
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    line = json.dumps({"point": point, "test": test, **figures}, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def wait_until(pred: Callable[[], Any], timeout: float, what: str = "condition", poll: float = 0.005) -> Any:
    """Poll ``pred`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def report(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (readers never see a partial file)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


def read_report(path: str | os.PathLike[str], timeout: float = 30.0) -> Any:
    wait_until(lambda: os.path.exists(path), timeout, f"report {path}")
    with open(path) as fh:
        return json.load(fh)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def new_fds(before: dict[int, str]) -> dict[int, str]:
    """Descriptors open now that were not in ``before`` (an ``open_fds()``), after a GC pass."""
    gc.collect()
    return {fd: target for fd, target in open_fds().items() if before.get(fd) != target}


def open_fds() -> dict[int, str]:
    gc.collect()
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return out


def proc_status_kib(field: str, pid: int | str = "self") -> int:
    """A ``/proc/<pid>/status`` field in KiB (VmRSS, VmHWM...)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> None:
    """Make VmHWM restart from the current RSS (Linux >= 4.0), so peaks measure this phase only."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def private_runtime(monkeypatch: Any, base: str | None = None) -> Iterator[Path]:
    """A fresh runtime folder for hub files and sockets, so tests never see other sessions' hubs.

    Use as the body of a fixture. Fork children inherit the cached folder; spawn and forkserver
    children and subprocesses read it from the environment. On teardown, hubs are closed and child
    processes still alive are killed (a failing test must not leave processes behind).
    """
    import multiprocessing
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="htbf", dir=base or "/tmp"))
    os.chmod(folder, 0o700)
    monkeypatch.setenv(hubfile.ENV_RUNTIME_DIR, str(folder))
    monkeypatch.delenv(hubfile.ENV_INFO, raising=False)
    monkeypatch.setattr(hubfile, "_runtime_dir", folder)
    try:
        yield folder
    finally:
        for p in multiprocessing.active_children():
            p.kill()
            p.join(5)
        hyrax_tbhub.close_tensorboard_logger()
        shutil.rmtree(folder, ignore_errors=True)


def patch_hub_config(monkeypatch: Any, **overrides: Any) -> None:
    """Make every hub started from now on in this test use ``overrides`` (e.g. a short close timeout)."""
    from hyrax_tbhub import _hub

    original = _hub.HubConfig.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.options = self.options.replace(**overrides)

    monkeypatch.setattr(_hub.HubConfig, "__init__", init)


def runtime_leftovers(folder: Path) -> list[str]:
    """Sockets and hub files left in a runtime folder (the shared "generation" word is meant to stay)."""
    return sorted(e.name for e in folder.iterdir() if e.name != "generation")


def all_scalars(log: dict[str, dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Merge the runs of ``read_log`` into {tag: points}; fails if one tag is in two runs."""
    out: dict[str, list[tuple[int, float]]] = {}
    for run, tags in log.items():
        for tag, points in tags.items():
            if tag == "_other":
                continue
            assert tag not in out, f"tag {tag!r} is in two runs (second: {run!r})"
            out[tag] = points
    return out


def iter_events(logdir: str | os.PathLike[str], only: str | None = None) -> Iterator[tuple[str, Any]]:
    """(run, Event) of every record under ``logdir``, read directly with CRC checks.

    tensorboard's EventAccumulator (tests/readback.py) needs ~40 us per event; this reads the
    TFRecords with protobuf (~2 us) for the floods of hundreds of thousands of events, and fails
    on any record whose framing or checksum is wrong (interleaved or torn bytes).
    """
    import struct

    from crc32c import crc32c
    from tensorboard.compat.proto import event_pb2

    def masked(data: bytes) -> int:
        x = crc32c(data)
        return ((((x >> 15) | (x << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF

    root = Path(logdir)
    for folder, _dirs, files in os.walk(root):
        run = os.path.relpath(folder, root)
        if only is not None and run != only:
            continue
        for name in sorted(f for f in files if "tfevents" in f):
            data = Path(folder, name).read_bytes()
            pos = 0
            while pos < len(data):
                header = data[pos : pos + 8]
                (length,) = struct.unpack("<Q", header)
                (hcrc,) = struct.unpack_from("<I", data, pos + 8)
                record = data[pos + 12 : pos + 12 + length]
                (dcrc,) = struct.unpack_from("<I", data, pos + 12 + length)
                assert masked(header) == hcrc and masked(record) == dcrc, f"corrupt record in {name} at {pos}"
                pos += 16 + length
                yield run, event_pb2.Event.FromString(record)


def fast_scalars(
    logdir: str | os.PathLike[str], only: str | None = None
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{run: {tag: [(step, value)]}} of the simple scalars under ``logdir`` (see iter_events)."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for run, event in iter_events(logdir, only):
        tags = out.setdefault(run, {})
        for value in event.summary.value:
            if value.WhichOneof("value") == "simple_value":
                tags.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def fast_tag_counts(logdir: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """{run: {tag: number of summary values}} of every kind (texts, images, scalars...)."""
    out: dict[str, dict[str, int]] = {}
    for run, event in iter_events(logdir):
        tags = out.setdefault(run, {})
        for value in event.summary.value:
            tags[value.tag] = tags.get(value.tag, 0) + 1
    return out


def fast_counters(logdir: str | os.PathLike[str]) -> dict[str, float]:
    """The hub's reserved counters in the root run, as readback.counters but without reading every run."""
    root = fast_scalars_of_run(logdir)
    return {t: v[-1][1] for t, v in root.items() if t.startswith("hyrax_tbhub/")}


def fast_scalars_of_run(logdir: str | os.PathLike[str], run: str = ".") -> dict[str, list[tuple[int, float]]]:
    return fast_scalars(logdir, only=run).get(run, {})


def hub_thread_alive() -> bool:
    hub = STATE.hub
    return hub is not None and hub._thread.is_alive()


def stall_sendall(notify: Any, min_len: int, nth: int = 1) -> None:
    """Make this process's producer thread stop in the middle of a ``sendall`` and say so.

    The ``nth`` send of at least ``min_len`` bytes by the producer thread sends its first half,
    sends ``("stalled", total, sent)`` on the ``notify`` connection and then blocks until the
    process is killed: the test kills the process while half a frame is on the wire.
    """
    original = socket.socket.sendall
    seen = [0]

    def sendall(self: socket.socket, data: Any, *args: Any) -> None:
        if threading.current_thread().name == "hyrax_tbhub-producer" and len(data) >= min_len:
            seen[0] += 1
            if seen[0] == nth:
                half = max(1, len(data) // 2)
                original(self, bytes(data[:half]))
                notify.send(("stalled", len(data), half))
                threading.Event().wait(SAFETY_S)
                os._exit(3)
        original(self, data, *args)

    socket.socket.sendall = sendall  # type: ignore[method-assign]


# -- point 1: producers killed mid-stream -------------------------------------------------------


def survivor(tag: str, n: int, result: str) -> None:
    """Log ``n`` points of ``tag`` (value = step / 2), flush, report, exit normally."""
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(n):
        w.add_scalar(tag, step * 0.5, step)
    ok = w.flush(30)
    report(result, {"pid": os.getpid(), "flush": ok, "dropped": _dropped()})


def victim(notify: Any, tag: str, target: int, mode: str) -> None:
    """Log without end until killed; say when the kill point is reached.

    ``mode`` "random": send ``("at", target)`` once ``target`` points were logged, keep logging.
    ``mode`` "midsend"/"midhandshake": stop the producer thread half-way through a batch frame or
    through the handshake digest (see :func:`stall_sendall`) and say so.
    """
    if mode == "midsend":
        stall_sendall(notify, min_len=1024)
    elif mode == "midhandshake":
        stall_sendall(notify, min_len=1, nth=1)
    w = hyrax_tbhub.get_tensorboard_logger()
    deadline = time.monotonic() + SAFETY_S
    step = 0
    while time.monotonic() < deadline:
        w.add_scalar(tag, float(step), step)
        if step == target and mode == "random":
            notify.send(("at", target))
        step += 1
    os._exit(3)


def producer_with_forked_child(notify: Any, tag: str) -> None:
    """Log, fork a child that logs and lives on (it inherits our socket), then wait to be killed."""
    import multiprocessing

    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(100):
        w.add_scalar(tag, float(step), step)
    w.flush(30)
    recv, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(
        target=_forked_child_lives_on, args=(send, tag + "/child"), name="child-of-" + tag.replace("/", "_")
    )
    child.start()
    recv.poll(30)
    notify.send(("ready", child.pid))
    threading.Event().wait(SAFETY_S)  # until killed


def _forked_child_lives_on(flushed: Any, tag: str) -> None:
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(100):
        w.add_scalar(tag, float(step), step)
    flushed.send(w.flush(30))
    threading.Event().wait(SAFETY_S)  # until killed (no shared Event: a killed waiter wedges one)


def mpqueue_victim(q: Any, size: int) -> None:
    """Put one large item on a shared multiprocessing.Queue, then wait to be killed."""
    q.put(b"x" * size)
    threading.Event().wait(SAFETY_S)


def mpqueue_survivor(q: Any) -> None:
    q.put(("survivor", os.getpid()))


def mpqueue_consumer(q: Any, out: Any) -> None:
    """Try to read what the survivor put; report what came (or hang, which the test detects)."""
    try:
        item = q.get(timeout=5)
        out.send(("got", repr(item)[:60]))
    except Exception as exc:
        out.send(("error", repr(exc)))


# -- shared by several points ----------------------------------------------------------------------


def _producer() -> Any:
    from hyrax_tbhub._producer import Producer

    ch = STATE.channel
    return ch if isinstance(ch, Producer) else None


def _dropped() -> int:
    p = _producer()
    return 0 if p is None else int(p.dropped)


def redirect_stderr(path: str) -> None:
    """Send this process's fd 2 to ``path`` (to count the warnings a child prints)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    # Under pytest, sys.stderr is a capture object with its own file, not fd 2.
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


class GcWatch:
    """Counts runs of Python's cyclic garbage collector.

    A full collection in a large process (torch imported) stops every thread for 100 ms or more,
    whatever the code is doing; call timings skip the calls during which one ran (and count them),
    so that they measure the library, not the collector.
    """

    def __init__(self) -> None:
        self.runs = 0
        self.skipped = 0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.runs += 1

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)


def timed_calls(
    w: Any, tag: str, n: int, start: int = 0, call: Callable[..., Any] | None = None
) -> list[float]:
    """Log ``n`` points and return each call's duration in seconds (calls hit by a GC left out)."""
    durations = []
    clock = time.perf_counter
    call = call or w.add_scalar
    watch = GcWatch()
    try:
        for step in range(start, start + n):
            runs = watch.runs
            t0 = clock()
            call(tag, float(step), step)
            took = clock() - t0
            if watch.runs == runs:
                durations.append(took)
    finally:
        watch.close()
    return durations


def summarize(durations: list[float]) -> dict[str, float]:
    if not durations:
        return {"n": 0, "max_ms": 0.0, "p999_ms": 0.0, "total_s": 0.0}
    ordered = sorted(durations)
    return {
        "n": len(ordered),
        "max_ms": ordered[-1] * 1e3,
        "p999_ms": ordered[min(len(ordered) - 1, math.ceil(len(ordered) * 0.999) - 1)] * 1e3,
        "total_s": sum(ordered),
    }


_LIMIT_NAMES = {"max_events": "queue_max_events", "max_bytes": "queue_max_bytes", "batch": "batch_events",
                "interval": "send_interval", "min_gap": "send_min_gap"}


def set_limits(**limits: Any) -> None:
    """Make this process's producers use these bounds instead of their hub's (before one starts)."""
    from hyrax_tbhub import _producer

    changes = {_LIMIT_NAMES.get(name, name): value for name, value in limits.items()}
    original = _producer.options_of
    _producer.options_of = lambda info: original(info).replace(**changes)  # type: ignore[assignment]


def rlimit_nofile() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def main_is(name: str) -> bool:
    return sys.argv[0].endswith(name)


def process_state() -> dict[str, Any]:
    """What this process's logging state looks like (for failure messages; fields may be absent)."""
    st = STATE
    ch = st.channel
    watch = getattr(st, "watch", None)
    out: dict[str, Any] = {
        "channel": type(ch).__name__ if ch is not None else None,
        "idle": getattr(st, "idle", None),
        "finished_hubs": len(getattr(st, "finished_hubs", ())),
        "watch": None if watch is None else [getattr(watch, "seen", None), watch.view[0]],
        "threads": [t.name for t in threading.enumerate()],
    }
    if ch is not None:
        for name in ("_state", "_drain_requested", "_closing", "_max_events", "run_name", "dropped"):
            out[name] = getattr(ch, name, None)
        out["queued"] = len(getattr(ch, "_dq", ()))
    return out


# -- point 2: DataLoader workers -------------------------------------------------------------------


def ledger_write(folder: str, line: str) -> None:
    """Append ``line`` to this process's ledger: proof, kept by the OS, that a call returned."""
    path = os.path.join(folder, f"{os.getpid()}.ledger")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_ledgers(folder: str | os.PathLike[str]) -> dict[int, list[tuple[str, int]]]:
    """{pid: [(tag, step), ...]} of every ledger in ``folder``."""
    out: dict[int, list[tuple[str, int]]] = {}
    for entry in Path(folder).glob("*.ledger"):
        rows = []
        for line in entry.read_text().splitlines():
            tag, step = line.rsplit(" ", 1)
            rows.append((tag, int(step)))
        out[int(entry.stem)] = rows
    return out


class LoggingDataset:
    """Each item logs ``<prefix>`` = index at step index from whichever worker loads it.

    ``raise_index`` raises inside the worker; ``hang_index`` blocks the worker inside
    ``__getitem__`` (the DataLoader then terminates it at shutdown).
    """

    def __init__(
        self, n: int, prefix: str, ledger: str, raise_index: int | None = None, hang_index: int | None = None
    ) -> None:
        self.n = n
        self.prefix = prefix
        self.ledger = ledger
        self.raise_index = raise_index
        self.hang_index = hang_index

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if i == self.raise_index:
            raise ValueError(f"item {i} is broken")
        hyrax_tbhub.get_tensorboard_logger().add_scalar(self.prefix, float(i), i)
        ledger_write(self.ledger, f"{self.prefix} {i}")
        if i == self.hang_index:
            threading.Event().wait(SAFETY_S)  # stuck until the DataLoader terminates us
        return i


def worker_init_hang_at_exit(stuck_worker: int, worker_id: int) -> None:
    """worker_init_fn: worker ``stuck_worker`` starts a non-daemon thread, so it cannot exit."""
    if worker_id == stuck_worker:
        threading.Thread(target=threading.Event().wait, args=(SAFETY_S,), daemon=False).start()


# -- point 3: the hub goes away -------------------------------------------------------------------


def log_through_hub_loss(
    notify: Any,
    told: Any,
    tag: str,
    result: str,
    hub_file: str | None = None,
    after: int = 50_000,
    limits: dict[str, Any] | None = None,
) -> None:
    """Log steadily; keep logging while the hub goes away; report how long each call took.

    1. log 1000 points and flush, then send "ready";
    2. log one point per iteration until the test says (on ``told``) that the hub is gone;
    3. log ``after`` more points, time a flush, a non-scalar call and get_logdir, and report.
    Any exception is reported, never raised: the point is that none happens.
    """
    if hub_file is not None:
        os.environ[hubfile.ENV_INFO] = hub_file  # a producer that inherited the hub's address
    if limits:
        set_limits(**limits)
    out: dict[str, Any] = {"pid": os.getpid(), "errors": []}
    w = hyrax_tbhub.get_tensorboard_logger()
    before: list[float] = []
    step = 0
    try:
        before += timed_calls(w, tag, 1000)
        step = 1000
        w.add_text(tag + "/text", "warm-up", 0)  # the first non-scalar call imports tensorboardX
        out["first_flush"] = w.flush(30)
        notify.send("ready")
        clock = time.perf_counter
        deadline = time.monotonic() + SAFETY_S
        while not told.poll() and time.monotonic() < deadline:
            before += timed_calls(w, tag, 64, start=step)
            step += 64
        out["logged_before_told"] = step
        gone = timed_calls(w, tag, after, start=step)
        step += after
        t0 = clock()
        out["flush_after"] = w.flush(0.5)
        out["flush_after_s"] = clock() - t0
        t0 = clock()
        w.add_text(tag + "/text", "hello", step)
        out["text_after_s"] = clock() - t0
        t0 = clock()
        out["logdir_after"] = w.get_logdir()
        out["logdir_after_s"] = clock() - t0
        out["before"] = summarize(before)
        out["after"] = summarize(gone)
    except BaseException as exc:  # noqa: B036 - the report is the point
        out["errors"].append(repr(exc))
    out["logged"] = step
    out["reported_at"] = time.time()
    report(result, out)


def owner_main(logdir: str, notify: Any, quit_on: Any = None, stderr: str | None = None) -> None:
    """Own a hub in this process; send its hub file; wait (to be killed, stopped or told to close)."""
    if stderr:
        redirect_stderr(stderr)
    reset_peak_rss()
    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    notify.send(("hub", os.environ[hubfile.ENV_INFO], os.getpid(), proc_status_kib("VmRSS")))
    if quit_on is None:
        threading.Event().wait(SAFETY_S)
        return
    quit_on.poll(SAFETY_S)
    t0 = time.monotonic()
    hyrax_tbhub.close_tensorboard_logger()
    notify.send(("closed", proc_status_kib("VmHWM"), time.monotonic() - t0))


def follow_new_hub(notify: Any, told: Any, result: str, n: int = 500) -> None:
    """Log phase "a" to the first hub; after being told, log phase "b": it must reach the new hub."""
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(n):
        w.add_scalar("phase/a", float(step), step)
    first = w.flush(30)
    first_dir = w.get_logdir()
    notify.send("a done")
    told.poll(SAFETY_S)
    told.recv()
    for step in range(n):
        w.add_scalar("phase/b", float(step), step)
    report(
        result,
        {
            "first_flush": first,
            "first_dir": first_dir,
            "second_flush": w.flush(30),
            "second_dir": w.get_logdir(),
        },
    )


def log_across_hub_switches(notify: Any, told: Any, result: str, switches: int) -> None:
    """Log without pause while the owner closes and reopens its hub ``switches`` times.

    Reports events that a finished producer accepted but neither sent nor counted as dropped:
    calls that returned normally and yet went nowhere, without a trace.
    """
    from hyrax_tbhub._producer import Producer

    w = hyrax_tbhub.get_tensorboard_logger()
    seen: dict[int, Producer] = {}
    step = 0
    notify.send("ready")
    done = 0
    deadline = time.monotonic() + SAFETY_S
    while done < switches and time.monotonic() < deadline:
        w.add_scalar("steady", float(step), step)
        step += 1
        ch = STATE.channel
        if isinstance(ch, Producer):
            seen.setdefault(id(ch), ch)
        if step % 64 == 0 and told.poll():
            told.recv()
            done += 1
        if step % 65536 == 0:
            report(result + ".status", process_state())  # for the test's message if it times out
    final = w.flush(30)
    stranded = []
    for p in seen.values():
        if p is not STATE.channel and not p.alive:
            stranded.append(sum(1 for item in list(p._dq) if item[0] in ("s", "e")))
    report(result, {"logged": step, "producers": len(seen), "stranded": stranded, "final_flush": final})


# -- point 4: flood and backpressure ----------------------------------------------------------------


def flood(notify: Any, go: Any, tag: str, n: int, result: str, stderr: str, text_bytes: int = 0) -> None:
    """Connect, wait for ``go``, log ``n`` events flat out, say so, wait for ``go`` again, flush, report.

    Scalars by default; with ``text_bytes`` each event is an add_text of that many bytes. Samples
    the queue length, queued bytes and RSS as it goes.
    """
    redirect_stderr(stderr)
    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_text("warm-up", "x", 0)  # imports tensorboardX now, not inside the timed calls
    w.add_scalar(tag + "/hello", 1.0, 0)
    connected = w.flush(30)
    p = _producer()
    limits = {"max_events": p.options.queue_max_events, "max_bytes": p.options.queue_max_bytes,
              "batch": p.options.batch_events}
    notify.send("ready")
    go.poll(SAFETY_S)
    go.recv()
    payload = "x" * text_bytes
    durations = array("d", bytes(8 * n))  # allocated before the baseline: not part of the growth
    watch = GcWatch()
    max_dq = max_bytes = 0
    sample = 1000 if text_bytes == 0 else 1
    clock = time.perf_counter
    timed = 0
    reset_peak_rss()
    rss0 = proc_status_kib("VmRSS")
    for step in range(n):
        runs = watch.runs
        t0 = clock()
        if text_bytes:
            w.add_text(tag, payload, step)
        else:
            w.add_scalar(tag, float(step), step)
        took = clock() - t0
        if watch.runs == runs:
            durations[timed] = took
            timed += 1
        if step % sample == 0:
            max_dq = max(max_dq, len(p._dq))
            max_bytes = max(max_bytes, p._queued_bytes)
    peak = proc_status_kib("VmHWM")
    notify.send("logged")
    go.poll(SAFETY_S)
    go.recv()
    flushed = w.flush(120)
    report(
        result,
        {
            "connected": connected,
            "flush": flushed,
            "logged": n,
            "dropped": int(p.dropped),
            "run": p.run_name,
            "limits": limits,
            "max_dq": max_dq,
            "max_queued_bytes": max_bytes,
            "rss_growth_kib": peak - rss0,
            "calls": summarize(list(durations[:timed])),
            "gc_skipped": n - timed,
        },
    )


def paced(tag: str, rate: float, seconds: float, result: str) -> None:
    """Log at ``rate`` events/s for ``seconds`` (a pace the hub keeps up with), flush, report."""
    w = hyrax_tbhub.get_tensorboard_logger()
    start = time.monotonic()
    step = 0
    total = int(rate * seconds)
    while step < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        if step >= due:
            time.sleep(0.002)  # rate limiting, not synchronisation: nothing waits on this
            continue
        while step < due:
            w.add_scalar(tag, float(step), step)
            step += 1
    report(result, {"logged": step, "flush": w.flush(60), "dropped": _dropped()})


def burst(tag: str, n: int, result: str) -> None:
    """Log ``n`` events flat out (fewer than the queue holds), flush, report."""
    w = hyrax_tbhub.get_tensorboard_logger()
    durations = timed_calls(w, tag, n)
    report(result, {"logged": n, "flush": w.flush(120), "dropped": _dropped(), "calls": summarize(durations)})


# -- point 5: strangers -------------------------------------------------------------------------------


def timed_producer(tag: str, n: int, result: str) -> None:
    """Log ``n`` points and flush; report how long that took from the first call."""
    t0 = time.monotonic()
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(n):
        w.add_scalar(tag, float(step), step)
    ok = w.flush(60)
    report(result, {"flush": ok, "seconds": time.monotonic() - t0, "dropped": _dropped()})


# -- point 6: bad calls ----------------------------------------------------------------------------


def _noise_image(side: int) -> Any:
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, size=(3, side, side), dtype=np.uint8)


def _meta_tensor() -> Any:
    import torch

    return torch.tensor(1.0, device="meta")  # stands in for a tensor on a device this process cannot read


def _vector_tensor() -> Any:
    import torch

    return torch.tensor([1.0, 2.0])


#: Calls where the caller is at fault: each must raise at the call site, and leave logging working.
CALLER_FAULTS: dict[str, Callable[[Any], Any]] = {
    "value_not_a_number": lambda w: w.add_scalar("bad/value", object(), 1),
    "value_vector_tensor": lambda w: w.add_scalar("bad/vector", _vector_tensor(), 1),
    "value_tensor_on_meta_device": lambda w: w.add_scalar("bad/meta", _meta_tensor(), 1),
    "tag_not_a_string": lambda w: w.add_scalar(5, 1.0, 1),
    "step_nan": lambda w: w.add_scalar("bad/step", 1.0, float("nan")),
    "step_beyond_int64": lambda w: w.add_scalar("bad/step", 1.0, 2**70),
    "step_just_beyond_int64": lambda w: w.add_scalar("bad/step", 1.0, 2**63),
    "walltime_not_a_number": lambda w: w.add_scalar("bad/walltime", 1.0, 1, walltime="yesterday"),
    "walltime_unpicklable": lambda w: w.add_scalar("bad/walltime", 1.0, 1, walltime=threading.Lock()),
    "image_wrong_shape": lambda w: w.add_image("bad/image", _noise_image(4)[0, 0], 1),
    "histogram_of_text": lambda w: w.add_histogram("bad/histogram", "not numbers", 1),
}


def bad_call(case: str, result: str, limits: dict[str, Any] | None = None) -> None:
    """Log, make the bad call ``case``, log again; report what the call did and whether logging survived."""
    if limits:
        set_limits(**limits)
    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_scalar("good/before", 1.0, 0)
    out: dict[str, Any] = {"before_flush": w.flush(30)}
    try:
        CALLER_FAULTS[case](w)
        out["raised"] = None
    except Exception as exc:
        out["raised"] = type(exc).__name__
        out["message"] = str(exc)[:200]
    w.add_scalar("good/after", 2.0, 1)
    out["after_flush"] = w.flush(30)
    out["dropped"] = _dropped()
    report(result, out)


def odd_values_and_tags(result: str) -> None:
    """Values and tags that are legal but unusual: all must land, exactly as tensorboardX writes them."""
    import numpy as np

    w = hyrax_tbhub.get_tensorboard_logger()
    values = {
        "v/nan": float("nan"),
        "v/inf": float("inf"),
        "v/-inf": float("-inf"),
        "v/big": 1e300,
        "v/tiny": 1e-320,
        "v/np_nan": np.float32("nan"),
        "v/np_int": np.int64(7),
        "v/int": 2**40,
        "v/bool": True,
    }
    for tag, value in values.items():
        w.add_scalar(tag, value, 1)
    for i, tag in enumerate(ODD_TAGS):
        w.add_scalar(tag, float(i), i)
    report(result, {"flush": w.flush(30), "dropped": _dropped()})


ODD_TAGS = [
    "a b",
    "ü/ß/中文",
    "../../escape",
    "/leading/slash",
    "",
    "tab\there",
    "new\nline",
    "nul\0byte",
    "x" * 5000,
    "dots...",
    "hyrax_tbhub/dropped/fake",
    "emoji/🙂",
]


def figure_and_images(result: str, side: int) -> None:
    """A matplotlib figure and a large noise image (``side`` x ``side``): both must land."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = hyrax_tbhub.get_tensorboard_logger()
    fig = plt.figure()
    plt.plot([1, 2, 3])
    w.add_figure("fig/line", fig, 1)
    w.add_image("img/huge", _noise_image(side), 1)
    report(result, {"flush": w.flush(60), "dropped": _dropped()})


def oversized_event(result: str, stderr: str, max_bytes: int, side: int) -> None:
    """An image larger than this producer's max_bytes: it cannot be sent; how is the caller told?"""
    redirect_stderr(stderr)
    set_limits(max_bytes=max_bytes)
    w = hyrax_tbhub.get_tensorboard_logger()
    out: dict[str, Any] = {}
    try:
        w.add_image("img/oversized", _noise_image(side), 1)
        out["raised"] = None
    except Exception as exc:
        out["raised"] = type(exc).__name__
        out["message"] = str(exc)[:300]
    w.add_scalar("good/after", 1.0, 1)
    out["flush"] = w.flush(30)
    out["dropped"] = _dropped()
    report(result, out)


def log_cursed(result: str) -> None:
    """Log 10 points of "cursed" (the test makes the hub fail on them) and 10 of "fine"."""
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(10):
        w.add_scalar("cursed", float(step), step)
    first = w.flush(30)
    for step in range(10):
        w.add_scalar("fine", float(step), step)
    report(result, {"flush": [first, w.flush(30)]})


# -- point 7: fork at the worst moment -------------------------------------------------------------


def child_logs(tag: str, n: int, result: str) -> None:
    """A forked child: log ``n`` points, flush, report (and then exit normally)."""
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(n):
        w.add_scalar(tag, float(step), step)
    report(result, {"flush": w.flush(30), "pid": os.getpid()})


def fork_at_worst_moments(result: str, folder: str, rounds: int, child_events: int) -> None:
    """A producer that forks while its sender thread is half-way through a frame, ``rounds`` times.

    A thread logs without pause all along. Each round arms the sender to stop half-way through its
    next batch frame; once it is stopped there, the process forks (three ways in turn: a
    multiprocessing fork child; the same while another thread holds the producer's lock and the
    process state lock; a bare ``os.fork()`` from a non-main thread), and only then lets the sender
    finish the frame. Children log ``child_events`` points, flush and exit; the parent carries on.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    original = socket.socket.sendall
    mid, go_on = threading.Event(), threading.Event()
    armed = [False]

    def sendall(self: socket.socket, data: Any, *args: Any) -> None:
        if armed[0] and threading.current_thread().name == "hyrax_tbhub-producer" and len(data) >= 1024:
            armed[0] = False
            data = bytes(data)
            half = len(data) // 2
            original(self, data[:half])
            mid.set()
            go_on.wait(SAFETY_S)
            original(self, data[half:])
            return
        original(self, data, *args)

    socket.socket.sendall = sendall  # type: ignore[method-assign]
    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_scalar("parent/hello", 0.0, 0)
    assert w.flush(30)
    producer = _producer()
    stop = threading.Event()
    logged = [0]

    def spam() -> None:
        step = 0
        while not stop.is_set():
            w.add_scalar("parent/spam", float(step), step)
            step += 1
            logged[0] = step

    spammer = threading.Thread(target=spam, name="spam")
    spammer.start()
    children: list[Any] = []
    bare: list[int] = []
    out: dict[str, Any] = {"rounds": [], "errors": []}
    try:
        for r in range(rounds):
            mid.clear()
            go_on.clear()
            armed[0] = True
            if not mid.wait(30):
                raise TimeoutError(f"round {r}: the sender never reached a frame")
            tag, res = f"child/{r}", os.path.join(folder, f"child-{r}.json")
            how = ("process", "locks_held", "bare_fork_from_thread")[r % 3]
            if how == "process":
                p = ctx.Process(target=child_logs, args=(tag, child_events, res), name=f"child-{r}")
                p.start()
                children.append(p)
            elif how == "locks_held":
                held, release = threading.Event(), threading.Event()

                def hold(held: threading.Event = held, release: threading.Event = release) -> None:
                    with producer._cond, STATE.lock:
                        held.set()
                        release.wait(SAFETY_S)

                holder = threading.Thread(target=hold)
                holder.start()
                held.wait(10)
                p = ctx.Process(target=child_logs, args=(tag, child_events, res), name=f"child-{r}")
                p.start()
                release.set()
                holder.join(10)
                children.append(p)
            else:
                pids: list[int] = []

                def fork_here(tag: str = tag, res: str = res, pids: list[int] = pids) -> None:
                    pid = os.fork()
                    if pid == 0:
                        try:
                            child_logs(tag, child_events, res)
                            code = 0
                        except BaseException:
                            code = 1
                        os._exit(code)  # a bare fork child: nothing flushes for it, it flushed itself
                    pids.append(pid)

                forker = threading.Thread(target=fork_here)
                forker.start()
                forker.join(10)
                bare += pids
            out["rounds"].append(how)
            go_on.set()
    except BaseException as exc:  # noqa: B036
        out["errors"].append(repr(exc))
        go_on.set()
    stop.set()
    spammer.join(30)
    for p in children:
        p.join(60)
        out.setdefault("exitcodes", []).append(p.exitcode)
    for pid in bare:
        _, status = os.waitpid(pid, 0)
        out.setdefault("exitcodes", []).append(os.waitstatus_to_exitcode(status))
    out["flush"] = w.flush(60)
    out["logged"] = logged[0]
    out["dropped"] = _dropped()
    out["run"] = producer.run_name
    report(result, out)


# -- point 8: life cycle ----------------------------------------------------------------------------


def follow_many_hubs(requests: Any, replies: Any, result: str) -> None:
    """A long-lived producer: for each request, log one point to whatever hub is current, flush,
    reply; at the end report how many threads and descriptors it holds (they must not grow)."""
    w = hyrax_tbhub.get_tensorboard_logger()
    baseline: dict[str, Any] | None = None
    flushed = []
    while True:
        if not requests.poll(SAFETY_S):
            break
        msg = requests.recv()
        if msg == "stop":
            break
        w.add_scalar("cycle", float(msg), int(msg))
        flushed.append(bool(w.flush(30)))
        if baseline is None:
            baseline = {"fds": open_fds(), "threads": threading.active_count()}
        replies.send(msg)
    report(
        result,
        {
            "flushed": flushed,
            "new_fds": new_fds(baseline["fds"]) if baseline else {},
            "threads": [baseline["threads"] if baseline else 0, threading.active_count()],
        },
    )


def unrelated_owner(logdir: str, label: str, ready_file: str, go_file: str, children: int) -> None:
    """Run as a separate program: own a hub, wait for ``go_file``, have children log, close.

    Children are fork and spawn processes logging ``<label>/<i>``; the owner logs ``<label>/owner``.
    """
    import multiprocessing

    hyrax_tbhub.init_tensorboard_logger(log_dir=logdir)
    report(ready_file, {"pid": os.getpid(), "hub_file": os.environ[hubfile.ENV_INFO]})
    wait_until(lambda: os.path.exists(go_file), SAFETY_S, "the go file")
    procs = []
    for i in range(children):
        ctx = multiprocessing.get_context("spawn" if i % 2 else "fork")
        p = ctx.Process(target=log_scalars_flush, args=(f"{label}/{i}", 300), name=f"{label}-{i}")
        p.start()
        procs.append(p)
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(300):
        w.add_scalar(f"{label}/owner", float(step), step)
    codes = []
    for p in procs:
        p.join(SAFETY_S)
        codes.append(p.exitcode)
    hyrax_tbhub.close_tensorboard_logger()
    report(ready_file + ".done", {"exitcodes": codes})


def log_scalars_flush(tag: str, n: int) -> None:
    w = hyrax_tbhub.get_tensorboard_logger()
    for step in range(n):
        w.add_scalar(tag, float(step), step)
    if not w.flush(30):
        sys.exit(2)


# -- point 9: many producers ------------------------------------------------------------------------


def many_producer(go: Any, leave: Any, tag: str, n: int) -> None:
    """Wait for the start signal shared by all, log ``n`` points, flush, stay connected until ``leave``."""
    go.wait(SAFETY_S)
    log_scalars_flush(tag, n)
    leave.wait(SAFETY_S)


def tbx_writer_after_close(logdir: str, progress: Any) -> None:
    """Contrast: hyrax's own module in a forked child, whose parent closes the writer.

    The child inherits the SummaryWriter but not its writer thread: its events fill
    tensorboardX's queue (max_queue=10) and then every call blocks.
    """
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(logdir)
    writer.add_scalar("before_fork", 1.0, 0)
    pid = os.fork()
    if pid:
        writer.close()
        os.waitpid(pid, 0)
        return
    try:
        progress.send(("pid", os.getpid()))  # the test kills this process: it never ends by itself
        for step in range(20):
            writer.add_scalar("in_child", float(step), step)
            progress.send(("calls", step + 1))
    finally:
        os._exit(0)
