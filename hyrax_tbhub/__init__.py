"""hyrax_tbhub: one TensorBoard log, written from every process.

``init_tensorboard_logger`` starts a hub in the calling process; ``get_tensorboard_logger``
returns a writer that works in that process and in every descendant (fork, spawn, forkserver,
pools, DataLoader workers, subprocesses) with nothing handed to them; ``close_tensorboard_logger``
returns once everything logged is on disk. ``SummaryWriter`` is a drop-in for tensorboardX's and
torch's whose object can be handed to other processes; ``aggregate`` writes live cross-producer
statistics. ``use_with_hyrax()`` (or ``HYRAX_TBHUB=1`` for a whole job) makes hyrax itself log
through all this. See README.md and docs/.
"""

from __future__ import annotations

# First, before any other import: a fork from another thread while this package is being
# imported waits until the import is done (see _util/forksafe.py), so its child can log.
from ._util import forksafe as _forksafe  # noqa: F401

# isort: split
from . import _distributed
from ._aggregate import aggregate
from ._distributed import serve_ranks
from ._hyrax import hyrax_switched_on, stop_using_with_hyrax, use_with_hyrax
from .options import Options
from .tensorboardx_logger import (
    HyraxSummaryWriter,
    close_tensorboard_logger,
    get_tensorboard_logger,
    init_tensorboard_logger,
)
from .writer import SummaryWriter

__version__ = "0.4.0"

_distributed.watch_as_rank()  # in a torchrun rank only: find a served hub before any call logs

__all__ = [
    "HyraxSummaryWriter",
    "Options",
    "SummaryWriter",
    "__version__",
    "aggregate",
    "close_tensorboard_logger",
    "get_tensorboard_logger",
    "hyrax_switched_on",
    "init_tensorboard_logger",
    "serve_ranks",
    "stop_using_with_hyrax",
    "use_with_hyrax",
]
