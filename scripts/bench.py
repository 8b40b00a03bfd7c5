"""Benchmark hyrax_tbhub side by side with tensorboardX; same as ``hyrax-tbhub bench``."""

from hyrax_tbhub._bench import main

# The guard matters: spawned children re-run this file as ``__mp_main__``.
if __name__ == "__main__":
    raise SystemExit(main())
