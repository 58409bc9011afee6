"""The issue 11 probe summary (tests/probe_summary.py): a real pytest run in a temporary
directory (pytester, in-process), and the counting on its own."""

from __future__ import annotations

import pytest

from tests.probe_summary import ProbeSummary, figures

pytest_plugins = ["pytester"]

SUITE = """
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("setup fails")

@pytest.mark.probe_fault
@pytest.mark.parametrize("n", [1, 2])
def test_fault(n):
    pass

@pytest.mark.probe_fault
def test_fault_fails():
    assert False

@pytest.mark.probe_input
def test_input_ok():
    pass

@pytest.mark.probe_input
def test_input_errors(broken):
    pass

@pytest.mark.probe_input
def test_input_skipped():
    pytest.skip("no test bed")

@pytest.mark.probe_injection
@pytest.mark.xfail(strict=True, reason="a known leak")
def test_injection_xfail():
    assert False

@pytest.mark.probe_injection
@pytest.mark.xfail(strict=True, reason="fixed meanwhile")
def test_injection_xpass():
    pass

@pytest.mark.probe_injection
def test_injection_ok():
    pass

def test_not_a_probe():
    assert False
"""

INI = """
[pytest]
markers =
    probe_fault: f
    probe_input: i
    probe_injection: j
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makeini(INI)
    pytester.makepyfile(test_suite=SUITE)
    return pytester.runpytest("-p", "no:cacheprovider", *args, plugins=[ProbeSummary()])


def test_summary_of_a_run_with_every_outcome(pytester: pytest.Pytester) -> None:
    result = _run(pytester)
    out = result.stdout.lines
    start = out.index("issue 11 probes: faults survived 2/3, bad inputs one clear line 1/3, "
                      "injections held 1/3")
    assert out[start + 1:start + 6] == [
        "  failed test_suite.py::test_fault_fails",
        "  error test_suite.py::test_input_errors",
        "  skipped test_suite.py::test_input_skipped",
        "  xfailed test_suite.py::test_injection_xfail",
        "  failed test_suite.py::test_injection_xpass",  # XPASS(strict) is a failure
    ]
    assert out[start + 6].startswith("===")  # the next section: test_not_a_probe is not listed


def test_deselected_probes_do_not_count(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "-m", "probe_fault")
    assert "issue 11 probes: faults survived 2/3, bad inputs one clear line 0/0, injections held 0/0" \
        in result.stdout.lines


def test_no_summary_without_probes(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "-k", "not_a_probe")
    assert not any("issue 11 probes" in line for line in result.stdout.lines)


def test_a_probe_that_never_ran_is_not_passed() -> None:
    probes = {"a::x": "probe_fault", "a::y": "probe_input", "a::z": "probe_fault"}
    assert figures(probes, {"a::x": "passed", "a::y": "passed"}) == [
        "issue 11 probes: faults survived 1/2, bad inputs one clear line 1/1, injections held 0/0",
        "  not run a::z",
    ]
    assert figures({}, {}) == []
