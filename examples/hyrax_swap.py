"""Switch hyrax over to hyrax_tbhub with one call; code written for hyrax then logs from every process.

The call, anywhere before the logging you want (at the top of your entry point, inside
``main()``, in a notebook cell, also after ``import hyrax``)::

    hyrax_tbhub.use_with_hyrax()

It makes ``hyrax.tensorboardx_logger`` hyrax_tbhub's module, rebinds the names hyrax's modules
already took from hyrax's own, and sets ``HYRAX_TBHUB=1`` so that processes started later switch
themselves at start (docs/hyrax.md; for a whole job with no code at all: ``hyrax-tbhub run --
hyrax train ...``). This example runs without hyrax installed.

Below the call is code as hyrax writes it: a verb that opens the log, and work that runs in a
spawn pool and logs with ``log_duration_ts``/``log_scalar_ts``::

    python examples/hyrax_swap.py
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time

import hyrax_tbhub

hyrax_tbhub.use_with_hyrax()  # the one line

# ---- code written against hyrax's module, unchanged ---------------------------------------------
from hyrax.tensorboardx_logger import (  # noqa: E402  (no hyrax here: the call makes it importable)
    close_tensorboard_logger,
    get_tensorboard_logger,
    init_tensorboard_logger,
)

tensorboardx_logger = get_tensorboard_logger()  # hyrax's idiom: a handle taken at import time

READ_TAG = "DataProvider/file_read_time_s"
CACHE_TAG = "DataCache/cache_hit_s"


def load_item(index: int) -> int:
    """What a hyrax dataset's ``__getitem__`` does; runs in a spawned worker."""
    start = time.monotonic_ns()
    value = sum(range(index * 1000))
    tensorboardx_logger.log_duration_ts(READ_TAG, start)
    tensorboardx_logger.log_scalar_ts(CACHE_TAG, 0.0 if index % 2 else 1.0)
    return value


def run_verb(logdir: str, items: int) -> int:
    """A hyrax verb's ``run()``: open the log, fan out, close the log."""
    init_tensorboard_logger(log_dir=logdir)
    try:
        # hyrax's module attributes follow the live state, as in hyrax.
        module = sys.modules["hyrax.tensorboardx_logger"]
        assert module.tensorboard_start_ns != 0
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            results = pool.map(load_item, range(items))
            pool.close()  # let the workers exit normally (leaving `with` alone terminates them)
            pool.join()
        get_tensorboard_logger().add_scalar("verb/items", float(len(results)), 0)
        return len(results)
    finally:
        close_tensorboard_logger()
# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--logdir", help="log folder (default: a new temporary folder)")
    parser.add_argument("--items", type=int, default=10)
    args = parser.parse_args(argv)
    logdir = args.logdir or tempfile.mkdtemp(prefix="hyrax_tbhub-swap-")

    n = run_verb(logdir, args.items)

    from hyrax_tbhub.testing import read_logs

    print(f"hyrax.tensorboardx_logger is {sys.modules['hyrax.tensorboardx_logger'].__name__}; "
          f"{n} items; log folder {logdir}")
    print(read_logs(logdir).describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
