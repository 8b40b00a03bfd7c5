"""A Lightning logger that logs from every rank and every DataLoader worker, through the hub.

``TensorBoardHubLogger`` takes the constructor of Lightning's ``TensorBoardLogger`` and writes the
same folder (``save_dir/name/version[/sub_dir]``), but its ``experiment`` is a
:class:`hyrax_tbhub.SummaryWriter` created at construction: the hub runs in the process that
builds the logger, and the logger (with its writer) travels to the ranks that ``ddp_spawn``
starts and from there into their DataLoader workers. ``log_metrics`` is not ``rank_zero_only``:
every rank's metrics land, each rank in its own run (``rank_0``, ``rank_1``...), the process
that built the logger in the root run. Hyperparameters, the graph and ``hparams.yaml`` stay
rank-zero, as in Lightning: they describe the experiment once.

Launchers that start ranks as new programs (``strategy="ddp"``'s subprocesses, torchrun) build
a logger in each rank; a rank other than 0 then owns a hub for ``<log_dir>/rank_<n>``, so runs
stay one per process either way. Only ``ddp_spawn`` (and single-process training) is tested.

``get_tensorboard_logger()`` (hyrax's idiom, also what hyrax's own code calls once switched with
``hyrax_tbhub.use_with_hyrax()``) writes into the same folder from every process of the job: when
the process that builds the logger has no hub of that kind yet, the logger starts one on its
``log_dir``, so each process's calls land in its own run there (the builder's in the root run,
a DataLoader worker's in ``dataloader_worker_<n>``...), beside the logger's own events.

``close()`` returns once every event of every process is on disk; the hubs also close at exit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from .. import tensorboardx_logger as _process_wide
from ..options import Options
from ..writer import SummaryWriter

if "lightning.pytorch" in sys.modules:  # the unified `lightning` package is in use: match its classes
    from lightning.fabric.utilities.logger import _add_prefix
    from lightning.fabric.utilities.rank_zero import _get_rank
    from lightning.pytorch.loggers import TensorBoardLogger
else:
    try:
        from lightning_fabric.utilities.logger import _add_prefix
        from lightning_fabric.utilities.rank_zero import _get_rank
        from pytorch_lightning.loggers import TensorBoardLogger
    except ImportError:  # pragma: no cover - depends on what is installed
        from lightning.fabric.utilities.logger import _add_prefix
        from lightning.fabric.utilities.rank_zero import _get_rank
        from lightning.pytorch.loggers import TensorBoardLogger

__all__ = ["TensorBoardHubLogger"]


class TensorBoardHubLogger(TensorBoardLogger):
    """Lightning's ``TensorBoardLogger``, logging from every rank and DataLoader worker.

    Args are Lightning's: ``save_dir``, ``name``, ``version``, ``log_graph``,
    ``default_hp_metric``, ``prefix``, ``sub_dir``, and ``**kwargs`` for the SummaryWriter
    (``filename_suffix``, ``purge_step``...); ``options`` (:class:`hyrax_tbhub.Options`) sets the
    bounds and deadlines of the writer's hub and of every rank and worker that logs to it.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | os.PathLike[str] | None = None,
        *,
        options: Options | None = None,
        **kwargs: Any,
    ) -> None:
        if options is not None:
            kwargs["options"] = options  # Lightning keeps kwargs for the writer: _new_writer's
        super().__init__(
            save_dir, name=name, version=version, log_graph=log_graph,
            default_hp_metric=default_hp_metric, prefix=prefix, sub_dir=sub_dir, **kwargs,
        )
        # The version is fixed here, in the process that owns the hub, so every rank and worker
        # that receives this logger writes the same folder (Lightning lets rank 0 pick it later).
        self._version = self.version
        self._experiment = self._new_writer()
        self._serves_process_wide = _serve_process_wide(self._experiment.log_dir)

    def _new_writer(self) -> SummaryWriter:
        log_dir = self.log_dir
        rank = _get_rank()
        if rank:  # a rank started as its own program: its own hub, in its own run folder
            log_dir = os.path.join(log_dir, f"rank_{rank}")
        return SummaryWriter(log_dir=log_dir, **self._kwargs)

    @property
    def experiment(self) -> SummaryWriter:
        """The :class:`hyrax_tbhub.SummaryWriter`: usable in every rank and DataLoader worker."""
        if self._experiment is None:
            self._experiment = self._new_writer()
        return self._experiment

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """As Lightning's, from whichever rank calls it (Lightning's writes rank zero's only)."""
        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        writer = self.experiment
        for key, value in metrics.items():
            if hasattr(value, "item") and callable(value.item):
                value = value.item()
            if isinstance(value, dict):
                writer.add_scalars(key, value, step)
                continue
            try:
                writer.add_scalar(key, value, step)
            except Exception as ex:
                raise ValueError(  # Lightning's words
                    f"\n you tried to log {value} which is currently not supported. "
                    "Try a dict or a scalar/tensor."
                ) from ex

    def finalize(self, status: str) -> None:
        """Flush this process's events (every rank); the hub stays open for a later fit or test.

        Lightning's closes its writer here; this one closes with :meth:`close` or at exit, so a
        ``trainer.test()`` after ``trainer.fit()`` still logs.
        """
        if self._experiment is not None:
            self._experiment.flush()
        if status == "success":
            self.save()  # rank zero only, as in Lightning: hparams.yaml

    def close(self) -> None:
        """In the process that built the logger: return once every process's events are on disk."""
        if self._experiment is not None:
            self._experiment.close()
        if self.__dict__.get("_serves_process_wide"):
            self._serves_process_wide = False
            _process_wide.close_tensorboard_logger()  # in a rank or worker: flushes its own calls

    def __getstate__(self) -> dict[str, Any]:
        # Lightning drops the writer when pickling (a tensorboardX writer cannot travel); ours
        # travels as a small reference to its hub, which is what lets ranks and workers log.
        return self.__dict__.copy()


def _serve_process_wide(log_dir: str) -> bool:
    """Start the hub of ``get_tensorboard_logger()`` on ``log_dir`` unless this process already
    logs that way (a hub of its own, or an ancestor's it reaches); True when it started one."""
    if _process_wide.get_tensorboard_logger().get_logdir() is not None:
        return False
    _process_wide.init_tensorboard_logger(log_dir=log_dir)
    return True
