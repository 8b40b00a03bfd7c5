"""The writer state that tensorboardX's code honours, and the path into that code.

:class:`WriterState` is the base of both public writers (through ``_surface.WriterMethods``).
Every fast path that skips tensorboardX checks this state first, and every call that takes
tensorboardX's path goes through :meth:`WriterState._call`, which applies it:

- ``_meta``: the defaults of :meth:`WriterState.use_metadata` (tensorboardX's
  ``FileWriter._default_metadata``), per writer object and process;
- tensors numpy cannot hold (bfloat16), cast as torch's writer casts them.

``add_scalar``'s fast path is written once, here (:meth:`WriterState._put_scalar`): both writers
find their channel their own way and hand the call to it. tests/test_writer_fastpath.py compares
the fast and slow paths in each state.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._filewriter import HubFileWriter
from ._util.forksafe import IMPORT_LOCK

if TYPE_CHECKING:
    from ._channel import Channel

__all__ = ["WriterState"]

_time = time.time
_INT64 = 1 << 63

# Types whose value converts to a float exactly as tensorboardX's make_np + float() would, so the
# scalar can skip tensorboardX's summary builder (about 6 us) and be encoded by the hub. numpy
# scalar types join once numpy is imported by someone else (importing it here costs 150 ms).
_FAST_VALUE_TYPES: set[type] = {float, int}
_NUMPY_SCALAR_NAMES = ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8")


def _is_fast_value(value: Any) -> bool:
    np = sys.modules.get("numpy")
    if np is None:
        return False
    for name in _NUMPY_SCALAR_NAMES:
        _FAST_VALUE_TYPES.add(getattr(np, name))
    return type(value) in _FAST_VALUE_TYPES


def _numpy_ready(value: Any) -> Any:
    """``value`` as torch's writer hands it to numpy: a bfloat16 tensor cast to float16.

    numpy has no bfloat16, so tensorboardX's ``make_np`` raises on one; torch's ``make_np`` casts
    it (``torch.utils.tensorboard._convert_np``), and so do we, before tensorboardX sees it.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16:
        return value.to(torch.float16)
    return value


def _numpy_ready_all(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if "torch" not in sys.modules:
        return args, kwargs
    return tuple(map(_numpy_ready, args)), {k: _numpy_ready(v) for k, v in kwargs.items()}


class WriterState:
    """What tensorboardX keeps on its writer, and ``file_writer``, for both public writers.

    A subclass provides ``_channel_now`` (the channel to log to in this process, or None) and
    ``flush``.
    """

    __slots__ = ()

    #: tensorboardX's ``FileWriter._default_metadata`` while :meth:`use_metadata` is active.
    _meta: dict[str, Any] | None = None

    if TYPE_CHECKING:

        def flush(self) -> Any: ...

    def _channel_now(self) -> Channel | None:
        raise NotImplementedError

    def _set_meta(self, meta: dict[str, Any] | None) -> None:
        self._meta = meta  # type: ignore[misc]  # a slot of the subclass (the handle overrides this)

    def _tbx(self, ch: Channel, call: Callable[[Any], Any]) -> None:
        """Run ``call(tensorboardX writer of ch)`` under this writer's ``use_metadata`` defaults."""
        # Under the lock a fork takes: tensorboardX imports lazily (PIL, matplotlib, moviepy...),
        # and an import another thread is in at a fork hangs the child's next import of it.
        with IMPORT_LOCK:
            writer = ch.writer()
            meta = self._meta
            if meta is None:
                call(writer)
                return
            # The channel's writer is shared by every writer object of its hub in this process:
            # the defaults are this object's, set for this call only (the lock serialises calls).
            fw = writer._get_file_writer()
            fw._default_metadata = meta
            try:
                call(writer)
            finally:
                fw._default_metadata = {}

    def _put_scalar(
        self,
        ch: Channel,
        tag: str,
        scalar_value: Any,
        global_step: int | None,
        walltime: float | None,
        display_name: str | None,
        summary_description: str | None,
    ) -> None:
        """``add_scalar`` on ``ch`` (tensorboardX's argument order), for both public writers.

        A plain number under no ``use_metadata`` defaults skips tensorboardX and goes to the hub
        as (tag, value, step, wall time); anything else takes tensorboardX's path.
        """
        if (
            (type(scalar_value) in _FAST_VALUE_TYPES or _is_fast_value(scalar_value))
            and self._meta is None
            and type(tag) is str
            and not display_name
            and not summary_description
            and (walltime is None or type(walltime) is float or type(walltime) is int)
        ):
            if global_step is not None:
                if type(global_step) is not int:
                    global_step = int(global_step)
                if not -_INT64 <= global_step < _INT64:
                    raise ValueError(f"Value out of range: {global_step}")  # protobuf's own words
            ch.put_scalar(tag, float(scalar_value), global_step, _time() if walltime is None else walltime)
        else:
            args = (tag, scalar_value, global_step, walltime, display_name, summary_description)
            self._call(ch, "add_scalar", args, {})

    def _call(self, ch: Channel, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """tensorboardX's ``method`` on ``ch``: the slow path of every method."""
        args, kwargs = _numpy_ready_all(args, kwargs)
        self._tbx(ch, lambda writer: getattr(writer, method)(*args, **kwargs))

    def _file_writer_call(self, call: Callable[[Any], Any]) -> None:
        """``call(tensorboardX FileWriter)`` on this process's channel (``writer.file_writer``)."""
        ch = self._channel_now()
        if ch is not None:
            self._tbx(ch, lambda writer: call(writer._get_file_writer()))

    def _file_writer_logdir(self) -> str:
        ch = self._channel_now()
        return "" if ch is None else ch.folder()

    @property
    def file_writer(self) -> HubFileWriter | None:
        """tensorboardX's FileWriter of this writer: ``add_summary``, ``add_event``, ``flush``,
        ``get_logdir``... through the hub, from any process the writer is in."""
        return HubFileWriter(self)

    @property
    def default_bins(self) -> list[float]:
        """Both libraries' default histogram bins (``add_histogram(..., bins="tensorflow")``)."""
        v, buckets = 1e-12, []
        while v < 1e20:
            buckets.append(v)
            v *= 1.1
        return [-b for b in reversed(buckets)] + [0] + buckets

    @property
    def scalar_dict(self) -> dict[str, list[Any]]:
        """tensorboardX's record of ``add_scalars`` values, this process's (for
        ``export_scalars_to_json``); empty until this process calls ``add_scalars``."""
        ch = self._channel_now()
        if ch is None:
            return {}
        with IMPORT_LOCK:
            scalars: dict[str, list[Any]] = ch.writer().scalar_dict
        return scalars

    @property
    def all_writers(self) -> dict[str, HubFileWriter] | None:
        """tensorboardX's ``{logdir: FileWriter}`` (the sub-runs of add_scalars are not listed)."""
        fw = self.file_writer
        return None if fw is None else {fw.get_logdir(): fw}

    def _get_file_writer(self) -> HubFileWriter:
        """As both libraries' ``_get_file_writer()``: the FileWriter, reopened after close."""
        return HubFileWriter(self)

    @contextlib.contextmanager
    def use_metadata(self, *, global_step: int | None = None, walltime: float | None = None) -> Iterator[Any]:
        """As ``SummaryWriter.use_metadata``: the step and wall time of every enclosed ``add_*``
        call (and ``file_writer`` call) that gives none, in this process.

        tensorboardX's quirk is kept: with only ``global_step`` given, the events' wall time is
        left unset (0), as its FileWriter leaves it.
        """
        # tensorboardX's checks, in its words.
        if self._meta:
            raise AssertionError("Default metadata is already set.")
        if global_step is None and walltime is None:
            raise AssertionError("At least one of `global_step` or `walltime` must be provided.")
        self._set_meta({"global_step": global_step, "walltime": walltime})
        try:
            yield self
        finally:  # tensorboardX leaves its defaults set when the block raises; we do not
            self._set_meta(None)
