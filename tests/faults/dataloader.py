"""Point 2, DataLoader workers: a dataset that logs, with ledgers kept by the OS as proof of each call."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import hyrax_tbhub

from faults.common import SAFETY_S


def ledger_write(folder: str, line: str) -> None:
    """Append ``line`` to this process's ledger: proof, kept by the OS, that a call returned."""
    path = os.path.join(folder, f"{os.getpid()}.ledger")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_ledgers(folder: str | os.PathLike[str]) -> dict[int, list[tuple[str, int]]]:
    """{pid: [(tag, step), ...]} of every ledger in ``folder``."""
    out: dict[int, list[tuple[str, int]]] = {}
    for entry in Path(folder).glob("*.ledger"):
        rows = []
        for line in entry.read_text().splitlines():
            tag, step = line.rsplit(" ", 1)
            rows.append((tag, int(step)))
        out[int(entry.stem)] = rows
    return out


class LoggingDataset:
    """Each item logs ``<prefix>`` = index at step index from whichever worker loads it.

    ``raise_index`` raises inside the worker; ``hang_index`` blocks the worker inside
    ``__getitem__`` (the DataLoader then terminates it at shutdown).
    """

    def __init__(
        self, n: int, prefix: str, ledger: str, raise_index: int | None = None, hang_index: int | None = None
    ) -> None:
        self.n = n
        self.prefix = prefix
        self.ledger = ledger
        self.raise_index = raise_index
        self.hang_index = hang_index

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if i == self.raise_index:
            raise ValueError(f"item {i} is broken")
        hyrax_tbhub.get_tensorboard_logger().add_scalar(self.prefix, float(i), i)
        ledger_write(self.ledger, f"{self.prefix} {i}")
        if i == self.hang_index:
            threading.Event().wait(SAFETY_S)  # stuck until the DataLoader terminates us
        return i


def worker_init_hang_at_exit(stuck_worker: int, worker_id: int) -> None:
    """worker_init_fn: worker ``stuck_worker`` starts a non-daemon thread, so it cannot exit."""
    if worker_id == stuck_worker:
        threading.Thread(target=threading.Event().wait, args=(SAFETY_S,), daemon=False).start()
