"""Many machines: every descendant of every rank logs, under ``rank_<n>/<name>``.

A rank started by a launcher is no descendant of the owner: it finds the hub through the
process-group store, and its own children (DataLoader workers, spawn children, subprocesses)
must find it through what the rank publishes. The torchrun tests run a real 2 nodes x 2 ranks
job, once with both "nodes" on loopback and once in two network namespaces joined by a veth pair.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import hyrax_tbhub
from hyrax_tbhub.testing import RESERVED_PREFIX, CapturedLogs, read_logs

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

pytestmark = [pytest.mark.torch]

HERE = Path(__file__).resolve().parent
JOB = HERE / "multihost_job.py"
ROOT = Path(hyrax_tbhub.__file__).resolve().parent.parent


def _env(runtime: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HYRAX_TBHUB") and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["HYRAX_TBHUB_RUNTIME_DIR"] = str(runtime)  # as if on another machine
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
    return env


def check_rank(logs: CapturedLogs, rank: int, run: str, scalars: int, items: int, child_events: int,
               context: str = "spawn") -> None:
    """Every event of rank ``rank`` (own run ``run``) and of each of its descendants arrived."""
    assert logs.scalars("job/value", run=run) == [(s, float(rank * 100_000 + s)) for s in range(scalars)]
    assert len(logs.select("job/hist", run=run, kind="histogram")) == 1
    prefix = f"rank_{rank}/"
    workers = sorted(r for r in logs.runs if r.startswith(prefix + "dataloader_worker_"))
    assert workers == [prefix + "dataloader_worker_0", prefix + "dataloader_worker_1"], logs.runs
    got = sorted(step for w in workers for step, _ in logs.scalars("data/item", run=w))
    assert got == list(range(items))
    reads = [v for w in workers for _, v in logs.scalars("data/read_s", run=w)]
    assert len(reads) == items and all(0 <= v < 60 for v in reads)
    children = [r for r in logs.runs if r.startswith(prefix + context.capitalize() + "Process-")]
    assert len(children) == 1, logs.runs
    assert [s for s, _ in logs.scalars("job/child", run=children[0])] == list(range(child_events))
    subs = [r for r in logs.runs if r.startswith(prefix + "python-")]
    assert len(subs) == 1, logs.runs
    assert len(logs.scalars("job/subprocess", run=subs[0])) == 1


@pytest.mark.timeout(300)
@pytest.mark.parametrize("context", ["spawn", "fork"])
@pytest.mark.parametrize("rank_hubs", ["off", "auto"])
def test_descendants_of_a_rank_that_found_the_hub_in_the_store_log(
        logdir: Path, tmp_path: Path, rank_hubs: str, context: str) -> None:
    """Rank 1 (own runtime folder, no hub of its own) and its DataLoader workers, child process
    and subprocess all log; every event lands under rank_1 and rank_1/<name>. A forked child
    inherits an initialised process group, yet is named below the rank, not as the rank."""
    rendezvous = "file://" + str(tmp_path / "store")
    rank1 = subprocess.Popen(
        [sys.executable, str(JOB), "--logdir", str(logdir), "--init-method", rendezvous, "--rank", "1",
         "--world-size", "2", "--scalars", "200", "--items", "6", "--rank-hubs", rank_hubs,
         "--context", context],
        env=_env(tmp_path / "rt-node1"))
    try:
        dist.init_process_group("gloo", init_method=rendezvous, rank=0, world_size=2)
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
        hyrax_tbhub.serve_ranks(host="127.0.0.1", rank_hubs=None if rank_hubs == "auto" else False)
        dist.barrier()  # served
        dist.barrier()  # rank 1 and its descendants have logged and rank 1 closed
        hyrax_tbhub.close_tensorboard_logger()
        dist.barrier()
        dist.destroy_process_group()
        assert rank1.wait(120) == 0
    finally:
        if rank1.poll() is None:
            rank1.kill()
            rank1.wait(10)
        if dist.is_initialized():
            dist.destroy_process_group()
    logs = read_logs(logdir)
    check_rank(logs, 1, "rank_1", 200, 6, 5, context)
    assert not list((tmp_path / "rt-node1").glob("*.json")), "rank 1 left its hub file behind"
    # Who wrote rank 1's runs: rank 0's hub (over TCP), or rank 1's own hub (shared folder).
    writer = rank1.pid if rank_hubs == "auto" else os.getpid()
    assert writers(logdir / "rank_1") == {writer}
    assert not list(logdir.glob(".hyrax_tbhub-*")), "the shared-folder marker outlived the hub"


def writers(folder: Path) -> set[int]:
    """The pids of the hubs that wrote the event files below ``folder`` (their names hold it)."""
    return {int(f.name.split(".")[-2]) for f in folder.rglob("events.out.tfevents.*")}


# -- torchrun: 2 nodes x 2 ranks ------------------------------------------------------------------

SCALARS, ITEMS, CHILD_EVENTS = 500, 12, 5
JOB_TIMEOUT = 400  # s for a whole job: 4 ranks, 8 DataLoader workers, 8 children on 2 shared cores


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(node_rank: int, master: str, port: int, logdir: Path, mode: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
            "--node-rank", str(node_rank), "--master-addr", master, "--master-port", str(port),
            "--max-restarts", "0", str(JOB), "--logdir", str(logdir), "--scalars", str(SCALARS),
            "--items", str(ITEMS), "--child-events", str(CHILD_EVENTS), "--rank-hubs", mode]


def _run_nodes(commands: list[list[str]], envs: list[dict[str, str]], out: Path) -> None:
    """Run one launcher per node to its end (bounded); on failure, show what they printed."""
    import time

    logs = [out / f"node{k}.log" for k in range(len(commands))]
    procs = []
    try:
        for cmd, env, log in zip(commands, envs, logs, strict=True):
            with open(log, "wb") as fh:
                procs.append(subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        deadline = time.monotonic() + JOB_TIMEOUT
        codes = [p.wait(max(1.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in procs:
            if p.poll() is None:
                _kill_group(p)
    if codes != [0] * len(commands):
        text = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-6000:]}" for log in logs)
        pytest.fail(f"the job failed (exit codes {codes}):\n{text}")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def check_job(logdir: Path, mode: str) -> None:
    """Every event of every rank and every descendant, each under its run name, nothing lost."""
    logs = read_logs(logdir)
    check_rank(logs, 0, ".", SCALARS, ITEMS, CHILD_EVENTS)  # rank 0 is the owner: the root run
    for rank in (1, 2, 3):
        check_rank(logs, rank, f"rank_{rank}", SCALARS, ITEMS, CHILD_EVENTS)
    expected = {"."} | {f"rank_{r}" for r in (1, 2, 3)}
    for r in range(4):
        expected |= {f"rank_{r}/dataloader_worker_0", f"rank_{r}/dataloader_worker_1"}
    named = {run for run in logs.runs if "SpawnProcess-" not in run and "/python-" not in run}
    assert named == expected, logs.runs
    assert (logs.dropped, logs.errors, logs.transport_errors) == (0, 0, 0)
    # A rank's own hub keeps its counters in its own run (read_logs reads only the root's).
    assert [e for e in logs.entries if e.tag.startswith(RESERVED_PREFIX) and e.value] == []
    assert logs.problems == []
    owner = {int(f.name.split(".")[-2]) for f in logdir.glob("events.out.tfevents.*")}
    if mode == "off":  # every run written by rank 0's hub
        assert writers(logdir) == owner
    if mode == "auto":  # each rank's runs written by that rank's own hub: none by rank 0's
        assert not writers(logdir / "rank_1") & owner
        for rank in (1, 2, 3):
            assert len(writers(logdir / f"rank_{rank}")) == 1
        assert not writers(logdir / "rank_1") & writers(logdir / "rank_2")


@pytest.mark.timeout(JOB_TIMEOUT + 60)
@pytest.mark.parametrize("mode", ["off", "auto"], ids=["tcp-to-rank0", "hub-per-rank"])
def test_torchrun_two_nodes_on_loopback(tmp_path: Path, mode: str) -> None:
    """torchrun, 2 nodes x 2 ranks on 127.0.0.1, each node with its own runtime folder."""
    logdir = tmp_path / "log"
    port = _free_port()
    envs = []
    for k in range(2):
        env = _env(tmp_path / f"rt-node{k}")
        env["GLOO_SOCKET_IFNAME"] = "lo"
        envs.append(env)
    _run_nodes([_torchrun(k, "127.0.0.1", port, logdir, mode) for k in range(2)], envs, tmp_path)
    check_job(logdir, mode)
    for k in range(2):
        assert not list((tmp_path / f"rt-node{k}").glob("*.json")), "a hub file outlived its process"


# -- two hosts: network namespaces joined by a veth pair ------------------------------------------


class _Netns:
    """Two network namespaces ``a`` (10.231.0.1) and ``b`` (10.231.0.2) joined by a veth pair.

    The addresses exist only inside these namespaces: nothing reaches or leaves the machine.
    Names are unique per test run, and everything is deleted on exit, whatever happened.
    """

    ADDRS = ("10.231.0.1", "10.231.0.2")

    def __init__(self) -> None:
        import secrets

        tag = secrets.token_hex(3)
        self.names = (f"hxtb-{tag}-a", f"hxtb-{tag}-b")
        self.ifaces = (f"hxa{tag}", f"hxb{tag}")

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    def __enter__(self) -> _Netns:
        try:
            for ns in self.names:
                self._ip("netns", "add", ns)
            self._ip("link", "add", self.ifaces[0], "type", "veth", "peer", "name", self.ifaces[1])
            for ns, iface, addr in zip(self.names, self.ifaces, self.ADDRS, strict=True):
                self._ip("link", "set", iface, "netns", ns)
                self._ip("-n", ns, "addr", "add", f"{addr}/24", "dev", iface)
                self._ip("-n", ns, "link", "set", iface, "up")
                self._ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def cut(self) -> None:
        """Take the link down: whatever the other side sends is never answered."""
        self._ip("-n", self.names[1], "link", "set", self.ifaces[1], "down")

    def __exit__(self, *exc: object) -> None:
        for ns in self.names:
            # Deleting a namespace deletes its end of the veth pair, and with it the other end.
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.ifaces[0]], capture_output=True, timeout=30)

    def command(self, k: int, hostname: str, cmd: list[str]) -> list[str]:
        """``cmd`` run as host ``hostname`` (own UTS namespace) in namespace ``k``."""
        import shlex

        script = f"hostname {shlex.quote(hostname)} && exec {shlex.join(cmd)}"
        return ["ip", "netns", "exec", self.names[k], "unshare", "--uts", "sh", "-c", script]


def _netns_or_skip() -> _Netns:
    import shutil

    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        pytest.skip("needs the ip and unshare commands")
    net = _Netns()
    try:
        net.__enter__()
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot create network namespaces here: {exc}")
    return net


@pytest.mark.timeout(JOB_TIMEOUT + 60)
@pytest.mark.parametrize("mode", ["off", "auto"], ids=["tcp-to-rank0", "hub-per-rank"])
def test_torchrun_two_hosts_in_network_namespaces(tmp_path: Path, mode: str) -> None:
    """torchrun, 2 hosts x 2 ranks: own network namespace, hostname and runtime folder per
    host, the log folder shared; every event of every rank and every worker arrives."""
    logdir = tmp_path / "log"
    net = _netns_or_skip()
    try:
        port = 29_500 + int.from_bytes(os.urandom(2), "little") % 5000  # inside fresh namespaces
        commands, envs = [], []
        for k in range(2):
            env = _env(tmp_path / f"rt-host{k}")
            env["GLOO_SOCKET_IFNAME"] = net.ifaces[k]
            envs.append(env)
            commands.append(net.command(k, f"h{k}", _torchrun(k, net.ADDRS[0], port, logdir, mode)))
        _run_nodes(commands, envs, tmp_path)
    finally:
        net.__exit__()
    check_job(logdir, mode)
    hosts = {f.name.split(".")[4] for f in logdir.rglob("events.out.tfevents.*")}
    assert hosts == ({"h0"} if mode == "off" else {"h0", "h1"})


# -- faults across hosts ---------------------------------------------------------------------------

EARLY_RANK = """
import sys, time
import torch.distributed as dist
import hyrax_tbhub
from hyrax_tbhub.testing import logging_to_a_hub


dist.init_process_group("gloo", init_method=sys.argv[1], rank=1, world_size=2)
w = hyrax_tbhub.get_tensorboard_logger()
for s in range(10):
    w.add_scalar("early", float(s), s)  # no hub served yet: a no-op, as without init
assert w.flush() is False or True  # returns, never hangs or raises
dist.barrier()  # rank 0 serves after this barrier...
dist.barrier()  # ...and before this one
deadline = time.monotonic() + 30
step = 0
while not logging_to_a_hub() and time.monotonic() < deadline:
    w.add_scalar("probe", 0.0, step)  # each call looks again once the store watch saw the hub
    step += 1
    time.sleep(0.05)  # polling a condition, bounded by the deadline
assert logging_to_a_hub(), "the rank never found the hub"
for s in range(int(sys.argv[2])):
    w.add_scalar("late", float(s), s)
hyrax_tbhub.close_tensorboard_logger()
dist.barrier()
dist.destroy_process_group()
"""

LATE_RANK = """
import sys
import torch.distributed as dist
import hyrax_tbhub

dist.init_process_group("gloo", init_method=sys.argv[1], rank=1, world_size=2)
dist.barrier()  # rank 0 has served and closed its hub
w = hyrax_tbhub.get_tensorboard_logger()
for s in range(int(sys.argv[2])):
    w.add_scalar("after_close", float(s), s)
w.add_text("note", "nobody listens")
w.flush()
hyrax_tbhub.close_tensorboard_logger()
dist.barrier()
dist.destroy_process_group()
"""


def _rank1(tmp_path: Path, code: str, *args: str) -> subprocess.Popen[bytes]:
    script = tmp_path / "rank1.py"
    script.write_text(code)
    return subprocess.Popen([sys.executable, str(script), *args], env=_env(tmp_path / "rt-node1"))


def _finish(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("rank_hubs", ["off", "auto"])
def test_a_rank_that_logs_before_rank0_serves_joins_once_it_does(
        logdir: Path, tmp_path: Path, rank_hubs: str) -> None:
    """Before serve_ranks() a rank's calls are no-ops (as without init: no hang, no raise); the
    store watch finds the hub within about a second of it being served, and from then on every
    event lands."""
    rendezvous = "file://" + str(tmp_path / "store")
    rank1 = _rank1(tmp_path, EARLY_RANK, rendezvous, "300")
    try:
        dist.init_process_group("gloo", init_method=rendezvous, rank=0, world_size=2)
        dist.barrier()
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
        hyrax_tbhub.serve_ranks(host="127.0.0.1", rank_hubs=None if rank_hubs == "auto" else False)
        dist.barrier()
        dist.barrier()  # rank 1 logged and closed
        hyrax_tbhub.close_tensorboard_logger()
        dist.destroy_process_group()
    finally:
        code = _finish(rank1)
    assert code == 0
    logs = read_logs(logdir)
    assert logs.scalars("late", run="rank_1") == [(s, float(s)) for s in range(300)]
    assert logs.select("early") == []


@pytest.mark.timeout(240)
@pytest.mark.parametrize("rank_hubs", ["off", "auto"])
def test_a_rank_that_logs_after_rank0_closed_logs_nothing_and_never_hangs(
        logdir: Path, tmp_path: Path, rank_hubs: str) -> None:
    """Once rank 0 closed, the store holds no hub (and the folder no marker): a rank's calls,
    flush and close return at once and write nothing."""
    rendezvous = "file://" + str(tmp_path / "store")
    rank1 = _rank1(tmp_path, LATE_RANK, rendezvous, "200")
    try:
        dist.init_process_group("gloo", init_method=rendezvous, rank=0, world_size=2)
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
        hyrax_tbhub.serve_ranks(host="127.0.0.1", rank_hubs=None if rank_hubs == "auto" else False)
        hyrax_tbhub.get_tensorboard_logger().add_scalar("owner", 1.0, 0)
        hyrax_tbhub.close_tensorboard_logger()
        dist.barrier()
        dist.barrier()
        dist.destroy_process_group()
    finally:
        code = _finish(rank1)
    assert code == 0
    logs = read_logs(logdir)
    assert logs.runs == ["."]
    assert logs.scalars("owner") == [(0, 1.0)]


DEAD_NODE_RANK0 = """
import os, sys, time
import torch.distributed as dist
import hyrax_tbhub


signals = sys.argv[2]
def wait_for(name):
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(signals, name)):
        assert time.monotonic() < deadline, name
        time.sleep(0.05)
def say(name, text=""):
    with open(os.path.join(signals, name), "w") as fh:
        fh.write(text)

dist.init_process_group("gloo", init_method=sys.argv[1], rank=0, world_size=2)
# Far beyond the test's timeout: only noticing the dead node makes this close return in time.
hyrax_tbhub.init_tensorboard_logger(log_dir=sys.argv[3], options=hyrax_tbhub.Options(close_timeout=3600))
hyrax_tbhub.serve_ranks(host=sys.argv[4], rank_hubs=sys.argv[5] == "auto")
say("served")
w = hyrax_tbhub.get_tensorboard_logger()
for s in range(100):
    w.add_scalar("before", float(s), s)
wait_for("go")  # host b was killed and its link cut
for s in range(100):
    w.add_scalar("after", float(s), s)
start = time.monotonic()
hyrax_tbhub.close_tensorboard_logger()
say("closed", repr(time.monotonic() - start))
os._exit(0)  # the process group's peer is gone: skip its teardown
"""

DEAD_NODE_RANK1 = """
import multiprocessing, os, sys, time
import torch.distributed as dist
import hyrax_tbhub

signals = sys.argv[2]
def wait_for(name):
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(signals, name)):
        assert time.monotonic() < deadline, name
        time.sleep(0.05)

def child(signals):
    w = hyrax_tbhub.get_tensorboard_logger()
    for s in range(50):
        w.add_scalar("child", float(s), s)
    assert w.flush(60)
    open(os.path.join(signals, "child-ready"), "w").close()
    time.sleep(600)  # alive (and connected) until the node is killed

if __name__ == "__main__":
    dist.init_process_group("gloo", init_method=sys.argv[1], rank=1, world_size=2)
    wait_for("served")
    w = hyrax_tbhub.get_tensorboard_logger()
    for s in range(100):
        w.add_scalar("r1", float(s), s)
    assert w.flush(60)
    p = multiprocessing.get_context("spawn").Process(target=child, args=(signals,))
    p.start()
    wait_for("child-ready")
    open(os.path.join(signals, "ready"), "w").close()
    time.sleep(600)  # alive (and connected) until the node is killed
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["off", "auto"], ids=["tcp-to-rank0", "hub-per-rank"])
def test_a_dead_host_costs_rank0_nothing_and_its_close_stays_prompt(tmp_path: Path, mode: str) -> None:
    """Host b (rank 1 and a child of it) is killed and its link cut, so no FIN or RST ever
    reaches rank 0. Rank 0 keeps logging, and its close returns without waiting out its close
    timeout: connections over TCP are noticed dead within seconds, and with a hub per rank
    there are none. Everything host b flushed before it died is on disk."""
    import time

    logdir = tmp_path / "log"
    signals = tmp_path / "signals"
    signals.mkdir()
    net = _netns_or_skip()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        rendezvous = "file://" + str(tmp_path / "store")
        for k, code in enumerate((DEAD_NODE_RANK0, DEAD_NODE_RANK1)):
            script = tmp_path / f"rank{k}.py"
            script.write_text(code)
            env = _env(tmp_path / f"rt-host{k}")
            env["GLOO_SOCKET_IFNAME"] = net.ifaces[k]
            cmd = [sys.executable, str(script), rendezvous, str(signals), str(logdir), net.ADDRS[0], mode]
            with open(tmp_path / f"host{k}.log", "wb") as fh:
                procs.append(subprocess.Popen(net.command(k, f"h{k}", cmd), env=env, stdout=fh,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 180
        while not (signals / "ready").exists():
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail("the job did not start: " + (tmp_path / "host1.log").read_text()
                            + (tmp_path / "host0.log").read_text())
            time.sleep(0.05)  # polling a condition, bounded by the deadline
        net.cut()
        _kill_group(procs[1])
        (signals / "go").write_text("")
        assert procs[0].wait(120) == 0, (tmp_path / "host0.log").read_text()
    finally:
        for p in procs:
            if p.poll() is None:
                _kill_group(p)
        net.__exit__()
    print("rank 0's close took", (signals / "closed").read_text(), "s")
    logs = read_logs(logdir)
    assert logs.scalars("before", run=".") == [(s, float(s)) for s in range(100)]
    assert logs.scalars("after", run=".") == [(s, float(s)) for s in range(100)]
    assert logs.scalars("r1", run="rank_1") == [(s, float(s)) for s in range(100)]
    children = [r for r in logs.runs if r.startswith("rank_1/SpawnProcess-")]
    assert len(children) == 1 and logs.scalars("child", run=children[0]) == [(s, float(s)) for s in range(50)]


SILENT_RANK = """
import multiprocessing, sys, time
import torch.distributed as dist
from torch.utils.data import DataLoader
import hyrax_tbhub

from multihost_job import TimedReads
from hyrax_tbhub.testing import logging_to_a_hub


TAG = ["pool"]


def task(i):
    hyrax_tbhub.get_tensorboard_logger().add_scalar(TAG[0], float(i), i)
    return i


def early(i):
    TAG[0] = "early"
    task(i)
    TAG[0] = "pool"
    return i


if __name__ == "__main__":
    dist.init_process_group("gloo", init_method=sys.argv[1], rank=1, world_size=2)
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(2)  # started before any hub exists
    assert pool.map(early, range(4), chunksize=1) == list(range(4))  # no hub yet: no-ops
    dist.barrier()  # rank 0 serves after this barrier...
    dist.barrier()  # ...and before this one
    deadline = time.monotonic() + 30
    while not logging_to_a_hub() and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a condition, bounded: the rank's store watch, not a call
    assert logging_to_a_hub(), "the rank did not find the hub by itself"
    assert pool.map(task, range(20), chunksize=1) == list(range(20))
    pool.close()
    pool.join()
    loader = DataLoader(TimedReads(int(sys.argv[2])), batch_size=None, num_workers=2,
                        multiprocessing_context=ctx)
    assert sorted(loader) == list(range(int(sys.argv[2])))
    hyrax_tbhub.close_tensorboard_logger()
    dist.barrier()
    dist.destroy_process_group()
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("rank_hubs", ["off", "auto"])
def test_descendants_of_a_rank_that_never_logs_itself_log(
        logdir: Path, tmp_path: Path, rank_hubs: str) -> None:
    """A torchrun rank finds a served hub by itself (no call of its own logs) and publishes it:
    its DataLoader workers log from their first item, and workers of a pool it started before
    the hub existed look again and find it too."""
    rendezvous = "file://" + str(tmp_path / "store")
    script = tmp_path / "rank1.py"
    script.write_text(SILENT_RANK)
    env = _env(tmp_path / "rt-node1")
    env.update(RANK="1", WORLD_SIZE="2", LOCAL_RANK="0")  # as torchrun sets them
    rank1 = subprocess.Popen([sys.executable, str(script), rendezvous, "6"], env=env)
    try:
        dist.init_process_group("gloo", init_method=rendezvous, rank=0, world_size=2)
        dist.barrier()
        hyrax_tbhub.init_tensorboard_logger(log_dir=str(logdir))
        hyrax_tbhub.serve_ranks(host="127.0.0.1", rank_hubs=None if rank_hubs == "auto" else False)
        dist.barrier()
        dist.barrier()
        hyrax_tbhub.close_tensorboard_logger()
        dist.destroy_process_group()
    finally:
        code = _finish(rank1)
    assert code == 0
    logs = read_logs(logdir)
    pool_runs = [r for r in logs.runs if r.startswith("rank_1/SpawnPoolWorker-")]
    assert sorted(s for r in pool_runs for s, _ in logs.scalars("pool", run=r)) == list(range(20))
    assert logs.select("early") == []
    workers = sorted(r for r in logs.runs if r.startswith("rank_1/dataloader_worker_"))
    assert workers == ["rank_1/dataloader_worker_0", "rank_1/dataloader_worker_1"]
    assert sorted(s for w in workers for s, _ in logs.scalars("data/item", run=w)) == list(range(6))
