"""The targets a run is held against, computed from the best row of each measurement."""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import (
    NOHUB_WHERE,
    TARGET_CALLER_MEAN_US,
    TARGET_CALLER_US,
    TARGET_HUB_MEM_RATIO,
    TARGET_NOHUB_RATIO,
    TARGET_PRODUCER_MEM_RATIO,
    TARGET_SCALING_16_4,
    TARGET_SINGLE_RATIO,
    TARGET_SPEEDUP_4,
    RunResult,
)


def best_rows(results: list[RunResult]) -> list[RunResult]:
    """One row per measurement: the fastest repeat, with the worst loss and any error kept."""
    groups: dict[tuple[str, str, int, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.mode, r.kind, r.producers, r.contender), []).append(r)
    best: list[RunResult] = []
    for group in groups.values():
        ok = [r for r in group if r.error is None and r.events_per_s is not None]
        pick = dataclasses.replace(max(ok, key=lambda r: r.events_per_s or 0.0) if ok else group[0])
        pick.lost = max(r.lost for r in group)
        pick.error = next((r.error for r in group if r.error), None)
        best.append(pick)
    return best


def _find(
    rows: list[RunResult], contender: str, kind: str, producers: int, mode: str = "throughput"
) -> RunResult | None:
    key = (mode, contender, kind, producers)
    return next((r for r in rows if (r.mode, r.contender, r.kind, r.producers) == key), None)


@dataclasses.dataclass
class Target:
    name: str
    measured: str
    threshold: str
    ratio: float | None
    passed: bool | None  # None: not measured in this run
    info: bool = False  # shown for context, not one of the targets


def _ratio_target(
    name: str, num: float | None, den: float | None, limit: float, at_least: bool, unit: str
) -> Target:
    op = ">=" if at_least else "<="
    if num is None or den is None or den == 0:
        return Target(name, "n/a", f"{op} {limit:g}x", None, None)
    ratio = num / den
    passed = ratio >= limit if at_least else ratio <= limit
    return Target(name, f"{fmt_num(num)} vs {fmt_num(den)} {unit}", f"{op} {limit:g}x", ratio, passed)


def _eps(row: RunResult | None) -> float | None:
    return row.events_per_s if row is not None and row.error is None and row.lost == 0 else None


def compute_targets(rows: list[RunResult], nohub: dict[str, dict[str, Any]]) -> list[Target]:
    p4_a, p4_d = _find(rows, "a", "scalar", 4), _find(rows, "d", "scalar", 4)
    targets = [
        _ratio_target(
            "throughput, 4 producers: (d) vs (a)", _eps(p4_d), _eps(p4_a), TARGET_SPEEDUP_4, True, "events/s"
        ),
    ]
    caller = p4_d.caller_us_median if p4_d is not None else None
    targets.append(
        Target(
            "caller cost, 4 producers: (d) median",
            "n/a" if caller is None else f"{caller:.2f} us",
            f"<= {TARGET_CALLER_US:g} us",
            None if caller is None else caller / TARGET_CALLER_US,
            None if caller is None else caller <= TARGET_CALLER_US,
        )
    )
    p1_d = _find(rows, "d", "scalar", 1)
    mean = p1_d.caller_us_mean if p1_d is not None and p1_d.error is None else None
    targets.append(
        Target(
            "caller cost, 1 producer: (d) mean over the loop",
            "n/a" if mean is None else f"{mean:.2f} us",
            f"<= {TARGET_CALLER_MEAN_US:g} us",
            None if mean is None else mean / TARGET_CALLER_MEAN_US,
            None if mean is None else mean <= TARGET_CALLER_MEAN_US,
        )
    )
    for where, label in NOHUB_WHERE.items():
        ok = nohub.get(where, {}).get("ok", {})
        targets.append(
            _ratio_target(
                f"no-hub call vs plain Python call, {label}",
                ok.get("nohub_ns"),
                ok.get("plain_ns"),
                TARGET_NOHUB_RATIO,
                False,
                "ns",
            )
        )
    targets.append(
        _ratio_target(
            "no collapse: (d) 16 vs 4 producers",
            _eps(_find(rows, "d", "scalar", 16)),
            _eps(p4_d),
            TARGET_SCALING_16_4,
            True,
            "events/s",
        )
    )
    targets.append(
        _ratio_target(
            "single process: (d) owner only vs (a)",
            _eps(_find(rows, "d", "scalar", 0)),
            _eps(_find(rows, "a", "scalar", 0)),
            TARGET_SINGLE_RATIO,
            True,
            "events/s",
        )
    )
    targets += _memory_targets(rows)
    targets += _floor_target(rows)
    lost = sum(max(r.lost, 0) for r in rows if r.contender == "d")
    errors = sum(1 for r in rows if r.contender == "d" and r.error)
    targets.append(
        Target(
            "(d) every event on disk, no errors",
            f"{lost} lost, {errors} errors",
            "0",
            None,
            lost == 0 and errors == 0 and any(r.contender == "d" for r in rows),
        )
    )
    return targets


def _floor_target(rows: list[RunResult]) -> list[Target]:
    """The headline ratio once the exit floor is taken out: how fast is the logging itself."""
    a, d = _find(rows, "a", "scalar", 4), _find(rows, "d", "scalar", 4)
    floor = _find(rows, "d", "scalar", 4, mode="exit-floor")
    if a is None or d is None or floor is None or floor.error or d.seconds is None or floor.seconds is None:
        return []
    net = d.seconds - floor.seconds
    target = _ratio_target(
        "(info) throughput, 4 producers, exit floor subtracted: (d) vs (a)",
        d.counted / net if net > 0 else None,
        _eps(a),
        TARGET_SPEEDUP_4,
        True,
        "events/s",
    )
    target.info = True
    return [target]


def _memory_targets(rows: list[RunResult]) -> list[Target]:
    """Worst ratio over the scenarios where both sides ran."""
    hub_pairs: list[tuple[float, float]] = []
    prod_pairs: list[tuple[float, float]] = []
    for d in (r for r in rows if r.contender == "d" and r.mode == "throughput" and r.error is None):
        a, c = _find(rows, "a", d.kind, d.producers), _find(rows, "c", d.kind, d.producers)
        if a is not None and a.owner_peak_mib and d.owner_peak_mib:
            hub_pairs.append((d.owner_peak_mib, a.owner_peak_mib))
        if c is not None and c.producer_peak_mib and d.producer_peak_mib:
            prod_pairs.append((d.producer_peak_mib, c.producer_peak_mib))

    def worst(pairs: list[tuple[float, float]]) -> tuple[float | None, float | None]:
        return max(pairs, key=lambda p: p[0] / p[1]) if pairs else (None, None)

    return [
        _ratio_target(
            "memory: hub process peak vs (a) process, worst",
            *worst(hub_pairs),
            TARGET_HUB_MEM_RATIO,
            False,
            "MiB",
        ),
        _ratio_target(
            "memory: producer peak vs (c) producer, worst",
            *worst(prod_pairs),
            TARGET_PRODUCER_MEM_RATIO,
            False,
            "MiB",
        ),
    ]


def fmt_num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0 and abs(value) >= 10:
        return f"{value:,.0f}"
    return f"{value:.{digits or 2}f}"
