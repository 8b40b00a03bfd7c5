"""Drop-in replacement for ``hyrax.tensorboardx_logger`` that works from every process.

Same names as the hyrax module; ``hyrax_tbhub.use_with_hyrax()`` (or ``HYRAX_TBHUB=1`` for a
whole job) puts it in hyrax's place, also after ``import hyrax``::

    import hyrax_tbhub

    hyrax_tbhub.use_with_hyrax()
    assert hyrax_tbhub.hyrax_switched_on()
    hyrax_tbhub.stop_using_with_hyrax()

- ``init_tensorboard_logger(**kwargs)`` starts a hub in the calling process (kwargs are
  tensorboardX ``SummaryWriter``'s, each a named parameter); any hub this process already runs
  is closed first.
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

import os
import socket
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._discovery import hubfile
from ._hub import Hub, HubConfig, LocalChannel
from ._process.connect import close_producer, rediscover
from ._process.engines import serve_engines
from ._process.hooks import hook_exit
from ._process.state import SAVED_ENV, STATE
from ._surface import TensorLike, WriterMethods, next_ts_step
from .options import DEFAULT_OPTIONS, Options

if TYPE_CHECKING:
    from ._channel import Channel

__all__ = [
    "HyraxSummaryWriter",
    "close_tensorboard_logger",
    "get_tensorboard_logger",
    "init_tensorboard_logger",
    "tensorboard_start_ns",  # noqa: F822 - served by the module __getattr__ below
    "tensorboardx_logger",  # noqa: F822
    "WRITER_METHODS",
]

_STATE = STATE
_rediscover = rediscover


# The public methods of tensorboardX.SummaryWriter (2.6), which both writers have (_surface.py).
# Listed, not read from the class: importing tensorboardX imports torch when it is installed,
# seconds in every worker that only logs scalars. tests/test_surface_signatures.py checks the
# list, and each method's signature, against the installed tensorboardX.
WRITER_METHODS: frozenset[str] = frozenset({
    "add_audio", "add_custom_scalars", "add_custom_scalars_marginchart",
    "add_custom_scalars_multilinechart", "add_embedding", "add_figure", "add_graph",
    "add_histogram", "add_histogram_raw", "add_hparams", "add_image", "add_image_with_boxes",
    "add_images", "add_mesh", "add_onnx_graph", "add_openvino_graph", "add_pr_curve",
    "add_pr_curve_raw", "add_scalar", "add_scalars", "add_text", "add_video", "close",
    "export_scalars_to_json", "flush", "use_metadata",
})


def _current() -> Channel | None:
    """This process's channel, looking for a hub unless the process is known to have none."""
    ch = _STATE.channel
    if ch is None and not _STATE.idle:
        ch = _rediscover()
    return ch


# Last step given per tag by the *_ts helpers of this process (reset with the process state).
_last_ts_step: dict[str, int] = {}


class HyraxSummaryWriter(WriterMethods):
    """A stateless handle to this process's logging channel, with SummaryWriter's methods.

    It reads the process state on every call, so a handle taken at import time works once a
    hub exists. Every public ``tensorboardX.SummaryWriter`` method is here with tensorboardX's
    signature and runs tensorboardX's own code in the calling process (so bad arguments raise
    here); only the finished event travels to the hub. Any other name raises AttributeError.
    """

    # No __getattr__ on purpose: a class with one gets no specialised method lookups in CPython,
    # which doubled the cost of every call; and a type checker then flags a misspelt method.
    __slots__ = ()

    def _channel_now(self) -> Channel | None:
        return _current()

    def add_scalar(
        self,
        tag: str,
        scalar_value: float | TensorLike,
        global_step: int | None = None,
        walltime: float | None = None,
        display_name: str | None = "",
        summary_description: str | None = "",
    ) -> None:
        """As ``SummaryWriter.add_scalar``; plain numbers take a fast path to the hub."""
        ch = _STATE.channel
        if ch is None:
            if _STATE.idle:
                return
            ch = _rediscover()
            if ch is None:
                return
        self._put_scalar(ch, tag, scalar_value, global_step, walltime, display_name, summary_description)

    def _set_meta(self, meta: dict[str, Any] | None) -> None:
        # The handle is one object whose class changes with the process's state: its
        # use_metadata defaults live on the class every state's class derives from.
        HyraxSummaryWriter._meta = meta

    def _ts_step(self, tag: str, step: int) -> int:
        return next_ts_step(_last_ts_step, tag, step)

    def flush(self, timeout: float | None = None) -> bool:
        """Barrier: when it returns True, everything this process logged before is on disk.

        False when the hub did not confirm within ``timeout``, or when this process lost its hub
        (what it logged since went nowhere). With no hub ever, there is nothing to flush: True.
        """
        ch = _current()
        if ch is None:
            return not _STATE.lost_hub
        try:
            return bool(ch.flush(timeout))
        except Exception:
            return False

    def close(self) -> None:
        """Flush this process's events; the hub itself closes with ``close_tensorboard_logger()``."""
        self.flush()

    def get_logdir(self) -> str | None:
        """This process's run folder (the hub's ``log_dir`` in the owner); None with no hub."""
        ch = _current()
        return None if ch is None else ch.folder()

    def __repr__(self) -> str:
        ch = _STATE.channel
        where = "no hub" if ch is None else f"channel={type(ch).__name__}"
        return f"<HyraxSummaryWriter {where}>"


class _IdleWriter(HyraxSummaryWriter):
    """What the process-wide handle becomes while this process has no hub and cannot gain one
    (a top-level process before init or after close): a scalar returns at once, at the cost of
    a plain method call, and every other call finds no channel. It switches back as soon as that
    changes (init, fork)."""

    __slots__ = ()

    def _channel_now(self) -> Channel | None:
        return None

    def add_scalar(
        self,
        tag: str,
        scalar_value: float | TensorLike,
        global_step: int | None = None,
        walltime: float | None = None,
        display_name: str | None = "",
        summary_description: str | None = "",
    ) -> None:
        return None


class _WatchingWriter(HyraxSummaryWriter):
    """The handle while this process has no hub but an ancestor may start one (a pool worker
    started before init): each call compares one shared word (the hub generation) with the value
    last seen, and only looks for a hub when a hub started somewhere since.

    The channel need not be checked too: ``rediscover`` leaves the watch unsettled when it
    publishes a channel, so a call racing with that publication sees "changed" and looks."""

    __slots__ = ()

    def _channel_now(self) -> Channel | None:
        if _WORD[()] == _SEEN:
            return None
        return _current()

    def add_scalar(
        self,
        tag: str,
        scalar_value: float | TensorLike,
        global_step: int | None = None,
        walltime: float | None = None,
        display_name: str | None = "",
        summary_description: str | None = "",
    ) -> None:
        # Module globals and a 0-dimensional view, not the watch's attributes and view[0]: this
        # is the whole cost of a call in a process that never gets a hub (the benchmark's no-hub
        # figure: 2.5x a plain call with those, 1.8x with these).
        if _WORD[()] == _SEEN:
            return None
        return HyraxSummaryWriter.add_scalar(
            self, tag, scalar_value, global_step, walltime, display_name, summary_description
        )


_HANDLE = HyraxSummaryWriter()
# While the handle is a _WatchingWriter: this process's watch, its shared word (``word[()]``) and
# a copy of its ``seen``, kept equal to it by _sync_seen.
_WATCH: Any = None
_WORD: Any = None
_SEEN = -1


def _sync_seen(watch: hubfile.GenerationWatch) -> None:
    # Called by whichever thread changed watch.seen, after the change; it reads seen again, so
    # the last call leaves the copy equal to the last value whatever the order of the threads.
    global _SEEN
    if watch is _WATCH:
        _SEEN = watch.seen


def _switch_handle() -> None:
    """Give the process-wide handle the class whose methods do the least in the current state.

    Why a class swap: ``get_tensorboard_logger()`` returns one object for the life of the process
    (a handle taken at import time must keep working after init, fork and close), yet most
    processes that log never get a hub, and there a call should cost about a plain method call.
    Flag checks in one class would cost every call of every state (and a ``__getattr__`` slows
    every method of the class), so ``_HANDLE.__class__`` is assigned instead. CPython allows it
    because the three classes share one layout (each has empty ``__slots__``):

    - ``HyraxSummaryWriter`` while a channel exists, or when nothing is known: every method reads
      ``STATE`` on each call, so it is right in every state (only slower where nothing logs);
    - ``_IdleWriter`` while ``STATE.idle`` (no hub, nothing to look for): ``add_scalar`` returns
      at once and every other call finds no channel;
    - ``_WatchingWriter`` while there is no channel but a generation watch: a call returns after
      one comparison of the shared word with the value last seen, and looks for a hub (as
      ``HyraxSummaryWriter`` would) once a hub started somewhere since.

    When it runs: it is ``STATE``'s notify hook, called on the thread that changed the state
    after every change of channel, idle or watch (init, close, a look's end, a producer's end,
    fork, the exit hook's late channel). What it guarantees: a call never skips work the current
    state needs. The two fast classes differ from ``HyraxSummaryWriter`` only in ``add_scalar``
    and ``_channel_now``, and skip only while what they stand for holds: ``idle`` is cleared,
    with a notify, before this process can have a hub (init, a rank's own hub, fork, exit); the watch stays
    unsettled ("changed") while a channel exists (``rediscover``), so a watching call that races
    with a channel being published looks and finds it. A call on another thread that read the
    class just before a swap runs as a call made just before the change (a no-op only where
    the state before was idle: no hub yet, as for any call that precedes init).

    It also keeps the watching class's copies of the watch current (``_WATCH``, ``_WORD``,
    ``_SEEN``: module globals, cheaper to read than the watch's attributes), and forgets the
    ``*_ts`` steps when the channel goes (the next hub has its own clock origin).
    """
    global _WATCH, _WORD, _SEEN
    watch = _STATE.watch
    if watch is not None:
        _WATCH, _WORD = watch, watch.word
        watch.on_seen = _sync_seen
        _SEEN = watch.seen
    if _STATE.channel is None:
        _last_ts_step.clear()  # the next hub has its own clock origin
    if _STATE.channel is not None:
        _HANDLE.__class__ = HyraxSummaryWriter
    elif _STATE.idle:
        _HANDLE.__class__ = _IdleWriter
    elif watch is not None:
        _HANDLE.__class__ = _WatchingWriter
    else:
        _HANDLE.__class__ = HyraxSummaryWriter


_STATE.idle_hooks.append(_switch_handle)
_switch_handle()


def get_tensorboard_logger() -> HyraxSummaryWriter:
    """Return a handle that logs to the hub of this process tree, or does nothing without one.

    The handle is stateless: it reads the process state on every call, so one taken before
    ``init_tensorboard_logger`` works after it, in the owner and in every descendant.
    """
    return _HANDLE


def _resolve_logdir(kwargs: dict[str, Any]) -> str:
    # SummaryWriter's own rule, so the hub knows the folder before any writer exists.
    logdir = kwargs.get("logdir") or kwargs.get("log_dir")
    if not logdir:
        stamp = datetime.now().strftime("%b%d_%H-%M-%S")
        logdir = os.path.join("runs", stamp + "_" + socket.gethostname() + (kwargs.get("comment") or ""))
    return str(logdir)


def init_tensorboard_logger(
    *,
    logdir: str | os.PathLike[str] | None = None,
    comment: str | None = "",
    purge_step: int | None = None,
    max_queue: int | None = 10,
    flush_secs: int | None = 120,
    filename_suffix: str | None = "",
    write_to_disk: bool | None = True,
    log_dir: str | os.PathLike[str] | None = None,
    comet_config: dict[str, Any] | None = None,
    options: Options | None = None,
) -> None:
    """Start a hub in this process that every descendant process logs to.

    The arguments are those of ``tensorboardX.SummaryWriter``, by keyword as in hyrax (a name it
    does not have is a TypeError here, where tensorboardX raised at the first event).
    ``flush_secs`` and ``max_queue`` are accepted but unused: the hub hands events to the OS as
    it receives them. ``options`` sets the bounds and deadlines of the hub and of every process
    that logs to it (:class:`hyrax_tbhub.Options`).
    """
    given = {"logdir": logdir, "log_dir": log_dir, "comet_config": comet_config}
    kwargs: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    kwargs.update(
        comment=comment, purge_step=purge_step, max_queue=max_queue, flush_secs=flush_secs,
        filename_suffix=filename_suffix, write_to_disk=write_to_disk,
    )
    if options is None:
        options = DEFAULT_OPTIONS
    elif not isinstance(options, Options):
        raise TypeError(f"options must be a hyrax_tbhub.Options, not {type(options).__name__}")
    close_tensorboard_logger()
    logdir = _resolve_logdir(kwargs)
    writer_kwargs = {k: v for k, v in kwargs.items() if k not in ("log_dir", "logdir")}
    writer_kwargs["logdir"] = logdir
    hub = Hub(
        logdir,
        HubConfig(options, filename_suffix=str(kwargs.get("filename_suffix") or "")),
        purge_step=kwargs.get("purge_step"),
    )
    channel = LocalChannel(hub, writer_kwargs)
    hub_file = hub.start()
    with _STATE.lock:
        # A process that was a producer leaves its hub: its own descendants now log here.
        close_producer()
        _STATE.hub = hub
        _STATE.channel = channel
        _STATE.idle = False  # notifies
    SAVED_ENV.append(os.environ.get(hubfile.ENV_INFO))
    os.environ[hubfile.ENV_INFO] = hub_file
    hook_exit()
    serve_engines(hub)  # Ray's workers, a launcher's sibling ranks: not descendants of this process


def close_tensorboard_logger() -> None:
    """Close the hub of this process once every event logged before the call is on disk.

    In a producer process it flushes and leaves the hub. Without a hub it does nothing.
    """
    with _STATE.lock:  # taken and cleared at once: two threads closing close the hub once
        hub = _STATE.hub
        if hub is not None and os.getpid() == hub.owner_pid:
            _STATE.hub = None
            _STATE.channel = None
            _STATE.idle = True  # the owner never becomes a producer by itself
        else:
            hub = None
    if hub is None:
        close_producer()
        return
    try:
        hub.close()  # counts the unreachable reports first (serve_engines)
    finally:
        previous = SAVED_ENV.pop() if SAVED_ENV else None
        if previous is None:
            os.environ.pop(hubfile.ENV_INFO, None)
        else:
            os.environ[hubfile.ENV_INFO] = previous


def __getattr__(name: str) -> Any:
    # hyrax exposes these as module globals; here they follow the live state of this process.
    if name == "tensorboardx_logger":
        ch = _STATE.channel
        return None if ch is None else ch.writer()
    if name == "tensorboard_start_ns":
        ch = _STATE.channel
        return 0 if ch is None else ch.start_ns
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_STATE.close_owner = close_tensorboard_logger
