"""The package's structure: no import cycles, and the layering of pyproject.toml's contracts.

The layers (public API, process state, hub and producer, wire and formats, utilities) are
written as import-linter contracts in pyproject.toml; these tests run them with the suite, so a
change that imports upwards fails here as well as in the lint env.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")

ROOT = Path(__file__).resolve().parent.parent


def _cycles(graph: object, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start) & modules)))]  # type: ignore[attr-defined]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    imported = graph.find_modules_directly_imported_by(child) & modules  # type: ignore[attr-defined]
                    work.append((child, iter(sorted(imported))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_two_modules_of_the_package_import_each_other() -> None:
    """No cycle at all, counting imports inside functions and under TYPE_CHECKING."""
    graph = grimp.build_graph("hyrax_tbhub", include_external_packages=False)
    modules = {m for m in graph.modules if m != "hyrax_tbhub"}  # the root re-exports everything
    assert _cycles(graph, modules) == []


def test_the_layer_contracts_of_pyproject_hold() -> None:
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
