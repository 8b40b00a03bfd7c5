"""What installing hyrax_tbhub costs every Python process at start: ``python -c pass`` timed in a
virtualenv without the package, with it installed and ``HYRAX_TBHUB`` unset, and with it set.

The package ships ``hyrax_tbhub.pth``, whose one line Python runs at every start: with the variable
unset it reads ``os.environ`` (``os`` is already loaded) and imports nothing; set, it imports the
small ``_hyrax_tbhub_hook`` module and puts an import finder on ``sys.meta_path``. Runs of the three
cases are interleaved, so a change of machine load hits them alike; the figures are medians of the
wall-clock time and of the CPU time the child used::

    python scripts/startup_cost.py                 # 200 runs of each case
    python scripts/startup_cost.py --runs 500 --editable

``--editable`` adds a fourth case: the package installed with ``pip install -e`` (setuptools then
adds a finder of its own, paid by every editable install of any package).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _make_venv(where: Path) -> Path:
    venv.EnvBuilder(with_pip=True, symlinks=True).create(where)
    return where / "bin" / "python"


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", *args], check=True)


def _time_once(python: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) milliseconds of one ``python -c pass``. CPU time moves
    far less than wall-clock time when other processes load the machine."""
    start = time.perf_counter_ns()
    child = subprocess.Popen([str(python), "-c", "pass"], env=env)
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = (time.perf_counter_ns() - start) / 1e6
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, not by Popen
    if child.returncode != 0:
        raise SystemExit(f"{python} -c pass exited {child.returncode}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="runs of each case (default 200)")
    parser.add_argument("--editable", action="store_true", help="also time an editable install")
    args = parser.parse_args(argv)

    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("HYRAX_TBHUB", "PYTHON"))}
    with tempfile.TemporaryDirectory(prefix="hyrax_tbhub-startup-") as tmp:
        tmpdir = Path(tmp)
        print("building the wheel and three virtualenvs...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                        "-w", str(tmpdir / "dist"), str(ROOT)], check=True)
        wheel = next((tmpdir / "dist").glob("hyrax_tbhub-*.whl"))
        without = _make_venv(tmpdir / "without")
        installed = _make_venv(tmpdir / "with")
        # --no-deps: what the .pth line costs, not what the dependencies' own .pth files cost
        _pip(installed, str(wheel))
        cases: dict[str, tuple[Path, dict[str, str]]] = {
            "without the package": (without, base_env),
            "installed, HYRAX_TBHUB unset": (installed, base_env),
            "installed, HYRAX_TBHUB=1": (installed, {**base_env, "HYRAX_TBHUB": "1"}),
        }
        if args.editable:
            editable = _make_venv(tmpdir / "editable")
            _pip(editable, "-e", str(ROOT))
            cases["editable, HYRAX_TBHUB unset"] = (editable, base_env)
            cases["editable, HYRAX_TBHUB=1"] = (editable, {**base_env, "HYRAX_TBHUB": "1"})
        for python, env in cases.values():  # warm the file cache and the .pyc files
            for _ in range(3):
                _time_once(python, env)
        walls: dict[str, list[float]] = {name: [] for name in cases}
        cpus: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, (python, env) in cases.items():
                wall, cpu = _time_once(python, env)
                walls[name].append(wall)
                cpus[name].append(cpu)

    base_wall = statistics.median(walls["without the package"])
    base_cpu = statistics.median(cpus["without the package"])
    print(f"python -c pass, {args.runs} runs each, interleaved "
          f"({sys.version.split()[0]}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f})")
    print(f"{'case':32} {'wall ms':>8} {'vs without':>11} {'cpu ms':>8} {'vs without':>11}")
    for name in cases:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"{name:32} {wall:8.2f} {wall - base_wall:+11.2f} {cpu:8.2f} {cpu - base_cpu:+11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
