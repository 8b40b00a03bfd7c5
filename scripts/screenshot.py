#!/usr/bin/env python3
"""Take the README screenshot: TensorBoard's scalars dashboard for a hyrax_tbhub log directory.

    python scripts/screenshot.py --logdir LOGDIR [--out docs/tensorboard.png]
    python scripts/screenshot.py --make-sample [--logdir DIR] [--out ...]

Starts a real ``tensorboard --logdir D --host 127.0.0.1 --port 0``, waits (bounded, by polling its
HTTP API) until the scalar tags of every run on disk are served, then points headless Chromium at
the dashboard and saves a PNG. ``--make-sample`` first writes a small log with tensorboardX in the
hub's layout: a root run with ``train/loss`` and runs ``dataloader_worker_0`` / ``_1`` with
``DataProvider/file_read_time_s``.

The default view is ``#scalars``: its charts are SVG, so software-only headless Chromium draws them,
and its sidebar lists every run. ``--view timeseries`` uses ``?forceSVG=true#timeseries`` instead:
without ``forceSVG`` the Time Series charts use WebGL and often come out empty in headless mode.

Exit codes: 0 ok, 1 TensorBoard or Chromium failed, 2 bad arguments, 3 no Chromium binary found,
4 the tensorboard package is not installed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "tensorboard.png"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NAMES = ", ".join(CHROMIUM_NAMES)
VIEWS = {"scalars": "#scalars", "timeseries": "?forceSVG=true#timeseries"}
# TensorBoard prints "TensorBoard 2.21.0 at http://127.0.0.1:PORT/ (Press CTRL+C to quit)" on stderr.
PORT_RE = re.compile(rb"at http://127\.0\.0\.1:(\d+)/")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ScreenshotError(RuntimeError):
    """TensorBoard or Chromium did not do what we needed; the message says what."""


# --------------------------------------------------------------------------------------------------
# Sample log


def make_sample(logdir: Path, points: int = 60) -> None:
    """Write a small log in the hub's layout with plain tensorboardX writers."""
    from tensorboardX import SummaryWriter

    root = SummaryWriter(str(logdir), filename_suffix=".owner")
    for step in range(points):
        # A decaying loss with a wobble, so the chart looks like a training run.
        loss = 2.0 * math.exp(-step / 18) + 0.08 * math.sin(step / 2.5) + 0.1
        root.add_scalar("train/loss", loss, step)
    root.close()
    for worker in range(2):
        writer = SummaryWriter(str(logdir / f"dataloader_worker_{worker}"), filename_suffix=f".w{worker}")
        for step in range(points):
            seconds = 0.012 + 0.004 * worker + 0.003 * math.sin(step / 4 + worker * 1.7)
            writer.add_scalar("DataProvider/file_read_time_s", seconds, step)
        writer.close()


def expected_scalars(logdir: Path) -> dict[str, set[str]]:
    """Scalar tags per run as on disk (read with hyrax_tbhub's inspect, i.e. TensorBoard's reader)."""
    from hyrax_tbhub._tools.inspect import inspect_logdir

    report = inspect_logdir(logdir)
    expected = {}
    for name, run in report.runs.items():
        tags = {tag for tag, info in run.tags.items() if info.kind == "scalar"}
        if tags:
            expected[name] = tags
    return expected


# --------------------------------------------------------------------------------------------------
# Processes


def find_chromium(explicit: str | None) -> str | None:
    if explicit:
        return shutil.which(explicit) or (explicit if os.access(explicit, os.X_OK) else None)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """Stop a process started in its own session, and its children (TensorBoard's data server,
    Chromium's renderers): SIGTERM the group, SIGKILL after ``grace_s``."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    # Children may outlive the leader; the group id is the leader's pid (start_new_session=True).
    _signal_group(proc, signal.SIGKILL)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        print(f"warning: process {proc.pid} did not exit after SIGKILL", file=sys.stderr)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class OutputCollector:
    """Drain a child's combined output in a thread (a full pipe would block the child) and keep it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fd = self._stream.fileno()
        while True:
            # os.read returns what is there: TensorBoard's banner line may sit without a newline.
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            with self._lock:
                self._chunks.append(chunk)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self) -> bytes:
        with self._lock:
            return b"".join(self._chunks)


@contextmanager
def running_tensorboard(logdir: Path, deadline_s: float, extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """Start TensorBoard on a free port; yield its base URL; always stop it."""
    # Run from the logdir's parent with a relative --logdir: the dashboard prints the logdir as
    # given, and "logs" reads better in a README than a temporary path.
    logdir = logdir.resolve()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", logdir.name or str(logdir),
           "--host", "127.0.0.1", "--port", "0", *extra_args]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=logdir.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    assert proc.stdout is not None  # stdout=PIPE
    output = OutputCollector(proc.stdout)
    try:
        yield wait_for_port(proc, output, time.monotonic() + deadline_s)
    finally:
        stop_group(proc)
        output.join(timeout=5.0)  # EOF comes once the group is gone; close only after the reader
        proc.stdout.close()


def wait_for_port(proc: subprocess.Popen[bytes], output: OutputCollector, deadline: float) -> str:
    while time.monotonic() < deadline:
        match = PORT_RE.search(output.text())
        if match:
            return f"http://127.0.0.1:{int(match.group(1))}"
        if proc.poll() is not None:
            raise ScreenshotError(f"tensorboard exited with {proc.returncode}:\n{output.text().decode()}")
        time.sleep(0.05)
    raise ScreenshotError(f"tensorboard printed no port in time:\n{output.text().decode()}")


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for_scalars(base: str, expected: dict[str, set[str]], deadline_s: float) -> dict[str, set[str]]:
    """Poll the scalars plugin until it serves every scalar tag of every run on disk (the data server
    loads in the background: right after start it answers with nothing, then with some runs)."""
    deadline = time.monotonic() + deadline_s
    served: dict[str, set[str]] = {}
    while time.monotonic() < deadline:
        try:
            data = get_json(f"{base}/data/plugin/scalars/tags")
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            data = {}
        if isinstance(data, dict):
            served = {run: set(tags) for run, tags in data.items() if isinstance(tags, dict)}
        missing = _missing(expected, served)
        if not missing:
            return served
        time.sleep(0.2)
    raise ScreenshotError(f"tensorboard did not serve these scalars in time: {_missing(expected, served)}")


def _missing(expected: dict[str, set[str]], served: dict[str, set[str]]) -> dict[str, list[str]]:
    gaps = {run: sorted(tags - served.get(run, set())) for run, tags in expected.items()}
    return {run: tags for run, tags in gaps.items() if tags}


def take_screenshot(chromium: str, url: str, out: Path, args: argparse.Namespace) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp.png")
    tmp_out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="hyrax-tbhub-chromium-") as profile:
        cmd = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={args.window_size}",
            f"--screenshot={tmp_out}", f"--virtual-time-budget={args.virtual_time_ms}", url,
        ]  # fmt: skip
        # Output goes to a file, not a pipe: a helper process that outlives the browser would keep a
        # pipe open and make reading it hang.
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(timeout=args.chromium_timeout)
            except subprocess.TimeoutExpired:
                raise ScreenshotError(f"chromium did not finish within {args.chromium_timeout} s") from None
            finally:
                stop_group(proc)  # also its helpers, before the profile directory is removed
            log.seek(0)
            log_text = log.read().decode(errors="replace")
    if proc.returncode != 0 or not _is_png(tmp_out):
        tmp_out.unlink(missing_ok=True)
        raise ScreenshotError(f"chromium exited with {proc.returncode} and wrote no PNG:\n{log_text}")
    tmp_out.replace(out)  # only a complete screenshot replaces the old one


def _is_png(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == PNG_MAGIC and path.stat().st_size > 1000
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--logdir", type=Path,
        help="log directory to show (default: run the demo into a temporary folder; "
        "with --make-sample: where to write)",
    )
    parser.add_argument("--make-sample", action="store_true", help="write a small sample log first")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"PNG to write (default {DEFAULT_OUT})")
    parser.add_argument("--view", choices=sorted(VIEWS), default="scalars", help="dashboard to capture")
    parser.add_argument("--chromium", help=f"Chromium/Chrome binary (default: first of {NAMES} on PATH)")
    parser.add_argument("--window-size", default="1400,900", help="browser window W,H (default 1400,900)")
    parser.add_argument("--virtual-time-ms", type=int, default=10000,
                        help="Chromium --virtual-time-budget: page time allowed before the shot")  # fmt: skip
    parser.add_argument(
        "--tensorboard-timeout", type=float, default=60.0, help="seconds to wait for TensorBoard"
    )
    parser.add_argument("--chromium-timeout", type=float, default=90.0, help="seconds to wait for Chromium")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"\d+,\d+", args.window_size):
        parser.error("--window-size must look like 1400,900")
    return args


def run(args: argparse.Namespace) -> int:
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print(
            f"screenshot: no Chromium found (looked for {NAMES} on PATH). "
            "Install it (e.g. `apt-get install chromium`) or pass --chromium PATH.",
            file=sys.stderr,
        )
        return 3
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        print(
            "screenshot: the tensorboard package is not installed: pip install tensorboard", file=sys.stderr
        )
        return 4
    with tempfile.TemporaryDirectory(prefix="hyrax-tbhub-sample-") as scratch:
        logdir = args.logdir if args.logdir is not None else Path(scratch) / "logs"
        if args.make_sample:
            make_sample(logdir)
        elif args.logdir is None:
            # The default: the project's own demo, so the README shows what a user will see.
            from hyrax_tbhub._tools.demo import run_pipeline

            run_pipeline(logdir, shards=48, workers=2, steps=600)
        if not logdir.is_dir():
            print(f"screenshot: no such log directory: {logdir}", file=sys.stderr)
            return 2
        expected = expected_scalars(logdir)
        if not expected:
            print(f"screenshot: no scalar data under {logdir}", file=sys.stderr)
            return 2
        try:
            with running_tensorboard(logdir, args.tensorboard_timeout) as base:
                served = wait_for_scalars(base, expected, args.tensorboard_timeout)
                print(f"tensorboard at {base} serves {len(served)} runs: {', '.join(sorted(served))}")
                take_screenshot(chromium, base + "/" + VIEWS[args.view], args.out.resolve(), args)
        except ScreenshotError as err:
            print(f"screenshot: {err}", file=sys.stderr)
            return 1
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
