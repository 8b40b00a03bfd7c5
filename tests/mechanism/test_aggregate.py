"""Live aggregates: the run all_producers holds per-window count/mean/min/max/p50/p95 of matching tags.

Mechanism test (it imports private modules on purpose): the aggregator of ``_hub.aggregate`` (its
sketch's exact cap and error bound, the scalar-tag parser it shares with ``_events``, the store's
live run names).
"""

from __future__ import annotations

import math
import multiprocessing
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hyrax_tbhub
from hyrax_tbhub import SummaryWriter
from hyrax_tbhub._events import _tag_prefix
from hyrax_tbhub._hub import aggregate as _aggregate
from hyrax_tbhub.testing import read_logs

import writer_workers

pytestmark = pytest.mark.timeout(120)

STATS = ("count", "mean", "min", "max", "p50", "p95")


def _float32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def _agg(log_dir: Path, tag: str, stat: str) -> list[tuple[int, float]]:
    return read_logs(log_dir).scalars(f"{tag}/{stat}", run=_aggregate.AGGREGATE_RUN)


def test_counts_min_max_and_sums_over_every_producer_and_the_owner_are_exact(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    rng = random.Random(7)
    per_child = [[_float32(rng.uniform(-5, 5)) for _ in range(300)] for _ in range(3)]
    owner_values = [_float32(rng.uniform(-5, 5)) for _ in range(100)]
    with SummaryWriter(str(log_dir)).aggregate("read/*", every_s=0.2) as w:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=writer_workers.log_values, args=(w, "read/time_s", vals))
                 for vals in per_child]
        for p in procs:
            p.start()
        for i, v in enumerate(owner_values):
            w.add_scalar("read/time_s", v, i)
            w.add_scalar("other", v, i)  # matches no pattern: not aggregated
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    everything = [v for vals in per_child for v in vals] + owner_values
    counts = _agg(log_dir, "read/time_s", "count")
    assert sum(c for _, c in counts) == len(everything)
    assert min(v for _, v in _agg(log_dir, "read/time_s", "min")) == min(everything)
    assert max(v for _, v in _agg(log_dir, "read/time_s", "max")) == max(everything)
    means = _agg(log_dir, "read/time_s", "mean")
    total = sum(c * m for (_, c), (_, m) in zip(counts, means, strict=True))
    assert total == pytest.approx(sum(everything), abs=1e-3 * len(counts))
    steps = [s for s, _ in counts]
    assert steps == sorted(set(steps)) and all(s % 200_000 == 0 for s in steps)
    logs = read_logs(log_dir)
    assert not [t for t in logs.tags(run=_aggregate.AGGREGATE_RUN) if t.startswith("other")]
    assert {t.rsplit("/", 1)[1] for t in logs.tags(run=_aggregate.AGGREGATE_RUN)} == set(STATS)
    logs.assert_complete()


def test_percentiles_are_exact_below_the_cap_and_within_one_percent_above(tmp_path: Path) -> None:
    rng = random.Random(3)
    small = [_float32(rng.lognormvariate(0, 1)) for _ in range(500)]
    large = [_float32(rng.lognormvariate(0, 1)) for _ in range(_aggregate.EXACT_CAP * 3)]
    with SummaryWriter(str(tmp_path / "log")) as w:
        w.aggregate("small", every_s=3600).aggregate("large", every_s=3600)  # one window: ends at close
        for i, v in enumerate(small):
            w.add_scalar("small", v, i)
        for i, v in enumerate(large):
            w.add_scalar("large", v, i)
    for tag, values, exact in (("small", small, True), ("large", large, False)):
        ordered = sorted(values)
        for stat, q in (("p50", 0.5), ("p95", 0.95)):
            ((step, got),) = _agg(tmp_path / "log", tag, stat)
            want = ordered[math.floor(q * (len(ordered) - 1))]
            assert step == 3600 * 1_000_000
            if exact:
                assert got == pytest.approx(want, rel=1e-6)  # float32 storage of the statistic
            else:
                assert abs(got - want) <= _aggregate.RELATIVE_ERROR * abs(want) * 1.0001


def test_the_process_wide_hub_aggregates_too_and_refuses_before_init(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        hyrax_tbhub.aggregate("x/*")
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(tmp_path / "log"))
    hyrax_tbhub.aggregate("x/*", every_s=0.5)
    with pytest.raises(ValueError):
        hyrax_tbhub.aggregate("x/*", every_s=0)
    with pytest.raises(TypeError):
        hyrax_tbhub.aggregate("", every_s=1)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.starmap(_log_global, [("x/a", 40)] * 2)
    hyrax_tbhub.close_tensorboard_logger()
    assert sum(c for _, c in _agg(tmp_path / "log", "x/a", "count")) == 80


def _log_global(tag: str, n: int) -> None:
    import workers

    workers.log_scalars(tag, n)


def test_a_producer_named_like_the_aggregate_run_gets_another_name(tmp_path: Path) -> None:
    with SummaryWriter(str(tmp_path / "log")).aggregate("*") as w:
        hub = w._owned.hub
        assert _aggregate.AGGREGATE_RUN in hub.store.live_names


def test_the_owners_non_fast_scalars_are_not_lost_when_aggregating(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    with SummaryWriter(str(tmp_path / "log")).aggregate("v") as w:
        w.add_scalar("v", np.float32(2.0), 0)
        w.add_scalar("v", 3.0, 1, display_name="shown")  # tensorboardX's path, with metadata
    assert sorted(read_logs(tmp_path / "log").scalars("v", run=".")) == [(0, 2.0), (1, 3.0)]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_the_parser_reads_back_every_tag_prefix_we_encode(tag: str) -> None:
    from hyrax_tbhub._events import clean_tag

    assert _aggregate.parse_scalar_tag(_tag_prefix(tag)) == clean_tag(tag)


def test_the_parser_skips_what_is_not_a_simple_scalar() -> None:
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    with_metadata = Summary(value=[Summary.Value(tag="t", simple_value=1.0,
                                                 metadata=SummaryMetadata(display_name="d"))])
    two_values = Summary(value=[Summary.Value(tag="a", simple_value=1.0),
                                Summary.Value(tag="b", simple_value=2.0)])
    for summary in (with_metadata, two_values):
        key = b"\x2a" + bytes([summary.ByteSize()]) + summary.SerializeToString()
        assert _aggregate.parse_scalar_tag(key[:-4]) is None
    assert _aggregate.parse_scalar_tag(b"\x2a") is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False), min_size=1, max_size=3000),
       st.sampled_from([0.5, 0.95]))
def test_the_sketch_answers_within_its_relative_error(values: list[float], q: float) -> None:
    sketch, batched = _aggregate.QuantileSketch(), _aggregate.QuantileSketch()
    for v in values:
        sketch.add(v)
    batched.add_many(values)  # the vectorised path gives the same buckets
    want = sorted(values)[math.floor(q * (len(values) - 1))]
    got = sketch.quantile(q)
    assert batched.quantile(q) == got
    if abs(want) <= _aggregate.MIN_MAGNITUDE:
        assert abs(got) <= _aggregate.MIN_MAGNITUDE * (1 + _aggregate.RELATIVE_ERROR)
    else:
        assert abs(got - want) <= _aggregate.RELATIVE_ERROR * abs(want) * (1 + 1e-9)
