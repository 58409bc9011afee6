"""Shared pieces of the benchmark: measurements, timing helpers, child processes.

Every figure is a :class:`Measurement`: the raw trial times plus their median.
A :class:`Comparison` groups ours and the peers of one scenario so the report can
give a ratio of ours to each peer, all measured in the same run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autoserv.localsys import descendants

log = logging.getLogger("bench")

OURS = "autoserv"
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


@dataclass
class Measurement:
    """Trial values of one tool in one scenario (seconds unless ``unit`` says otherwise)."""

    tool: str
    values: list[float] = field(default_factory=list)
    unit: str = "s"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    context: bool = False  # a reference figure, not a peer: no ratio

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["median"] = self.median
        return data


@dataclass
class Comparison:
    """One scenario: ours (``tool == OURS`` or named by ``ours``) against peers."""

    section: str
    scenario: str
    ours: str
    measurements: list[Measurement] = field(default_factory=list)
    higher_is_better: bool = False

    def add(self, m: Measurement) -> Measurement:
        self.measurements.append(m)
        return m

    def get(self, tool: str) -> Measurement | None:
        return next((m for m in self.measurements if m.tool == tool), None)

    def ratios(self) -> dict[str, float]:
        """``ours / peer`` of the medians (time: < 1 means we are faster)."""
        mine = self.get(self.ours)
        if mine is None or mine.median is None:
            return {}
        out: dict[str, float] = {}
        for m in self.measurements:
            if m.tool != self.ours and not m.context and m.median:
                out[m.tool] = mine.median / m.median
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "scenario": self.scenario,
            "ours": self.ours,
            "higher_is_better": self.higher_is_better,
            "measurements": [m.to_json() for m in self.measurements],
            "ratios_ours_over_peer": self.ratios(),
        }


def time_calls(fn: Callable[[], object], trials: int, warmup: int = 1) -> list[float]:
    """Wall time of ``trials`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    values = []
    for _ in range(trials):
        t0 = time.perf_counter()
        fn()
        values.append(time.perf_counter() - t0)
    return values


def time_interleaved(calls: dict[str, Callable[[], object]], trials: int, block: int = 10,
                     warmup: int = 3) -> dict[str, list[float]]:
    """Like :func:`time_calls` for several tools at once, alternating blocks of ``block`` calls
    so that drift in the machine's load hits every tool alike (ratios stay fair)."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {name: [] for name in calls}
    while any(len(v) < trials for v in out.values()):
        for name, fn in calls.items():
            for _ in range(min(block, trials - len(out[name]))):
                t0 = time.perf_counter()
                fn()
                out[name].append(time.perf_counter() - t0)
    return out


def guarded(m: Measurement, fn: Callable[[Measurement], None]) -> Measurement:
    """Run one tool's measurement; a failing peer is recorded, not fatal to the run."""
    try:
        fn(m)
    except Exception as exc:  # a broken peer must not lose the other figures
        log.exception("%s failed", m.tool)
        m.error = f"{type(exc).__name__}: {exc}"[:500]
    return m


@dataclass
class ChildRun:
    """One timed child process: wall time, exit status, peak memory of its tree."""

    wall: float
    status: int
    maxrss_kib: int  # largest single process of the tree (getrusage semantics)
    peak_pss_kib: int  # peak of the summed PSS of the whole tree, sampled
    stdout: str
    stderr: str


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_child(
    argv: Sequence[str],
    timeout: float,
    sample_memory: bool = False,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> ChildRun:
    """Run ``argv`` to completion; ``os.wait4`` gives the tree's peak RSS.

    With ``sample_memory`` a thread sums the PSS of the process tree every
    20 ms (PSS splits pages shared by forked workers fairly, so the sum is the
    real footprint, unlike a sum of RSS).
    """
    out_path = Path(f"/tmp/bench-child-{os.getpid()}-{threading.get_ident()}.out")
    err_path = out_path.with_suffix(".err")
    # ru_maxrss survives exec: a child forked straight from this (large) process would
    # report our size.  GNU time forks the command from its own tiny process
    # (os.wait4 on GNU time itself would count it too), so its %M is what we report.
    rss_path = out_path.with_suffix(".rss")
    launcher = [TIME, "-q", "-f", "%M", "-o", str(rss_path), "--"] if TIME else []
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*launcher, *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env, cwd=cwd, start_new_session=True)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, sum(_pss_kib(p) for p in [proc.pid, *descendants(proc.pid)]))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True) if sample_memory else None
    if sampler is not None:
        sampler.start()
    timer = threading.Timer(timeout, _kill_group, (proc.pid,))
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    finally:
        timer.cancel()
        stop.set()
        if sampler is not None:
            sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    _kill_group(proc.pid)  # stragglers of the child's session, if any
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    maxrss = usage.ru_maxrss
    if TIME:
        with contextlib.suppress(OSError, ValueError):
            maxrss = int(rss_path.read_text().split()[-1])
    for path in (out_path, err_path, rss_path):
        path.unlink(missing_ok=True)
    return ChildRun(wall, proc.returncode, maxrss, peak, stdout, stderr)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def checked(run: ChildRun, what: str) -> ChildRun:
    """``run`` if it exited 0, else raise with the tail of its output."""
    if run.status != 0:
        tail = (run.stderr or run.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{what} exited {run.status}: {' | '.join(tail)}")
    return run
