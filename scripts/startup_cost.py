"""What installing hyrax_tbhub costs every Python process at start: ``python -c pass`` timed in a
virtualenv without the package, with it installed and ``HYRAX_TBHUB`` unset, and with it set.

The package ships ``hyrax_tbhub.pth``, whose one line Python runs at every start: with the variable
unset it reads ``os.environ`` (``os`` is already loaded) and imports nothing; set, it imports the
small ``_hyrax_tbhub_hook`` module and puts an import finder on ``sys.meta_path``. Runs of the three
cases are interleaved, so a change of machine load hits them alike; the figure is the median::

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


def _time_once(python: Path, env: dict[str, str]) -> float:
    start = time.perf_counter_ns()
    subprocess.run([str(python), "-c", "pass"], env=env, check=True)
    return (time.perf_counter_ns() - start) / 1e6


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
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, (python, env) in cases.items():
                times[name].append(_time_once(python, env))

    base = statistics.median(times["without the package"])
    print(f"python -c pass, {args.runs} runs each, interleaved "
          f"({sys.version.split()[0]}, {os.cpu_count()} cpus)")
    print(f"{'case':32} {'median ms':>10} {'vs without':>11} {'p25':>7} {'p75':>7}")
    for name, values in times.items():
        q = statistics.quantiles(values, n=4)
        med = statistics.median(values)
        print(f"{name:32} {med:10.2f} {med - base:+10.2f} {q[0]:7.2f} {q[2]:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
