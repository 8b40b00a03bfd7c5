"""Side-by-side benchmark of hyrax_tbhub against the ways people log from several processes today.

Run as ``python scripts/bench.py`` (from a checkout: the benchmark is not part of the installed
package); ``--quick`` is a smoke run of about half a minute. Every contender logs the same events
in the same run of this script:

(a) tensorboardX ``SummaryWriter`` in one process: the single-process baseline;
(b) the usual hand-made fix: producers ``put`` into one ``multiprocessing.Queue``, a thread of the
    parent feeds one ``SummaryWriter`` (what stdlib ``QueueListener`` does);
(c) one ``SummaryWriter`` per process, each in its own folder;
(d) hyrax_tbhub with the same producers.

Each measurement runs in a fresh *coordinator* process so that peak memory, module state and the
hub of one run cannot leak into the next. Producers are ``spawn`` children of the coordinator and
wait on a barrier, so the clock starts when all of them have finished importing. Events are
counted back from the event files with TensorBoard's own reader, not assumed.
"""

# The code is the hubbench package beside this file. The guard matters: spawned children re-run this
# file as ``__mp_main__`` and must import nothing here (producers of (a)-(c) never carry hyrax_tbhub).
if __name__ == "__main__":
    from hubbench.cli import main

    raise SystemExit(main())
