"""The producer's parts on their own: batch cutting, the outbox's bounds and counts, re-encoding.

No hub and no sender thread here: the outbox is driven the way the sender drives it.

Mechanism test (it imports private modules on purpose): the producer's parts (``_producer.outbox``,
``_producer.frames``) driven without a hub or sender thread.
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any

import pytest

from hyrax_tbhub import _wire
from hyrax_tbhub._discovery import hubfile
from hyrax_tbhub._producer import Producer
from hyrax_tbhub._producer.frames import encode_frame, scalar_frame
from hyrax_tbhub._producer.outbox import Outbox, cut_batch, items_of
from hyrax_tbhub.options import Options
from hyrax_tbhub.testing import capture_logs, published_hub


def _scalar(step: int) -> tuple[Any, ...]:
    return ("s", "x", 1.0, step, 0.0)


def _event(size: int) -> tuple[Any, ...]:
    return ("e", "", b"\0" * size)


class _Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


# -- cut_batch ---------------------------------------------------------------------------------------


def test_cut_batch_takes_at_most_batch_events_items() -> None:
    items = [_scalar(i) for i in range(10)]
    assert cut_batch(items, 0, 4, 1 << 20) == 4
    assert cut_batch(items, 4, 4, 1 << 20) == 8
    assert cut_batch(items, 8, 4, 1 << 20) == 10
    assert cut_batch(items, 10, 4, 1 << 20) == 10  # nothing left: an empty frame


def test_cut_batch_ends_a_frame_with_the_event_that_reaches_batch_bytes() -> None:
    items = [_event(40), _scalar(1), _event(70), _event(10), _scalar(2)]
    assert cut_batch(items, 0, 100, 100) == 3  # 40 + 70 >= 100: the 70-byte event is the last
    assert cut_batch(items, 3, 100, 100) == 5


def test_cut_batch_gives_an_event_larger_than_batch_bytes_a_frame_of_its_own() -> None:
    items = [_event(500), _event(500), _scalar(1)]
    assert cut_batch(items, 0, 100, 100) == 1
    assert cut_batch(items, 1, 100, 100) == 2


def test_cut_batch_unsized_ignores_bytes_and_counts_items_only() -> None:
    items = [_event(500)] * 5
    assert cut_batch(items, 0, 3, 100, sized=False) == 3


def test_cut_batch_is_pure() -> None:
    items = [_event(60), _event(60), _scalar(3)]
    before = list(items)
    assert cut_batch(items, 0, 10, 100) == cut_batch(items, 0, 10, 100) == 2
    assert items == before


# -- Outbox --------------------------------------------------------------------------------------------


def test_outbox_drops_and_counts_past_queue_max_events(capfd: pytest.CaptureFixture[str]) -> None:
    box = Outbox(Options(queue_max_events=5), _Wakes())
    for step in range(8):
        box.put_scalar("x", 1.0, step, 0.0)
    assert len(box) == 5 and box.dropped == 3
    err = capfd.readouterr().err
    assert err.count("dropped an event") == 1 and "queue is full" in err  # said once, counted always


def test_outbox_drops_an_event_past_queue_max_bytes_but_keeps_taking_scalars() -> None:
    box = Outbox(Options(queue_max_bytes=100), _Wakes())
    box.put_event("", b"a" * 60)
    box.put_event("", b"b" * 60)  # 120 > 100: dropped
    box.put_scalar("x", 1.0, 1, 0.0)
    assert [item[0] for item in box.items()] == ["e", "s"]
    assert box.dropped == 1 and box.queued_bytes == 60


def test_outbox_refuses_an_event_larger_than_queue_max_bytes_and_says_why(
    capfd: pytest.CaptureFixture[str],
) -> None:
    box = Outbox(Options(queue_max_bytes=100), _Wakes())
    box.put_event("", b"a" * 101)
    assert box.dropped == 1 and not box.queue
    assert "larger than Options.queue_max_bytes" in capfd.readouterr().err


def test_outbox_wakes_the_sender_for_the_first_event_and_for_a_full_batch_only() -> None:
    wakes = _Wakes()
    box = Outbox(Options(batch_events=4), wakes)
    box.put_scalar("x", 1.0, 0, 0.0)
    assert wakes.count == 1
    box.put_scalar("x", 1.0, 1, 0.0)  # a wake-up is on its way already
    assert wakes.count == 1
    box.woken = False  # the sender woke
    box.put_scalar("x", 1.0, 2, 0.0)
    assert wakes.count == 1  # neither the first event nor a full batch
    box.put_scalar("x", 1.0, 3, 0.0)  # the fourth: a full batch
    assert wakes.count == 2


def test_outbox_flush_barrier_wakes_the_sender_even_if_a_wake_up_is_on_its_way() -> None:
    wakes = _Wakes()
    box = Outbox(Options(), wakes)
    box.put_scalar("x", 1.0, 0, 0.0)
    box.put_flush(7)
    assert wakes.count == 2 and box.items()[-1] == ("f", 7)


def test_outbox_take_returns_what_was_queued_and_keeps_the_byte_count_right() -> None:
    box = Outbox(Options(), _Wakes())
    box.put_scalar("x", 1.0, 0, 0.0)
    box.put_event("", b"a" * 30)
    box.put_scalar("x", 1.0, 1, 0.0)
    items, sized = box.take(2)
    assert [item[0] for item in items] == ["s", "e"] and sized and box.queued_bytes == 0
    items, sized = box.take()
    assert [item[0] for item in items] == ["s"] and not sized
    assert box.take() == ([], False)


def test_outbox_reports_each_drop_count_once() -> None:
    box = Outbox(Options(queue_max_events=1), _Wakes())
    assert box.unreported_drops() is None
    box.put_scalar("x", 1.0, 0, 0.0)
    box.put_scalar("x", 1.0, 1, 0.0)
    assert box.unreported_drops() == 1
    assert box.unreported_drops() is None


def test_outbox_after_close_refuses_calls_without_counting_them() -> None:
    box = Outbox(Options(final_batch_wait=0.0), _Wakes())
    box.close_for_puts()
    box.put_scalar("x", 1.0, 0, 0.0)
    assert not box.queue and box.dropped == 0


def test_outbox_a_call_after_close_waits_for_the_final_batch_and_no_longer() -> None:
    box = Outbox(Options(final_batch_wait=30.0), _Wakes())
    box.close_for_puts()
    returned = threading.Event()

    def call() -> None:
        box.put_scalar("x", 1.0, 0, 0.0)
        returned.set()

    caller = threading.Thread(target=call)
    caller.start()
    assert not returned.wait(0.05)  # still waiting: the final batch is not out (not a timing claim)
    box.final_sent.set()
    assert returned.wait(30)
    caller.join(30)


def test_outbox_discard_counts_queued_events_but_not_flush_barriers(
    capfd: pytest.CaptureFixture[str],
) -> None:
    box = Outbox(Options(), _Wakes())
    box.put_scalar("x", 1.0, 0, 0.0)
    box.put_event("", b"abc")
    box.put_flush(1)
    assert box.discard() == 2 and box.dropped == 2 and not box.queue
    box.put_scalar("x", 1.0, 1, 0.0)  # the hub is gone: counted, not said again
    assert box.dropped == 3
    assert capfd.readouterr().err == ""


# -- frames (encoding a round) ----------------------------------------------------------------------


def _unconnected_producer(tmp_path: Path) -> Producer:
    info = hubfile.HubInfo(
        address=str(tmp_path / "no-hub.sock"), authkey=secrets.token_hex(32), start_ns=0,
        logdir=str(tmp_path / "log"), owner_pid=1, hub_id=secrets.token_hex(8),
    )
    return Producer(info, lambda _p: None)  # connect fails quietly; the thread is never started


def test_a_batch_with_one_unencodable_item_loses_only_it_and_keeps_goodbye_last(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    producer = _unconnected_producer(tmp_path)
    batch = [("s", "x", 1.0, 1, 0.0), ("s", "x", "not a number", 2, 0.0), ("f", 3), ("b",)]
    frame = encode_frame(batch, producer._outbox)
    (body,) = _wire.FrameReader().feed(frame)
    items = _wire.decode_batch(body)
    assert [item[0] for item in items] == ["r", "f", "d", "b"]
    assert items[0][3] == 1 and items[2] == ("d", 1)
    assert producer.dropped == 1
    assert "could not be encoded" in capfd.readouterr().err


def test_an_unencodable_event_of_the_final_batch_is_counted_and_said(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The final batch is cut after the outbox refuses new calls: a bad event in it was logged in
    time, so it is a loss (counted, said), not a call made after close (seen lost silently)."""
    producer = _unconnected_producer(tmp_path)
    outbox = producer._outbox
    outbox.close_for_puts()
    frame = encode_frame([("s", "x", 1.0, 1, 0.0), ("s", "x", "not a number", 2, 0.0), ("b",)], outbox)
    (body,) = _wire.FrameReader().feed(frame)
    assert [item[0] for item in _wire.decode_batch(body)] == ["r", "d", "b"]
    assert producer.dropped == 1
    assert "could not be encoded" in capfd.readouterr().err


def test_hub_options_this_version_cannot_read_give_the_defaults(tmp_path: Path) -> None:
    """A hub file's options that are not a mapping, or out of range: the producer uses the
    defaults instead of raising into the logging call."""
    from hyrax_tbhub._producer import options_of
    from hyrax_tbhub.options import DEFAULT_OPTIONS

    for bad in ("x", 5, {"queue_max_events": 0}, {"connect_timeout": "soon"}):
        info = hubfile.HubInfo(address=str(tmp_path / "s"), authkey="00", start_ns=0, logdir=str(tmp_path),
                               owner_pid=1, hub_id="ab", options=bad)  # type: ignore[arg-type]
        assert options_of(info) is DEFAULT_OPTIONS, bad
    with pytest.raises(TypeError):
        Options.from_wire("x")  # type: ignore[arg-type]


# -- the scalar encoder's fast path ------------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 0x7F, 0x80, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000, 0xFFFFFFF, 0x10000000])
def test_each_varint_size_of_the_fast_scalar_path_frames_as_one_scalar_at_a_time(step: int) -> None:
    from hyrax_tbhub._events import encode_scalar, encode_scalar_records, frame

    items = [("s", tag, value, step, wall) for tag in ("loss", "a b", "x" * 300, "/")
             for value in (0.5, 1e39, float("nan")) for wall in (0.0, 1.7e9)]
    assert encode_scalar_records(items) == b"".join(frame(encode_scalar(*item[1:])) for item in items)


@pytest.mark.timeout(60)
def test_outbox_items_of_threads_logging_at_once_stay_whole() -> None:
    """The queue is flat (RECORD slots per item): concurrent calls must never interleave slots."""
    box = Outbox(Options(queue_max_events=1_000_000), _Wakes())
    per_thread = 20_000
    go = threading.Event()

    def log(name: str) -> None:
        go.wait(30)
        for step in range(per_thread):
            box.put_scalar(name, float(step), step, 1.0)
            if step % 1000 == 0:
                box.put_event(name, b"e")

    threads = [threading.Thread(target=log, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    go.set()
    taken: list[tuple[Any, ...]] = []
    while any(t.is_alive() for t in threads) or len(box):
        taken += box.take(777)[0]
    for t in threads:
        t.join(30)
    scalars = [item for item in taken if item[0] == "s"]
    assert len(scalars) == 4 * per_thread and len(taken) == 4 * (per_thread + per_thread // 1000)
    for name in ("t0", "t1", "t2", "t3"):
        steps = [item[3] for item in scalars if item[1] == name]
        assert steps == list(range(per_thread))  # whole, and in the order each thread logged
        assert all(item[2] == float(item[3]) and item[4] == 1.0 for item in scalars if item[1] == name)
    assert all(item == ("e", item[1], b"e") for item in taken if item[0] == "e") and box.queued_bytes == 0


def test_a_round_of_scalars_frames_as_the_general_path_does(tmp_path: Path) -> None:
    producer = _unconnected_producer(tmp_path)
    box = producer._outbox
    for step in range(300):
        box.put_scalar(f"tag{step % 7}", step / 3, step * 1000, 1.7e9 + step)
    slots, _sized = box.take_slots()
    extras: list[tuple[Any, ...]] = [("d", 0), ("b",)]
    assert scalar_frame(slots, extras, box) == encode_frame(items_of(slots) + extras, box)


def test_a_bad_scalar_in_a_round_of_scalars_loses_only_itself(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    producer = _unconnected_producer(tmp_path)
    box = producer._outbox
    box.put_scalar("x", 1.0, 1, 1.0)
    box.put_scalar("x", 2.0, 2, 10**400)  # a wall time no double holds
    box.put_scalar("x", 3.0, 3, 1.0)
    slots, _sized = box.take_slots()
    (body,) = _wire.FrameReader().feed(scalar_frame(slots, [("b",)], box))
    items = _wire.decode_batch(body)
    assert [item[0] for item in items] == ["r", "d", "b"] and items[0][3] == 2 and items[1] == ("d", 1)
    assert "could not be encoded" in capfd.readouterr().err


# -- closing ----------------------------------------------------------------------------------------


def _published_info() -> hubfile.HubInfo:
    """What a producer of this process's hub (started by ``capture_logs``) connects with."""
    hub = published_hub()
    assert hub is not None
    info = hubfile.read_hub_file(hub.hub_file)
    assert info is not None
    return info


def test_close_before_the_sender_started_still_sends_the_queue(tmp_path: Path) -> None:
    """Rediscovery publishes a producer before it starts its sender thread; a close that comes in
    between (the exit hook, on another thread) sends what was logged, not nothing and not unsaid."""
    with capture_logs(tmp_path / "log") as logs:
        producer = Producer(_published_info(), lambda _p: None)  # published, not started
        producer.put_scalar("late/x", 1.0, 7, 0.0)
        producer.close(timeout=30.0)
        assert not producer.alive
    assert logs.scalars("late/x") == [(7, 1.0)]


def test_rediscovery_starting_a_producer_a_close_already_started_does_not_raise(tmp_path: Path) -> None:
    """The thread that published the producer resumes after another thread's close started its
    sender: its own start() is a no-op, not "threads can only be started once" in a logging call."""
    with capture_logs(tmp_path / "log") as logs:
        producer = Producer(_published_info(), lambda _p: None)
        producer.put_scalar("late/y", 2.0, 3, 0.0)
        producer.close(timeout=30.0)
        producer.start()
    assert logs.scalars("late/y") == [(3, 2.0)]


def test_a_close_racing_the_start_of_the_sender_starts_it_once_and_sends_everything(tmp_path: Path) -> None:
    """The exit hook's close and rediscovery's start, released at once on two threads: neither
    raises, and every scalar logged before them lands."""
    rounds = 20
    errors: list[BaseException] = []

    def call(barrier: threading.Barrier, fn: Any) -> None:
        barrier.wait(10)
        try:
            fn()
        except BaseException as exc:  # the assertion below reports it
            errors.append(exc)

    with capture_logs(tmp_path / "log") as logs:
        info = _published_info()
        for step in range(rounds):
            producer = Producer(info, lambda _p: None)
            producer.put_scalar("race/x", float(step), step, 0.0)
            barrier = threading.Barrier(2)
            threads = [
                threading.Thread(target=call, args=(barrier, lambda p=producer: p.close(timeout=30.0))),
                threading.Thread(target=call, args=(barrier, producer.start)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sorted(logs.scalars("race/x")) == [(step, float(step)) for step in range(rounds)]
