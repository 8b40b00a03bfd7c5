"""The ledger harness: randomised process mixes, one integer seed each, with exact accounting.

Every producer (a thread of some process) logs one tag of its own, with steps 0, 1, 2, ... and
keeps a *ledger* of what it logged: before a chunk of events, the highest step it may reach
(``intent``); after the chunk, a ``time.monotonic_ns()`` reading before and after every call
(``chunk``); after a ``flush()``, its result and when it ran (``flush``). The lines are appended
with one ``os.write`` each to a file of its own, so a SIGKILLed producer leaves what it wrote.

The owner (the runner) records when each hub generation's ``init`` and ``close`` began and
ended, on the same clock (CLOCK_MONOTONIC is shared by every process of the machine). So every
logged event falls into one of three cases, exactly:

- *owed to generation g*: the call began after init(g) returned and ended before close(g) was
  called. It must be on disk in g's log folder exactly once, or counted under
  ``hyrax_tbhub/dropped/<run>`` of g. For a producer SIGKILLed before close(g) returned, only
  the events a ``flush()`` that returned True (before the kill) confirmed are owed.
- *no hub*: the call ran entirely between close(g) returning and init(g+1) being called: a
  no-op by design; it must be nowhere.
- *in between* (the call overlapped an init or a close): it may be in that generation, at most
  once, or nowhere.

Anything on disk that no ledger explains (a step above a producer's intent, a second copy, an
event in a generation its call did not overlap) is a failure too, and so is any process that
does not end within the seed's bound (a hang): its stack is dumped (faulthandler, SIGUSR1)
before it is killed.

Run one seed: ``python tests/ledger --seed 1234`` (``--describe`` prints the mix only).
"""
