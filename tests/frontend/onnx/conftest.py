"""Per-prefix counts of the ONNX node-test conformance run (passed / xfailed / failed /
total), printed at the end of the pytest session."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest

_CASE = re.compile(r"OnnxBackendNodeModelTest::test_(?:basic_)?(\w+?)_cpu$")
_TWO_WORD = ("training", "deform")
_counts: dict[str, Counter] = defaultdict(Counter)


def node_test_prefix(nodeid: str) -> str | None:
    """``...::test_basic_conv_with_padding_cpu`` -> ``conv``; training_dropout and
    deform_conv keep two words."""
    match = _CASE.search(nodeid)
    if match is None:
        return None
    words = match.group(1).split("_")
    return "_".join(words[:2]) if words[0] in _TWO_WORD else words[0]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    prefix = node_test_prefix(report.nodeid)
    if prefix is None or report.skipped and not hasattr(report, "wasxfail"):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        _counts[prefix][outcome] += 1


def pytest_terminal_summary(terminalreporter) -> None:
    if not _counts:
        return
    write = terminalreporter.write_line
    terminalreporter.section("ONNX node tests through cnnir (per prefix)")
    write(f"{'prefix':<20}{'passed':>8}{'xfailed':>9}{'failed':>8}{'total':>7}")
    total: Counter = Counter()
    for prefix in sorted(_counts):
        c = _counts[prefix]
        total.update(c)
        write(f"{prefix:<20}{c['passed']:>8}{c['xfailed']:>9}{c['failed']:>8}"
              f"{sum(c.values()):>7}")
    write(f"{'all':<20}{total['passed']:>8}{total['xfailed']:>9}{total['failed']:>8}"
          f"{sum(total.values()):>7}")
