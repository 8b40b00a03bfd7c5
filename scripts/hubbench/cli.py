"""The command line of ``python scripts/bench.py``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from .config import CONTENDERS, QUICK, Config
from .measure import plan, run_all
from .report import format_report, run_meta
from .targets import best_rows, compute_targets


def _producer_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("producer counts must be >= 1")
    return values


def _contender_set(text: str) -> str:
    if not text or set(text) - set(CONTENDERS):
        raise argparse.ArgumentTypeError(f"pick from {''.join(CONTENDERS)}, e.g. 'ad'")
    return "".join(c for c in CONTENDERS if c in text)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _parser() -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(
        prog="python scripts/bench.py",
        description="Benchmark hyrax_tbhub side by side with tensorboardX and the usual multiprocess fixes.",
    )
    p.add_argument("--quick", action="store_true", help="tiny event counts: checks that everything runs")
    p.add_argument(
        "--json",
        metavar="PATH",
        help="also write every figure as JSON to PATH ('-': stdout, the table then goes to stderr)",
    )
    p.add_argument("--producers", type=_producer_list, help=f"producer counts (default {d.producers})")
    p.add_argument("--events-per-producer", type=_positive, help=f"scalars (default {d.events_per_producer})")
    p.add_argument("--max-total", type=_positive, help=f"cap on scalars per scenario (default {d.max_total})")
    p.add_argument("--media-producers", type=_positive, help=f"default {d.media_producers}")
    p.add_argument("--hist-per-producer", type=_positive, help=f"default {d.hist_per_producer}")
    p.add_argument("--image-per-producer", type=_positive, help=f"default {d.image_per_producer}")
    p.add_argument("--chunk", type=_positive, help=f"calls per timed chunk (default {d.chunk})")
    p.add_argument("--repeats", type=_positive, help="run everything N times, keep the fastest (default 1)")
    p.add_argument("--contenders", type=_contender_set, help="subset of 'abcd' (default all)")
    p.add_argument("--timeout", type=float, help=f"seconds per measurement (default {d.timeout_s:g})")
    p.add_argument(
        "--no-media", dest="media", action="store_false", default=None, help="skip histograms, images"
    )
    p.add_argument(
        "--no-exit-floor",
        dest="exit_floor",
        action="store_false",
        default=None,
        help="skip timing (d) with producers that log nothing",
    )
    p.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    return p


def _config(args: argparse.Namespace) -> Config:
    cfg = QUICK if args.quick else Config()
    overrides = {
        "producers": args.producers,
        "events_per_producer": args.events_per_producer,
        "max_total": args.max_total,
        "media_producers": args.media_producers,
        "hist_per_producer": args.hist_per_producer,
        "image_per_producer": args.image_per_producer,
        "chunk": args.chunk,
        "repeats": args.repeats,
        "contenders": args.contenders,
        "timeout_s": args.timeout,
        "media": args.media,
        "exit_floor": args.exit_floor,
    }
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def _write_json(path: str, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2, allow_nan=False, default=str) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every run worked and nothing was lost, 1 otherwise (2: --strict miss)."""
    args = _parser().parse_args(argv)
    cfg = _config(args)
    report_stream = sys.stderr if args.json == "-" else sys.stdout
    # Imported here, not at the top: spawned producers of (a)-(c) import this package and must not
    # carry hyrax_tbhub.
    from hyrax_tbhub._tools.progress import Progress

    progress = Progress(len(plan(cfg)) * cfg.repeats + 2 * ("d" in cfg.contenders), "bench", sys.stderr)
    try:
        results, nohub = run_all(cfg, progress)
    finally:
        progress.close()
    rows = best_rows(results)
    targets = compute_targets(rows, nohub)
    meta = run_meta()
    report_stream.write(format_report(meta, cfg, rows, nohub, targets))
    report_stream.flush()
    if args.json:
        _write_json(
            args.json,
            {
                "meta": meta,
                "config": dataclasses.asdict(cfg),
                "runs": [dataclasses.asdict(r) for r in rows],
                "all_repeats": [dataclasses.asdict(r) for r in results] if cfg.repeats > 1 else [],
                "nohub": {where: msg.get("ok") for where, msg in nohub.items()},
                "nohub_errors": {where: msg["error"] for where, msg in nohub.items() if "error" in msg},
                "targets": [dataclasses.asdict(t) for t in targets],
            },
        )
    failed = any(r.error or r.lost or r.flush_failed for r in rows)
    failed = failed or any("error" in msg for msg in nohub.values())
    if failed:
        sys.stderr.write("bench: some measurements failed or lost events (see the report)\n")
        return 1
    if args.strict and any(t.passed is False and not t.info for t in targets):
        return 2
    return 0
