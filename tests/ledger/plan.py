"""A ledger mix drawn from one integer seed: generations, process units, pools, kills.

The seed fixes the mix (which processes, threads, events, switches, kills), not the interleaving:
the machine decides that, which is the point of running many seeds. Mixes stay modest (at most
8 processes, 4 threads each, a few thousand events) so that a seed takes a few seconds.
"""

from __future__ import annotations

import random
from typing import Any

from ledger.procs import FORK_KINDS, PROCESS_KINDS

MAX_PROCESSES = 8
MAX_EVENTS = 6000


class _Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"u{self.n}"


def _stream_shape(rng: random.Random, switching: bool) -> dict[str, Any]:
    chunk = rng.choice([10, 25, 50, 100, 250])
    chunks = rng.randint(1, 8)
    # Paced streams span hub switches; flat-out ones load the sender (and a forking parent).
    pause = rng.choice([0.0, 0.0, 0.002, 0.01, 0.03]) if switching else rng.choice([0.0, 0.0, 0.002])
    return {
        "chunk": chunk,
        "chunks": chunks,
        "pause": pause,
        "flush_every": rng.choice([0, 0, 1, 2, 4]),
    }


def _unit(rng: random.Random, ids: _Ids, kind: str, switching: bool, *, threads: int | None = None,
          leaf: bool = False) -> dict[str, Any]:
    closes = rng.random() < 0.2
    if kind in ("pool-task", "ppe-task", "torch-item", "owner"):
        closes = False  # a worker that left a hub never rejoins it: later tasks there would log nowhere
    n = threads if threads is not None else rng.choice([1, 1, 2, 3, 4])
    unit: dict[str, Any] = {
        "uid": ids(),
        "kind": kind,
        "threads": n,
        "apis": [rng.choice(["scalar", "scalar", "scalar", "text"]) for _ in range(n)],
        # Threads of a fresh process whose first calls race each other.
        "barrier": n > 1 and rng.random() < 0.7,
        "forks": [],
        "children": [],
        "fork_when": "now",
        "close_at_end": closes,
        **_stream_shape(rng, switching),
    }
    if leaf:
        return unit
    r = rng.random()
    if r < 0.25:
        # Forks from a process whose other threads log: right away, while their first
        # calls are connecting and importing, or once they are in full flow.
        unit["fork_when"] = rng.choice(["now", "first_chunk"])
        unit["threads"] = max(1, n)
        unit["pause"] = 0.0
        unit["chunks"] = max(unit["chunks"], 4)
        unit["forks"] = [
            _unit(rng, ids, rng.choice(FORK_KINDS), switching, leaf=True, threads=rng.choice([1, 2]))
            for _ in range(rng.choice([1, 1, 2]))
        ]
    elif r < 0.4:
        # A grandchild of the owner, of any kind.
        unit["children"] = [_unit(rng, ids, rng.choice(PROCESS_KINDS), switching, leaf=True)]
    return unit


def _walk(unit: dict[str, Any]) -> list[dict[str, Any]]:
    return [unit, *(d for c in unit["forks"] + unit["children"] for d in _walk(c))]


def _processes(unit: dict[str, Any]) -> int:
    return 1 + sum(_processes(c) for c in unit["forks"] + unit["children"])


def _events(unit: dict[str, Any]) -> int:
    own = unit["threads"] * unit["chunks"] * unit["chunk"]
    return own + sum(_events(c) for c in unit["forks"] + unit["children"])


def _shrink(unit: dict[str, Any], factor: float) -> None:
    unit["chunks"] = max(1, int(unit["chunks"] * factor))
    for c in unit["forks"] + unit["children"]:
        _shrink(c, factor)


def make_plan(seed: int, torch_ok: bool = True) -> dict[str, Any]:
    rng = random.Random(seed)
    ids = _Ids()
    n_gens = rng.choice([1, 1, 2, 2, 3])
    switching = n_gens > 1
    gens = [{"dur": round(rng.uniform(0.1, 0.8), 3), "gap": round(rng.choice([0.0, 0.02, 0.1]), 3)}
            for _ in range(n_gens)]
    budget = MAX_PROCESSES
    groups: list[dict[str, Any]] = []
    if rng.random() < 0.35:
        lib = rng.choice(["mp", "mpx"])
        method = rng.choice(["fork", "spawn", "forkserver", "default"])
        groups.append({
            "kind": f"pool-{lib}-{method}", "workers": 2, "early": rng.random() < 0.4,
            "exit": rng.choice(["close", "terminate"]), "start_gen": rng.randrange(n_gens),
            "tasks": [_unit(rng, ids, "pool-task", switching, leaf=True, threads=rng.choice([1, 2]))
                      for _ in range(rng.randint(2, 4))],
        })
        budget -= 2
    if rng.random() < 0.2:
        groups.append({
            "kind": f"ppe-{rng.choice(['fork', 'spawn', 'forkserver', 'default'])}", "workers": 2,
            "early": False, "exit": "shutdown", "start_gen": rng.randrange(n_gens),
            "tasks": [_unit(rng, ids, "ppe-task", switching, leaf=True, threads=1)
                      for _ in range(rng.randint(2, 3))],
        })
        budget -= 2
    if rng.random() < 0.12 and torch_ok:
        groups.append({
            "kind": f"torch-{rng.choice(['fork', 'spawn', 'forkserver'])}", "workers": 2,
            "early": False, "persistent": rng.random() < 0.5, "exit": "iterate",
            "start_gen": rng.randrange(n_gens),
            "tasks": [_unit(rng, ids, "torch-item", switching, leaf=True, threads=1)
                      for _ in range(rng.randint(3, 6))],
        })
        budget -= 2
    units: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 5)):
        unit = _unit(rng, ids, rng.choice(PROCESS_KINDS), switching)
        if _processes(unit) > budget:
            continue
        budget -= _processes(unit)
        unit["start_gen"] = rng.randrange(n_gens)
        # SIGKILL some leaves mid-flight: what a True flush confirmed before the kill must land.
        if not unit["forks"] and not unit["children"] and rng.random() < 0.2:
            unit["kill_after"] = round(rng.uniform(0.05, 1.0), 3)
        units.append(unit)
    owner = None
    if rng.random() < 0.5:
        owner = _unit(rng, ids, "owner", switching, leaf=True, threads=rng.choice([1, 2]))
        owner["barrier"] = False
        owner["start_gen"] = 0
    # Features added later draw from their own generator, so that every seed keeps its mix.
    extra = random.Random(seed * 1_000_003 + 1)
    leaves = [u for top in units for u in _walk(top) if u["kind"] in PROCESS_KINDS]
    if leaves and extra.random() < 0.12:
        # A producer holding more than 1024 descriptors (DataLoader workers sharing tensors do):
        # select() fails on such numbers.
        extra.choice(leaves)["fds"] = 1100
    for unit in units:
        if unit.get("kill_after") is not None:
            # Alive and confirming when the kill comes: paced, flushing, and killed once it runs.
            unit["pause"] = max(unit["pause"], 0.01)
            unit["chunks"] = max(unit["chunks"], 6)
            unit["flush_every"] = unit["flush_every"] or 1
            unit["kill_after"] = round(extra.uniform(0.15, 0.9), 3)
    # Shapes of long jobs, ends of jobs and re-entrancy, drawn from a third generator (every seed
    # keeps the mix it had): a logging 1 ms SIGALRM handler armed before a leaf's first call, a
    # weakref.finalize that logs at the leaf's exit, a fork pool made anew for every task.
    shapes = random.Random(seed * 1_000_003 + 2)
    for unit in leaves:
        if shapes.random() < 0.15 and not unit["forks"] and not unit["children"]:
            unit["alarm"] = shapes.choice([50, 200])
        # Not in a unit that closes: a call after close_tensorboard_logger() is a no-op by design.
        if shapes.random() < 0.15 and unit.get("kill_after") is None and not unit["close_at_end"]:
            unit["exit_log"] = True
    for group in groups:
        if group["kind"].startswith("pool-") and not group["early"] and shapes.random() < 0.4:
            group["per_epoch"] = True
    plan = {"seed": seed, "gens": gens, "units": units, "groups": groups, "owner": owner}
    total = plan_events(plan)
    if total > MAX_EVENTS:
        factor = MAX_EVENTS / total
        for unit in all_units(plan):
            _shrink(unit, factor)
    return plan


def all_units(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [*plan["units"]]
    for g in plan["groups"]:
        out.extend(g["tasks"])
    if plan["owner"] is not None:
        out.append(plan["owner"])
    return out


def plan_events(plan: dict[str, Any]) -> int:
    total = 0
    for unit in all_units(plan):
        total += unit["threads"] * unit["chunks"] * unit["chunk"]
    for unit in plan["units"]:
        total += _events(unit) - unit["threads"] * unit["chunks"] * unit["chunk"]
    return total


def plan_processes(plan: dict[str, Any]) -> int:
    return sum(_processes(u) for u in plan["units"]) + sum(g["workers"] for g in plan["groups"])


def describe(plan: dict[str, Any]) -> str:
    lines = [f"seed {plan['seed']}: {len(plan['gens'])} hub generation(s) "
             f"{[g['dur'] for g in plan['gens']]} s, ~{plan_processes(plan)} processes, "
             f"{plan_events(plan)} events"]

    def one(u: dict[str, Any], indent: str) -> None:
        extra = []
        if u.get("barrier"):
            extra.append("barrier")
        if u.get("kill_after") is not None:
            extra.append(f"SIGKILL after {u['kill_after']} s")
        if u["forks"]:
            extra.append(f"forks {u['fork_when']}")
        if u.get("fds"):
            extra.append(f"{u['fds']} fds")
        if u.get("close_at_end"):
            extra.append("closes")
        if u.get("alarm"):
            extra.append(f"SIGALRM handler logs {u['alarm']}")
        if u.get("exit_log"):
            extra.append("logs at exit")
        if u["pause"]:
            extra.append(f"pause {u['pause']}")
        if u["flush_every"]:
            extra.append(f"flush/{u['flush_every']}")
        gen = u.get("start_gen", "-")
        lines.append(f"{indent}{u['uid']} {u['kind']} gen {gen}: {u['threads']} thread(s) "
                     f"{'/'.join(u['apis'])} x {u['chunks']}x{u['chunk']} {' '.join(extra)}")
        for c in u["forks"]:
            one(c, indent + "  fork> ")
        for c in u["children"]:
            one(c, indent + "  child> ")

    for u in plan["units"]:
        one(u, "  ")
    for g in plan["groups"]:
        lines.append(f"  {g['kind']} x{g['workers']} gen {g['start_gen']} early={g['early']} "
                     f"exit={g['exit']}{' pool per task' if g.get('per_epoch') else ''}")
        for t in g["tasks"]:
            one(t, "    task> ")
    if plan["owner"] is not None:
        one(plan["owner"], "  owner> ")
    return "\n".join(lines)
