"""A hub per rank, writing straight into the job's shared log folder (docs/scaling.md).

With every rank sending to rank 0, rank 0's training process pays for every event and holds a
connection for every producer of the job: flat for one node, linear in the number of nodes. When
the log folder is shared (the usual cluster file system) no event needs to travel: a rank that
finds rank 0's hub in the store and sees rank 0's marker file in the log folder runs a hub of its
own, as ``init_tensorboard_logger`` would, whose root run is ``<log folder>/rank_<n>`` and whose
producers are the rank's descendants (``rank_<n>/dataloader_worker_0`` ...). Each run folder still
has exactly one writer (TensorBoard needs one writer per run, not per log folder), every rank
pays only for its own descendants, and rank 0 pays nothing for other ranks.

The marker is a file named after the hub's random id: seeing it proves the folder is the same
one, not merely one with the same path on another machine. It holds nothing secret.
"""

from __future__ import annotations

import os

from .. import _naming
from .._discovery import hubfile
from .._hub import Hub, HubConfig, LocalChannel
from .._producer import local_start_ns, options_of
from .._util.stderr import warn
from . import hooks
from .rank_sync import serve_sync_requests
from .state import SAVED_ENV, STATE

__all__ = ["marker_path", "publish_marker", "start_rank_hub"]


def marker_path(logdir: str, hub_id: str) -> str:
    return os.path.join(logdir, f".hyrax_tbhub-{hub_id}")


def publish_marker(hub: Hub) -> None:
    """Write the marker of ``hub`` into its log folder, and remove it when the hub closes."""
    path = marker_path(os.path.abspath(hub.logdir), hub.hub_id)
    with open(path, "w"):
        pass

    def remove() -> None:
        try:
            os.unlink(path)
        except OSError:
            pass

    hub.on_close(remove)


def _shares_log_folder(info: hubfile.HubInfo) -> bool:
    try:
        return os.path.isfile(marker_path(info.logdir, info.hub_id))
    except (OSError, ValueError):
        return False


def start_rank_hub(info: hubfile.HubInfo) -> bool:
    """In a rank that found ``info`` in the store: run this rank's own hub if the job allows it.

    Called with the process state's lock held, from rediscovery; True when this process now has a
    hub (and a channel to it). Never raises: on any failure the rank sends to rank 0 instead.
    """
    if not info.rank_hubs or not _shares_log_folder(info):
        return False
    rank = _naming.job_rank()
    if rank is None or not rank[1]:
        return False  # only a rank itself; its descendants find the rank's hub as the owner's
    try:
        return _start(info, rank[0])
    except Exception as exc:
        warn(f"hyrax_tbhub: rank {rank[0]} could not start its own hub ({exc!r}); "
             "it sends its events to rank 0 instead")
        return False


def _start(info: hubfile.HubInfo, rank: int) -> bool:
    state = STATE
    root = os.path.join(info.logdir, f"rank_{rank}")
    hub = Hub(info.logdir, HubConfig(options_of(info)), root_folder=root)
    # One clock origin for the whole job: *_ts steps of every rank stay comparable.
    hub.start_ns = local_start_ns(info)
    hub.start_wall_ns = info.start_wall_ns
    channel = LocalChannel(hub, {"logdir": root})
    hub_file = hub.start()
    # Once this hub closes the rank is done: it must not then join rank 0's hub instead.
    hub.on_close(lambda: state.finished_hubs.add(info.hub_id))
    # As init_tensorboard_logger: close_tensorboard_logger() restores the environment. Published
    # before the channel is visible, so a child started as soon as it is finds this hub.
    SAVED_ENV.append(os.environ.get(hubfile.ENV_INFO))
    os.environ[hubfile.ENV_INFO] = hub_file
    _naming.mark_rank()
    state.hub = hub
    state.channel = channel
    state.idle = False  # notifies
    hooks.hook_exit()
    serve_sync_requests(hub, info.hub_id, rank)  # rank 0's close will wait for this hub's flush
    return True
