"""A call made after the owner switched hubs reaches the new hub, however late the old sender is.

The owner's ``close_tensorboard_logger()`` returns once every producer's goodbye is read, so a
producer can be told "a new hub is open" while its old sender thread has sent that goodbye and
not yet run again. A call made then must go to the new hub: it happens after the new hub exists.
The test holds the old sender right after its final batch (goodbye included) while the producer
logs, which makes that window as wide as a loaded machine can make it.

Mechanism test (it imports private modules on purpose): ``Producer._send_queued``, wrapped in the
child so that the final round blocks once it has been sent.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import hyrax_tbhub
from hyrax_tbhub._producer import Producer
from hyrax_tbhub.testing import read_logs

from faults import common

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and Unix sockets"),
]


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch):
    yield from common.private_runtime(monkeypatch)


def _follow_with_the_goodbye_held(ready: Any, told: Any, result: str) -> None:
    held, release = threading.Event(), threading.Event()
    send_queued = Producer._send_queued

    def send_then_hold(self: Producer, link: Any, final: bool) -> None:
        send_queued(self, link, final)
        if final and not held.is_set():
            held.set()
            release.wait(30)

    Producer._send_queued = send_then_hold  # type: ignore[method-assign]
    w = hyrax_tbhub.get_tensorboard_logger()
    w.add_scalar("phase/a", 1.0, 0)
    first = w.flush(30)
    ready.send("a done")
    told.poll(60)
    told.recv()
    was_held = held.wait(30)  # the old sender sent its goodbye and is held: the window is open
    w.add_scalar("phase/b", 2.0, 0)
    release.set()
    second = w.flush(30)
    Path(result).write_text(json.dumps({"first": first, "held": was_held, "second": second}))


def test_a_call_after_the_switch_reaches_the_new_hub_while_the_old_sender_lags(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(first))
    ctx = mp.get_context("fork")
    ready_r, ready_w = ctx.Pipe(duplex=False)
    told_r, told_w = ctx.Pipe(duplex=False)
    result = tmp_path / "result.json"
    p = ctx.Process(target=_follow_with_the_goodbye_held, args=(ready_w, told_r, str(result)))
    p.start()
    try:
        assert ready_r.poll(60) and ready_r.recv() == "a done"
        hyrax_tbhub.close_tensorboard_logger()  # returns once the producer's goodbye is read
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(second))
        told_w.send("b")
        p.join(60)
        assert p.exitcode == 0
    finally:
        if p.is_alive():
            p.kill()
            p.join(10)
        hyrax_tbhub.close_tensorboard_logger()
    rep = json.loads(result.read_text())
    assert rep == {"first": True, "held": True, "second": True}, rep
    assert read_logs(first).scalars("phase/a") == [(0, 1.0)]
    assert read_logs(second).scalars("phase/b") == [(0, 2.0)]
