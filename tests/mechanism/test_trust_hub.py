"""What a hub keeps for a long job and against a greedy key holder: open runs, run names.

A job's producers come and go (pool workers, DataLoader workers, short-lived children): the cap
on runs counts the runs open now, not every run the job ever had; what it refuses is counted per
event; and every run name is unique for the hub's whole life, so two processes (a pid the kernel
reused, a DataLoader worker id of another epoch) never share a run.

Mechanism test (it imports private modules on purpose): the hub's guard against a key holder
(``_hub.store.Store``, frames built with ``_wire`` and ``_events``) and the runtime folder's hub
files (``_discovery.hubfile``).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub import _wire
from hyrax_tbhub._discovery import hubfile
from hyrax_tbhub._events import encode_scalar_records
from hyrax_tbhub._hub.store import Store
from hyrax_tbhub.options import Options
from hyrax_tbhub.testing import OVER_CAP, ROOT_RUN, STRANGERS, read_logs

from wire_peers import authenticate, closed_by_peer, recv_exact

pytestmark = pytest.mark.timeout(120)

WALL = 1_700_000_000.0


def _records(tag: str, n: int) -> tuple[object, ...]:
    items = [("s", tag, float(step), step, WALL) for step in range(n)]
    return ("r", "", encode_scalar_records(items), n)


def _hub_info() -> hubfile.HubInfo:
    info = hubfile.read_hub_file(os.environ[hubfile.ENV_INFO])
    assert info is not None
    return info


def _read_frame(sock: socket.socket) -> bytes:
    (length,) = _wire._U32.unpack(recv_exact(sock, 4))
    return recv_exact(sock, length)


class _Peer:
    """A key holder driven by hand: connect, prove the key, say hello, log, say goodbye."""

    def __init__(self, info: hubfile.HubInfo, name: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(info.address)
        authenticate(self.sock, info.key)
        self.sock.sendall(_wire.pack_hello(name, 1))
        self.run = _wire.decode_hub_message(_read_frame(self.sock))[1]["run"]

    def log_and_leave(self, tag: str, events: int) -> None:
        for frame in _wire.pack_batch([_records(tag, events), ("b",)]):
            self.sock.sendall(frame)
        assert closed_by_peer(self.sock, 30)
        self.sock.close()


# -- the cap counts open runs -----------------------------------------------------------------------


def test_a_closed_run_frees_its_slot_in_the_store(tmp_path: Path) -> None:
    store = Store(str(tmp_path), Options(max_runs=2))
    for i in range(10):
        run = store.open_run(f"w{i}")
        assert not run.refused, f"run {i} refused though only one run is open at a time"
        store.write(run, [_records("x", 3)])
        store.end_run(run)
    store.close()
    logs = read_logs(tmp_path)
    assert sorted(logs.runs) == sorted([ROOT_RUN, *(f"w{i}" for i in range(10))])
    assert len(logs.scalars("x")) == 30
    assert logs.counters.get(OVER_CAP, 0) == 0


def test_a_refused_runs_events_are_counted_one_by_one_and_nothing_is_written(tmp_path: Path) -> None:
    store = Store(str(tmp_path), Options(max_runs=1))
    first = store.open_run("a")
    refused = store.open_run("b")
    assert refused.refused and not first.refused
    controls = store.write(refused, [_records("x", 7), ("s", "y", 1.0, 1, WALL), ("d", 4), ("f", 3), ("b",)])
    assert controls == [("f", 3), ("b",)], "a refused producer's flushes are still answered"
    store.end_run(refused)
    store.end_run(first)
    store.close()
    assert not (tmp_path / "b").exists()
    assert read_logs(tmp_path).counters[OVER_CAP] == 7 + 1 + 4


def _log_five(tag: str) -> None:
    hyrax_tbhub.get_tensorboard_logger()  # the name is the process's own
    for step in range(5):
        hyrax_tbhub.get_tensorboard_logger().add_scalar(tag, float(step), step)
    hyrax_tbhub.close_tensorboard_logger()


def test_forty_short_lived_producers_with_max_runs_20_all_land(logdir: Path) -> None:
    """40 processes one after another, 5 events each, under a cap of 20 runs: all 200 land."""
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir), options=Options(max_runs=20))
    ctx = multiprocessing.get_context("fork")
    for i in range(40):
        proc = ctx.Process(target=_log_five, args=("x",), name=f"worker-{i}")
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
    hyrax_tbhub.close_tensorboard_logger()
    logs = read_logs(logdir)
    assert len(logs.scalars("x")) == 200
    assert len([r for r in logs.runs if r != ROOT_RUN]) == 40
    assert logs.counters.get(OVER_CAP, 0) == 0


def test_over_the_cap_every_lost_event_is_counted(logdir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """30 producers open at once with max_runs=20: 20 x 5 events land, 10 x 5 are counted, and
    the refusal is said once."""
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir), options=Options(max_runs=20))
    info = _hub_info()
    peers = [_Peer(info, f"p{i}") for i in range(30)]
    for peer in peers:
        peer.log_and_leave("x", 5)
    hyrax_tbhub.close_tensorboard_logger()
    logs = read_logs(logdir)
    assert len(logs.scalars("x")) == 100
    assert logs.counters[OVER_CAP] == 50
    assert capfd.readouterr().err.count(OVER_CAP) == 1


# -- run names are unique for the hub's life -------------------------------------------------------


def test_a_name_is_never_given_twice_even_after_its_producer_left(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    names = []
    for _ in range(3):
        run = store.open_run("python-1234")  # a pid the kernel reused
        names.append(run.name)
        store.end_run(run)
    store.close()
    assert names == ["python-1234", "python-1234-2", "python-1234-3"]


def test_two_processes_of_one_name_write_two_runs(logdir: Path) -> None:
    """Two processes one after the other with the same name (a pid or a DataLoader worker id
    reused) keep their points apart: each run's steps stay its own."""
    hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
    ctx = multiprocessing.get_context("fork")
    for _ in range(2):
        proc = ctx.Process(target=_log_five, args=("x",), name="dataloader_worker_3")
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
    hyrax_tbhub.close_tensorboard_logger()
    logs = read_logs(logdir)
    assert sorted(r for r in logs.runs if r != ROOT_RUN) == ["dataloader_worker_3", "dataloader_worker_3-2"]
    for run in ("dataloader_worker_3", "dataloader_worker_3-2"):
        assert logs.scalars("x", run=run) == [(s, float(s)) for s in range(5)]


# -- the runtime folder as a hostile place ---------------------------------------------------------

_TESTS = Path(__file__).resolve().parent.parent  # tests/, where the job and its helpers live
_JOB = str(_TESTS / "trust_hub_job.py")
_OTHER_UID = 50_000 + os.getpid() % 5_000  # "another user": no account needed, only a number
needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                reason="simulating another user takes root (chown, setuid)")


def _job_env(**extra: str) -> dict[str, str]:
    unset = ("XDG_RUNTIME_DIR", "TMPDIR", "TEMP", "TMP", hubfile.ENV_RUNTIME_DIR, hubfile.ENV_INFO)
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PYTHONPATH"] = os.pathsep.join([str(_TESTS), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


@needs_root
def test_links_planted_in_a_world_writable_runtime_folder_are_never_followed(tmp_path: Path) -> None:
    """The user's own runtime folder, left 0777: another user plants links where the hub file,
    its temporary file and the generation word are written. The key reaches none of the links'
    targets, no other file of the user is written through, and the job logs as usual."""
    runtime = tmp_path / "rt"
    runtime.mkdir()
    runtime.chmod(0o777)
    loot = tmp_path / "loot"  # the other user's file, where the key would land
    loot.write_bytes(b"")
    os.chown(loot, _OTHER_UID, _OTHER_UID)
    loot.chmod(0o666)
    precious = tmp_path / "precious"  # another file of the victim's
    precious.write_bytes(b"precious" * 4)
    logdir = tmp_path / "log"
    proc = subprocess.Popen([sys.executable, _JOB, "victim", str(logdir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_job_env(**{hubfile.ENV_RUNTIME_DIR: str(runtime)}))
    try:
        assert proc.stdout is not None and proc.stdin is not None
        pid = int(proc.stdout.readline())
        for name, target in ((f"{pid}.json", loot), (f"{pid}.tmp{pid}", loot), ("generation", precious)):
            os.symlink(target, runtime / name)
            os.lchown(runtime / name, _OTHER_UID, _OTHER_UID)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == 0, err
    assert loot.read_bytes() == b"", "the key was written into the other user's file"
    assert precious.read_bytes() == b"precious" * 4, "the hub wrote through a planted link"
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
    assert not any(p.is_symlink() for p in runtime.iterdir())
    assert len(read_logs(logdir).scalars("x")) == 10


def test_a_hub_file_that_is_not_the_users_own_private_regular_file_is_not_read(tmp_path: Path) -> None:
    info = hubfile.HubInfo(address="x", authkey="00" * 32, start_ns=0, logdir="l", owner_pid=1, hub_id="h")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(dataclasses.asdict(info)))
    good.chmod(0o600)
    assert hubfile.read_hub_file(good) == info
    link = tmp_path / "link.json"
    link.symlink_to(good)
    assert hubfile.read_hub_file(link) is None, "a link is never followed"
    loose = tmp_path / "loose.json"
    loose.write_text(good.read_text())
    loose.chmod(0o622)
    assert hubfile.read_hub_file(loose) is None, "a file others may write is not trusted"
    if os.geteuid() == 0:
        theirs = tmp_path / "theirs.json"
        theirs.write_text(good.read_text())
        theirs.chmod(0o600)
        os.chown(theirs, _OTHER_UID, _OTHER_UID)
        assert hubfile.read_hub_file(theirs) is None, "another user's file is not trusted"


@needs_root
def test_a_runtime_folder_taken_by_another_user_gives_the_job_one_shared_fallback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The user's well-known folder is another user's: every process of the job (pool workers
    started before the owner's init included) finds the same fallback, all 80 events land, the
    fallback is said once, and no per-process folder is left behind."""
    import trust_hub_job

    victim = _OTHER_UID + 1
    tmp = Path("/tmp")  # where a user without TMPDIR looks; names carry the made-up uids only

    def victims_folders() -> set[Path]:  # the job's folders: other programs use /tmp too
        found = set()
        for path in tmp.iterdir():
            try:
                if path.name.startswith("hyrax_tbhub") and path.lstat().st_uid == victim:
                    found.add(path)
            except OSError:
                pass
        return found

    taken = tmp / f"hyrax_tbhub-{victim}"
    taken.mkdir(mode=0o700)
    os.chown(taken, _OTHER_UID, _OTHER_UID)
    work = Path(tempfile.mkdtemp(prefix="hublimits-victim-", dir=tmp))
    os.chown(work, victim, victim)
    logdir = work / "log"
    created: set[Path] = set()
    try:
        proc = multiprocessing.get_context("spawn").Process(
            target=trust_hub_job.pool_as, args=(victim, str(logdir)))
        proc.start()
        proc.join(90)
        assert proc.exitcode == 0
        created = victims_folders()
        assert len(read_logs(logdir).scalars("pool")) == 80
    finally:
        for path in [taken, work, *created]:
            shutil.rmtree(path, ignore_errors=True)
    assert len(created) == 1, f"one fallback for the whole job, not one per process: {sorted(created)}"
    assert capfd.readouterr().err.count("runtime folder") == 1


# -- a greedy key holder --------------------------------------------------------------------------


def _hold(info: hubfile.HubInfo, attempts: int, wait: float) -> tuple[list[socket.socket], int]:
    """A key holder opening connection after connection (each proves the key and says hello);
    returns the ones the hub kept and how many it refused. Stops at the first the hub leaves
    unanswered for ``wait`` seconds (it no longer accepts, or it is slow: the caller checks)."""
    held: list[socket.socket] = []
    refused = 0
    for i in range(attempts):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(wait)
        try:
            sock.connect(info.address)
            authenticate(sock, info.key)
            sock.sendall(_wire.pack_hello(f"greedy{i}", 1))
            _read_frame(sock)
        except TimeoutError:
            sock.close()
            break
        except OSError:  # ConnectionError included: closed by the hub
            sock.close()
            refused += 1
            continue
        held.append(sock)
    return held, refused


class _FdHub:
    """tests/trust_hub_job.py's ``fdhub``: a hub owner whose descriptor limit is ``limit``."""

    def __init__(self, logdir: Path, limit: int, options: dict[str, int]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, _JOB, "fdhub", str(logdir), str(limit), json.dumps(options)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=_job_env(**{hubfile.ENV_RUNTIME_DIR: str(hubfile.runtime_dir())}),
        )
        assert self.proc.stdout is not None
        info = hubfile.read_hub_file(self.proc.stdout.readline().strip())
        assert info is not None
        self.info = info

    def ask(self, command: str) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        if command == "close":
            assert self.proc.wait(60) == 0
            return {}
        return dict(json.loads(self.proc.stdout.readline()))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def test_a_greedy_key_holder_is_capped_and_leaves_the_owner_and_others_their_descriptors(
    logdir: Path,
) -> None:
    """One process opens connection after connection, with the hub's descriptor limit at 512:
    it gets at most ``max_peer_connections``, the owner's code can still open files, the hub
    does not spin on a listener it cannot serve, and another producer's 1,000 events land."""
    hub = _FdHub(logdir, 512, {"max_peer_connections": 64})
    try:
        held, refused = _hold(hub.info, 400, 60)
        assert len(held) <= 64 and refused >= 400 - 64 - 1
        owner = hub.ask("owner")
        assert owner["owner_opened"] == 64, "the owner's own code could not open a file"
        assert owner["accept_failures"] == 0
        hub.ask("start")
        assert hub.ask("join") == {"producer_exit": 0}
        for sock in held:
            sock.close()
        hub.ask("close")
    finally:
        hub.kill()
    logs = read_logs(logdir)
    assert len(logs.scalars("good")) == 1000
    assert logs.counters[STRANGERS] >= 400 - 64 - 1


def test_when_descriptors_run_low_the_hub_stops_accepting_and_starts_again_when_one_frees(
    logdir: Path,
) -> None:
    """Many key holders (here one without a per-peer cap) take every descriptor the hub may use:
    the hub stops accepting (no spinning on EMFILE), the owner keeps its reserve, and a producer
    that connects meanwhile is served once connections close."""
    hub = _FdHub(logdir, 512, {"max_peer_connections": 100_000})
    try:
        held: list[socket.socket] = []
        for _ in range(10):  # a hub slowed by a loaded machine may look paused: ask it
            held += _hold(hub.info, 600 - len(held), 5)[0]
            owner = hub.ask("owner")
            if owner["listening"] is not True:
                break
        assert owner["owner_opened"] == 64, "the owner's own code could not open a file"
        assert owner["listening"] is False, "the hub still listens with no descriptor to spare"
        assert owner["accept_failures"] == 0
        hub.ask("start")
        for sock in held:
            sock.close()
        assert hub.ask("join") == {"producer_exit": 0}
        hub.ask("close")
    finally:
        hub.kill()
    assert len(read_logs(logdir).scalars("good")) == 1000
