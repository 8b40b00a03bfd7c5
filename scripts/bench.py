"""Side-by-side benchmark of hyrax_tbhub against the ways people log from several processes today.

Run as ``python scripts/bench.py`` (from a checkout: the benchmark is not part of the installed
package); ``--quick`` is a smoke run of about half a minute, ``--help`` lists the options. What
the contenders are and how a run measures them: the ``hubbench`` package beside this file.
"""

# The code is the hubbench package beside this file. The guard matters: spawned children re-run this
# file as ``__mp_main__`` and must import nothing here (producers of (a)-(c) never carry hyrax_tbhub).
if __name__ == "__main__":
    from hubbench.cli import main

    raise SystemExit(main())
