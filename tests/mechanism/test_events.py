"""The hand-written encoders produce exactly the bytes tensorboardX/protobuf would.

Mechanism test (it imports private modules on purpose): the hand-written event encoders of
``_events`` (byte equality with tensorboardX/protobuf).
"""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyrax_tbhub._events import clean_tag, encode_scalar, file_version_event, frame, session_start_event

pytestmark = pytest.mark.timeout(120)


def _reference(tag: str, value: float, step: int | None, wall: float) -> bytes:
    from tensorboardX.proto import event_pb2
    from tensorboardX.summary import scalar

    ev = event_pb2.Event(summary=scalar(tag, value))
    ev.wall_time = wall
    if step is not None:
        ev.step = int(step)
    return ev.SerializeToString()


tags = st.one_of(
    st.sampled_from(["loss", "train/loss", "/lead", "a b", "DataProvider/cache_hit_s", "ü", "x" * 300]),
    st.text(min_size=1, max_size=40),
)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([0.0, -0.0, 1e39, -1e39, 3.4028235e38]),
)
steps = st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1))
walls = st.one_of(st.just(0.0), st.floats(min_value=0, max_value=4e9, allow_nan=False))


@settings(max_examples=3000, deadline=None)
@given(tag=tags, value=values, step=steps, wall=walls)
def test_scalar_event_bytes_equal_protobuf(tag: str, value: float, step: int | None, wall: float) -> None:
    ref = _reference(tag, value, step, wall)
    assert encode_scalar(tag, float(value), step, wall) == ref


def test_clean_tag_matches_tensorboardx() -> None:
    from tensorboardX.summary import _clean_tag

    for tag in ["ok/tag", "/lead", "sp ace", "a:b", "ü-ß.x", "//x//"]:
        assert clean_tag(tag) == _clean_tag(tag)


def test_frame_matches_tensorboardx_record_writer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tensorboardX.record_writer import masked_crc32c

    for data in [b"", b"x", b"hello" * 1000]:
        header = struct.pack("Q", len(data))
        crc = struct.pack("I", masked_crc32c(header)), struct.pack("I", masked_crc32c(data))
        expected = header + crc[0] + data + crc[1]
        assert frame(data) == expected


def test_file_version_and_purge_records_equal_protobuf() -> None:
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    assert file_version_event(12.5) == Event(wall_time=12.5, file_version="brain.Event:2").SerializeToString()
    assert file_version_event(12.5, step=7) == Event(
        wall_time=12.5, step=7, file_version="brain.Event:2"
    ).SerializeToString()
    assert session_start_event(7, 12.5) == Event(
        wall_time=12.5, step=7, session_log=SessionLog(status=SessionLog.START)
    ).SerializeToString()


def test_out_of_range_values_become_infinity_like_protobuf() -> None:
    assert encode_scalar("x", 1e300, 1, 1.0) == _reference("x", 1e300, 1, 1.0)
    assert encode_scalar("x", -1e300, 1, 1.0) == _reference("x", -1e300, 1, 1.0)
    assert math.isnan(struct.unpack("<f", encode_scalar("x", math.nan, 1, 1.0)[-4:])[0])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(tags, values, steps, walls), max_size=50))
def test_batch_encoder_equals_framing_each_scalar(batch: list[tuple[str, float, int | None, float]]) -> None:
    from hyrax_tbhub._events import encode_scalar_records

    items = [("s", tag, float(value), step, wall) for tag, value, step, wall in batch]
    expected = b"".join(frame(encode_scalar(t, v, s, w)) for _, t, v, s, w in items)
    assert encode_scalar_records(items) == expected


def test_encode_batch_groups_records_per_subrun_and_keeps_control_items_in_order() -> None:
    from hyrax_tbhub._events import encode_batch, encode_scalar_records

    items = [("s", "a", 1.0, 1, 2.0), ("s", "b", 2.0, 2, 2.0), ("e", "", b"xx"), ("s", "c", 3.0, 3, 3.0),
             ("e", "sub", b"yy"), ("e", "sub", b"zz"), ("f", 1), ("s", "d", 4.0, 4, 4.0), ("d", 3), ("b",)]
    out = encode_batch(items)
    assert out == [
        ("r", "", encode_scalar_records(items[0:2]) + frame(b"xx") + encode_scalar_records(items[3:4]), 4),
        ("r", "sub", frame(b"yy") + frame(b"zz"), 2),
        ("f", 1),
        ("r", "", encode_scalar_records(items[7:8]), 1),
        ("d", 3),
        ("b",),
    ]


@settings(max_examples=300, deadline=None)
@given(tag=tags, text=st.text(max_size=200), step=steps, wall=walls)
def test_text_event_bytes_equal_tensorboardx(tag: str, text: str, step: int | None, wall: float) -> None:
    from tensorboardX.proto import event_pb2
    from tensorboardX.summary import text as text_summary

    from hyrax_tbhub._events import encode_text_event

    ev = event_pb2.Event(summary=text_summary(tag, text), wall_time=wall)
    if step is not None:
        ev.step = int(step)
    assert encode_text_event(tag, text, step, wall) == ev.SerializeToString()
