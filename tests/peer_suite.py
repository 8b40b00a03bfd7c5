"""Run a peer's own test suite twice, with its SummaryWriter and with ours, and compare.

    python tests/peer_suite.py --sdist tensorboardx-2.6.5.tar.gz \\
        --expected tests/peer_suites/tensorboardX-2.6.5.expected \\
        --replace tensorboardX:SummaryWriter --replace tensorboardX.writer:SummaryWriter

The ``tests/`` folder of the source distribution is unpacked twice into a temporary folder (never
into this project). The second copy gets a ``conftest.py`` that replaces each ``module:attribute``
given with ``hyrax_tbhub.SummaryWriter`` before any test module imports it. Both copies run at
once under pytest, and their JUnit reports are compared test by test:

- a test that passes stock must pass with ours, unless the expected-differences file lists it
  (one ``test id | reason`` a line);
- a listed test that passes with ours is a failure too (the list must be kept true);
- a test that fails stock (a missing optional package, a network test) is shown, not compared.

The table shows stock and ours side by side; the exit status is 1 on any unexplained difference.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

PASSED = "passed"

_CONFTEST = '''\
"""Written by hyrax_tbhub's peer_suite.py: the peer's writer replaced by hyrax_tbhub's."""
import importlib

import hyrax_tbhub

for _target in {targets!r}:
    _module, _attr = _target.split(":")
    setattr(importlib.import_module(_module), _attr, hyrax_tbhub.SummaryWriter)
'''


def unpack_tests(sdist: Path, dest: Path) -> Path:
    """Extract the ``tests/`` folder of ``sdist`` into ``dest``; return ``dest``."""
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.split("/")[1:2] == ["tests"]]
        if not members:
            raise SystemExit(f"{sdist}: no tests/ folder")
        for m in members:
            m.name = "/".join(m.name.split("/")[1:])
        tar.extractall(dest, members=members, filter="data")
    return dest


def outcomes(junit_xml: Path) -> dict[str, str]:
    """{test id: passed | failed | error | skipped} from a pytest JUnit report."""
    result: dict[str, str] = {}
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcome = ("error" if "error" in kinds else "failed" if "failure" in kinds
                   else "skipped" if "skipped" in kinds else PASSED)
        result[test_id] = outcome
    return result


def read_expected(path: Path) -> dict[str, str]:
    """{test id: reason} of the expected-differences file (``#`` starts a comment line)."""
    expected: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        test_id, sep, reason = line.partition("|")
        if not sep or not reason.strip():
            raise SystemExit(f"{path}: every line is 'test id | reason': {line!r}")
        expected[test_id.strip()] = reason.strip()
    return expected


def compare(
    stock: dict[str, str], ours: dict[str, str], expected: dict[str, str]
) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    """Rows (test, stock, ours, verdict) and the unexplained differences."""
    rows, problems = [], []
    for test_id in sorted(set(stock) | set(ours) | set(expected)):
        s, o = stock.get(test_id, "absent"), ours.get(test_id, "absent")
        reason = expected.get(test_id)
        if s != PASSED:
            verdict = "not compared: fails stock" + (" (listed)" if reason else "")
        elif o == PASSED and reason is None:
            verdict = "same"
        elif o == PASSED:
            verdict = "UNEXPECTED PASS: remove it from the expected differences"
            problems.append(test_id)
        elif reason is not None:
            verdict = f"expected: {reason}"
        else:
            verdict = "UNEXPLAINED FAILURE"
            problems.append(test_id)
        rows.append((test_id, s, o, verdict))
    return rows, problems


def _run(folder: Path, report: Path, timeout: float) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
           "-o", "addopts=", f"--junitxml={report}", "tests"]
    log = open(folder / "pytest.log", "wb")  # noqa: SIM115 - closed with the process below
    proc = subprocess.Popen(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sdist", type=Path, required=True)
    parser.add_argument("--expected", type=Path, required=True)
    parser.add_argument("--replace", action="append", required=True, help="module:attribute (repeatable)")
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds, for both runs together")
    parser.add_argument("--keep", action="store_true", help="keep the unpacked folders and logs")
    args = parser.parse_args(argv)
    expected = read_expected(args.expected)
    work = Path(tempfile.mkdtemp(prefix="peer_suite_"))
    procs = {}
    t0 = time.monotonic()
    for name in ("stock", "ours"):
        folder = unpack_tests(args.sdist, work / name)
        if name == "ours":
            (folder / "conftest.py").write_text(_CONFTEST.format(targets=args.replace))
        procs[name] = _run(folder, work / f"{name}.xml", args.timeout)
    results = {}
    for name, proc in procs.items():
        try:
            proc.wait(max(1.0, args.timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            for p in procs.values():
                p.kill()
            print(f"{name}: the suite did not finish within {args.timeout:.0f} s; logs in {work}")
            return 1
        proc.log.close()  # type: ignore[attr-defined]
        report = work / f"{name}.xml"
        if not report.exists():
            print((work / name / "pytest.log").read_text()[-4000:])
            return 1
        results[name] = outcomes(report)
    rows, problems = compare(results["stock"], results["ours"], expected)
    width = max(len(r[0]) for r in rows)
    print(f"{'test':<{width}}  {'stock':<8} {'ours':<8} verdict")
    for test_id, s, o, verdict in rows:
        print(f"{test_id:<{width}}  {s:<8} {o:<8} {verdict}")
    for name in ("stock", "ours"):
        counts = {k: list(results[name].values()).count(k) for k in ("passed", "failed", "error", "skipped")}
        print(f"{name}: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" of {len(results[name])}")
    print(f"both runs: {time.monotonic() - t0:.0f} s; {len(problems)} unexplained difference(s)")
    for test_id in problems:
        print(f"  {test_id}")
    if args.keep or problems:
        print(f"logs: {work}/stock/pytest.log, {work}/ours/pytest.log")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
