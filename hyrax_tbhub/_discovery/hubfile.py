"""How a process finds the hub of its process tree with nothing handed to it.

The owner writes a small JSON *hub file* (address, key, clock origin) into a private runtime
folder, named after its pid, and points ``HYRAX_TBHUB_INFO`` at it. A descendant looks, in order:

1. at ``HYRAX_TBHUB_INFO``: inherited by fork, spawn and ``subprocess`` children;
2. at the hub file of its logical parent (``multiprocessing.parent_process()`` of stdlib and of
   ``multiprocess``) and of its OS parent. This covers forkserver children whose server was
   started before the hub existed (such a server never sees environment changes made after it started)
   and pool workers started before ``init_tensorboard_logger``.

The folder is 0700 and the file 0600, so other users of the machine can neither read the key nor
reach the socket next to it.
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import stat
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_INFO",
    "ENV_RUNTIME_DIR",
    "GenerationWatch",
    "HubInfo",
    "bump_generation",
    "find_hub",
    "publish_for_descendants",
    "runtime_dir",
    "withdraw_published",
    "write_hub_file",
]

ENV_INFO = "HYRAX_TBHUB_INFO"
ENV_RUNTIME_DIR = "HYRAX_TBHUB_RUNTIME_DIR"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class HubInfo:
    """What a producer needs to reach a hub; the content of a hub file."""

    address: str
    authkey: str  # hex
    start_ns: int  # time.monotonic_ns() when the hub started: the origin of *_ts steps
    logdir: str
    owner_pid: int
    hub_id: str
    version: int = _FORMAT_VERSION
    start_wall_ns: int = 0  # time.time_ns() when the hub started: the *_ts origin on other hosts
    hostname: str = ""
    # Published by serve_ranks(): ranks that see ``logdir`` run hubs of their own (_process/rank_hub.py).
    rank_hubs: bool = False
    # Options.to_wire() of the hub: every producer of this hub uses the hub's options.
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> bytes:
        return bytes.fromhex(self.authkey)


def _secure_dir(path: Path) -> bool:
    """Create ``path`` as a 0700 folder we own, or say it cannot be trusted."""
    try:
        path.mkdir(mode=0o700, parents=False, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        return False
    if stat.S_IMODE(st.st_mode) & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError:
            return False
    return True


_runtime_dir: Path | None = None


def runtime_dir() -> Path:
    """The private folder that holds hub files and sockets (created on first use)."""
    global _runtime_dir
    if _runtime_dir is not None:
        return _runtime_dir
    override = os.environ.get(ENV_RUNTIME_DIR)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    candidates: list[Path] = []
    if override:
        candidates.append(Path(override))
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        candidates.append(Path(xdg) / "hyrax_tbhub")
    # The temp folder as tempfile.gettempdir() would find it, but not through it: its first call
    # probes folders under a module lock, and a fork while another thread does that leaves the
    # lock held in the child, whose first log then hangs here (seen in a randomised fork test).
    for var in ("TMPDIR", "TEMP", "TMP"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]) / f"hyrax_tbhub-{uid}")
            break
    candidates.append(Path("/tmp") / f"hyrax_tbhub-{uid}")
    for cand in candidates:
        # AF_UNIX paths are limited to ~104 bytes; leave room for "<pid>-<n>.sock".
        if len(str(cand)) < 72 and _secure_dir(cand):
            _runtime_dir = cand
            return cand
    # Every well-known place is taken by someone else: fall back to a fresh private folder.
    # Children still find it through the environment, only the parent-pid lookup is lost.
    _runtime_dir = Path(tempfile.mkdtemp(prefix="hyrax_tbhub-"))
    return _runtime_dir


def hub_file_for(pid: int) -> Path:
    return runtime_dir() / f"{pid}.json"


def write_hub_file(info: HubInfo) -> Path:
    """Atomically publish ``info`` as the hub file of its owner pid."""
    path = hub_file_for(info.owner_pid)
    _write_private(path, info)
    return path


def _write_private(path: Path, info: HubInfo) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(info), fh)
    os.replace(tmp, path)


def read_hub_file(path: str | os.PathLike[str]) -> HubInfo | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
        if data.get("version") != _FORMAT_VERSION:
            return None
        return HubInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


def _parent_pids() -> list[int]:
    pids: list[int] = []
    for modname in ("multiprocessing", "multiprocess"):
        mod = sys.modules.get(modname)
        if mod is None:
            continue
        try:
            parent = mod.parent_process()
        except Exception:
            parent = None
        if parent is not None and parent.pid is not None:
            pids.append(parent.pid)
    if hasattr(os, "getppid"):
        pids.append(os.getppid())
    return list(dict.fromkeys(pids))  # unique, in order


def find_hub() -> tuple[HubInfo, str] | None:
    """Look for a hub this process should log to; return it with the path it came from."""
    candidates: list[str] = []
    env = os.environ.get(ENV_INFO)
    if env:
        candidates.append(env)
    try:
        candidates.extend(str(hub_file_for(pid)) for pid in _parent_pids())
    except OSError:
        pass
    for cand in candidates:
        info = read_hub_file(cand)
        if info is not None and not _is_own_hub(info):
            return info, cand
    return None


def _is_own_hub(info: HubInfo) -> bool:
    # A hub file a producer republished may name a hub on another machine, whose owner pid
    # can be any number here.
    if info.owner_pid != os.getpid():
        return False
    return not info.hostname or info.hostname == socket.gethostname()


# What this process published for its descendants: (pid, hub file, previous HYRAX_TBHUB_INFO).
_published: tuple[int, Path, str | None] | None = None


def publish_for_descendants(info: HubInfo, found_at: str | None) -> None:
    """Make the hub a producer found reachable for the descendants it starts from now on.

    The owner's descendants inherit ``HYRAX_TBHUB_INFO`` or read the owner's hub file. A producer
    that found its hub another way (a rank through the process-group store; a forkserver child
    through its parent's hub file) has nothing its own children could inherit: it publishes the
    same route as the owner does, a hub file for its own pid (0600, holding the key, in the
    0700 runtime folder) and the environment variable. Never raises.
    """
    global _published
    if found_at is not None and os.environ.get(ENV_INFO) == found_at:
        return  # inherited already: every descendant inherits it too
    try:
        republished = HubInfo(**{**asdict(info), "version": _FORMAT_VERSION})
        withdraw_published()
        remove_stale_hub_files()  # files of producers that were killed on this machine
        path = hub_file_for(os.getpid())
        _write_private(path, republished)
        _published = (os.getpid(), path, os.environ.get(ENV_INFO))
        os.environ[ENV_INFO] = str(path)
        bump_generation()  # children started earlier (pools) look again and find the file
    except Exception:
        pass


def withdraw_published() -> None:
    """Remove what :func:`publish_for_descendants` published in this process (never raises)."""
    global _published
    published = _published
    if published is None or published[0] != os.getpid():
        return  # nothing, or a forked child's copy of its parent's record: not ours to remove
    _published = None
    pid, path, previous = published
    try:
        path.unlink()
    except OSError:
        pass
    if os.environ.get(ENV_INFO) == str(path):
        if previous is None:
            os.environ.pop(ENV_INFO, None)
        else:
            os.environ[ENV_INFO] = previous


def remove_stale_hub_files() -> None:
    """Remove hub files and sockets left by owners that were killed (their pid is gone)."""
    try:
        entries = list(runtime_dir().iterdir())
    except OSError:
        return
    for entry in entries:
        stem = entry.name.split(".", 1)[0].split("-", 1)[0]
        if not stem.isdigit():
            continue
        pid = int(stem)
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            entry.unlink()
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


_GENERATION_FILE = "generation"


def _open_generation() -> int:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(runtime_dir() / _GENERATION_FILE, flags, 0o600)
    if os.fstat(fd).st_size < 8:
        os.pwrite(fd, bytes(8), 0)
    return fd


def bump_generation() -> None:
    """Tell every waiting process of this user that a hub started (they look again)."""
    try:
        fd = _open_generation()
        try:
            (current,) = struct.unpack("=Q", os.pread(fd, 8, 0))
            # Two hubs bumping at once may both write current + 1: either way it changed.
            os.pwrite(fd, struct.pack("=Q", (current + 1) & (2**64 - 1)), 0)
        finally:
            os.close(fd)
    except (OSError, struct.error):
        pass


class GenerationWatch:
    """Answers "did any hub start since I last looked?" by comparing 8 mapped bytes.

    A process started before its ancestor's hub (a pool worker, a forkserver child) must find
    the hub as soon as it exists, or it drops what it logs meanwhile; reading a shared page on
    each call costs ~15 ns, where looking for hub files costs microseconds.
    """

    __slots__ = ("_mm", "view", "word", "seen", "on_seen")

    def __init__(self) -> None:
        fd = _open_generation()
        try:
            self._mm = mmap.mmap(fd, 8, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        #: The shared word as a one-item array: ``view[0]``.
        self.view = memoryview(self._mm).cast("Q")
        #: The same word as a 0-dimensional view: ``word[()]`` is the cheapest read of it in
        #: Python (no index to convert), for callers on a hot path that compare it to ``seen``.
        self.word = self.view.cast("B").cast("Q", shape=[])
        # Nothing seen yet: every caller looks (and waits for the look in progress) until the
        # look that created this watch has published what it found (see ``_process.connect.rediscover``).
        self.seen: int = -1
        #: Called with this watch after each change of ``seen``, by the thread that changed it:
        #: the handle's fast path keeps a copy of ``seen`` in a module global.
        self.on_seen: Callable[[GenerationWatch], None] | None = None

    def _set_seen(self, value: int) -> None:
        self.seen = value
        hook = self.on_seen
        if hook is not None:
            hook(self)

    def poke(self) -> None:
        """Make the next check report a change (a hub was seen elsewhere: look again)."""
        self._set_seen(-1)

    def changed(self) -> bool:
        """True when a hub started since the last ``settle``."""
        return bool(self.word[()] != self.seen)

    def current(self) -> int:
        return int(self.word[()])

    def settle(self, generation: int) -> None:
        """Record that the look which read ``generation`` (before looking) has been published."""
        self._set_seen(generation)
