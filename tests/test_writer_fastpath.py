"""The fast paths write what tensorboardX's own code writes, in every state of the writer.

``add_scalar`` of a plain number and ``add_text`` of a plain string skip tensorboardX (its summary
builders cost microseconds and import torch). A fast path that forgets a piece of the writer's
state writes different events; this property test runs random call sequences three ways and
compares every summary value (tag, step, wall time, value, plugin name and content), read back
with TensorBoard's reader:

- the stock ``tensorboardX.SummaryWriter`` (the reference);
- ours with plain numbers and strings (the fast paths);
- ours with the same values as numpy 0-d arrays and numpy strings (tensorboardX's code inside ours).

Both of ours: ``hyrax_tbhub.SummaryWriter`` and the process-wide handle.

The writer state covered (each drawn at random):
- ``use_metadata`` defaults: none, a step only, a wall time only, both;
- explicit ``global_step`` / ``walltime`` beside those defaults, or not given;
- ``display_name`` / ``summary_description`` given or not (they take tensorboardX's path);
- ``purge_step`` given to the constructor or not;
- closed and reopened (``close()`` then more calls; ours only: the stock writer names a
  reopened file by the second and overwrites the first one within the same second).
Not state of the fast paths, hence not here: ``write_to_disk=False`` (every call is a no-op,
tests/test_writer.py), ``comet_config`` (ignored, documented).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tb_events import read_values

import hyrax_tbhub
from hyrax_tbhub import SummaryWriter

pytestmark = pytest.mark.timeout(300)
tensorboardX = pytest.importorskip("tensorboardX")
np = pytest.importorskip("numpy")


class Call(NamedTuple):
    metadata: str  # "none", "step", "wall", "both"
    method: str  # "add_scalar", "add_text", "close"
    tag: str
    value: Any
    step: int | None
    walltime: float | None
    display_name: str


META = {"none": None, "step": {"global_step": 11}, "wall": {"walltime": 1700.25},
        "both": {"global_step": 12, "walltime": 1800.5}}

_tags = st.text(alphabet="ab/_-. é:", min_size=1, max_size=6)
_values = st.one_of(
    st.floats(allow_nan=False, width=64), st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, width=32).map(np.float32),
)
_calls = st.builds(
    Call,
    metadata=st.sampled_from(list(META)),
    method=st.sampled_from(["add_scalar", "add_scalar", "add_text"]),
    tag=_tags,
    value=_values,
    step=st.none() | st.integers(-(2**40), 2**62),
    walltime=st.none() | st.floats(1.0, 2e9),
    display_name=st.sampled_from(["", "", "", "shown"]),
)
_closes = st.builds(Call, st.just("none"), st.just("close"), st.just(""), st.none(), st.none(), st.none(),
                    st.just(""))


def _play(w: Any, calls: list[Call], slow: bool) -> None:
    for c in calls:
        if c.method == "close":
            w.close()
            continue
        meta = META[c.metadata]
        with w.use_metadata(**meta) if meta else nullcontext():
            if c.method == "add_scalar":
                value = np.array(c.value) if slow else c.value
                if c.display_name:
                    w.add_scalar(c.tag, value, c.step, c.walltime, c.display_name, "described")
                else:
                    w.add_scalar(c.tag, value, c.step, c.walltime)
            else:
                text = np.str_(f"text {c.value}") if slow else f"text {c.value}"
                w.add_text(c.tag, text, c.step, c.walltime)


def _comparable(values: list[Any], calls: list[Call]) -> list[Any]:
    """Values whose wall time was the time of the call get None there (the rest must match)."""
    made = [c for c in calls if c.method != "close"]
    assert len(values) == len(made), (values, made)
    out = []
    for v, c in zip(values, made, strict=True):
        meta = META[c.metadata] or {}
        # tensorboardX leaves the wall time unset (0) under use_metadata(global_step=...) alone.
        fixed = c.walltime is not None or "walltime" in meta or "global_step" in meta
        out.append(v if fixed else v._replace(wall_time=None))
    return out


@contextmanager
def _ours(kind: str, log_dir: Path, purge_step: int | None) -> Iterator[Any]:
    if kind == "writer":
        w = SummaryWriter(str(log_dir), purge_step=purge_step)
        try:
            yield w
        finally:
            w.close()
    else:
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(log_dir), purge_step=purge_step)
        try:
            yield hyrax_tbhub.get_tensorboard_logger()
        finally:
            hyrax_tbhub.close_tensorboard_logger()


def _run_all(
    tmp: Path, kind: str, calls: list[Call], purge_step: int | None, with_stock: bool
) -> dict[str, Any]:
    got = {}
    for name, slow in (("fast", False), ("slow", True)):
        with _ours(kind, tmp / name, purge_step) as w:
            _play(w, calls, slow)
        got[name] = _comparable(read_values(tmp / name), calls)
    if with_stock:
        with tensorboardX.SummaryWriter(str(tmp / "stock"), purge_step=purge_step) as stock:
            _play(stock, calls, slow=False)
        got["stock"] = _comparable(read_values(tmp / "stock"), calls)
    return got


@pytest.mark.parametrize("kind", ["writer", "handle"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(_calls, min_size=1, max_size=8), purge_step=st.none() | st.integers(0, 100))
def test_fast_and_slow_paths_write_the_same_events_as_tensorboardx(
    tmp_path_factory: pytest.TempPathFactory, kind: str, calls: list[Call], purge_step: int | None
) -> None:
    got = _run_all(tmp_path_factory.mktemp("fp"), kind, calls, purge_step, with_stock=True)
    assert got["fast"] == got["stock"]
    assert got["slow"] == got["stock"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.lists(_calls, min_size=1, max_size=4), close=_closes,
    after=st.lists(_calls, min_size=1, max_size=4),
)
def test_fast_and_slow_paths_agree_after_close_and_reopen(
    tmp_path_factory: pytest.TempPathFactory, before: list[Call], close: Call, after: list[Call]
) -> None:
    got = _run_all(tmp_path_factory.mktemp("fp"), "writer", [*before, close, *after], None, with_stock=False)
    assert got["fast"] == got["slow"]
    assert not any(math.isnan(v.wall_time) for v in got["fast"] if v.wall_time is not None)
