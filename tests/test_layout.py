"""The package's structure: the import-linter contracts of pyproject.toml (no import cycle, and
the layers: public API, process state, hub and producer, wire and formats, utilities), run with
the suite, so a change that imports upwards fails here as well as in the lint env.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")

ROOT = Path(__file__).resolve().parent.parent


def test_the_contracts_of_pyproject_hold() -> None:
    """No import cycle, and every layer imports only from the layers below it."""
    pytest.importorskip("importlinter")
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
         "sys.exit(lint_imports_command())"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_benchmark_and_the_tools_stay_out_of_the_core() -> None:
    """Nothing below the public API imports the tools; the benchmark is not in the package."""
    graph = grimp.build_graph("hyrax_tbhub", include_external_packages=False)
    assert not any(m.rsplit(".", 1)[-1] in ("_bench", "bench") for m in graph.modules)
    tools = {m for m in graph.modules if m.startswith("hyrax_tbhub._tools")}
    users = {m for t in tools for m in graph.find_modules_that_directly_import(t)}
    assert users <= tools | {"hyrax_tbhub.__main__"}, users
