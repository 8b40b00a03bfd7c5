"""What a process holds, read from /proc: descriptors, memory, its logging state."""

from __future__ import annotations

import gc
import os
import threading
from typing import Any

from hyrax_tbhub._process.state import STATE


def open_fds() -> dict[int, str]:
    gc.collect()
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return out


def new_fds(before: dict[int, str]) -> dict[int, str]:
    """Descriptors open now that were not in ``before`` (an ``open_fds()``), after a GC pass."""
    gc.collect()
    return {fd: target for fd, target in open_fds().items() if before.get(fd) != target}


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
        for name in ("_state", "_drain_requested", "_closing", "run_name", "dropped"):
            out[name] = getattr(ch, name, None)
        out["queued"] = len(getattr(ch, "_dq", ()))
    return out
