"""Drop-in replacement for ``hyrax.tensorboardx_logger`` that works from every process.

Same names as the hyrax module::

    sys.modules["hyrax.tensorboardx_logger"] = hyrax_tbhub.tensorboardx_logger

- ``init_tensorboard_logger(**kwargs)`` starts a hub in the calling process (kwargs are
  tensorboardX ``SummaryWriter``'s); any hub this process already runs is closed first.
- ``get_tensorboard_logger()`` returns a :class:`HyraxSummaryWriter` in any process. In a
  descendant of the owner (fork, spawn, forkserver, pools, DataLoader workers, ``subprocess``)
  its calls travel to the hub; with no hub they are no-ops.
- ``close_tensorboard_logger()`` returns once every event logged before it, by the owner and by
  every connected producer, is on disk. Afterwards calls are no-ops.

Differences from hyrax, on purpose: the step of ``log_duration_ts`` is microseconds since the hub
started, like ``log_scalar_ts`` (hyrax divides twice and logs milliseconds); each producer
process writes its own run under ``log_dir`` (TensorBoard drops points of one run whose steps go
back, and producers' steps are not ordered with each other).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from tensorboardX import SummaryWriter

from . import _discovery, _state
from ._hub import Hub, HubConfig
from ._owner import LocalChannel

__all__ = [
    "HyraxSummaryWriter",
    "close_tensorboard_logger",
    "get_tensorboard_logger",
    "init_tensorboard_logger",
    "tensorboard_start_ns",
    "tensorboardx_logger",
]

_STATE = _state.STATE
_rediscover = _state.rediscover
_time = time.time
_monotonic_ns = time.monotonic_ns

# Types whose value converts to a float exactly as tensorboardX's make_np + float() would, so the
# scalar can skip tensorboardX's summary builder (about 6 us) and be encoded by the hub.
_FAST_VALUE_TYPES: frozenset[type] = frozenset({float, int})
try:
    import numpy as _np

    _FAST_VALUE_TYPES = _FAST_VALUE_TYPES | {_np.float64, _np.float32, _np.float16, _np.int64, _np.int32}
except ImportError:  # pragma: no cover - numpy is a tensorboardX dependency
    pass


def _writer_public_names() -> frozenset[str]:
    return frozenset(n for n in dir(SummaryWriter) if not n.startswith("_"))


_WRITER_NAMES = _writer_public_names()


class HyraxSummaryWriter:
    """A stateless handle to this process's logging channel, with SummaryWriter's methods.

    It reads the process state on every call, so a handle taken at import time works once a
    hub exists. Every public ``tensorboardX.SummaryWriter`` method is available by name and
    runs tensorboardX's own code in the calling process (so bad arguments raise here); only the
    finished event travels to the hub. A name SummaryWriter does not have raises AttributeError.
    """

    __slots__ = ()

    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: Any = None,
        walltime: float | None = None,
        display_name: str = "",
        summary_description: str = "",
    ) -> None:
        """As ``SummaryWriter.add_scalar``; plain numbers take a fast path to the hub."""
        ch = _STATE.channel
        if ch is None:
            ch = _rediscover()
            if ch is None:
                return
        if (
            type(scalar_value) in _FAST_VALUE_TYPES
            and type(tag) is str
            and not display_name
            and not summary_description
        ):
            if global_step is not None and type(global_step) is not int:
                global_step = int(global_step)
            ch.put_scalar(
                tag, float(scalar_value), global_step, _time() if walltime is None else walltime
            )
        else:
            ch.writer().add_scalar(tag, scalar_value, global_step, walltime, display_name, summary_description)

    def log_scalar_ts(self, name: str, scalar: Any, since_tensorboard_start_ns: int | None = None) -> None:
        """Log ``scalar`` with step = whole microseconds since the hub started (or the given ns)."""
        ch = _STATE.channel or _rediscover()
        if ch is None:
            return
        if since_tensorboard_start_ns is None:
            since_tensorboard_start_ns = _monotonic_ns() - ch.start_ns
        self.add_scalar(name, scalar, int(since_tensorboard_start_ns) // 1000)

    def log_duration_ts(self, name: str, start_time: int) -> None:
        """Log seconds since ``start_time`` (a ``time.monotonic_ns()`` reading).

        The step is whole microseconds since the hub started, as for :meth:`log_scalar_ts`
        (hyrax logs milliseconds here by accident).
        """
        ch = _STATE.channel or _rediscover()
        if ch is None:
            return
        now = _monotonic_ns()
        self.add_scalar(name, (now - start_time) / 1e9, (now - ch.start_ns) // 1000)

    def flush(self, timeout: float | None = None) -> bool:
        """Barrier: when it returns True, everything this process logged before is on disk."""
        ch = _STATE.channel or _rediscover()
        if ch is None:
            return True
        try:
            return ch.flush(timeout)
        except Exception:
            return False

    def close(self) -> None:
        """Flush this process's events; the hub itself closes with ``close_tensorboard_logger()``."""
        self.flush()

    def get_logdir(self) -> str | None:
        """This process's run folder (the hub's ``log_dir`` in the owner); None with no hub."""
        ch = _STATE.channel or _rediscover()
        return None if ch is None else ch.folder()

    def __getattr__(self, name: str) -> Any:
        if name not in _WRITER_NAMES:
            raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r} (nor has SummaryWriter)")
        ch = _STATE.channel or _rediscover()
        return None if ch is None else getattr(ch.writer(), name)

    def __dir__(self) -> list[str]:
        return sorted(set(object.__dir__(self)) | set(dir(SummaryWriter)))

    def __repr__(self) -> str:
        ch = _STATE.channel
        where = "no hub" if ch is None else f"channel={type(ch).__name__}"
        return f"<HyraxSummaryWriter {where}>"


def _forwarder(name: str) -> Any:
    target = getattr(SummaryWriter, name)

    @functools.wraps(target)
    def method(self: HyraxSummaryWriter, *args: Any, **kwargs: Any) -> Any:
        ch = _STATE.channel
        if ch is None:
            ch = _rediscover()
            if ch is None:
                return None
        return getattr(ch.writer(), name)(*args, **kwargs)

    return method


# Every public SummaryWriter method becomes a real method: dir(), help() and IDEs see them, and
# a call costs one attribute lookup instead of a __getattr__ round trip.
for _name in sorted(_WRITER_NAMES):
    if _name in HyraxSummaryWriter.__dict__ or not callable(getattr(SummaryWriter, _name)):
        continue
    if _name in ("use_metadata",):
        continue  # a context manager bound to one writer object: reached through __getattr__
    setattr(HyraxSummaryWriter, _name, _forwarder(_name))
del _name


def get_tensorboard_logger() -> HyraxSummaryWriter:
    """Return a handle that logs to the hub of this process tree, or does nothing without one."""
    return HyraxSummaryWriter()


def _resolve_logdir(kwargs: dict[str, Any]) -> str:
    # SummaryWriter's own rule, so the hub knows the folder before any writer exists.
    logdir = kwargs.get("logdir") or kwargs.get("log_dir")
    if not logdir:
        import socket
        from datetime import datetime

        stamp = datetime.now().strftime("%b%d_%H-%M-%S")
        logdir = os.path.join("runs", stamp + "_" + socket.gethostname() + (kwargs.get("comment") or ""))
    return str(logdir)


_saved_env: list[str | None] = []


def init_tensorboard_logger(**kwargs: Any) -> None:
    """Start a hub in this process that every descendant process logs to.

    Args are those of ``tensorboardX.SummaryWriter`` (``log_dir``/``logdir``, ``comment``,
    ``purge_step``, ``filename_suffix``, ``flush_secs``, ``max_queue``...). ``flush_secs`` and
    ``max_queue`` are accepted but unused: the hub hands events to the OS as it receives them.
    """
    close_tensorboard_logger()
    logdir = _resolve_logdir(kwargs)
    writer_kwargs = {k: v for k, v in kwargs.items() if k not in ("log_dir", "logdir")}
    writer_kwargs["logdir"] = logdir
    hub = Hub(logdir, HubConfig(filename_suffix=str(kwargs.get("filename_suffix") or "")))
    channel = LocalChannel(hub, writer_kwargs)
    hub_file = hub.start()
    with _STATE.lock:
        # A process that was a producer leaves its hub: its own descendants now log here.
        _state.close_producer()
        _STATE.hub = hub
        _STATE.channel = channel
    _saved_env.append(os.environ.get(_discovery.ENV_INFO))
    os.environ[_discovery.ENV_INFO] = hub_file
    _state.hook_exit_for_owner()


def close_tensorboard_logger() -> None:
    """Close the hub of this process once every event logged before the call is on disk.

    In a producer process it flushes and leaves the hub. Without a hub it does nothing.
    """
    hub = _STATE.hub
    if hub is None or os.getpid() != hub.owner_pid:
        _state.close_producer()
        return
    with _STATE.lock:
        _STATE.hub = None
        _STATE.channel = None
        _STATE.next_discovery = float("inf")  # the owner never becomes a producer by itself
    try:
        hub.close()
    finally:
        previous = _saved_env.pop() if _saved_env else None
        if previous is None:
            os.environ.pop(_discovery.ENV_INFO, None)
        else:
            os.environ[_discovery.ENV_INFO] = previous


def __getattr__(name: str) -> Any:
    # hyrax exposes these as module globals; here they follow the live state of this process.
    if name == "tensorboardx_logger":
        ch = _STATE.channel
        return None if ch is None else ch.writer()
    if name == "tensorboard_start_ns":
        ch = _STATE.channel
        return 0 if ch is None else ch.start_ns
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
