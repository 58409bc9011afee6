"""2 + 5. Fan-out of ``uname -a`` to N namespace hosts, and the CLI's start-up.

Every tool runs as a fresh process, timed from spawn to exit (``autoserv``
with its results directory, console output and status.log; each peer in
:mod:`bench.peers` or ``xargs -P``), trials interleaved round-robin so drift
in the machine's load hits all tools alike.  Per run:

* ``os.wait4`` gives the user + sys CPU of the tool's whole process tree (each
  tool reaps its own children; a run that leaves processes of its session
  behind is marked) and the peak RSS of its largest process; a sampler gives
  the peak summed PSS of the tree (the controller's real footprint, forked
  workers included).
* The hosts' side: the CPU the first N hosts' sshd listeners gained during the
  run (``utime+stime+cutime+cstime`` in ``/proc/<pid>/stat``; each listener
  reaps its session processes, which reaped theirs, so their CPU lands in the
  listener's ``cutime``/``cstime``).  The bench waits until every listener has
  reaped its sessions before reading it, outside the timed part.

The *sshd-CPU floor* of a trial is the smallest hosts' CPU of any tool in it,
divided by the cores: the hosts share this machine's cores with the tool, so
no tool can finish the fan-out faster than that.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path

from autoserv.lab.testbed import Testbed
from bench.common import (
    OURS,
    OURS_THREADS,
    ChildRun,
    Comparison,
    Measurement,
    checked,
    cumulative_cpu,
    log,
    run_child,
    wait_childless,
)

HERE = Path(__file__).resolve().parent
CONTROL = HERE / "uname.control"
PSSH = "parallel-ssh"
FABRIC = "fabric ThreadingGroup"
XARGS = "xargs -P ssh"
ASYNCSSH = "asyncssh gather"
#: raw paramiko in threads: the least a paramiko program pays (a reference, not a peer)
PARAMIKO = "raw paramiko threads (reference)"
FLOOR = "sshd-CPU floor"
#: ``--tools`` names, in the order the tools are listed
TOOL_KEYS = {"autoserv": OURS, "threads": OURS_THREADS, "asyncssh": ASYNCSSH, "pssh": PSSH,
             "fabric": FABRIC, "xargs": XARGS, "paramiko": PARAMIKO}


def fanout_timeout(n: int) -> float:
    """How long one tool may take for ``n`` hosts (xargs took up to 0.37 s a host here, loaded)."""
    return 60.0 + 0.5 * n


def _autoserv() -> list[str]:
    """The installed ``autoserv`` script itself (a pyenv shim would add ~0.1 s of bash)."""
    script = Path(sysconfig.get_path("scripts")) / "autoserv"
    return [str(script)] if script.exists() else [sys.executable, "-m", "autoserv"]


def _argv_for(tool: str, tb: Testbed, n: int, work: Path) -> tuple[list[str], Callable[[ChildRun], None]]:
    names = tb.machines[:n]
    hosts_file = work / f"hosts{n}"
    if not hosts_file.exists():
        hosts_file.write_text("".join(f"{h.name} {h.address} {h.port}\n" for h in tb.hosts[:n]))
    config = str(tb.ssh_config)

    def expect_lines(run: ChildRun) -> None:
        got = sum(1 for line in run.stdout.splitlines() if "Linux" in line)
        if got < n:
            why = "; ".join(run.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"{tool}: {got} of {n} hosts answered" + (f" ({why})" if why else ""))

    if tool in (OURS, OURS_THREADS):
        results = tempfile.mkdtemp(prefix="results-", dir=work)
        argv = [*_autoserv(), "--ssh-config", config, "-r", results, "-m", ",".join(names), str(CONTROL)]

        def check(run: ChildRun) -> None:
            good = sum("GOOD" in (Path(results) / name / "status.log").read_text() for name in names)
            if run.status != 0 or good < n:
                raise RuntimeError(f"autoserv exited {run.status}, {good} of {n} hosts GOOD: "
                                   f"{run.stderr.strip()[-300:]}")

        return argv, check
    if tool in (PSSH, FABRIC, ASYNCSSH, PARAMIKO):
        peer = {PSSH: "pssh", FABRIC: "fabric", ASYNCSSH: "asyncssh", PARAMIKO: "paramiko"}[tool]
        return [sys.executable, "-m", "bench.peers", peer, config, str(hosts_file), str(tb.client_key)], \
            expect_lines
    if tool == XARGS:
        script = (f'xargs -P {n} -I{{}} ssh -F "$1" -o BatchMode=yes {{}} "uname -a" < "$2"')
        names_file = work / f"names{n}"
        names_file.write_text("\n".join(names) + "\n")
        return ["sh", "-c", script, "sh", config, str(names_file)], expect_lines
    raise ValueError(tool)


def measure_fanout(tb: Testbed, sizes: list[int], trials: dict[int, int],
                   tools: list[str] | None = None) -> list[Comparison]:
    """One comparison per N; each trial runs every tool once, in rotating order.

    Each tool's measurement has its wall times as values and, per trial, ``cpu_s``
    (its tree's CPU), ``sshd_cpu_s`` (the hosts' sshd CPU) and the memory figures in
    ``extra``; the :data:`FLOOR` measurement (context, not a peer) has the floor per trial.
    """
    tools = tools or list(TOOL_KEYS.values())
    cores = len(os.sched_getaffinity(0))
    comps: list[Comparison] = []
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        work = Path(tmp)
        for n in sizes:
            listeners = tb.sshd_pids()[:n]
            if not all(listeners):
                raise RuntimeError(f"no sshd pid known for {listeners.count(0)} test bed hosts")
            comp = Comparison("fanout", f"uname -a on {n} hosts", OURS,
                              variants=tuple(t for t in tools if t == OURS_THREADS))
            by_tool = {t: comp.add(Measurement(t, context=t == PARAMIKO,
                                               extra={"maxrss_kib": [], "peak_pss_kib": [],
                                                      "cpu_s": [], "sshd_cpu_s": []}))
                       for t in tools}
            floor = comp.add(Measurement(FLOOR, context=True,
                                         note=f"hosts' sshd CPU ÷ {cores} cores, least of any tool"))
            for trial in range(trials[n]):
                order = tools[trial % len(tools):] + tools[: trial % len(tools)]
                hosts_cpu: list[float] = []
                for tool in order:
                    m = by_tool[tool]
                    if m.error:
                        continue
                    try:
                        argv, check = _argv_for(tool, tb, n, work)
                        tool_env = {**env, "AUTOSERV_WORKERS": "threads"} if tool == OURS_THREADS else env
                        before = sum(cumulative_cpu(p) for p in listeners)
                        run = run_child(argv, fanout_timeout(n), sample_memory=True, env=tool_env, cwd=work)
                        unreaped = wait_childless(listeners, 10.0)
                        sshd_cpu = sum(cumulative_cpu(p) for p in listeners) - before
                        check(run)
                    except Exception as exc:
                        log.exception("%s on %d hosts failed", tool, n)
                        m.error = f"{type(exc).__name__}: {exc}"[:500]
                        continue
                    if unreaped:
                        log.warning("%s on %d hosts: %d sshd still had sessions after 10 s", tool, n,
                                    len(unreaped))
                        m.extra["sshd_unreaped"] = m.extra.get("sshd_unreaped", 0) + len(unreaped)
                    if run.stragglers:
                        m.extra["stragglers"] = m.extra.get("stragglers", 0) + run.stragglers
                    m.values.append(run.wall)
                    m.extra["maxrss_kib"].append(run.maxrss_kib)
                    m.extra["peak_pss_kib"].append(run.peak_pss_kib)
                    m.extra["cpu_s"].append(run.cpu)
                    m.extra["sshd_cpu_s"].append(sshd_cpu)
                    hosts_cpu.append(sshd_cpu)
                if hosts_cpu:
                    floor.values.append(min(hosts_cpu) / cores)
                log.info("fan-out %d hosts, trial %d: %s; floor %.2fs", n, trial + 1,
                         ", ".join(f"{t} {by_tool[t].values[-1]:.2f}s" for t in tools if by_tool[t].values),
                         floor.values[-1] if floor.values else float("nan"))
            comps.append(comp)
    return comps


def measure_startup(trials: int) -> Comparison:
    """``autoserv --help`` against a bare interpreter (the floor any Python CLI pays)."""
    comp = Comparison("startup", "autoserv --help", OURS)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}  # this checkout, as in the fan-out
    for tool, argv in ((OURS, [*_autoserv(), "--help"]), ("python -c pass", [sys.executable, "-c", "pass"])):
        m = comp.add(Measurement(tool))
        try:
            for _ in range(trials + 1):
                m.values.append(checked(run_child(argv, 30, env=env), tool).wall)
            m.values.pop(0)  # the first one warms the page cache
        except Exception as exc:
            m.error = str(exc)
    return comp
