"""The worker models of autoserv.parallel: --max-parallel, and the thread model's isolation.

Fast, local tests (no hosts): the behaviour over real hosts is in test_parallel_scale.py and,
for either model, in test_runner_testbed.py (run it with AUTOSERV_WORKERS=threads).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoserv import parallel, scope, workers
from autoserv.errors import AutoservSubcommandError, AutoservUsageError


class _Hooks:
    """Minimal job hooks: no results dirs, a cap on workers at once."""

    def __init__(self, max_parallel: int | None) -> None:
        self.max_parallel = max_parallel
        self.finished: list[str] = []

    def worker_context(self, label: str, subdir: str | None) -> Any:
        return contextlib.nullcontext()

    def worker_finished(self, label: str, failures: int, error: BaseException | None) -> None:
        self.finished.append(label)


@pytest.fixture
def hooks(request: pytest.FixtureRequest) -> Iterator[_Hooks]:
    h = _Hooks(getattr(request, "param", None))
    previous = parallel.set_hooks(h)
    try:
        yield h
    finally:
        parallel.set_hooks(previous)


@pytest.fixture(params=workers.MODELS)
def model(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(workers.MODEL_ENV, request.param)
    return str(request.param)


def span(arg: int) -> tuple[int, float, float]:
    start = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
    time.sleep(0.3)
    return arg, start, time.monotonic()


@pytest.mark.parametrize("hooks", [2], indirect=True)
def test_max_parallel_caps_workers_at_once(model: str, hooks: _Hooks) -> None:
    results = parallel.parallel_simple(span, list(range(6)), log=False, return_results=True)
    assert results is not None and [r[0] for r in results] == list(range(6))
    events = sorted([(r[1], 1) for r in results] + [(r[2], -1) for r in results],
                    key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    assert most == 2
    assert hooks.finished == [str(i) for i in range(6)]


@pytest.mark.parametrize("hooks", [1], indirect=True)
def test_max_parallel_timeout_reports_tasks_never_started(model: str, hooks: _Hooks) -> None:
    results = parallel.parallel_simple(span, [1, 2, 3, 4, 5, 6, 7, 8], log=False, timeout=0.8,
                                       return_results=True)
    assert results is not None
    assert results[0][0] == 1 and results[1][0] == 2
    late = [r for r in results if isinstance(r, AutoservSubcommandError)]
    assert late and all("timed out" in str(r) for r in late)


def cwd_of(arg: str) -> str:
    os.makedirs(arg, exist_ok=True)
    os.chdir(arg)
    time.sleep(0.2)  # the others chdir meanwhile
    return os.getcwd()


def test_threads_each_worker_has_its_own_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             hooks: _Hooks) -> None:
    monkeypatch.setenv(workers.MODEL_ENV, "threads")
    monkeypatch.chdir(tmp_path)
    names = [f"m{i}" for i in range(8)]
    results = parallel.parallel_simple(cwd_of, names, return_results=True)
    assert results == [str(tmp_path / n) for n in names]
    assert os.getcwd() == str(tmp_path)


def busy_or_crash(arg: str) -> str:
    if arg == "exit":
        raise SystemExit(3)
    if arg == "slow":
        while True:  # Python code: the controller's abort reaches it
            time.sleep(0.05)
    return arg


def test_threads_timeout_and_crash_do_not_take_others_down(monkeypatch: pytest.MonkeyPatch,
                                                           hooks: _Hooks) -> None:
    monkeypatch.setenv(workers.MODEL_ENV, "threads")
    before = threading.active_count()
    started = time.monotonic()
    results = parallel.parallel_simple(busy_or_crash, ["a", "exit", "slow", "b"], timeout=1,
                                       return_results=True)
    assert results is not None
    assert time.monotonic() - started < 5
    assert results[0] == "a" and results[3] == "b"
    assert isinstance(results[1], SystemExit) and results[1].code == 3
    assert isinstance(results[2], AutoservSubcommandError) and "timed out" in str(results[2])
    assert threading.active_count() == before


def test_threads_failures_raise_together(monkeypatch: pytest.MonkeyPatch, hooks: _Hooks) -> None:
    monkeypatch.setenv(workers.MODEL_ENV, "threads")
    with pytest.raises(parallel.SubcommandsFailed) as info:
        parallel.parallel_simple(busy_or_crash, ["a", "exit"])
    assert list(info.value.failures) == ["exit"]


@pytest.mark.parametrize(
    "value, expected",
    [("", "fork"), ("fork", "fork"), ("threads", "threads"), (" threads ", "threads"),
     ("thread", None), ("FORK", None)],
)
def test_model_from_environment(monkeypatch: pytest.MonkeyPatch, value: str,
                                expected: str | None) -> None:
    monkeypatch.setenv(workers.MODEL_ENV, value)
    if expected is None:
        with pytest.raises(AutoservUsageError, match=workers.MODEL_ENV):
            workers.model()
    else:
        assert workers.model() == expected


class _Obj:
    value: scope.PerWorker[int] = scope.PerWorker()

    def __init__(self) -> None:
        self.value = 1


def test_per_worker_attribute_is_set_per_scope() -> None:
    obj = _Obj()
    seen: dict[str, int] = {}

    def inner() -> None:
        seen["inner-before"] = obj.value
        obj.value = 3
        seen["inner"] = obj.value

    def outer() -> None:
        obj.value = 2
        scope.run_in(scope.Scope("inner", scope.current()), inner)
        seen["outer"] = obj.value

    scope.run_in(scope.Scope("outer"), outer)
    assert seen == {"inner-before": 2, "inner": 3, "outer": 2}
    assert obj.value == 1


def test_raise_nofile_for_worker_threads() -> None:
    """Threads share one fd table: the soft limit is raised for them (in a child process)."""
    import subprocess
    import sys

    code = (
        "import resource\n"
        "from autoserv import workers\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "workers.raise_nofile(100)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert int(out.stdout) == 256 + workers.FDS_PER_WORKER * 100


def test_fewer_gc_passes_while_a_fan_out_runs_then_restored() -> None:
    before = gc.get_threshold()
    with workers.fewer_gc_passes():
        raised = gc.get_threshold()
        assert raised[0] == max(before[0], workers.GC_THRESHOLD0) and raised[1:] == before[1:]
        with workers.fewer_gc_passes():  # a fan-out inside a worker
            assert gc.get_threshold() == raised
        assert gc.get_threshold() == raised
    assert gc.get_threshold() == before


def test_longer_switch_interval_while_a_fan_out_runs_then_restored() -> None:
    before = sys.getswitchinterval()
    with workers.longer_switch_interval():
        longer = sys.getswitchinterval()
        assert longer == pytest.approx(max(before, workers.SWITCH_INTERVAL), abs=1e-5)
        with workers.longer_switch_interval(0.001):  # a fan-out inside a worker keeps it
            assert sys.getswitchinterval() == longer
        assert sys.getswitchinterval() == longer
    assert sys.getswitchinterval() == before
