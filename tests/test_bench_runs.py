"""The benchmark script runs end to end (tiny sizes); its figures are not checked here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_quick_runs_and_reports_json() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", "-"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = json.loads(proc.stdout)
    assert {"meta", "config", "runs", "nohub", "targets"} <= report.keys()
    contenders = {run["contender"] for run in report["runs"]}
    assert contenders == {"a", "b", "c", "d"}
    for run in report["runs"]:
        assert run["error"] is None, run["error"]
        assert run["counted"] == run["expected"], run
        if run["mode"] == "throughput":  # the whole-loop mean is reported next to the chunks' median
            assert run["caller_us_mean"] is not None and run["caller_cpu_us"] is not None, run
    for figures in report["nohub"].values():  # top-level process and spawned child
        assert {"plain_ns", "nohub_ns"} <= figures.keys()
    assert {t["name"] for t in report["targets"]}
    assert "| contender |" in proc.stderr  # the markdown table moved to stderr


def test_the_benchmark_is_not_part_of_the_installed_package() -> None:
    """``bench`` is an unknown command like any other: the usage error, which names the script."""
    assert importlib.util.find_spec("hyrax_tbhub._bench") is None
    proc = subprocess.run([sys.executable, "-m", "hyrax_tbhub", "bench"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("hyrax-tbhub: unknown command 'bench'")
    assert "python scripts/bench.py" in proc.stderr
