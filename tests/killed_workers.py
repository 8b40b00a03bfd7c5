"""Workers for tests/test_killed_producers.py: log flat out until an engine kills them.

Each worker counts its calls in a small file of its own (mapped, so the count survives a
SIGKILL): word 0 before each logging call, word 1 after it returned, word 2 once its producer
finished the handshake (the hub holds its ledger from then on; a kill before that is the window
docs/how-it-works.md names). Whatever the kill cut, the
events this worker logged are between the two, and the test checks that the log holds exactly
that many, on disk or counted as lost.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from pathlib import Path

import hyrax_tbhub
from hyrax_tbhub._process.state import STATE

TAG = "killed/value"
SAFETY_S = 120.0  # a worker nobody killed gives up after this long
_WORDS = struct.Struct("=QQQ")


def log_until_killed(counts_dir: str, *_ignored: object) -> int:
    """Log ``TAG`` flat out, counting calls in ``<counts_dir>/<pid>``, until killed."""
    path = Path(counts_dir) / str(os.getpid())
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, _WORDS.size)
    words = memoryview(mmap.mmap(fd, _WORDS.size)).cast("Q")
    os.close(fd)
    logger = hyrax_tbhub.get_tensorboard_logger()
    deadline = time.monotonic() + SAFETY_S
    i = int(words[0])  # a pool worker running a second task goes on counting
    while time.monotonic() < deadline:
        words[0] = i + 1
        logger.add_scalar(TAG, float(i), i)
        i += 1
        words[1] = i
        if not words[2] and not i & 255:
            words[2] = _connected()
    return i


def _connected() -> int:
    producer = STATE.channel
    return int(getattr(producer, "run_name", None) is not None)


def fail_when_others_logged(counts_dir: str, at_least: int) -> None:
    """Raise once every other worker of the pool logged ``at_least`` events (joblib's abort)."""
    deadline = time.monotonic() + SAFETY_S
    while time.monotonic() < deadline:
        counts = read_counts(counts_dir)
        if len(counts) >= 2 and all(r >= at_least and ok for _s, r, ok in counts.values()):
            raise RuntimeError("a task fails: the engine aborts the others")
        time.sleep(0.01)  # polls the workers' counts, the condition itself
    raise TimeoutError("the other workers never logged")


def read_counts(counts_dir: str) -> dict[int, tuple[int, int, int]]:
    """{pid: (calls started, calls returned, connected)} of every worker that counted in ``counts_dir``."""
    counts: dict[int, tuple[int, int]] = {}
    for path in Path(counts_dir).iterdir():
        raw = path.read_bytes()
        if path.name.isdigit() and len(raw) == _WORDS.size:
            counts[int(path.name)] = _WORDS.unpack(raw)
    return counts
