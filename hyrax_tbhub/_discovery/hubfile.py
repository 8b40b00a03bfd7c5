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
import secrets
import socket
import stat
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._util.stderr import warn

__all__ = [
    "ENV_INFO",
    "ENV_RUNTIME_DIR",
    "GenerationWatch",
    "HubInfo",
    "bump_generation",
    "find_hub",
    "publish_for_descendants",
    "runtime_dir",
    "say_fallback_once",
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


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FALLBACKS = 64  # numbered fallback folders tried before a per-process one


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


def _private_dir(path: Path) -> str | None:
    """Make ``path`` a folder only this user can use; None if it is, else why it cannot be.

    Checked on an opened descriptor (``O_NOFOLLOW``: a link is refused, never followed), so
    nothing can swap the folder between the check and the fix. A folder of ours that others
    could write (a ``chmod 777``, a restored backup) is closed first and then emptied of
    everything we would not have made ourselves (links, other users' files, hard links): from
    the ``fchmod`` on, nobody else can add an entry, so what is left is ours.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        return f"cannot be made ({exc.strerror})"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC)
    except OSError:
        return "is a link or not a folder"
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):
            return "is not a folder"
        if st.st_uid != _uid():
            return f"belongs to uid {st.st_uid}"
        if stat.S_IMODE(st.st_mode) & 0o7077:
            os.fchmod(fd, 0o700)
            _purge(fd)
        return None
    except OSError as exc:
        return f"cannot be made private ({exc.strerror})"
    finally:
        os.close(fd)


def _purge(dir_fd: int) -> None:
    """Remove every entry of a folder others could write that we would not have made."""
    for entry in os.scandir(dir_fd):
        try:
            st = os.stat(entry.name, dir_fd=dir_fd, follow_symlinks=False)
            ours = st.st_uid == _uid() and (
                stat.S_ISSOCK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink == 1)
            )
            if ours:
                continue
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(entry.name, dir_fd=dir_fd)  # we never make folders here; an empty one goes
            else:
                os.unlink(entry.name, dir_fd=dir_fd)
        except OSError:
            pass  # a non-empty folder of another user's: we never open anything below it


_runtime_dir: Path | None = None
_fallback_note: str | None = None  # why the job's usual folder was not used: said once, by a hub
_fallback_said = False


def _temp_root() -> Path:
    # The temp folder as tempfile.gettempdir() would find it, but not through it: its first call
    # probes folders under a module lock, and a fork while another thread does that leaves the
    # lock held in the child, whose first log then hangs here.
    for var in ("TMPDIR", "TEMP", "TMP"):
        value = os.environ.get(var)
        if value and os.path.isdir(value):
            return Path(value)
    return Path("/tmp")


def runtime_dir() -> Path:
    """The private folder that holds hub files and sockets (created on first use).

    In order: ``$HYRAX_TBHUB_RUNTIME_DIR``, ``$XDG_RUNTIME_DIR/hyrax_tbhub``,
    ``<temp>/hyrax_tbhub-<uid>``. When one of those exists but is not this user's own (another
    user made it first, or it is a link), every process of the user falls back to the same
    place: the first of ``<temp>/hyrax_tbhub-<uid>-1``, ``-2``, ... that is (or can be made) its
    own and private, so processes started before the hub still find it.
    """
    global _runtime_dir, _fallback_note
    if _runtime_dir is not None:
        return _runtime_dir
    override = os.environ.get(ENV_RUNTIME_DIR)
    uid = _uid()
    temp = _temp_root()
    candidates: list[Path] = []
    if override:
        candidates.append(Path(override))
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        candidates.append(Path(xdg) / "hyrax_tbhub")
    candidates.append(temp / f"hyrax_tbhub-{uid}")
    candidates += [temp / f"hyrax_tbhub-{uid}-{n}" for n in range(1, _FALLBACKS + 1)]
    refused: list[str] = []
    for cand in candidates:
        # AF_UNIX paths are limited to ~104 bytes; leave room for "<pid>-<n>.sock".
        if len(str(cand)) >= 72:
            continue
        why = _private_dir(cand)
        if why is None:
            _runtime_dir = cand
            if refused:
                _fallback_note = f"{'; '.join(refused[:3])}: using {cand}"
            return cand
        refused.append(f"the runtime folder {cand} {why}")
    # Every place is taken by someone else: a fresh private folder of this process. Children
    # still find it through the environment; only the parent-pid lookup is lost.
    _runtime_dir = Path(tempfile.mkdtemp(prefix=f"hyrax_tbhub-{uid}-", dir=temp))
    _fallback_note = (f"{'; '.join(refused[:3])} (and {len(refused) - 3} more): using {_runtime_dir}, "
                      "which pool workers started before the hub cannot find")
    return _runtime_dir


def say_fallback_once() -> None:
    """Say on stderr, once per process, that the usual runtime folder was not usable (a hub
    calls this: one line per job, not one per worker)."""
    global _fallback_said
    if _fallback_note is not None and not _fallback_said:
        _fallback_said = True
        warn(f"hyrax_tbhub: {_fallback_note}")


def hub_file_for(pid: int) -> Path:
    return runtime_dir() / f"{pid}.json"


def write_hub_file(info: HubInfo) -> Path:
    """Atomically publish ``info`` as the hub file of its owner pid."""
    path = hub_file_for(info.owner_pid)
    _write_private(path, info)
    return path


def _write_private(path: Path, info: HubInfo) -> None:
    # A fresh name nobody can guess, created exclusively and never through a link, then renamed
    # over ``path`` (a rename replaces whatever is there, a link included, and follows nothing).
    # Named after the writer's pid, so that remove_stale_hub_files() finds it if we die here.
    tmp = path.with_name(f"{os.getpid()}.tmp.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(info), fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _own_private_file(fd: int) -> bool:
    """Is the opened file a regular file of ours, one name only, that nobody else may write?"""
    st = os.fstat(fd)
    return (stat.S_ISREG(st.st_mode) and st.st_uid == _uid() and st.st_nlink == 1
            and not stat.S_IMODE(st.st_mode) & 0o022)


def read_hub_file(path: str | os.PathLike[str]) -> HubInfo | None:
    """The hub file at ``path``; None unless it is this user's own file that only it may write
    (another user's file could send our events to their hub with a key of their choosing)."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "r") as fh:
            if not _own_private_file(fh.fileno()):
                return None
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
    """The generation word's file, ours and private, never reached through a link."""
    path = runtime_dir() / _GENERATION_FILE
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
        except FileExistsError:
            try:
                fd = os.open(path, os.O_RDWR | _NOFOLLOW | _CLOEXEC)
            except OSError:  # a link (ELOOP), or gone meanwhile
                _unlink_quietly(path)
                continue
        if not _own_private_file(fd):
            os.close(fd)
            _unlink_quietly(path)  # planted: replace it with one of ours
            continue
        if os.fstat(fd).st_size < 8:
            os.pwrite(fd, bytes(8), 0)
        return fd
    raise PermissionError(f"cannot make {path} a private file")


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


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
