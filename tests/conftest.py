"""Shared fixtures (a hub per test, reading logs back) and the suite's command-line options.

Options:
- ``--start-method=fork|spawn|forkserver`` sets the default start method of stdlib
  ``multiprocessing`` and of ``multiprocess`` for the whole session (before any test runs), so
  the process tests also run under forkserver (Python 3.14's default on Linux) and spawn
  (macOS). Tests that name a context keep it; everything using the default follows the option,
  ledger seeds included.
- ``--ledger-seed N`` (repeatable) runs these ledger seeds instead of the default handful.
- ``--soak-seeds N`` / ``--soak-first N``: how many ledger seeds ``pytest -m soak`` runs.

Soak tests (marker ``soak``) only run when the ``-m`` expression names them: the README's
``python -m pytest`` leaves them out.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Worker functions live in tests/workers.py; spawn and forkserver children import it by name.
sys.path.insert(0, os.path.dirname(__file__))

import hyrax_tbhub  # noqa: E402
from hyrax_tbhub.testing import reset_logging  # noqa: E402

START_METHOD_ENV = "HYRAX_TBHUB_TEST_START_METHOD"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hyrax_tbhub")
    group.addoption("--start-method", choices=["fork", "spawn", "forkserver"], default=None,
                    help="default start method of multiprocessing and multiprocess for the session")
    group.addoption("--ledger-seed", type=int, action="append", default=[],
                    help="run this ledger seed (repeatable) instead of the default ones")
    group.addoption("--soak-seeds", type=int, default=300, help="number of seeds `-m soak` runs")
    group.addoption("--soak-first", type=int, default=1000, help="first seed `-m soak` runs")


def pytest_configure(config: pytest.Config) -> None:
    method = config.getoption("--start-method") or os.environ.get(START_METHOD_ENV)
    if method:
        import multiprocessing

        import multiprocess

        multiprocessing.set_start_method(method, force=True)
        multiprocess.set_start_method(method, force=True)
        # Children that run their own tests or mixes (the ledger runner) follow the session.
        os.environ[START_METHOD_ENV] = method


def pytest_report_header(config: pytest.Config) -> str:
    import multiprocessing

    # allow_none: asking without it would fix the default for the session, as set_start_method does.
    method = multiprocessing.get_start_method(allow_none=True)
    return f"default start method: {method or 'the platform default (no --start-method)'}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr") or ""):
        return
    kept, soak = [], []
    for item in items:
        (soak if item.get_closest_marker("soak") else kept).append(item)
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = kept


@pytest.fixture(autouse=True)
def _no_hub_leaks() -> Iterator[None]:
    """Every test starts and ends without a hub in this process."""
    yield
    reset_logging()


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def hub(logdir: Path) -> Iterator[Path]:
    """A hub writing to ``logdir`` for the duration of the test."""
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    try:
        yield logdir
    finally:
        hyrax_tbhub.close_tensorboard_logger()
