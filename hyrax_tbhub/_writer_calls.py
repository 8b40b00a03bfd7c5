"""The methods of :class:`hyrax_tbhub.SummaryWriter` whose signatures differ between torch's and
tensorboardX's writers: ``add_scalar`` and ``add_hparams`` take both libraries' argument orders in
one implementation, and ``add_tensor`` is torch's alone. Every other method is ``_surface``'s.
"""

from __future__ import annotations

from typing import Any, overload

from ._surface import TensorLike, next_ts_step
from ._util.forksafe import IMPORT_LOCK
from ._writer_link import WriterLink
from ._writer_state import _numpy_ready

__all__ = ["WriterCalls"]


class WriterCalls(WriterLink):
    """torch's and tensorboardX's orders of ``add_scalar`` and ``add_hparams``, and ``add_tensor``."""

    __slots__ = ()

    @overload
    def add_scalar(
        self,
        tag: str,
        scalar_value: float | TensorLike,
        global_step: int | None = None,
        walltime: float | None = None,
        display_name: str | None = "",
        summary_description: str | None = "",
    ) -> None: ...

    @overload
    def add_scalar(
        self,
        tag: str,
        scalar_value: float | TensorLike,
        global_step: int | None = None,
        walltime: float | None = None,
        new_style: bool = False,
        double_precision: bool = False,
    ) -> None: ...

    # One implementation takes both orders; mypy wants each overload's fifth and sixth
    # parameters under one name in both positions, which both libraries' names cannot be.
    def add_scalar(  # type: ignore[misc]
        self,
        tag: str,
        scalar_value: float | TensorLike,
        global_step: int | None = None,
        walltime: float | None = None,
        new_style: bool | str | None = False,
        double_precision: bool | str | None = False,
        *,
        display_name: str | None = "",
        summary_description: str | None = "",
    ) -> None:
        """As both libraries' ``add_scalar``; plain numbers take a fast path to the hub.

        torch's ``new_style`` and ``double_precision`` are accepted; the value is stored as
        tensorboardX stores it (a float32 ``simple_value``), which TensorBoard shows the same
        way. A string in the fifth position is tensorboardX's ``display_name``.
        """
        ch = self._channel
        if ch is None:
            ch = self._attach()
            if ch is None:
                return
        if type(new_style) is str:  # tensorboardX's positional order: display_name, summary_description
            display_name = new_style
            summary_description = double_precision if isinstance(double_precision, str) else ""
        self._put_scalar(ch, tag, scalar_value, global_step, walltime, display_name, summary_description)

    @overload
    def add_hparams(
        self,
        hparam_dict: dict[str, Any],
        metric_dict: dict[str, Any],
        name: str | None = None,
        global_step: int | None = None,
    ) -> None: ...

    @overload
    def add_hparams(
        self,
        hparam_dict: dict[str, Any],
        metric_dict: dict[str, Any],
        hparam_domain_discrete: dict[str, list[Any]] | None = None,
        run_name: str | None = None,
        global_step: int | None = None,
    ) -> None: ...

    def add_hparams(  # type: ignore[misc]  # both orders in one implementation, as add_scalar
        self,
        hparam_dict: dict[str, Any],
        metric_dict: dict[str, Any],
        hparam_domain_discrete: dict[str, list[Any]] | str | None = None,
        run_name: str | int | None = None,
        global_step: int | None = None,
        *,
        name: str | None = None,
    ) -> None:
        """As both libraries' ``add_hparams`` (tensorboardX's ``name`` is torch's ``run_name``).

        A string in the third position is tensorboardX's ``name`` (and then the fourth is its
        ``global_step``). ``hparam_domain_discrete`` is not written (tensorboardX has no field for it).
        """
        if isinstance(hparam_domain_discrete, str):
            name, global_step = hparam_domain_discrete, run_name if isinstance(run_name, int) else global_step
            run_name = None
        run = run_name if isinstance(run_name, str) and run_name else name
        self._run("add_hparams", hparam_dict, metric_dict, name=run, global_step=global_step)

    def add_tensor(
        self, tag: str, tensor: Any, global_step: int | None = None, walltime: float | None = None
    ) -> None:
        """As torch's ``add_tensor``: a tensor summary (tensorboardX has no such method)."""
        ch = self._channel if self._channel is not None else self._attach()
        if ch is None:
            return
        tensor = _numpy_ready(tensor)
        with IMPORT_LOCK:  # lazy imports of tensorboardX: a fork must not cut them in half
            from tensorboardX.proto.summary_pb2 import Summary
            from tensorboardX.proto.tensor_pb2 import TensorProto
            from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto
            from tensorboardX.x2num import make_np

            array = make_np(tensor)
            shape = TensorShapeProto(dim=[TensorShapeProto.Dim(size=int(d)) for d in array.shape])
            values = [float(v) for v in array.reshape(-1)]
            proto = TensorProto(dtype=1, tensor_shape=shape, float_val=values)
            summary = Summary(value=[Summary.Value(tag=tag, tensor=proto)])
        self._tbx(ch, lambda writer: writer._get_file_writer().add_summary(summary, global_step, walltime))

    def _ts_step(self, tag: str, step: int) -> int:
        return next_ts_step(self._last_ts, tag, step)
