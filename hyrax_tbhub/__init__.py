"""hyrax_tbhub: one TensorBoard log, written from every process.

``init_tensorboard_logger`` starts a hub in the calling process; ``get_tensorboard_logger``
returns a writer that works in that process and in every descendant (fork, spawn, forkserver,
pools, DataLoader workers, subprocesses) with nothing handed to them; ``close_tensorboard_logger``
returns once everything logged is on disk. See README.md and docs/how-it-works.md.
"""

from __future__ import annotations

from . import _distributed
from ._distributed import serve_ranks
from .tensorboardx_logger import (
    HyraxSummaryWriter,
    close_tensorboard_logger,
    get_tensorboard_logger,
    init_tensorboard_logger,
)

__version__ = "0.1.0"

_distributed.watch_as_rank()  # in a torchrun rank only: find a served hub before any call logs

__all__ = [
    "HyraxSummaryWriter",
    "__version__",
    "close_tensorboard_logger",
    "get_tensorboard_logger",
    "init_tensorboard_logger",
    "serve_ranks",
]
