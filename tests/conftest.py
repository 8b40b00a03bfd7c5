"""Shared fixtures: a hub per test, and reading logs back with tensorboard's own reader."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Worker functions live in tests/workers.py; spawn and forkserver children import it by name.
sys.path.insert(0, os.path.dirname(__file__))

import hyrax_tbhub  # noqa: E402
from hyrax_tbhub import _state  # noqa: E402

from readback import read_log  # noqa: E402,F401  (re-exported for tests)


@pytest.fixture(autouse=True)
def _no_hub_leaks() -> Iterator[None]:
    """Every test starts and ends without a hub in this process."""
    yield
    hyrax_tbhub.close_tensorboard_logger()
    _state.STATE.idle = False
    _state.STATE.watch = None
    _state.STATE.finished_hubs.clear()


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
