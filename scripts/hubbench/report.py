"""The markdown report the benchmark prints (the README quotes it as printed)."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from typing import Any

from .config import CONTENDERS, NOHUB_WHERE, Config, RunResult
from .targets import Target, fmt_num


def run_meta() -> dict[str, Any]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for dist in ("hyrax_tbhub", "tensorboardX", "tensorboard", "numpy", "protobuf", "crc32c"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    # The tree measured is the one imported (a checkout on PYTHONPATH need not be installed).
    import hyrax_tbhub

    versions["hyrax_tbhub"] = hyrax_tbhub.__version__
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }


def _producers_cell(r: RunResult) -> str:
    if r.contender == "a":
        if r.producers == 0:
            return "in-process"
        return f"in-process ({r.producers} stream{'s' if r.producers > 1 else ''})"
    return "owner only" if r.producers == 0 else str(r.producers)


def _lost_cell(r: RunResult) -> str:
    if r.error:
        return "**ERROR**"
    return f"**LOST {r.lost}**" if r.lost else "0"


def _throughput_table(rows: list[RunResult]) -> list[str]:
    lines = [
        "| events | contender | producers | events/producer | expected | counted | LOST | calls done s "
        "| end-to-end s | events/s | caller us (mean, loop) | caller us (mean, loop + flush) "
        "| process CPU us/call | caller us (median chunk) | caller us (worst chunk) | hub/owner MiB "
        "| producer MiB (max) |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.mode != "throughput":
            continue
        cells = [
            r.kind,
            CONTENDERS[r.contender],
            _producers_cell(r),
            f"{r.per_producer:,}",
            f"{r.expected:,}",
            f"{r.counted:,}",
            _lost_cell(r),
            fmt_num(r.calls_done_s, 2),
            fmt_num(r.seconds, 2),
            fmt_num(r.events_per_s),
            fmt_num(r.caller_us_mean, 2),
            fmt_num(r.caller_us_flushed, 2),
            fmt_num(r.caller_cpu_us, 2),
            fmt_num(r.caller_us_median, 2),
            fmt_num(r.caller_us_worst_chunk, 2),
            fmt_num(r.owner_peak_mib, 1),
            fmt_num(r.producer_peak_mib, 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _exit_floor_table(rows: list[RunResult]) -> list[str]:
    floors = [r for r in rows if r.mode == "exit-floor"]
    if not floors:
        return []
    lines = [
        "### Exit floor: producers that log nothing",
        "",
        "Part of every end-to-end time above that has producers: the barrier, the producers' exit "
        "(interpreter teardown) and the close; (b) holds no logging library in its producers.",
        "",
        "| contender | producers | end-to-end s | hub/owner MiB | producer MiB (max) | LOST |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in floors:
        cells = [
            CONTENDERS[r.contender],
            str(r.producers),
            fmt_num(r.seconds, 2),
            fmt_num(r.owner_peak_mib, 1),
            fmt_num(r.producer_peak_mib, 1),
            _lost_cell(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _flush_table(rows: list[RunResult]) -> list[str]:
    notes = {"a": "in-process; does not wait for queued events", "d": "from a producer"}
    lines = [
        "| writer | flushes | median us | max us | returned False | LOST | note |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        if r.mode == "flush":
            median = statistics.median(r.flush_us) if r.flush_us else None
            worst = max(r.flush_us) if r.flush_us else None
            lines.append(
                f"| {CONTENDERS[r.contender]} | {len(r.flush_us)} | {fmt_num(median, 1)} "
                f"| {fmt_num(worst, 1)} | {r.flush_failed} | {_lost_cell(r)} | {notes.get(r.contender, '')} |"
            )
    return lines


def _nohub_table(nohub: dict[str, dict[str, Any]]) -> list[str]:
    if not nohub:
        return ["(not measured)"]
    lines = [
        "| call (min over repeats, loop included) | "
        + " | ".join(f"{w} ns" for w in NOHUB_WHERE.values())
        + " |",
        "|---|" + "---:|" * len(NOHUB_WHERE),
    ]
    calls = {
        "empty_loop_ns": "empty loop",
        "plain_ns": "plain Python `f('x', 1.0, 3)`",
        "nohub_ns": "`get_tensorboard_logger().add_scalar('x', 1.0, 3)`, no hub",
    }
    for key, label in calls.items():
        cells = [fmt_num(nohub.get(w, {}).get("ok", {}).get(key), 1) for w in NOHUB_WHERE]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for where, label in NOHUB_WHERE.items():
        if "error" in nohub.get(where, {}):
            lines += [
                "",
                f"**ERROR** measuring the no-hub call in a {label}:",
                "```",
                nohub[where]["error"].rstrip(),
                "```",
            ]
    return lines


def _targets_table(targets: list[Target]) -> list[str]:
    lines = ["| target | measured | threshold | ratio | result |", "|---|---|---|---:|---|"]
    for t in targets:
        verdict = "n/a" if t.passed is None else ("PASS" if t.passed else "**MISS**")
        verdict = f"({verdict.strip('*')})" if t.info else verdict
        ratio = "-" if t.ratio is None else f"{t.ratio:.2f}x"
        lines.append(f"| {t.name} | {t.measured} | {t.threshold} | {ratio} | {verdict} |")
    return lines


def _errors(rows: list[RunResult]) -> list[str]:
    lines: list[str] = []
    for r in rows:
        if r.error:
            lines += [
                f"### ERROR in {r.mode} {r.kind} P={r.producers} {CONTENDERS[r.contender]}",
                "```",
                r.error.rstrip(),
                "```",
            ]
    return lines


def format_report(
    meta: dict[str, Any],
    cfg: Config,
    rows: list[RunResult],
    nohub: dict[str, dict[str, Any]],
    targets: list[Target],
) -> str:
    v = meta["versions"]
    lines = [
        "## hyrax_tbhub benchmark",
        "",
        f"{meta['date']} · {meta['implementation']} {meta['python']} · {meta['platform']} · "
        f"{meta['cpu_count']} CPUs · tensorboardX {v['tensorboardX']} · hyrax_tbhub {v['hyrax_tbhub']} · "
        f"repeats {cfg.repeats} (fastest shown)",
        "",
        "End-to-end: from the release of the start barrier until every event is on disk "
        "(close returned), producers' exit included; calls done: until the last producer's last call "
        "returned. Events counted back with TensorBoard's EventAccumulator, "
        "`hyrax_tbhub/*` excluded. Caller cost, per producer (averaged over producers): the mean "
        "over its whole logging loop (wall time / calls; the library's own threads in that process, "
        "such as hyrax_tbhub's sender, take their share of it while the loop runs), the same with one "
        "flush() after the loop (what was still queued is counted too; (b) has no flush), the "
        "process's CPU time (every thread) over both per call, and the median and worst of chunks of "
        f"{cfg.chunk} calls (media: fewer), which hide the sender's work.",
        "",
        *_throughput_table(rows),
        "",
        *_exit_floor_table(rows),
        "### flush()",
        "",
        *_flush_table(rows),
        "",
        "### Call with no hub",
        "",
        *_nohub_table(nohub),
        "",
        "### Targets",
        "",
        *_targets_table(targets),
    ]
    if any(r.lost for r in rows):
        lines += ["", "**EVENTS WERE LOST**: see the LOST column (negative: more events than logged)."]
    errors = _errors(rows)
    if errors:
        lines += ["", *errors]
    return "\n".join(lines) + "\n"
