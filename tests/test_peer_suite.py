"""The comparison that .ci/tbx_suite.sh makes of a peer's suite run stock and with our writer."""

from __future__ import annotations

from pathlib import Path

import pytest
from peer_suite import compare, outcomes, read_expected

STOCK = {"a": "passed", "b": "passed", "c": "failed", "d": "passed", "e": "passed"}


def test_a_difference_is_explained_only_by_the_expected_list() -> None:
    ours = {"a": "passed", "b": "failed", "c": "failed", "d": "error", "e": "passed"}
    rows, problems = compare(STOCK, ours, {"b": "reads a private attribute"})
    assert problems == ["d"]  # failed with ours and not listed
    verdicts = {r[0]: r[3] for r in rows}
    assert verdicts["a"] == "same" and verdicts["b"].startswith("expected")
    assert verdicts["c"].startswith("not compared")


def test_a_listed_test_that_passes_is_a_failure_of_the_run() -> None:
    _rows, problems = compare(STOCK, dict(STOCK), {"e": "was different once"})
    assert problems == ["e"]


def test_a_test_missing_from_our_run_counts_as_failing() -> None:
    _rows, problems = compare(STOCK, {k: v for k, v in STOCK.items() if k != "a"}, {})
    assert problems == ["a"]


def test_junit_reports_and_the_expected_file_are_read(tmp_path: Path) -> None:
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite>'
        '<testcase classname="tests.m.C" name="ok"/>'
        '<testcase classname="tests.m.C" name="bad"><failure message="x"/></testcase>'
        '<testcase classname="tests.m" name="err"><error message="x"/></testcase>'
        '<testcase classname="tests.m" name="skip"><skipped message="x"/></testcase>'
        '</testsuite></testsuites>'
    )
    assert outcomes(report) == {"tests.m.C::ok": "passed", "tests.m.C::bad": "failed",
                                "tests.m::err": "error", "tests.m::skip": "skipped"}
    listed = tmp_path / "expected"
    listed.write_text("# comment\n\ntests.m.C::bad | reads a private attribute\n")
    assert read_expected(listed) == {"tests.m.C::bad": "reads a private attribute"}
    listed.write_text("tests.m.C::bad\n")
    with pytest.raises(SystemExit):
        read_expected(listed)


def test_the_committed_expected_differences_each_give_a_reason() -> None:
    path = Path(__file__).parent / "peer_suites" / "tensorboardX-2.6.5.expected"
    assert all(reason for reason in read_expected(path).values())
