"""The hub's reserved tags: what it counts, under which names (the one home of these strings).

Users cannot log under ``RESERVED_PREFIX``; the hub writes these counters to the root run of the
log, so a loss is visible where the data is. docs/how-it-works.md says what each one counts.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DROPPED", "ERRORS", "INTERNAL_ERRORS", "OVER_CAP", "PRODUCER_KILLED", "RANKS_UNCONFIRMED", "REJECTED",
    "RESERVED_PREFIX", "STRANGERS", "TRANSPORT_ERRORS",
]

RESERVED_PREFIX: Final = "hyrax_tbhub/"
#: ``DROPPED + <run>``: events that producer logged and that will never be on disk.
DROPPED: Final = RESERVED_PREFIX + "dropped/"
#: ``ERRORS + <run>``: events of that run the hub could not write.
ERRORS: Final = RESERVED_PREFIX + "errors/"
TRANSPORT_ERRORS: Final = RESERVED_PREFIX + "transport_errors"
INTERNAL_ERRORS: Final = RESERVED_PREFIX + "internal_errors"
REJECTED: Final = RESERVED_PREFIX + "rejected"
STRANGERS: Final = RESERVED_PREFIX + "strangers"
OVER_CAP: Final = RESERVED_PREFIX + "over_cap"
#: ``PRODUCER_KILLED + <run>``: events that producer logged and that never arrived because it
#: ended without a goodbye (killed): read from its ledger (``_hub/liveness.py``), exact.
PRODUCER_KILLED: Final = RESERVED_PREFIX + "producer_killed/"
#: Ranks that did not confirm, when rank 0 closed, that their events were on disk
#: (``_process/rank_sync.py``): their runs may be missing events.
RANKS_UNCONFIRMED: Final = RESERVED_PREFIX + "ranks_unconfirmed"
