"""Run the fault suite and print the fault table of docs/performance.md from what it measured.

    python scripts/fault_table.py              # runs `pytest -m faults`, prints the markdown table
    python scripts/fault_table.py -- -x -k kill   # extra pytest arguments after --
    python scripts/fault_table.py --record R.jsonl --junit J.xml   # re-print from an earlier run

Every fault test appends its measurements to the file named by $HYRAX_TBHUB_FAULT_RECORD
(tests/faults/common.py: record()); this script sets it, runs the suite, and turns the records and
the pass/fail outcome of each test into one row per fault: fault | trials | what survived | what
was lost. A fault with a failing test says so in its row. The table goes to stdout, the list of
failing tests to stderr; the exit status is pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FILES = {
    "test_faults_kill": 1,
    "test_faults_dataloader": 2,
    "test_faults_hubgone": 3,
    "test_faults_flood": 4,
    "test_faults_strangers": 5,
    "test_faults_badcalls": 6,
    "test_faults_fork": 7,
    "test_faults_lifecycle": 8,
    "test_faults_many": 9,
}
FAULTS = {
    1: "Producer SIGKILLed mid-stream",
    2: "DataLoader shutdown",
    3: "The hub goes away",
    4: "Flood and backpressure",
    5: "Strangers on the endpoint",
    6: "Bad calls",
    7: "Fork at the worst moment",
    8: "Life cycle",
    9: "Many producers",
}


class Missing(dict):  # type: ignore[type-arg]
    """A test's record, or an empty one whose every figure formats as "?"."""

    def __getitem__(self, key: str) -> Any:
        return self.get(key, "?")


def num(value: Any, spec: str = "") -> str:
    """``value`` formatted with ``spec``; counters read back as floats print as integers; "?" if absent."""
    if isinstance(value, float) and value.is_integer() and not spec.endswith("f"):
        value = int(value)
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return "?"


def total(records: list[dict[str, Any]], key: str) -> Any:
    try:
        return sum(r[key] for r in records)
    except (KeyError, TypeError):
        return "?"


def yes(flag: Any) -> str:
    return "yes" if flag else "NO"


def row1(r: Callable[[str], Missing]) -> tuple[str, str, str]:
    k, s, f, c = r("kill"), r("kill_spawn"), r("kill_forked_child"), r("contrast_mpqueue")
    kills = total([k, s], "kills")
    trials = (
        f"{kills} SIGKILLs: {k['random']} at random moments, {k['midsend']} with half a frame sent, "
        f"{k['midhandshake']} mid-handshake (fork children), {s['kills']} spawn children; "
        "1 producer killed with a forked child alive"
    )
    landed, expected = total([k, s], "survivor_landed"), total([k, s], "survivor_events")
    survived = (
        f"the hub kept serving; the other producers' events: {num(landed, ',')}/{num(expected, ',')}; "
        f"the owner logged and closed in {num(k['close_s'], '.3f')} s; with the killed producer's child "
        f"still alive, close took {num(f['close_s'], '.3f')} s"
    )
    wedged = "wedged" if c.get("wedged") else "did not wedge"
    lost = (
        f"the killed producers' unsent events only ({num(k['transport_errors'])} torn frames counted in "
        f"`hyrax_tbhub/transport_errors`). Contrast: a shared `multiprocessing.Queue` {wedged} after one "
        "SIGKILL mid-put"
    )
    return trials, survived, lost


def row2(r: Callable[[str], Missing]) -> tuple[str, str, str]:
    names = ("restart_fork", "restart_spawn", "exception", "stuck_in_getitem", "cannot_exit", "sigkilled")
    recs = [r(t) for t in names]
    workers = total([r("restart_fork"), r("restart_spawn")], "workers")
    trials = (
        f"persistent_workers=False, {r('restart_fork')['epochs']} epochs x 2 workers, fork and spawn "
        f"({workers} worker processes); a worker raising; one stuck in `__getitem__` and one unable to "
        "exit (both terminated by torch); one SIGKILLed"
    )
    shutdown = num(r("stuck_in_getitem")["shutdown_s"], ".1f")
    normal = f"{total(recs, 'normal_landed')}/{total(recs, 'normal_logged')}"
    survived = (
        f"nothing hung (stuck workers terminated {shutdown} s into shutdown: torch's join timeout, "
        f"shortened from 5 s); events of workers that exited normally: {normal}"
    )
    other, landed = total(recs, "other_logged"), total(recs, "other_landed")
    lost_n = other - landed if isinstance(other, int) and isinstance(landed, int) else "?"
    lost = f"terminated or killed workers: {lost_n} of the {other} events they logged"
    return trials, survived, lost


def row3(r: Callable[[str], Missing]) -> tuple[str, str, str]:
    cl, ki, fr, sw = r("closed"), r("killed"), r("frozen"), r("switches")
    three = [cl, ki, fr]
    worst = num(max((x.get("max_ms", 0.0) for x in three), default=0.0), ".1f")
    p999 = num(max((x.get("p999_ms", 0.0) for x in three), default=0.0), ".3f")
    followed = yes(all(r(t).get("followed") for t in ("follow_fork", "follow_spawn")))
    blocked_after = r("contrast_tbx")["calls_before_blocking"]
    trials = (
        f"the owner closes / is SIGKILLed / is frozen while {total(three, 'producers')} producers log; "
        f"{num(total(three, 'calls_after'), ',')} calls after the hub left; {sw['switches']} close+init "
        "switches under a flat-out producer; a replaced hub to follow (fork, spawn)"
    )
    survived = (
        f"no call raised ({total(three, 'errors')} errors); slowest call after the hub left {worst} ms, "
        f"p99.9 {p999} ms; the new hub was followed: {followed}; close with producers logging flat out: "
        f"{num(cl['close_s'], '.1f')} s (switches: at most {num(sw['max_close_s'], '.1f')} s)"
    )
    lost = (
        "calls made while no hub exists (no-ops by design); events stranded in a finished producer: "
        f"{sw['stranded']}. Contrast: a forked child logging through hyrax's own SummaryWriter blocked "
        f"for good (after {blocked_after} calls)"
    )
    return trials, survived, lost


def row4(r: Callable[[str], Missing]) -> tuple[str, str, str]:
    fz, bu, pa, ow = r("frozen"), r("bursts"), r("paced"), r("owner_flood")
    fl = fz.get("flooders") or {}
    scal = [v for k, v in fl.items() if k != "texts"]
    text = fl.get("texts", {})
    logged, dropped = num(total(scal, "logged"), ","), num(total(scal, "dropped"), ",")
    trials = (
        f"hub frozen (SIGSTOP) while {len(scal)} producers log {logged} scalars and 1 logs "
        f"{text.get('logged', '?')} x 1 MiB texts; {bu['producers']} bursts of 150k; "
        f"{pa['producers']} producers at 20k/s; the owner {num(ow['logged'], ',')} flat out"
    )
    scalar_mib = num(max((v.get("rss_growth_mib", 0) for v in scal), default=0), ".0f")
    slowest = num(max((v.get("max_ms", 0) for v in fl.values()), default=0), ".1f")
    survived = (
        f"while the hub keeps up, everything: bursts {num(bu['landed'], ',')}/{num(bu['logged'], ',')}, "
        f"paced {num(pa['landed'], ',')}/{num(pa['logged'], ',')}. Memory growth: a producer "
        f"{scalar_mib} MiB (scalars; max_events={num(fz['max_events'], ',')}), "
        f"{num(text.get('rss_growth_mib'), '.0f')} MiB (texts; max_bytes={num(fz['max_bytes_mib'], '.0f')} "
        f"MiB), the hub {num(fz['hub_growth_mib'], '.0f')} MiB; slowest call {slowest} ms"
    )
    counted = yes(bool(fl) and all(v.get("counter") == v.get("dropped") for v in fl.values()))
    lost = (
        f"beyond the bounds only, every one counted: {dropped} of {logged} scalars and "
        f"{text.get('dropped', '?')} of {text.get('logged', '?')} texts while frozen "
        f"(`hyrax_tbhub/dropped/<run>` matches: {counted}); 0 while the hub keeps up"
    )
    return trials, survived, lost


def row5(r: Callable[[str], Missing]) -> tuple[str, str, str]:
    ki, st, fu, co = r("kinds"), r("storm"), r("fuzz"), r("contrast_listener")
    trials = (
        f"{ki['strangers']} strangers of {ki['kinds']} kinds (silent, wrong key, garbage, 4 GiB length, "
        f"frames before auth, 63 of 64 bytes, half-close); a storm of {num(st['strangers'], ',')} while "
        f"{st['producers']} producers start; {num(fu['inputs'], ',')} fuzzed pre-auth inputs; "
        "2,000 frame-reader inputs"
    )
    survived = (
        "the hub (alive); every real producer connected, logged 1000 and flushed in at most "
        f"{num(st['max_seconds'], '.2f')} s; all their events landed"
    )
    blocked = "blocked" if co.get("blocked") else "not blocked"
    lost = (
        f"nothing; frames decoded before authentication: {total([ki, fu], 'loads')}; descriptors "
        f"leaked: {total([ki, fu], 'new_fds')}. Contrast: `Listener.accept()` {blocked} by one silent client"
    )
    return trials, survived, lost


def row6(r: Callable[[str], Missing], records: dict[str, dict[str, Any]]) -> tuple[str, str, str]:
    cases = {k: v for k, v in records.items() if k.startswith(("producer:", "owner:"))}
    ok = sum(1 for v in cases.values() if not v.get("problems"))
    odd, hm, bf = r("odd"), r("hub_method_raises"), r("blocked_folder")
    ue, ov = r("unexpected_write_error"), r("oversized")
    trials = (
        f"{len(cases) // 2} caller faults (unconvertible value, device tensor, step beyond int64, bad or "
        f"unpicklable walltime, ...) x (producer, owner); {odd['values']} odd values (NaN, inf...) and "
        f"{odd['tags']} odd tags; a figure and a 19 MB image; an event over max_bytes; hub-side faults"
    )
    survived = (
        f"{ok}/{len(cases)} bad calls raised at the call site and left logging working; odd values and "
        f"tags land as tensorboardX writes them ({odd['tags_ok']}/{odd['tags']} tags); the hub after an "
        f"unexpected write error: {'alive' if ue.get('hub_alive') else 'DEAD'}"
    )
    over = "raised at the call site" if ov.get("raised") else f"dropped and counted ({ov['dropped']})"
    lost = (
        f"hub-side faults: {num(hm['counted'])} of {hm['lost']} and {num(bf['counted'])} of {bf['lost']} "
        f"lost events counted in `hyrax_tbhub/errors/<run>`; the oversized event: {over}"
    )
    return trials, survived, lost


def row7(r: Callable[[str], Missing]) -> tuple[str, str, str]:
    pf, of = r("producer_forks"), r("owner_forks")
    kinds = ", ".join(pf.get("kinds", [])) or "?"
    trials = (
        f"{pf['rounds']} forks while the sender is half-way through a frame ({kinds}); "
        f"{of['rounds']} forks of the owner while the hub's lock is held"
    )
    survived = (
        f"children's events {num(pf['child_landed'], ',')}/{num(pf['child_events'], ',')} "
        f"(+{num(of['child_landed'], ',')} from the owner's children); the parent carried on: "
        f"{num(pf['parent_landed'], ',')} landed + {num(pf['parent_dropped'], ',')} counted drops = "
        f"{num(pf['parent_logged'], ',')} logged; torn or interleaved frames: {num(pf['transport_errors'])}"
    )
    lost = "the parent's overflow while its sender was held mid-frame, all counted"
    return trials, survived, lost


def row8(r: Callable[[str], Missing]) -> tuple[str, str, str]:
    cy, fo, un = r("cycles"), r("follow_100"), r("unrelated")
    trials = (
        f"{num(cy['cycles'], ',')} init/close cycles in one process (a producer every 100); a producer "
        f"following {fo['hubs']} successive hubs; {un['hubs']} hubs at once (2 unrelated programs)"
    )
    survived = (
        f"every event; leaked: descriptors {cy['new_fds']} (cycles) / {fo['new_fds']} (follower), threads "
        f"{cy['new_threads']}, sockets and hub files {total([cy, un], 'leftovers')}, temp folders "
        f"{cy['tmp']}; hubs crossed: {un['crossed']}"
    )
    return trials, survived, "nothing"


def row9(r: Callable[[str], Missing]) -> tuple[str, str, str]:
    m = r("many")
    trials = f"{m['producers']} producer processes (fork) released at once"
    survived = (
        f"{num(m['landed'], ',')}/{num(m['logged'], ',')} events, each producer in its own run; all "
        f"connected and flushed within {num(m['all_connected_s'], '.2f')} s"
    )
    return trials, survived, "nothing"


def group_params(tests: list[str]) -> list[str]:
    """``f[a]``, ``f[b]`` -> ``f[a, b]``: one entry per test function."""
    grouped: dict[str, list[str]] = {}
    for test in tests:
        name, _, param = test.partition("[")
        grouped.setdefault(name, [])
        if param:
            grouped[name].append(param.rstrip("]"))
    return [f"{name}[{', '.join(params)}]" if params else name for name, params in grouped.items()]


def read_outcomes(junit: Path) -> dict[int, list[tuple[str, bool]]]:
    out: dict[int, list[tuple[str, bool]]] = defaultdict(list)
    if not junit.exists():
        return out
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        point = FILES.get(module)
        if point is None or case.find("skipped") is not None:
            continue
        failed = case.find("failure") is not None or case.find("error") is not None
        out[point].append((case.get("name", "?"), not failed))
    return out


def table(record: Path, junit: Path) -> tuple[str, list[str]]:
    by_point: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    if record.exists():
        for line in record.read_text().splitlines():
            rec = json.loads(line)
            by_point[int(rec.pop("point"))][rec.pop("test")] = rec
    outcomes = read_outcomes(junit)
    builders: dict[int, Callable[..., tuple[str, str, str]]] = {
        1: row1,
        2: row2,
        3: row3,
        4: row4,
        5: row5,
        7: row7,
        8: row8,
        9: row9,
    }
    lines = ["| fault | trials | what survived | what was lost |", "| --- | --- | --- | --- |"]
    failing: list[str] = []
    for point, name in FAULTS.items():
        recs = by_point.get(point, {})

        def r(test: str, recs: dict[str, dict[str, Any]] = recs) -> Missing:
            return Missing(recs.get(test, {}))

        try:
            cells = row6(r, recs) if point == 6 else builders[point](r)
        except Exception as exc:  # a missing figure must not hide the rest of the table
            cells = ("?", f"(no measurements: {exc!r})", "?")
        bad = [test for test, ok in outcomes.get(point, []) if not ok]
        failing += [f"{point}. {test}" for test in bad]
        results = outcomes.get(point, [])
        status = f"{len(results) - len(bad)}/{len(results)} tests pass" if results else "not run"
        if bad:
            status += "; FAILING: " + ", ".join(f"`{t}`" for t in group_params(bad))
        trials, survived, lost = cells
        lines.append(f"| {point}. {name} ({status}) | {trials} | {survived} | {lost} |")
    return "\n".join(lines), failing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", type=Path, help="re-print from this record file (no test run)")
    parser.add_argument("--junit", type=Path, help="with --record: the junit XML of that run")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    code = 0
    if args.record:
        record, junit = args.record, args.junit or Path("/nonexistent")
    else:
        work = Path(tempfile.mkdtemp(prefix="fault-table-"))
        record, junit = work / "record.jsonl", work / "junit.xml"
        env = dict(os.environ, HYRAX_TBHUB_FAULT_RECORD=str(record))
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "faults",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            *args.pytest_args,
        ]
        print("running:", " ".join(cmd), file=sys.stderr)
        code = subprocess.call(cmd, cwd=ROOT, env=env, stdout=sys.stderr)
        print(f"records: {record}  junit: {junit}", file=sys.stderr)
    text, failing = table(record, junit)
    print(text)
    if failing:
        print("\nfailing fault tests:\n  " + "\n  ".join(failing), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
