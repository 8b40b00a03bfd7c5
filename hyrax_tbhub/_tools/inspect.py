"""``hyrax-tbhub inspect LOGDIR``: summarize what a log directory holds, as TensorBoard will read it.

Every directory below LOGDIR that holds ``*tfevents*`` files is a run (LOGDIR itself is run ``.``).
Files are read with TensorBoard's own record reader (``RawEventFileLoader``) and passed through the
same compatibility layers TensorBoard applies (``data_compat``, ``dataclass_compat``), so tag names
and kinds match what the TensorBoard UI shows (tensorboardX's ``add_text("t", ...)`` becomes tag
``t/text_summary``, legacy ``simple_value`` scalars become scalar tensors, ...).

TensorBoard's Python reader stops silently at the first bad record (it logs the ``DataLossError`` at
debug level only). We detect that by comparing the bytes the reader consumed with the file size and
report it as a problem: ``truncated`` (the last record is incomplete: a crashed writer, or one still
writing) or ``corrupt`` (a complete record fails its CRC). Counts are what the Python reader
(``EventAccumulator``, ``tensorboard --load_fast=false``) gets. The default Rust data server differs
on ``corrupt`` files: it only checks a record's data CRC when the payload fails to parse, so a flipped
bit inside a value is served as is and reading goes on; a bad length CRC stops it too.

JSON output (``--json``), format ``hyrax_tbhub.inspect/1``; stdout is JSON exactly when the exit code
is 0:

.. code-block:: text

    {
      "format": "hyrax_tbhub.inspect/1",
      "logdir": "/abs/path",
      "transport_errors": int | null,      # latest hyrax_tbhub/transport_errors, null if never logged
      "internal_errors": int | null,       # likewise hyrax_tbhub/internal_errors (bugs of the hub)
      "rejected": int | null,              # peers that proved the key, then broke the protocol
      "strangers": int | null,             # connections that never proved the key
      "over_cap": int | null,              # events past the runs / sub-runs caps
      "total_dropped": int,                # sum over runs of "dropped" (null counted as 0)
      "total_errors": int,
      "runs": {                            # "." first, then sorted by name
        "<run>": {
          "path": "/abs/path/<run>",
          "dropped": int | null,           # latest hyrax_tbhub/dropped/<run> from the root run
          "errors": int | null,            # latest hyrax_tbhub/errors/<run> from the root run
          "event_files": [{"file": "<path relative to logdir>", "size_bytes": int,
                           "bytes_read": int, "records": int}],
          "tags": {                        # sorted by tag
            "<tag>": {"kind": "scalar|histogram|image|text|audio|tensor|other", "plugin": str,
                      "count": int, "step_min": int, "step_max": int,
                      "step_regressions": int,   # points whose step is lower than the previous one
                      "wall_time_min": float, "wall_time_max": float,        # seconds since epoch
                      "wall_time_min_utc": str, "wall_time_max_utc": str}  # ISO 8601, "Z"
          }
        }
      },
      "problems": [{"run": str, "file": str, "kind": "truncated|corrupt|undecodable|unreadable",
                    "offset": int | null, "unread_bytes": int, "message": str}]
    }

Exit codes: 0 (also when some files are truncated or corrupt: a warning goes to stderr), 1 when no
event file exists below LOGDIR, 2 when LOGDIR is missing or not a directory, 3 when the ``tensorboard``
package (not a dependency of hyrax_tbhub: its readers are imported lazily) is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys

from .inspect_model import (
    JSON_FORMAT,
    EventFileReport,
    LogdirReport,
    Problem,
    RunReport,
    TagReport,
    utc_iso,
)
from .inspect_read import inspect_logdir

__all__ = [
    "JSON_FORMAT", "EventFileReport", "LogdirReport", "Problem", "RunReport", "TagReport",
    "format_report", "inspect_logdir", "main", "utc_iso",
]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def format_report(report: LogdirReport) -> str:
    """The human-readable table: two summary lines, then one block per run."""
    points = sum(t.count for run in report.runs.values() for t in run.tags.values())
    summary = (
        f"{_plural(len(report.runs), 'run')}, {_plural(report.event_file_count, 'event file')}, "
        f"{_plural(points, 'point')}; dropped {report.total_dropped}, errors {report.total_errors}, "
        f"transport errors {_count(report.transport_errors)}"
    )
    # The rarer counters only when the hub logged them: a clean log keeps its two-line summary.
    for key in ("internal_errors", "rejected", "strangers", "over_cap"):
        value = getattr(report, key)
        if value:
            summary += f", {key.replace('_', ' ')} {value}"
    if report.problems:
        summary += f"; {_plural(len(report.problems), 'damaged file')} (see warnings)"
    lines = [f"logdir {report.logdir}", summary]
    # One column layout for the whole report so runs line up when read top to bottom.
    tags = [t for run in report.runs.values() for t in run.tags.values()]
    widths = (
        max([len("tag")] + [len(t.tag) for t in tags]),
        max([len("steps")] + [len(_steps(t)) for t in tags]),
    )
    for run in report.runs.values():
        lines.append("")
        lines.extend(_format_run(run, widths))
    return "\n".join(lines) + "\n"


def _steps(tag: TagReport) -> str:
    return f"{tag.step_min}..{tag.step_max}"


def _format_run(run: RunReport, widths: tuple[int, int]) -> list[str]:
    tag_w, steps_w = widths
    lines = [
        f"run {run.name}  ({_plural(len(run.event_files), 'event file')}; "
        f"dropped {_count(run.dropped)}, errors {_count(run.errors)})"
    ]
    if not run.event_files:
        return [*lines, "  (no event files: this run is only named by a hub counter)"]
    if not run.tags:
        return [*lines, "  (no summary data)"]
    lines.append(f"  {'tag':<{tag_w}}  {'kind':<9}  {'count':>7}  {'steps':<{steps_w}}  wall time (UTC)")
    for tag in run.tags.values():
        wall = f"{utc_iso(tag.wall_time_min)} .. {utc_iso(tag.wall_time_max)}"
        line = f"  {tag.tag:<{tag_w}}  {tag.kind:<9}  {tag.count:>7}  {_steps(tag):<{steps_w}}  {wall}"
        if tag.step_regressions:
            line += f"  [step went backwards {tag.step_regressions}x: TensorBoard hides earlier points]"
        lines.append(line)
    return lines


def _warning_line(problem: Problem) -> str:
    return f"WARNING: {problem.file}: {problem.message}"


# --------------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyrax-tbhub inspect",
        description="Summarize the runs, tags and hub counters of a TensorBoard log directory.",
        epilog="Exit status: 0 ok (damaged files are reported as warnings on stderr), "
        "1 no event files found, 2 LOGDIR missing or not a directory.",
    )
    parser.add_argument("logdir", help="the log directory (the hub's LOGDIR)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (keys documented)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    prog = "hyrax-tbhub inspect"
    if importlib.util.find_spec("tensorboard") is None:
        print(
            f"{prog}: needs the tensorboard package to read event files: pip install tensorboard",
            file=sys.stderr,
        )
        return 3
    try:
        report = inspect_logdir(args.logdir)
    except (FileNotFoundError, NotADirectoryError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    if report.event_file_count == 0:
        print(f"{prog}: no event files (*tfevents*) found under {report.logdir}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        sys.stdout.write(format_report(report))
    for problem in report.problems:
        print(_warning_line(problem), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
