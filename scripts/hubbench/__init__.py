"""Side-by-side benchmark of hyrax_tbhub against the ways people log from several processes today.

The code of ``python scripts/bench.py`` (run from a checkout: the benchmark is not part of the
installed package). Every contender logs the same events in the same run:

(a) tensorboardX ``SummaryWriter`` in one process: the single-process baseline;
(b) the usual hand-made fix: producers ``put`` into one ``multiprocessing.Queue``, a thread of the
    parent feeds one ``SummaryWriter`` (what stdlib ``QueueListener`` does);
(c) one ``SummaryWriter`` per process, each in its own folder;
(d) hyrax_tbhub with the same producers.

Each measurement runs in a fresh *coordinator* process so that peak memory, module state and the
hub of one run cannot leak into the next. Producers are ``spawn`` children of the coordinator and
wait on a barrier, so the clock starts when all of them have finished importing. Events are
counted back from the event files with TensorBoard's own reader, not assumed.

The modules, in the order a run goes through them: ``cli`` (the command line), ``config`` (the
contenders, targets and sizes), ``measure`` (the parent: the plan, one coordinator per
measurement, the count back), ``coordinator`` (one measurement, in its own process), ``producer``
(the timed loops, in the producer processes), ``nohub`` (a call in a process with no hub),
``targets`` and ``report`` (the markdown the README quotes). Nothing here imports hyrax_tbhub at
module level: the producers of (a)-(c) import these modules and must not carry it.
"""
