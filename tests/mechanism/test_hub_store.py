"""The hub's store on its own: no sockets, no threads, no hub; a folder, batches in, logs read back.

Each test drives :class:`hyrax_tbhub._hub.store.Store` as the hub thread does (open a run, write
batches, hand them to the OS, tick, close) and reads the folder with the project's reader.

Mechanism test (it imports private modules on purpose): ``_hub.store.Store`` on its own, fed with
``_events`` encodings.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hyrax_tbhub import Options
from hyrax_tbhub._counters import DROPPED, ERRORS, INTERNAL_ERRORS, OVER_CAP, TRANSPORT_ERRORS
from hyrax_tbhub._events import encode_scalar_records, encode_text_event
from hyrax_tbhub._hub.aggregate import AGGREGATE_RUN
from hyrax_tbhub._hub.store import Store
from hyrax_tbhub.testing import read_logs

WALL = 1_700_000_000.0


def scalars(tag: str, n: int, first: int = 0) -> list[tuple[object, ...]]:
    return [("s", tag, float(step), step, WALL) for step in range(first, first + n)]


def records(subrun: str, tag: str, n: int, first: int = 0) -> tuple[object, ...]:
    """A producer's ``("r", subrun, framed records, count)`` item, as it arrives off the wire."""
    return ("r", subrun, encode_scalar_records(scalars(tag, n, first)), n)


def event_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if "tfevents" in p.name)


def test_a_runs_records_land_in_its_own_folder_in_order(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    run = store.open_run("worker")
    assert run is not None and run.name == "worker"
    store.write(run, [*scalars("loss", 3), records("", "loss", 2, first=3),
                      ("e", "", encode_text_event("note", "hi", 5, WALL))])
    store.end_run(run)
    store.close()
    logs = read_logs(tmp_path)
    assert logs.runs == [".", "worker"]
    assert logs.scalars("loss", run="worker") == [(s, float(s)) for s in range(5)]
    assert logs.texts("note", run="worker") == [(5, "hi")]
    assert logs.entries == logs.select(run="worker"), "the owner's root run holds no data"
    assert (logs.dropped, logs.errors, logs.problems) == (0, 0, [])


def test_written_records_are_on_disk_before_close_and_flushes_come_back(tmp_path: Path) -> None:
    """``write`` returns the flush and bye items for the caller, and ``write_pending`` is what
    makes everything before them readable (an ack means it was called)."""
    store = Store(str(tmp_path))
    run = store.open_run("worker")
    assert run is not None
    controls = store.write(run, [*scalars("x", 4), ("f", 7), *scalars("x", 2, first=4), ("b",)])
    assert controls == [("f", 7), ("b",)]
    assert read_logs(tmp_path).scalars("x") == [], "nothing reaches the OS before write_pending"
    store.write_pending()
    assert read_logs(tmp_path).scalars("x", run="worker") == [(s, float(s)) for s in range(6)]
    store.close()


def test_sub_runs_are_folders_below_their_run_and_cannot_leave_it(tmp_path: Path) -> None:
    log = tmp_path / "log"
    store = Store(str(log))
    run = store.open_run("worker")
    assert run is not None
    store.write(run, [records("train", "acc", 3), records("../../escape", "acc", 2), records("/", "acc", 1)])
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]
    logs = read_logs(log)
    assert logs.runs == [".", "worker/_", "worker/escape", "worker/train"]
    assert len(logs.scalars("acc", run="worker/train")) == 3
    assert len(logs.scalars("acc", run="worker/escape")) == 2


def test_sub_runs_past_max_subruns_are_counted_over_cap_not_written(tmp_path: Path) -> None:
    store = Store(str(tmp_path), Options(max_subruns=2))
    run = store.open_run("worker")
    assert run is not None
    batch = [records("a", "t", 5), records("b", "t", 6), records("c", "t", 7), records("a", "t", 1)]
    kept = store.admit(run, batch)
    assert [item[1] for item in kept] == ["a", "b", "a"]
    store.write(run, kept)
    assert [item[1] for item in store.admit(run, [records("d", "t", 4)])] == []
    store.close()
    logs = read_logs(tmp_path)
    assert logs.runs == [".", "worker/a", "worker/b"]
    assert logs.counters[OVER_CAP] == 7 + 4


def test_runs_past_max_runs_open_are_refused_and_counted_and_a_closed_run_frees_its_slot(
    tmp_path: Path,
) -> None:
    store = Store(str(tmp_path), Options(max_runs=2))
    first, second = store.open_run("a"), store.open_run("b")
    assert not first.refused and not second.refused
    third = store.open_run("c")
    assert third.refused
    store.write(third, scalars("x", 3))
    store.write(first, scalars("x", 1))
    store.end_run(first)
    again = store.open_run("a")  # a later producer of a name the hub had: a run of its own
    assert not again.refused and again.name == "a-2"
    store.write(again, scalars("x", 1))
    store.close()
    logs = read_logs(tmp_path)
    assert logs.counters[OVER_CAP] == 3
    assert not (tmp_path / "c").exists()
    assert len(event_files(tmp_path / "a")) == 1 and len(event_files(tmp_path / "a-2")) == 1


def test_names_are_cleaned_and_unique_for_the_life_of_the_hub(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "log"))
    names = []
    for requested in ("worker", "worker", "../up", "hyrax_tbhub", "rank_3/worker", ""):
        run = store.open_run(requested)
        assert run is not None
        names.append(run.name)
        assert Path(run.folder).resolve().is_relative_to((tmp_path / "log").resolve())
    assert names == ["worker", "worker-2", "_up", "producer", "rank_3/worker", "producer-2"]
    spare = store.open_run("spare")
    assert spare is not None
    store.end_run(spare)
    again = store.open_run("spare")
    assert again.name == "spare-2", "a name is never given twice, even once its producer left"
    store.close()


def test_a_store_keeps_nothing_of_closed_runs(tmp_path: Path) -> None:
    """A long job opens and closes a run per worker process (a fork Pool every epoch): the
    store's memory does not grow with the runs it has closed."""
    import tracemalloc

    store = Store(str(tmp_path))

    def worker_runs(first: int, count: int) -> None:
        for i in range(first, first + count):
            run = store.open_run(f"ForkPoolWorker-{i}")
            store.write(run, scalars("x", 1))
            store.write_pending()
            store.end_run(run)
            again = store.open_run("dataloader_worker_0")  # one name given again and again
            store.write(again, scalars("x", 1))
            store.write_pending()
            store.end_run(again)

    worker_runs(0, 200)  # warm: caches, the first suffixes
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        worker_runs(200, 2000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    store.close()
    # 0.4.0 kept ~355 B per closed run (~1.4 MB for these 4,000); the names are in a fixed-size filter made
    # with the store, and what is left is allocator noise.
    assert grown < 32_000, grown


def test_the_aggregate_run_name_is_taken_from_producers(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    store.add_aggregate("x/*", 1.0)
    run = store.open_run(AGGREGATE_RUN)
    assert run is not None and run.name == AGGREGATE_RUN + "-2"
    store.close()


def test_a_bug_in_the_aggregates_is_an_internal_error_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """An exception while aggregating is counted under internal_errors and said once, as the
    hub's other bugs are; the events themselves still land (seen: counted nowhere)."""
    store = Store(str(tmp_path))
    store.add_aggregate("x/*", 1.0)
    assert store.aggregator is not None

    def broken(*args: object) -> None:
        raise RuntimeError("a bug in the aggregates")

    monkeypatch.setattr(store.aggregator, "_take", broken)
    run = store.open_run("worker")
    assert run is not None
    store.write(run, [records("", "x/t", 3)])
    store.close()
    logs = read_logs(tmp_path)
    assert len(logs.scalars("x/t", run="worker")) == 3
    assert logs.counters[INTERNAL_ERRORS] >= 1
    assert "a bug in the aggregates" in capfd.readouterr().err


def test_dropped_and_errors_are_written_to_the_root_run(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A producer's drop count (a running total: never lowered) and the events the hub could
    not write, per run; the other events of a bad batch are kept; each said once on stderr."""
    store = Store(str(tmp_path))
    run = store.open_run("worker")
    assert run is not None
    bad_scalar = ("s", "loss", "not a number", 2, WALL)
    store.write(run, [("d", 5), *scalars("loss", 2), bad_scalar, *scalars("loss", 2, first=3), ("d", 3)])
    store.write(run, [("?", "an item kind nobody knows")])
    store.close()
    logs = read_logs(tmp_path)
    assert logs.scalars("loss", run="worker") == [(0, 0.0), (1, 1.0), (3, 3.0), (4, 4.0)]
    assert logs.counters[DROPPED + "worker"] == 5
    assert logs.counters[ERRORS + "worker"] == 2
    assert DROPPED + "root" not in logs.counters, "a run with nothing to say writes no counter"
    err = capfd.readouterr().err
    assert err.count("could not be written") == 1 and err.count("dropped 5 events") == 1, err


def test_counters_are_written_at_most_once_a_second_and_at_close(tmp_path: Path) -> None:
    store = Store(str(tmp_path))

    def written() -> dict[str, float]:
        store.write_pending()
        return read_logs(tmp_path).counters

    store.count_transport_error("a producer vanished mid-batch")
    store.tick(100.0)
    assert written() == {TRANSPORT_ERRORS: 1}
    store.count_transport_error("again")
    store.tick(100.5)
    assert written() == {TRANSPORT_ERRORS: 1}, "not again within the second"
    store.tick(101.0)
    assert written() == {TRANSPORT_ERRORS: 2}
    store.count_internal_error(RuntimeError("a bug"))
    store.close()
    assert read_logs(tmp_path).counters == {TRANSPORT_ERRORS: 2, INTERNAL_ERRORS: 1}


def test_a_folder_that_cannot_be_created_counts_each_event_as_an_error(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file, not a folder")
    store = Store(str(tmp_path))
    run = store.open_run("blocked")
    assert run is not None
    store.write(run, [records("", "x", 4), *scalars("x", 3)])
    fine = store.open_run("fine")
    assert fine is not None
    store.write(fine, scalars("y", 2))
    store.close()
    logs = read_logs(tmp_path)
    assert logs.counters[ERRORS + "blocked"] == 4 + 3
    assert len(logs.scalars("y", run="fine")) == 2


def test_a_ranks_root_run_is_its_folder_and_its_counters_say_whose(tmp_path: Path) -> None:
    """The hub of one rank of a job (_rank_hub.py): the owner's run is ``logdir/rank_<n>``, named
    ``rank_<n>`` in the counters it writes there; producers' runs stay below ``logdir``."""
    root = tmp_path / "rank_3"
    store = Store(str(tmp_path), root_folder=str(root))
    store.write(store.root, [*scalars("x", 2), ("s", "x", "bad", 2, WALL)])
    worker = store.open_run("rank_3/dataloader_worker_0")
    assert worker is not None
    store.write(worker, scalars("y", 1))
    store.close()
    assert read_logs(root).counters == {DROPPED + "rank_3": 0, ERRORS + "rank_3": 1}
    logs = read_logs(tmp_path)
    assert logs.runs == ["rank_3", "rank_3/dataloader_worker_0"]
    assert logs.scalars("x", run="rank_3") == [(0, 0.0), (1, 1.0)]
    assert logs.scalars("y", run="rank_3/dataloader_worker_0") == [(0, 0.0)]
    assert not event_files(tmp_path)


def test_after_fork_the_child_abandons_what_the_parent_had_pending(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    run = store.open_run("worker")
    assert run is not None
    store.write(run, scalars("x", 3))
    store.abandon()
    store.close()  # nothing left to write, nor a descriptor to write it with
    assert read_logs(tmp_path).scalars("x") == []
    assert all(os.path.getsize(f) == 0 for f in event_files(tmp_path / "worker"))
