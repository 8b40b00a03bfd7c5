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
import time
from typing import Any

from .._counters import RANKS_UNCONFIRMED
from .._discovery.store import default_store, torch_distributed
from .._hub import Hub
from .._util.stderr import warn
from .._util.threads import daemon_thread

__all__ = ["confirm_ranks", "serve_sync_requests"]

_PREFIX = "hyrax_tbhub/rank_sync/"
_STOP = b"stop"
_WAIT_FOREVER = datetime.timedelta(days=365)  # a queue pop that times out logs a warning in C++
_TAKE_GRACE_S = 5.0  # s for a live rank to take rank 0's request off its queue
_POLL_S = 0.01  # s between rank 0's looks at the answers (only while its close waits)


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
    try:
        for rank in ranks:
            store.queue_push(_queue_key(hub_id, rank), token.encode("ascii"))
        unconfirmed = _await_answers(store, hub_id, token, ranks, timeout)
    except Exception as exc:
        warn(f"hyrax_tbhub: the other ranks' final flush failed ({exc!r})")
        return sorted(ranks)
    if unconfirmed:
        warn(f"hyrax_tbhub: ranks {sorted(unconfirmed)} did not confirm that their events are on disk "
             f"(not listening after {min(_TAKE_GRACE_S, timeout):g} s, or not done within {timeout:g} s); "
             f"their runs may be missing events (counted under {RANKS_UNCONFIRMED})")
    return sorted(unconfirmed)


def _await_answers(store: Any, hub_id: str, token: str, ranks: list[int], timeout: float) -> list[int]:
    """The ranks that did not answer ``token`` with "done" within ``timeout`` s.

    A live rank's thread takes the request off its queue within milliseconds (the store hands
    it over; no Python code of the rank needs to run): a rank that has not taken it after
    ``_TAKE_GRACE_S`` is not listening (its host died, it hangs) and is not waited for further,
    so a dead node costs rank 0's close seconds, not its whole close timeout.
    """
    start = time.monotonic()
    deadline = start + timeout
    pending = set(ranks)
    taken: set[int] = set()
    unconfirmed: list[int] = []
    while pending:
        for rank in sorted(pending):
            key = _answer_key(hub_id, token, rank)
            if store.check([key]):
                if bytes(store.get(key)) != b"1":
                    unconfirmed.append(rank)
                pending.discard(rank)
            elif store.check([_closed_key(hub_id, rank)]):
                pending.discard(rank)  # its hub closed meanwhile: everything of it is on disk
            elif rank not in taken and int(store.queue_len(_queue_key(hub_id, rank))) == 0:
                taken.add(rank)
        now = time.monotonic()
        if now >= deadline:
            unconfirmed += sorted(pending)
            break
        if now - start >= min(_TAKE_GRACE_S, timeout):
            silent = {r for r in pending if r not in taken}
            unconfirmed += sorted(silent)
            pending -= silent
        if pending:
            time.sleep(_POLL_S)  # polls the store for the answers: the condition itself
    return sorted(unconfirmed)
