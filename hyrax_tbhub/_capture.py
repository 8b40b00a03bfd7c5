"""A tensorboardX SummaryWriter whose events go to a hub channel instead of files.

Every ``add_*`` method runs tensorboardX's own code in the calling process, so arguments are
checked, figures rendered and device tensors copied exactly as they would be in-process, and a
bad argument raises at the call site. Only the finished, serialised Event crosses to the hub.
The few methods that open extra writers (``add_scalars``, ``add_hparams``) are redirected to
sub-runs of the same channel instead of new files and threads.
"""

from __future__ import annotations

import importlib.util
import os
import time
from typing import Any, Protocol

import tensorboardX.writer
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.summary import hparams, scalar
from tensorboardX.writer import FileWriter

__all__ = ["CaptureWriter"]


def _tensorboardx_summary_writer() -> Any:
    """tensorboardX's own SummaryWriter class, even where a program (or a test harness) has
    replaced ``tensorboardX.SummaryWriter`` by ours before this module was first imported:
    subclassing ours would make every call recurse into itself."""
    cls = tensorboardX.writer.SummaryWriter
    if not str(getattr(cls, "__module__", "")).startswith("hyrax_tbhub"):
        return cls
    # A private copy of tensorboardX's writer module (its relative imports resolve in tensorboardX).
    spec = importlib.util.spec_from_file_location("tensorboardX._hyrax_tbhub_original_writer",
                                                  tensorboardX.writer.__file__)
    if spec is None or spec.loader is None:
        raise ImportError("cannot load tensorboardX's writer module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SummaryWriter


_TensorboardXWriter: Any = _tensorboardx_summary_writer()


class _Sink(Protocol):
    """What this module needs of a ``_channel.Channel`` (kept here: _channel imports us lazily)."""

    def put_event(self, subrun: str, data: bytes) -> None: ...

    def folder(self) -> str: ...

    def flush(self, timeout: float | None = None) -> bool: ...


class _ChannelEventWriter:
    """Stands in for tensorboardX's EventFileWriter: serialises and hands over, nothing more."""

    def __init__(self, channel: _Sink, subrun: str) -> None:
        self._channel = channel
        self._subrun = subrun

    def add_event(self, event: Event) -> None:
        self._channel.put_event(self._subrun, event.SerializeToString())

    def get_logdir(self) -> str:
        folder = self._channel.folder()
        return os.path.join(folder, self._subrun) if self._subrun else folder

    def flush(self) -> None:
        self._channel.flush()

    def close(self) -> None:
        pass

    def reopen(self) -> None:
        pass


class _ChannelFileWriter(FileWriter):
    # FileWriter.__init__ opens an event file and a queue thread; we keep only its event
    # building (step/walltime/metadata handling) and replace the writer underneath.
    def __init__(self, channel: _Sink, subrun: str) -> None:  # noqa: D107
        self.event_writer = _ChannelEventWriter(channel, subrun)
        self._default_metadata: dict[str, Any] = {}


class CaptureWriter(_TensorboardXWriter):
    """SummaryWriter bound to a :class:`~hyrax_tbhub._channel.Channel`."""

    file_writer: Any
    all_writers: Any

    def __init__(self, channel: _Sink, **kwargs: Any) -> None:
        self._channel = channel
        kwargs.pop("write_to_disk", None)
        super().__init__(**kwargs)

    def _get_file_writer(self) -> FileWriter:
        if self.file_writer is None or self.all_writers is None:
            fw = _ChannelFileWriter(self._channel, "")
            if self.purge_step is not None:
                fw.add_event(Event(step=self.purge_step, file_version="brain.Event:2"))
                fw.add_event(Event(step=self.purge_step, session_log=SessionLog(status=SessionLog.START)))
            self.file_writer = fw
            self.all_writers = {"": fw}
        return self.file_writer

    def _sub_writer(self, subrun: str) -> FileWriter:
        self._get_file_writer()
        fw = self.all_writers.get(subrun)
        if fw is None:
            fw = self.all_writers[subrun] = _ChannelFileWriter(self._channel, subrun)
        return fw

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: dict[str, float],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """As tensorboardX: one sub-run per key under ``main_tag``, all plotted on one chart."""
        walltime = time.time() if walltime is None else walltime
        for tag, value in tag_scalar_dict.items():
            self._sub_writer(os.path.join(main_tag, tag)).add_summary(
                scalar(main_tag, value), global_step, walltime
            )
            # What export_scalars_to_json writes, keyed as tensorboardX keys it (the sub-run's folder).
            self._SummaryWriter__append_to_scalar_dict(
                os.path.join(self._channel.folder(), main_tag, tag), value, global_step, walltime
            )

    def add_hparams(
        self,
        hparam_dict: dict[str, Any],
        metric_dict: dict[str, float],
        name: str | None = None,
        global_step: int | None = None,
    ) -> None:
        """As tensorboardX: the session goes into a sub-run named ``name`` (default: the time)."""
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise TypeError("hparam_dict and metric_dict should be dictionary.")
        exp, ssi, sei = hparams(hparam_dict, metric_dict)
        fw = self._sub_writer(name or str(time.time()))
        fw.add_summary(exp)
        fw.add_summary(ssi)
        fw.add_summary(sei)
        for key, value in metric_dict.items():
            fw.add_summary(scalar(key, value), global_step)

    def flush(self) -> None:
        self._channel.flush()

    def close(self) -> None:
        # The channel's lifetime belongs to the hub, not to one writer object.
        self._channel.flush()

