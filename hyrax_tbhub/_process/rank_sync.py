"""Rank 0's close completes the job's log: every rank's hub flushes first, through the store.

With a hub per rank (``rank_hub.py``), rank 0's hub writes only rank 0's runs; another rank's
events, and its DataLoader workers', reach the shared log folder through that rank's own hub,
which closes when that rank exits. So right after the usual end of training (a barrier, then
``close_tensorboard_logger()`` in rank 0, the other ranks closing at exit), the last events of
the other ranks could still be in their hubs' queues or in their workers' outboxes, and rank 0
would archive an incomplete log without a word. Now rank 0's close first asks each rank's hub
for a hub-wide flush (``_hub/sync.py``) and waits for every answer, bounded by its close timeout:

- a rank that starts its own hub registers in the process group's store (a counter and one key
  per rank) and runs a thread that waits on a store queue of its own, on a clone of the store
  (a blocking call on the rank's own store client would hold up the rank's other store calls);
- rank 0's close pushes one token into each registered rank's queue and waits for the ranks'
  answer keys; a rank answers once everything its processes logged before the request is on
  disk (or says it could not, within its own close timeout);
- ranks that do not answer in time are named on stderr and counted under
  ``hyrax_tbhub/ranks_unconfirmed``: their runs may be missing events.

The store carries only rank numbers and tokens, nothing that could reach a hub.
"""

from __future__ import annotations

import datetime
import secrets
from typing import Any

from .._discovery.store import default_store, torch_distributed
from .._hub import Hub
from .._util.stderr import warn
from .._util.threads import daemon_thread

__all__ = ["confirm_ranks", "serve_sync_requests"]

_PREFIX = "hyrax_tbhub/rank_sync/"
_STOP = b"stop"
_WAIT_FOREVER = datetime.timedelta(days=365)  # a queue pop that times out logs a warning in C++


def _count_key(hub_id: str) -> str:
    return f"{_PREFIX}{hub_id}/ranks"


def _member_key(hub_id: str, n: int) -> str:
    return f"{_PREFIX}{hub_id}/rank/{n}"


def _queue_key(hub_id: str, rank: int) -> str:
    return f"{_PREFIX}{hub_id}/queue/{rank}"


def _closed_key(hub_id: str, rank: int) -> str:
    return f"{_PREFIX}{hub_id}/closed/{rank}"


def _answer_key(hub_id: str, token: str, rank: int) -> str:
    return f"{_PREFIX}{hub_id}/answer/{token}/{rank}"


def serve_sync_requests(hub: Hub, job_hub_id: str, rank: int) -> None:
    """In a rank that now runs ``hub``: register, and answer rank 0's flush requests.

    Never raises: without a usable store, rank 0 simply does not know this rank has a hub (its
    close then cannot wait for it, as before).
    """
    try:
        dist = torch_distributed()
        if dist is None:
            return
        store = default_store(dist)
        client = store.clone()  # its own connection: it blocks in queue_pop
        client.set_timeout(_WAIT_FOREVER)
        n = int(store.add(_count_key(job_hub_id), 1))
        store.set(_member_key(job_hub_id, n), str(rank))
    except Exception as exc:
        warn(f"hyrax_tbhub: rank {rank} cannot take part in rank 0's final flush ({exc!r}); "
             "rank 0's close will not wait for this rank's events")
        return
    queue = _queue_key(job_hub_id, rank)
    timeout = hub.config.options.close_timeout

    def run() -> None:
        while True:
            try:
                request = bytes(client.queue_pop(queue, True))
            except Exception:
                return  # the store went away: the job is ending
            if request == _STOP:
                return
            ok = hub.sync_producers(timeout)
            try:
                client.set(_answer_key(job_hub_id, request.decode("ascii", "replace"), rank),
                           b"1" if ok else b"0")
            except Exception:
                return

    thread = daemon_thread(run, "hyrax_tbhub-rank-sync")
    thread.start()

    def stop() -> None:
        # This hub is closed, so everything of this rank is on disk: rank 0 need not ask. Then
        # the thread stops before the interpreter finalises (a thread blocked in the store's C++
        # client must not wake up in a dying interpreter); a request queued before the stop is
        # still answered.
        try:
            store.set(_closed_key(job_hub_id, rank), b"1")
            store.queue_push(queue, _STOP)
        except Exception:
            return
        thread.join(2.0)

    hub.on_close(stop)


def confirm_ranks(hub_id: str, store: Any, timeout: float) -> list[int]:
    """In rank 0, before its hub closes: have every rank hub flush; return the ranks that did
    not confirm within ``timeout`` s (said on stderr)."""
    try:
        n = int(store.add(_count_key(hub_id), 0))
        ranks = [int(store.get(_member_key(hub_id, i))) for i in range(1, n + 1)]
    except Exception as exc:
        warn(f"hyrax_tbhub: cannot ask the other ranks to flush ({exc!r}); their runs may be "
             "missing their last events")
        return []
    try:
        ranks = [rank for rank in ranks if not store.check([_closed_key(hub_id, rank)])]
    except Exception:
        pass
    if not ranks:
        return []
    token = secrets.token_hex(8)
    keys = {rank: _answer_key(hub_id, token, rank) for rank in ranks}
    try:
        for rank in ranks:
            store.queue_push(_queue_key(hub_id, rank), token.encode("ascii"))
        waiter = store.clone()  # after a wait times out, its connection is not reused
        try:
            waiter.wait(list(keys.values()), datetime.timedelta(seconds=timeout))
        except Exception:
            pass  # timed out: the keys below say which ranks answered
        # A rank whose hub closed meanwhile stopped answering, and has everything on disk.
        unconfirmed = [rank for rank, key in keys.items()
                       if not (store.check([key]) and bytes(store.get(key)) == b"1")
                       and not store.check([_closed_key(hub_id, rank)])]
    except Exception as exc:
        warn(f"hyrax_tbhub: the other ranks' final flush failed ({exc!r})")
        return sorted(ranks)
    if unconfirmed:
        warn(f"hyrax_tbhub: ranks {sorted(unconfirmed)} did not confirm that their events are on disk "
             f"within {timeout:g} s; their runs may be missing events (counted under "
             "hyrax_tbhub/ranks_unconfirmed)")
    return sorted(unconfirmed)

