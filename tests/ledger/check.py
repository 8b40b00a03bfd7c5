"""The ledger invariant: every event a producer logged is accounted for, exactly.

See the package docstring for the three cases an event falls into (owed to one hub generation,
logged with no hub, logged during a switch). Losses are *explained* only by the drop counters
the hub wrote for the producer's run (``hyrax_tbhub/dropped/<run>``) in that generation; anything
else missing is an unexplained loss. What is on disk and no ledger explains fails the seed too.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from hyrax_tbhub.testing import RESERVED_PREFIX, read_logs

_TEXT = "/text_summary"
_INF = math.inf


def _lines(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line torn by a kill mid-write (one os.write each: should not happen)
    return out


def ledger_pids(ledger: Path) -> dict[int, str]:
    """``{pid: unit id}`` of every process that wrote a ledger."""
    pids: dict[int, str] = {}
    for f in sorted(Path(ledger).glob("*.jsonl")):
        uid = f.name.split(".", 1)[0]
        for rec in _lines(f):
            if rec.get("k") == "start" and "pid" in rec:
                pids.setdefault(int(rec["pid"]), uid)
            if rec.get("k") == "child" and "pid" in rec:
                pids.setdefault(int(rec["pid"]), str(rec.get("uid")))
    return pids


def _ranges(steps: list[int]) -> str:
    steps = sorted(steps)
    out: list[str] = []
    i = 0
    while i < len(steps):
        j = i
        while j + 1 < len(steps) and steps[j + 1] == steps[j] + 1:
            j += 1
        out.append(str(steps[i]) if i == j else f"{steps[i]}-{steps[j]}")
        i = j + 1
    text = ",".join(out)
    return text if len(text) < 200 else text[:200] + "..."


class _Gen:
    def __init__(self, rec: dict[str, Any]) -> None:
        self.g = int(rec["g"])
        self.init_t0 = rec["init_t0"]
        self.init_t1 = rec.get("init_t1", _INF)
        self.close_t0 = rec.get("close_t0", _INF)
        self.close_t1 = rec.get("close_t1", _INF)


def check(ledger: Path, gens: list[dict[str, Any]], kills: dict[str, int]) -> dict[str, Any]:
    ledger = Path(ledger)
    generations = [_Gen(r) for r in gens]
    failures: list[str] = []
    problems: list[str] = []
    hangs: list[dict[str, Any]] = []

    # -- what is on disk, per generation ---------------------------------------------------------
    occ: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    run_of: dict[tuple[int, str], str] = {}
    dropped: dict[int, dict[str, int]] = {}
    transport_errors = 0
    for rec in gens:
        g, folder = int(rec["g"]), Path(rec["dir"])
        dropped[g] = {}
        if not folder.exists():
            continue
        logs = read_logs(folder)
        for p in logs.problems:
            failures.append(f"gen {g}: unreadable record: {p}")
        for e in logs.entries:
            tag = e.tag[: -len(_TEXT)] if e.tag.endswith(_TEXT) else e.tag
            if not tag.startswith("ledger/"):
                failures.append(f"gen {g}: an event no producer logged: run {e.run} tag {e.tag}")
                continue
            occ[tag][e.step].append(g)
            run_of[(g, tag)] = e.run
        for tag, value in logs.counters.items():
            if tag.startswith(RESERVED_PREFIX + "dropped/"):
                dropped[g][tag[len(RESERVED_PREFIX + "dropped/"):]] = int(value)
            elif tag.startswith(RESERVED_PREFIX + "errors/") and value:
                failures.append(f"gen {g}: the hub counted {int(value)} events it could not write ({tag})")
        transport_errors += int(logs.transport_errors)

    # -- what the ledgers say ----------------------------------------------------------------------
    units: dict[str, dict[str, Any]] = {}
    for f in sorted(ledger.glob("*.jsonl")):
        parts = f.name.split(".")
        if len(parts) == 2:  # u3.jsonl: the unit's own lines
            recs = _lines(f)
            first = next((r for r in recs if r.get("k") == "start"), {})
            units.setdefault(parts[0], {}).update(kind=first.get("kind"), pids=[r["pid"] for r in recs
                                                                              if r.get("k") == "start"])
            for r in recs:
                if r.get("k") == "hang":  # seen by a producer, about its own thread or child
                    hangs.append({"what": f"{r.get('what')}, seen by {parts[0]}", "uid": r.get("uid"),
                                  "stack": r.get("stack", "")})
                if r.get("k") == "exit" and r.get("rc") != 0:
                    failures.append(f"child {r.get('uid')} of {parts[0]} exited with {r.get('rc')}")

    totals: defaultdict[str, int] = defaultdict(int)
    missing: dict[int, dict[str | None, int]] = defaultdict(lambda: defaultdict(int))
    missing_detail: list[tuple[int, str | None, str]] = []
    seen_tags: set[str] = set()
    pids: set[int] = set()
    for f in sorted(ledger.glob("*.t*.jsonl")):
        uid, tpart = f.name.split(".")[:2]
        recs = _lines(f)
        start: dict[str, Any] | None = next((r for r in recs if r.get("k") == "start"), None)
        if start is None:
            continue
        tag = start["tag"]
        seen_tags.add(tag)
        pids.add(int(start["pid"]))
        totals["streams"] += 1
        kind = units.get(uid, {}).get("kind")
        kill_t = kills.get(uid)
        intent = 0
        timed: dict[int, tuple[int, int]] = {}
        confirmed = -1
        for r in recs:
            k = r.get("k")
            if k == "intent":
                intent = max(intent, int(r["hi"]))
            elif k == "chunk":
                t = int(r["t0"])
                for i, d in enumerate(r["dt"]):
                    timed[int(r["lo"]) + i] = (t, t + int(d))
                    t += int(d)
            elif k == "flush" and r.get("ok") and (kill_t is None or int(r["t1"]) <= kill_t):
                confirmed = max(confirmed, int(r["upto"]) - 1)
        totals["logged"] += len(timed)
        where = occ.get(tag, {})
        miss_by_gen: dict[int, list[int]] = defaultdict(list)
        for s in range(intent):
            landed = where.get(s, [])
            totals["landed"] += len(landed)
            if len(landed) > 1:
                failures.append(f"{tag} ({kind}): step {s} is on disk {len(landed)} times (gens {landed})")
            if s not in timed:
                continue  # begun but not recorded before a kill: may be anywhere, at most once
            a, b = timed[s]
            owed = None
            allowed = set()
            for gen in generations:
                if b >= gen.init_t0 and a <= gen.close_t1:
                    allowed.add(gen.g)
                if a >= gen.init_t1 and b <= gen.close_t0:
                    owed = gen
            if owed is not None and kill_t is not None and kill_t < owed.close_t1 and s > confirmed:
                owed = None  # killed before that hub closed, and no True flush confirmed it
            if not allowed:
                totals["no_hub"] += 1
            elif owed is None:
                totals["maybe"] += 1
            else:
                totals["owed"] += 1
            for g in landed:
                if g not in allowed:
                    why = f"logged for gens {sorted(allowed)}" if allowed else "logged while no hub existed"
                    failures.append(f"{tag} ({kind}): step {s} landed in gen {g} but was {why}")
            if owed is not None and owed.g not in landed:
                miss_by_gen[owed.g].append(s)
        for s in where:
            if s >= intent:
                failures.append(f"{tag} ({kind}): step {s} is on disk but the ledger never logged it")
        for g, steps in miss_by_gen.items():
            run = run_of.get((g, tag))
            missing[g][run] += len(steps)
            owed_here = sum(1 for s in timed if s not in where or g not in where[s])
            whole = "" if any(g in v for v in where.values()) else " (every one of them: the whole stream)"
            killed = ", SIGKILLed" if kill_t else ""
            missing_detail.append((g, run, f"{tag} ({kind}, pid {start['pid']}{killed}): "
                                           f"{len(steps)} owed events missing from gen {g}{whole}, steps "
                                           f"{_ranges(steps)} [{owed_here} of {len(timed)} not in gen {g}]"))
    for tag in occ:
        if tag not in seen_tags:
            failures.append(f"{tag}: on disk, but no ledger has it")

    # -- explained by the drop counters? ---------------------------------------------------------
    unexplained = explained = 0
    unexplained_runs: set[tuple[int, str | None]] = set()
    for g, per_run in missing.items():
        spare = 0
        for run, n in per_run.items():
            if run is None:
                continue
            d = dropped.get(g, {}).get(run, 0)
            explained += min(n, d)
            if n > d:
                unexplained += n - d
                unexplained_runs.add((g, run))
        mapped = {r for r in per_run if r is not None}
        spare = sum(max(0, d - per_run.get(r, 0)) for r, d in dropped.get(g, {}).items()
                    if r not in mapped or d > per_run.get(r, 0))
        n_none = per_run.get(None, 0)
        explained += min(n_none, spare)
        if n_none > spare:
            unexplained += n_none - spare
            unexplained_runs.add((g, None))
    for g, run, text in missing_detail:
        if (g, run) in unexplained_runs:
            problems.insert(0, "LOST: " + text)
        else:
            problems.append("dropped (counted): " + text)
    drops = {g: {r: v for r, v in d.items() if v} for g, d in dropped.items() if any(d.values())}
    if drops:
        problems.append(f"drop counters: {drops}")
    return {
        "processes": len(pids),
        "streams": totals["streams"],
        "logged": totals["logged"],
        "owed": totals["owed"],
        "landed": totals["landed"],
        "no_hub": totals["no_hub"],
        "maybe": totals["maybe"],
        "unexplained": unexplained,
        "explained": explained,
        "kills": len(kills),
        "transport_errors": transport_errors,
        "failures": failures,
        "problems": problems,
        "hangs": hangs,
    }
