"""Send Python ``logging`` records of chosen levels to TensorBoard's text tab, from every process.

``TensorBoardHandler`` is an ordinary ``logging.Handler``: attach it where you configure logging.
Forked children inherit the configuration; spawned children do not inherit any logging setup, so
a pool ``initializer`` configures them the same way (as you would for any handler). Records land
in the run of the process that logged them, as ``logs/WARNING``, ``logs/ERROR``...::

    python examples/logging_handler.py
    tensorboard --logdir <the printed folder> --samples_per_plugin text=1000
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import tempfile

from hyrax_tbhub import close_tensorboard_logger, init_tensorboard_logger
from hyrax_tbhub.logging_handler import TensorBoardHandler
from hyrax_tbhub.testing import read_logs

log = logging.getLogger("example.pipeline")


def configure_logging() -> None:
    """The same setup in the main process and in every worker."""
    handler = TensorBoardHandler(levels=["WARNING", "ERROR"])
    handler.setFormatter(logging.Formatter("%(processName)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def check_item(index: int) -> bool:
    """Runs in a spawned worker; INFO is not sent (not a chosen level), WARNING and ERROR are."""
    log.info("checking item %d", index)
    if index % 3 == 0:
        log.warning("item %d is suspicious", index)
    if index == 4:
        try:
            raise ValueError(f"item {index} is broken")
        except ValueError:
            log.exception("could not check item %d", index)  # the traceback goes along, verbatim
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--logdir", help="log folder (default: a new temporary folder)")
    parser.add_argument("--items", type=int, default=6)
    args = parser.parse_args(argv)
    logdir = args.logdir or tempfile.mkdtemp(prefix="hyrax_tbhub-logging-")

    configure_logging()
    log.warning("logged before the hub exists: skipped, and cheap")
    init_tensorboard_logger(log_dir=logdir)
    try:
        log.warning("starting %d checks", args.items)
        with multiprocessing.get_context("spawn").Pool(2, initializer=configure_logging) as pool:
            ok = pool.map(check_item, range(args.items))
            pool.close()  # let the workers exit normally (leaving `with` alone terminates them)
            pool.join()
        log.error("%d of %d items failed", ok.count(False), len(ok))
    finally:
        close_tensorboard_logger()

    logs = read_logs(logdir)
    print(f"log folder {logdir}")
    print(logs.describe())
    for step, text in logs.texts("logs/ERROR"):
        print(f"--- ERROR text at step {step}:\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
