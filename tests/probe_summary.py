"""Issue 11's three figures at the end of every run that collected probes.

A test marked ``probe_fault``, ``probe_input`` or ``probe_injection`` (each parametrized
case one probe) counts as passed only when its setup, call and teardown all passed; a
probe that failed (an XPASS(strict) too), errored, xfailed, xpassed, was skipped or never ran is listed
by node id under the figures. The counting is pure (:func:`figures`, :func:`outcome_of`);
:class:`ProbeSummary` is the pytest plugin tests/conftest.py registers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest

#: marker -> the words of its figure, in the order the line gives them.
CATEGORIES = {
    "probe_fault": "faults survived",
    "probe_input": "bad inputs one clear line",
    "probe_injection": "injections held",
}
PASSED = "passed"
NOT_RUN = "not run"


def outcome_of(reports: Iterable[pytest.TestReport]) -> str:
    """One probe's outcome from its reports (setup, call, teardown, as many as it got)."""
    outcome = NOT_RUN
    for rep in reports:
        xfail = hasattr(rep, "wasxfail")
        if rep.failed:  # an XPASS(strict) is a failed call too
            return "failed" if rep.when == "call" else "error"  # error: in setup or teardown
        if rep.skipped:
            return "xfailed" if xfail else "skipped"
        if rep.when == "call":
            outcome = "xpassed" if xfail else PASSED
    return outcome


def figures(probes: Mapping[str, str], outcomes: Mapping[str, str]) -> list[str]:
    """The summary: ``probes`` maps node id -> marker, ``outcomes`` node id -> outcome.

    Nothing when no probe was collected; else the figures line, then one line per probe
    that did not pass (``  <outcome> <node id>``), in collection order.
    """
    if not probes:
        return []
    parts = []
    for marker, words in CATEGORIES.items():
        ids = [n for n, m in probes.items() if m == marker]
        held = sum(1 for n in ids if outcomes.get(n, NOT_RUN) == PASSED)
        parts.append(f"{words} {held}/{len(ids)}")
    lines = ["issue 11 probes: " + ", ".join(parts)]
    lines += [f"  {outcomes.get(n, NOT_RUN)} {n}" for n in probes
              if outcomes.get(n, NOT_RUN) != PASSED]
    return lines


class ProbeSummary:
    """The pytest plugin: which selected items are probes, how each ended, the summary."""

    def __init__(self) -> None:
        self.probes: dict[str, str] = {}
        self.reports: dict[str, list[pytest.TestReport]] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:  # what -m/-k kept
            marks = [m for m in CATEGORIES if item.get_closest_marker(m) is not None]
            if len(marks) > 1:
                raise pytest.UsageError(f"{item.nodeid}: a probe has one category, not {marks}")
            if marks:
                self.probes[item.nodeid] = marks[0]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid in self.probes:
            self.reports.setdefault(report.nodeid, []).append(report)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if terminalreporter.config.option.collectonly:  # nothing ran: no figures
            return
        outcomes = {n: outcome_of(self.reports.get(n, [])) for n in self.probes}
        lines = figures(self.probes, outcomes)
        if lines:
            terminalreporter.section("issue 11 probes")
            for line in lines:
                terminalreporter.write_line(line)
