"""Run one ledger seed: this process is the owner; it switches hubs, starts and kills producers.

Every wait is bounded by the seed's deadline. What overruns it is a hang: its stacks are dumped
(faulthandler on SIGUSR1) and it is killed, and the verdict fails naming it.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import multiprocess

import hyrax_tbhub

from ledger import check, procs, producer
from ledger.plan import all_units, describe, make_plan, plan_events, plan_processes

_mono = time.monotonic_ns


class Run:
    """One seed's mix, run by this process as the owner of every hub generation."""

    def __init__(self, seed: int, start_method: str | None, bound: float, work: Path,
                 warm: bool = False) -> None:
        self.seed = seed
        self.start_method = start_method
        self.bound = bound
        self.work = work
        self.ledger = work / "ledger"
        self.ledger.mkdir(parents=True)
        self.deadline = time.monotonic() + bound
        self.plan = make_plan(seed)
        self.gens: list[dict[str, Any]] = []
        self.kills: dict[str, int] = {}
        self.hangs: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.handles: list[tuple[dict[str, Any], procs.Handle]] = []
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        inner = max(5.0, bound * 0.5)  # producers report their children's hangs before we give up
        for unit in all_units(self.plan):
            for u in procs.walk(unit):
                u["ledger"] = str(self.ledger)
                u["timeout"] = inner
                u["warm"] = warm
                if u["kind"] in ("pool-task", "ppe-task", "torch-item"):
                    u["close_at_end"] = False  # a worker that left a hub never rejoins it
        self.skipped: list[str] = []

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    # -- the mix ----------------------------------------------------------------------------------

    def start_unit(self, unit: dict[str, Any]) -> None:
        h = procs.start(unit["kind"], unit)
        with self.lock:
            self.handles.append((unit, h))
        if unit.get("kill_after") is not None:
            t = threading.Thread(target=self._kill_later, args=(unit, h), daemon=True)
            t.start()

    def _kill_later(self, unit: dict[str, Any], h: procs.Handle) -> None:
        time.sleep(unit["kill_after"])  # a random moment, not a synchronisation
        if h.exitcode is not None:
            return
        with self.lock:
            self.kills[unit["uid"]] = _mono()
        h.kill()

    def _group_context(self, group: dict[str, Any]) -> Any:
        parts = group["kind"].split("-")
        if parts[0] == "pool":
            return procs.context(f"{parts[1]}-{parts[2]}")
        return procs.context(f"mp-{parts[1]}")

    def make_pool(self, group: dict[str, Any]) -> Any:
        ctx = self._group_context(group)
        if group["kind"].startswith("pool-"):
            return ctx.Pool(group["workers"])
        return None

    def run_group(self, group: dict[str, Any], pool: Any) -> None:
        try:
            kind = group["kind"]
            if kind.startswith("pool-"):
                self._run_pool(group, pool if pool is not None else self.make_pool(group))
            elif kind.startswith("ppe-"):
                self._run_executor(group)
            elif kind.startswith("torch-"):
                self._run_loader(group)
        except Exception:
            self.failures.append(f"group {group['kind']} raised:\n{traceback.format_exc()}")

    def _bounded(self, what: str, fn: Any) -> bool:
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        t.join(self.remaining())
        if t.is_alive():
            self.hangs.append({"what": what})
            return False
        return True

    def _run_pool(self, group: dict[str, Any], pool: Any) -> None:
        if group.get("per_epoch"):
            # A new pool for every task, as a training loop that makes one per epoch: the
            # owner's descriptors are closed and reused while the pools fork.
            pool.terminate()
            for task in group["tasks"]:
                self._run_pool_tasks(group, self.make_pool(group), [task])
            return
        self._run_pool_tasks(group, pool, group["tasks"])

    def _run_pool_tasks(self, group: dict[str, Any], pool: Any, tasks: list[dict[str, Any]]) -> None:
        results = [pool.apply_async(producer.pool_task, (t,)) for t in tasks]
        for task, r in zip(tasks, results, strict=True):
            try:
                r.get(self.remaining())
            except multiprocessing.TimeoutError:
                self.hangs.append({"what": f"pool task {task['uid']} ({group['kind']})"})
            except multiprocess.TimeoutError:
                self.hangs.append({"what": f"pool task {task['uid']} ({group['kind']})"})
        if group["exit"] == "close":
            pool.close()
            if not self._bounded(f"{group['kind']} join", pool.join):
                pool.terminate()
        else:
            self._bounded(f"{group['kind']} terminate", pool.terminate)

    def _run_executor(self, group: dict[str, Any]) -> None:
        ex = concurrent.futures.ProcessPoolExecutor(group["workers"], mp_context=self._group_context(group))
        futures = [ex.submit(producer.pool_task, t) for t in group["tasks"]]
        for task, f in zip(group["tasks"], futures, strict=True):
            try:
                f.result(self.remaining())
            except concurrent.futures.TimeoutError:
                self.hangs.append({"what": f"executor task {task['uid']} ({group['kind']})"})
        self._bounded(f"{group['kind']} shutdown", lambda: ex.shutdown(wait=True))

    def _run_loader(self, group: dict[str, Any]) -> None:
        from torch.utils.data import DataLoader

        dataset: Any = producer.LedgerDataset(group["tasks"])
        loader: Any = DataLoader(
            dataset, batch_size=1, num_workers=group["workers"],
            multiprocessing_context=self._group_context(group),
            persistent_workers=group["persistent"], timeout=max(1.0, self.remaining() * 0.8),
        )
        it = iter(loader)
        for _ in it:
            pass
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            self._bounded(f"{group['kind']} worker shutdown", shutdown)
        del it, loader

    def owner_streams(self, unit: dict[str, Any]) -> None:
        out = producer._Lines(producer.unit_file(str(self.ledger), unit["uid"]))
        out.put(k="start", pid=os.getpid(), ppid=os.getppid(), kind="owner", t=_mono())
        out.close()
        for j in range(unit["threads"]):
            t = threading.Thread(target=producer.log_stream, args=(unit, j, None, None),
                                 name=f"owner-stream-{j}", daemon=True)
            t.start()
            self.threads.append(t)

    # -- hub generations --------------------------------------------------------------------------

    def init(self, g: int) -> None:
        rec: dict[str, Any] = {"g": g, "dir": str(self.work / f"gen{g}")}
        rec["init_t0"] = _mono()
        hyrax_tbhub.init_tensorboard_logger(log_dir=rec["dir"])
        rec["init_t1"] = _mono()
        self.gens.append(rec)

    def close(self) -> None:
        rec = self.gens[-1]
        rec["close_t0"] = _mono()
        hyrax_tbhub.close_tensorboard_logger()
        rec["close_t1"] = _mono()
        rec["close_s"] = round((rec["close_t1"] - rec["close_t0"]) / 1e9, 3)

    def execute(self) -> None:
        plan = self.plan
        if any(g["kind"].startswith("torch-") for g in plan["groups"]) and not procs.torch_available():
            self.skipped.append("torch DataLoader (torch does not import)")
            plan["groups"] = [g for g in plan["groups"] if not g["kind"].startswith("torch-")]
        procs.preload(any(g["kind"].startswith("torch-") for g in plan["groups"]))
        early = {id(g): self.make_pool(g) for g in plan["groups"] if g.get("early")}
        last = len(plan["gens"]) - 1
        for g, gen in enumerate(plan["gens"]):
            self.init(g)
            for group in plan["groups"]:
                if group["start_gen"] == g:
                    t = threading.Thread(target=self.run_group, args=(group, early.get(id(group))),
                                         name=group["kind"], daemon=True)
                    t.start()
                    self.threads.append(t)
            for unit in plan["units"]:
                if unit["start_gen"] == g:
                    self.start_unit(unit)
            if plan["owner"] is not None and plan["owner"]["start_gen"] == g:
                self.owner_streams(plan["owner"])
            if g < last:
                time.sleep(gen["dur"])  # the switch comes at a random moment of the producers' work
                self.close()
                if gen["gap"]:
                    time.sleep(gen["gap"])
        self.join_all()
        self.close()
        self.sweep()

    def join_all(self) -> None:
        for unit, h in list(self.handles):
            rc = h.join(self.remaining())
            if rc is None:
                dump = h.dump_and_kill(producer.stack_file(str(self.ledger), h.pid))
                self.hangs.append({"what": f"{unit['uid']} ({unit['kind']}, pid {h.pid})",
                                   "uid": unit["uid"], "stack": dump[-6000:]})
            elif rc == -signal.SIGKILL and unit["uid"] in self.kills:
                pass
            else:
                self.kills.pop(unit["uid"], None)  # it had ended before the kill came
                if rc != 0:
                    self.failures.append(f"{unit['uid']} ({unit['kind']}) exited with {rc}")
        for t in self.threads:
            t.join(self.remaining())
            if t.is_alive():
                self.hangs.append({"what": f"thread {t.name} of the owner"})

    def sweep(self) -> None:
        """Any process of the mix still alive now overran the bound: dump its stacks, kill it."""
        for pid, uid in check.ledger_pids(self.ledger).items():
            if pid == os.getpid() or not _alive(pid):
                continue
            h = procs.Handle("stray", None, pid)
            dump = h.dump_and_kill(producer.stack_file(str(self.ledger), pid))
            self.hangs.append({"what": f"{uid} (pid {pid}) still running after the owner closed",
                               "uid": uid, "stack": dump[-6000:]})


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def repro_command(seed: int, start_method: str | None) -> str:
    cmd = f"python tests/ledger --seed {seed}"
    if start_method:
        cmd += f" --start-method {start_method}"
    return cmd


def run_seed(seed: int, start_method: str | None = None, bound: float = 60.0,
             keep: bool = False, base: str | None = None, warm: bool = False) -> dict[str, Any]:
    """Run one seed in this process (which must be a fresh one: it becomes the owner)."""
    if start_method:
        multiprocessing.set_start_method(start_method, force=True)
        multiprocess.set_start_method(start_method, force=True)
    # A private runtime folder: no other hub's start (another test, another session) is seen.
    runtime = tempfile.mkdtemp(prefix="htbl", dir="/tmp")
    os.chmod(runtime, 0o700)
    os.environ["HYRAX_TBHUB_RUNTIME_DIR"] = runtime
    os.environ.pop("HYRAX_TBHUB_INFO", None)
    work = Path(tempfile.mkdtemp(prefix=f"ledger-{seed}-", dir=base))
    t0 = time.monotonic()
    run = Run(seed, start_method, bound, work, warm)
    producer._arm_stack_dump(str(run.ledger))
    try:
        run.execute()
    except Exception:
        run.failures.append(f"the owner raised:\n{traceback.format_exc()}")
        try:
            hyrax_tbhub.close_tensorboard_logger()
        except Exception:
            pass
    (work / "run.json").write_text(json.dumps({"seed": seed, "gens": run.gens, "kills": run.kills,
                                               "plan": run.plan}, indent=1))
    verdict = check.check(run.ledger, run.gens, run.kills)
    verdict["seed"] = seed
    verdict["start_method"] = start_method or multiprocessing.get_start_method()
    verdict["planned_processes"] = plan_processes(run.plan)
    verdict["planned_events"] = plan_events(run.plan)
    verdict["hangs"] = verdict["hangs"] + run.hangs
    verdict["failures"] = verdict["failures"] + run.failures
    verdict["skipped"] = run.skipped
    verdict["close_s"] = [g.get("close_s") for g in run.gens]
    verdict["seconds"] = round(time.monotonic() - t0, 2)
    verdict["repro"] = repro_command(seed, start_method)
    verdict["code"] = os.path.dirname(os.path.abspath(hyrax_tbhub.__file__))
    verdict["ok"] = not verdict["failures"] and not verdict["hangs"] and not verdict["unexplained"]
    verdict["work"] = str(work)
    verdict["plan"] = describe(run.plan)
    if verdict["ok"] and not keep:
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(runtime, ignore_errors=True)
    return verdict


def format_verdict(v: dict[str, Any]) -> str:
    head = "PASS" if v["ok"] else "FAIL"
    lines = [
        f"ledger seed {v['seed']} [{v['start_method']}]: {head} in {v['seconds']} s: "
        f"{v['processes']} processes, {v['streams']} streams, {v['logged']} events logged, "
        f"{v['owed']} owed, {v['landed']} on disk, {v['no_hub']} logged with no hub, "
        f"{v['maybe']} during a switch; unexplained losses {v['unexplained']}, "
        f"explained by drop counters {v['explained']}, hangs {len(v['hangs'])}, "
        f"kills {v['kills']}, transport errors {v['transport_errors']}, closes {v['close_s']} s",
    ]
    if not v["ok"]:
        lines.append(v["plan"])
        for f in v["failures"]:
            lines.append(f"  failure: {f}")
        for h in v["hangs"]:
            lines.append(f"  HANG: {h['what']}")
            if h.get("stack"):
                lines.append("    " + h["stack"].strip().replace("\n", "\n    "))
        for p in v["problems"]:
            lines.append(f"  {p}")
        lines.append(f"  ledger and logs kept in {v['work']}")
        lines.append(f"  reproduce: {v['repro']}")
    if not v["ok"]:
        lines.append(f"  (hyrax_tbhub from {v['code']})")
    for s in v["skipped"]:
        lines.append(f"  skipped: {s}")
    return "\n".join(lines)


def summarize(path: str) -> str:
    """Totals over the verdicts recorded in ``path``, one JSON object a line."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        return "no seeds recorded"
    failed = [r for r in rows if not r.get("ok")]
    hangs = [r for r in rows if r.get("hangs") or r.get("hang")]
    lossy = [r for r in rows if r.get("unexplained")]

    def total(key: str) -> int:
        return sum(int(r.get(key) or 0) for r in rows)

    closes = [c for r in rows for c in (r.get("close_s") or []) if c is not None]
    methods = sorted({str(r.get("start_method")) for r in rows})
    lines = [
        f"{len(rows)} seeds ({', '.join(methods)}): {len(rows) - len(failed)} passed, {len(failed)} failed",
        f"processes {total('processes')}, streams {total('streams')}, events logged {total('logged')}, "
        f"owed {total('owed')}, on disk {total('landed')}, logged with no hub {total('no_hub')}, "
        f"during a switch {total('maybe')}",
        f"unexplained losses {total('unexplained')} in {len(lossy)} seeds; explained by drop counters "
        f"{total('explained')}; hangs in {len(hangs)} seeds; SIGKILLs {total('kills')}; "
        f"transport errors {total('transport_errors')}; slowest close {max(closes, default=0)} s; "
        f"wall time {round(sum(float(r.get('seconds') or 0) for r in rows), 1)} s",
    ]
    for r in failed:
        why = []
        if r.get("unexplained"):
            why.append(f"{r['unexplained']} events lost")
        for h in r.get("hangs") or []:
            why.append(f"hang: {h.get('what')}")
        if r.get("hang"):
            why.append("the owner overran its bound")
        why.extend(str(f)[:160] for f in (r.get("failures") or [])[:3])
        lines.append(f"  seed {r.get('seed')}: {'; '.join(why)}  ->  {r.get('repro')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python tests/ledger", description=__doc__)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--summary", metavar="FILE",
                    help="sum up the seeds recorded in FILE ($HYRAX_TBHUB_LEDGER_RECORD of a pytest run)")
    ap.add_argument("--start-method", choices=["fork", "spawn", "forkserver"], default=None,
                    help="the default start method of multiprocessing and multiprocess for the mix")
    ap.add_argument("--bound", type=float, default=60.0,
                    help="seconds before anything still running is a hang")
    ap.add_argument("--keep", action="store_true", help="keep the ledger and logs even when the seed passes")
    ap.add_argument("--warm", action="store_true",
                    help="diagnosis: every producer connects (flush) before its streams start, so "
                         "no two first calls of a process race each other")
    ap.add_argument("--describe", action="store_true", help="print the mix and exit")
    ap.add_argument("--json", action="store_true", help="also print the verdict as one JSON line")
    args = ap.parse_args(argv)
    if args.summary:
        print(summarize(args.summary))
        return 0
    if args.seed is None:
        ap.error("--seed is required")
    if args.describe:
        print(describe(make_plan(args.seed)))
        return 0
    verdict = run_seed(args.seed, args.start_method, args.bound, args.keep, warm=args.warm)
    print(format_verdict(verdict), flush=True)
    if args.json:
        print("LEDGER-JSON " + json.dumps(verdict), flush=True)
    sys.stdout.flush()
    return 0 if verdict["ok"] else 1
