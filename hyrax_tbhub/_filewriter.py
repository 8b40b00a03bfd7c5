"""``writer.file_writer``: tensorboardX's ``FileWriter`` surface, logging through the hub.

Recipes that show hyperparameters next to scalars or write custom summaries call
``writer.file_writer.add_summary(...)`` or ``writer._get_file_writer().add_event(...)``. The
object here holds only its writer, never a file or a socket, so it works (and pickles) wherever
the writer does: each call goes to the writer's channel in the calling process, under the
writer's ``use_metadata`` defaults, as the stock FileWriter's calls do. It takes the protobuf
messages of tensorboardX and of ``torch.utils.tensorboard`` (TensorBoard's) alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["HubFileWriter"]


class _Writer(Protocol):
    """What this module needs of ``_surface.WriterMethods`` (which imports this module)."""

    def _file_writer_call(self, call: Callable[[Any], Any]) -> None: ...

    def _file_writer_logdir(self) -> str: ...

    def use_metadata(self, *, global_step: int | None = None, walltime: float | None = None) -> Any: ...

    def flush(self) -> Any: ...


def _as_tbx(message: Any, kind: str) -> Any:
    """``message`` as tensorboardX's ``Event`` or ``Summary`` (TensorBoard's share the wire format)."""
    if kind == "Event":
        from tensorboardX.proto.event_pb2 import Event as cls
    else:
        from tensorboardX.proto.summary_pb2 import Summary as cls
    if isinstance(message, cls):
        return message
    return cls.FromString(message.SerializeToString())


class HubFileWriter:
    """The FileWriter of a writer (``writer.file_writer``) in whatever process calls it."""

    __slots__ = ("_writer",)

    def __init__(self, writer: _Writer) -> None:
        self._writer = writer

    def add_event(self, event: Any, step: int | None = None, walltime: float | None = None) -> None:
        """As ``FileWriter.add_event``: an ``Event`` message, with the step and wall time given."""
        self._writer._file_writer_call(lambda fw: fw.add_event(_as_tbx(event, "Event"), step, walltime))

    def add_summary(
        self, summary: Any, global_step: int | None = None, walltime: float | None = None
    ) -> None:
        """As ``FileWriter.add_summary``: a ``Summary`` message of either library."""
        self._writer._file_writer_call(
            lambda fw: fw.add_summary(_as_tbx(summary, "Summary"), global_step, walltime)
        )

    def add_graph(self, graph_profile: Any, walltime: float | None = None) -> None:
        """As ``FileWriter.add_graph``: a ``(GraphDef, RunMetadata step stats)`` pair."""
        self._writer._file_writer_call(lambda fw: fw.add_graph(graph_profile, walltime))

    def add_onnx_graph(self, graph: Any, walltime: float | None = None) -> None:
        """As ``FileWriter.add_onnx_graph``."""
        self._writer._file_writer_call(lambda fw: fw.add_onnx_graph(graph, walltime))

    def add_openvino_graph(self, graph: Any, walltime: float | None = None) -> None:
        """As ``FileWriter.add_openvino_graph``."""
        self._writer._file_writer_call(lambda fw: fw.add_openvino_graph(graph, walltime))

    def use_metadata(self, *, global_step: int | None = None, walltime: float | None = None) -> Any:
        """As ``FileWriter.use_metadata``: the writer's (its add_* calls go through this writer)."""
        return self._writer.use_metadata(global_step=global_step, walltime=walltime)

    def get_logdir(self) -> str:
        """Where this process's events land: the log folder in the owner, its run elsewhere."""
        return self._writer._file_writer_logdir()

    def flush(self) -> None:
        """Returns once what this process logged through the writer is on disk."""
        self._writer.flush()

    def close(self) -> None:
        """Flushes. The hub's files close with the writer (a stock FileWriter closed alone drops
        every later event of its writer silently; this one keeps logging)."""
        self._writer.flush()

    def reopen(self) -> None:
        """Nothing to reopen: see :meth:`close`."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HubFileWriter) and other._writer is self._writer

    def __hash__(self) -> int:
        return id(self._writer)

    def __reduce__(self) -> tuple[Any, ...]:
        return (HubFileWriter, (self._writer,))

    def __repr__(self) -> str:
        return f"<hyrax_tbhub FileWriter of {self._writer!r}>"
