"""Where the hub's mechanisms meet: killed producers' ledgers, run counters, close and flushes.

Private mechanism tests (the store, the hub object, hand-made peers), each a defect found where
two features of one release met: a fix in one place broke the accounting of the other.

Mechanism test (it imports private modules on purpose): the hub object, its store and hand-made
peers (``_hub``, ``_wire``).
"""

from __future__ import annotations

import array
import fcntl
import os
import secrets
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from hyrax_tbhub import _wire
from hyrax_tbhub._hub import Hub
from hyrax_tbhub._hub.aggregate import AGGREGATE_RUN
from hyrax_tbhub._hub.peers import _LIVE
from hyrax_tbhub._hub.store import Store
from hyrax_tbhub.options import Options
from hyrax_tbhub.testing import RESERVED_PREFIX, dropped_tag, read_logs

pytestmark = pytest.mark.timeout(60)


def _wait_for(condition, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def test_drops_a_killed_producer_had_not_reported_reach_the_log(tmp_path: Path) -> None:
    """The ledger of a producer that died says it dropped 7; it had reported 3: the log says 7."""
    store = Store(str(tmp_path))
    run = store.open_run("w")
    store.write(run, [("d", 3)])
    store.tick(0.0)
    store.count_killed(run, (10, 7))
    store.end_run(run)
    store.close()
    counters = read_logs(tmp_path).counters
    assert counters[dropped_tag("w")] == 7
    assert counters[RESERVED_PREFIX + "producer_killed/w"] == 10


def test_a_before_close_step_interrupted_by_ctrl_c_still_closes_the_hub(tmp_path: Path) -> None:
    """Ctrl-C while rank 0 waits for the ranks' flush: the interrupt reaches the caller, and the
    hub is closed all the same (drained, counters written, thread gone)."""
    hub = Hub(str(tmp_path))
    hub.start(publish=False)

    def interrupted() -> None:
        raise KeyboardInterrupt

    hub.before_close(interrupted)
    with pytest.raises(KeyboardInterrupt):
        hub.close()
    assert hub._closed.is_set()
    assert not hub._thread.is_alive()


def test_a_flush_that_races_the_close_is_answered(tmp_path: Path) -> None:
    """A flush queued while the hub thread finishes (after its last drain) returns True at once
    instead of waiting out its timeout."""
    hub = Hub(str(tmp_path))
    hub.start(publish=False)
    entered, release = threading.Event(), threading.Event()
    store_close = hub.store.close

    def held_close() -> None:
        entered.set()
        release.wait(30)
        store_close()

    hub.store.close = held_close  # type: ignore[method-assign]
    closer = threading.Thread(target=hub.close)
    closer.start()
    assert entered.wait(30)
    result: list[bool] = []
    flusher = threading.Thread(target=lambda: result.append(hub.flush_local(20.0)))
    started = time.monotonic()
    flusher.start()
    _wait_for(lambda: len(hub._local) > 0, "the flush to be queued")
    release.set()
    flusher.join(30)
    closer.join(30)
    assert result == [True]
    assert time.monotonic() - started < 15.0  # answered by the close, not by its 20 s timeout


def test_a_flush_appended_after_the_close_handed_over_is_answered(tmp_path: Path) -> None:
    """The whole close (hub thread stopped, queue handed over) ran between the flush's look at the
    hub and its append: nothing will drain that flush, and everything logged before it was handed
    over, so it returns True instead of waiting out its timeout and saying False."""
    hub = Hub(str(tmp_path))
    hub.start(publish=False)
    hub.close()

    class ClosedJustAfterTheLook:
        looks = 0

        def is_set(self) -> bool:
            self.looks += 1
            return self.looks > 1

    hub._queue._closed = ClosedJustAfterTheLook()  # type: ignore[assignment]
    assert hub.flush_local(5.0) is True


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd")
def test_a_key_holder_sending_many_ledgers_leaves_no_descriptor_behind() -> None:
    """Only one ledger per producer is kept; any other descriptor it sends is closed at once."""
    with tempfile.TemporaryDirectory() as folder:
        hub = Hub(folder)
        hub.start(publish=False)
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(hub.address)
        challenge = b""
        while len(challenge) < _wire.CHALLENGE_LEN:
            challenge += sock.recv(_wire.CHALLENGE_LEN - len(challenge))
        sock.sendall(_wire.producer_answer(hub._key, challenge, secrets.token_bytes(_wire.NONCE_LEN)))
        proof = b""
        while len(proof) < _wire.PROOF_LEN:
            proof += sock.recv(_wire.PROOF_LEN - len(proof))
        _wait_for(lambda: any(c.state == _LIVE for c in hub._conns.values()), "the handshake")
        before = len(os.listdir("/proc/self/fd"))
        hello = _wire.pack_hello("leaky", os.getpid())
        for byte in hello[:-1]:
            fd = os.memfd_create("ledger", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            os.ftruncate(fd, 24)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
            sock.sendmsg([bytes([byte])], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
            os.close(fd)
        sock.sendall(hello[-1:])
        _wait_for(lambda: any(c.run is not None for c in hub._conns.values()), "the hello")
        # One ledger kept for the connection, whatever else arrived with the hello's bytes.
        assert len(os.listdir("/proc/self/fd")) <= before + 1
        sock.close()
        _wait_for(lambda: not hub._conns, "the connection to end")
        assert len(os.listdir("/proc/self/fd")) <= before
        hub.close()


if sys.platform != "linux":  # pragma: no cover
    pytestmark = [pytestmark, pytest.mark.skip(reason="Linux descriptors and memfd")]


def test_a_refused_run_s_name_is_never_given_again_and_its_killed_events_are_over_cap(
    tmp_path: Path,
) -> None:
    """Past max_runs a producer is refused: its name is still never given twice, and what its
    ledger says it lost is counted under over_cap, not under another run's producer_killed."""
    store = Store(str(tmp_path), Options(max_runs=1))
    first = store.open_run("x")
    refused = store.open_run("w")
    store.end_run(first)
    admitted = store.open_run("w")
    assert refused.refused and not admitted.refused
    assert admitted.name != refused.name
    over_before = store.guard.over_cap
    store.count_killed(refused, (5, 2))
    assert store.guard.over_cap == over_before + 7
    store.count_killed(admitted, (2, 0))
    assert store.tally.killed == {admitted.name: 2}
    store.close()


def test_the_aggregate_run_never_takes_a_producer_s_run(tmp_path: Path) -> None:
    """A producer named like the aggregate run keeps its run; the hub's aggregates get their own."""
    store = Store(str(tmp_path))
    producer = store.open_run(AGGREGATE_RUN)
    store.add_aggregate("loss*", 1.0)
    assert store.aggregator is not None
    own = store.own_run(AGGREGATE_RUN)
    assert own is not producer and own.name == f"{AGGREGATE_RUN}-2"
    assert store.own_run(AGGREGATE_RUN) is own
    store.close()


def test_two_threads_closing_the_logger_at_once_close_the_hub_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both closers read the hub before either cleared it (each waited for the process state's
    lock): the second closed it again and restored the hub-file variable a second time, which
    removed the outer hub's from the environment."""
    from hyrax_tbhub import close_tensorboard_logger, init_tensorboard_logger
    from hyrax_tbhub._discovery.hubfile import ENV_INFO
    from hyrax_tbhub._process.state import STATE

    real = STATE.lock
    waiting: list[int] = []

    class CountedLock:  # the process state's lock, saying who waits for it
        def __enter__(self) -> bool:
            waiting.append(threading.get_ident())
            return real.__enter__()

        def __exit__(self, *exc: object) -> None:
            real.__exit__(*exc)

    outer = str(tmp_path / "outer-hub.json")
    monkeypatch.setenv(ENV_INFO, outer)
    init_tensorboard_logger(log_dir=str(tmp_path / "log"))
    closers = [threading.Thread(target=close_tensorboard_logger) for _ in range(2)]
    monkeypatch.setattr(STATE, "lock", CountedLock())
    with real:
        for t in closers:
            t.start()
        _wait_for(lambda: {t.ident for t in closers} <= set(waiting), "both closers at the lock")
    for t in closers:
        t.join(30)
    assert not any(t.is_alive() for t in closers)
    assert os.environ.get(ENV_INFO) == outer
