"""Tests check behaviour through the public surface; only mechanism tests import private modules.

The public surface: ``hyrax_tbhub``'s ``__all__``, its public modules (``options``, ``writer``,
``tensorboardx_logger``, ``logging_handler``), ``hyrax_tbhub.testing``, ``hyrax_tbhub.integrations``
and the ``hyrax-tbhub`` command. A test written against it survives a refactor of the private
modules; one that imports them breaks with it although the behaviour did not change.

So a private import (``hyrax_tbhub._x``, ``from hyrax_tbhub import _x``), in the test's own code or
in a script it runs (a string holding such an import), is allowed only in:

- ``tests/mechanism/``: tests of a private mechanism (the wire codec, the store, the killed
  producer's ledger, the fork hooks...), each file's docstring saying which one;
- the helper modules listed in ``HELPERS`` below (code run in children or shared by the fault
  tests), each with the mechanism it needs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
MECHANISM = TESTS / "mechanism"

#: Helper modules outside tests/mechanism/ that reach a private mechanism, and why.
HELPERS = {
    "faults/common.py": "points the hub-file code at a private runtime folder (its cached path) and "
                        "reads this process's producer's live drop count",
    "faults/fork.py": "holds the process state's lock across a fork (the fork hooks)",
    "faults/hubgone.py": "follows the producer objects of a process across hub switches",
    "faults/lifecycle.py": "reports the hub file a producer inherited through the hub-file variable",
    "faults/procfs.py": "reads the process state to report what a process still holds",
    "killed_workers.py": "the producer whose ledger the killed-producer tests read",
    "trust_hub_job.py": "a job run as another user: the hub's peers and the discovery modules",
    "trust_workers.py": "breaks the producer's sender on purpose (the trust regressions)",
    "wire_peers.py": "a hand-made peer speaking the wire handshake",
    "writer_workers.py": "runs the exit hooks in a raw os.fork child, as multiprocessing's do",
}

_PRIVATE_MODULE = re.compile(r"^hyrax_tbhub\._")
# An import in a script a test writes out or passes to ``python -c``.
_PRIVATE_IN_TEXT = re.compile(
    r"^\s*(?:from\s+hyrax_tbhub\._\w*|import\s+hyrax_tbhub\._\w*"
    r"|from\s+hyrax_tbhub\s+import\s+(?:\(\s*)?_)",
    re.MULTILINE,
)


def private_imports(source: str) -> list[str]:
    """The private imports of ``source``, as ``line: what``: import statements, and import lines in
    its string constants."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if _PRIVATE_MODULE.match(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if _PRIVATE_MODULE.match(node.module):
                found.append(f"{node.lineno}: from {node.module} import ...")
            elif node.module == "hyrax_tbhub":
                found += [f"{node.lineno}: from hyrax_tbhub import {a.name}"
                          for a in node.names if a.name.startswith("_") and a.name != "__version__"]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [f"{node.lineno}: in a string: {m.group(0).strip()}"
                      for m in _PRIVATE_IN_TEXT.finditer(node.value)]
    return sorted(found, key=lambda f: int(f.split(":", 1)[0]))


def _sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def test_only_mechanism_tests_and_listed_helpers_import_private_modules() -> None:
    offenders = {}
    for path in _sources():
        rel = path.relative_to(TESTS).as_posix()
        if path.is_relative_to(MECHANISM) or rel in HELPERS or path == Path(__file__).resolve():
            continue  # this file names private imports in its own check's sample
        found = private_imports(path.read_text(encoding="utf-8"))
        if found:
            offenders[rel] = found
    assert not offenders, (
        "these test files import private modules: test the behaviour through the public surface "
        "(hyrax_tbhub, hyrax_tbhub.testing, the CLI), or, for a test of a private mechanism, move it "
        f"to tests/mechanism/ with a docstring saying which mechanism: {offenders}"
    )


def test_every_mechanism_test_says_which_mechanism_it_checks() -> None:
    files = sorted(MECHANISM.glob("test_*.py"))
    assert files
    unnamed = [p.name for p in files
               if "Mechanism test" not in (ast.get_docstring(ast.parse(p.read_text())) or "")]
    assert not unnamed, f"mechanism tests whose docstring does not name their mechanism: {unnamed}"


def test_the_listed_helpers_exist_and_still_need_their_exception() -> None:
    stale = [rel for rel in HELPERS
             if not (TESTS / rel).is_file() or not private_imports((TESTS / rel).read_text(encoding="utf-8"))]
    assert not stale, f"HELPERS lists modules that are gone or no longer import private modules: {stale}"


def test_the_check_sees_every_form_of_private_import() -> None:
    source = '''
import hyrax_tbhub._wire
from hyrax_tbhub._hub import store
from hyrax_tbhub import _naming, Options, __version__
from hyrax_tbhub.testing import read_logs
import hyrax_tbhub
SCRIPT = """
import sys
from hyrax_tbhub._process.state import STATE
"""
NOT_AN_IMPORT = "hyrax_tbhub._tools is named here"
'''
    found = private_imports(source)
    assert [f.split(": ", 1)[1] for f in found] == [
        "import hyrax_tbhub._wire",
        "from hyrax_tbhub._hub import ...",
        "from hyrax_tbhub import _naming",
        "in a string: from hyrax_tbhub._process",
    ]
