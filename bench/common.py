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

from autoserv.deadline import Deadline
from autoserv.localsys import proc_stat

log = logging.getLogger("bench")

OURS = "autoserv"
#: autoserv with its other worker model: ours too, never a peer
OURS_THREADS = "autoserv (AUTOSERV_WORKERS=threads)"
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
    #: other tools that are ours as well (autoserv's other worker model): not peers
    variants: tuple[str, ...] = ()

    def add(self, m: Measurement) -> Measurement:
        self.measurements.append(m)
        return m

    def get(self, tool: str) -> Measurement | None:
        return next((m for m in self.measurements if m.tool == tool), None)

    def peers(self) -> list[Measurement]:
        """The peers' measurements that have a median (not ours, no variant, no context)."""
        mine = {self.ours, *self.variants}
        return [m for m in self.measurements if m.tool not in mine and not m.context and m.median]

    def fastest_peer(self) -> Measurement | None:
        """The peer with the best median (lowest time, or highest with ``higher_is_better``)."""
        peers = self.peers()
        if not peers:
            return None
        pick = max if self.higher_is_better else min
        return pick(peers, key=lambda m: m.median or 0.0)

    def ratios_to_fastest(self) -> dict[str, float]:
        """``tool / fastest peer`` of the medians for ours and each variant that has one."""
        best = self.fastest_peer()
        if best is None or not best.median:
            return {}
        out: dict[str, float] = {}
        for tool in (self.ours, *self.variants):
            m = self.get(tool)
            if m is not None and m.median:
                out[tool] = m.median / best.median
        return out

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
            "fastest_peer": (best.tool if (best := self.fastest_peer()) else None),
            "ratios_over_fastest_peer": self.ratios_to_fastest(),
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
    """One timed child process: wall time, exit status, CPU and peak memory of its tree."""

    wall: float
    status: int
    maxrss_kib: int  # largest single process of the tree (getrusage semantics)
    peak_pss_kib: int  # peak of the summed PSS of the whole tree, sampled
    stdout: str
    stderr: str
    cpu: float = 0.0  # user + sys seconds of the whole tree (os.wait4: reaped descendants included)
    stragglers: int = 0  # processes of its session still running when it exited (their CPU is missing)


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
    """Run ``argv`` to completion; ``os.wait4`` gives the tree's CPU and peak RSS.

    The CPU is the user + sys time of the child and of every descendant it (or
    they) reaped, which is the whole tree of a tool that waits for its own
    children; processes of its session still alive when it exits are counted
    in :attr:`ChildRun.stragglers` (then killed).  The tool runs under GNU
    ``time``, whose own ~1 ms is included.

    With ``sample_memory`` a thread sums the PSS of the process tree (PSS
    splits pages shared by forked workers fairly, so the sum is the real
    footprint, unlike a sum of RSS) every 20 ms, or less often when a sample
    itself takes long (a tree of 1000 processes): the sampler's CPU stays
    below ~1/5 of a core.
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
            t_sample = time.perf_counter()
            peak = max(peak, sum(_pss_kib(p) for p in tree(proc.pid)))
            stop.wait(max(0.02, 4 * (time.perf_counter() - t_sample)))

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
    stragglers = len(session_members(proc.pid))
    _kill_group(proc.pid)  # stragglers of the child's session, if any
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    maxrss = usage.ru_maxrss
    if TIME:
        with contextlib.suppress(OSError, ValueError):
            maxrss = int(rss_path.read_text().split()[-1])
    for path in (out_path, err_path, rss_path):
        path.unlink(missing_ok=True)
    return ChildRun(wall, proc.returncode, maxrss, peak, stdout, stderr,
                    cpu=usage.ru_utime + usage.ru_stime, stragglers=stragglers)


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``, from ``/proc``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            # after the command: state, ppid, pgrp, session
            if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(entry))
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cumulative_cpu(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid`` in seconds: its own CPU and that of every
    child it reaped (and of theirs, as far as each parent reaped its own); 0 if it is gone."""
    fields = proc_stat(pid)
    if len(fields) < 15:
        return 0.0
    # fields[0] is the state (field 3 of proc(5)): utime..cstime are fields 14-17
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def children_of(pid: int) -> list[int]:
    """The children of ``pid``, forked by any of its threads (``/proc/<pid>/task/*/children``)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants, walked down from it (its cost grows with the tree only,
    unlike a scan of all of ``/proc``)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children_of(p)
    return out


def wait_childless(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` has a child left (each reaped what it forked); the pids that
    still have one when ``timeout`` runs out."""
    deadline = Deadline(timeout)
    busy = list(pids)
    while True:
        busy = [p for p in busy if children_of(p)]
        if not busy or deadline.expired():
            return busy
        deadline.sleep(0.02)


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
