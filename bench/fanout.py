"""2 + 5. Fan-out of ``uname -a`` to N namespace hosts, and the CLI's start-up.

Every tool runs as a fresh process, timed from spawn to exit (``autoserv``
with its results directory, console output and status.log; each peer in
:mod:`bench.peers` or ``xargs -P``), trials interleaved round-robin so drift
in the machine's load hits all tools alike.  ``os.wait4`` gives the peak RSS
of the largest process of each tree; a sampler gives the peak summed PSS of
the whole tree (the controller's real footprint, forked workers included).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path

from autoserv.lab.testbed import Testbed
from bench.common import OURS, ChildRun, Comparison, Measurement, checked, log, run_child

HERE = Path(__file__).resolve().parent
CONTROL = HERE / "uname.control"
PSSH = "parallel-ssh"
FABRIC = "fabric ThreadingGroup"
XARGS = "xargs -P ssh"
ASYNCSSH = "asyncssh gather"
OURS_THREADS = "autoserv (AUTOSERV_WORKERS=threads)"
FANOUT_TIMEOUT = 120.0


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
            raise RuntimeError(f"{tool}: {got} of {n} hosts answered")

    if tool in (OURS, OURS_THREADS):
        results = tempfile.mkdtemp(prefix="results-", dir=work)
        argv = [*_autoserv(), "--ssh-config", config, "-r", results, "-m", ",".join(names), str(CONTROL)]

        def check(run: ChildRun) -> None:
            good = sum("GOOD" in (Path(results) / name / "status.log").read_text() for name in names)
            if run.status != 0 or good < n:
                raise RuntimeError(f"autoserv exited {run.status}, {good} of {n} hosts GOOD: "
                                   f"{run.stderr.strip()[-300:]}")

        return argv, check
    if tool in (PSSH, FABRIC, ASYNCSSH):
        peer = {PSSH: "pssh", FABRIC: "fabric", ASYNCSSH: "asyncssh"}[tool]
        return [sys.executable, "-m", "bench.peers", peer, config, str(hosts_file), str(tb.client_key)], \
            expect_lines
    if tool == XARGS:
        script = (f'xargs -P {n} -I{{}} ssh -F "$1" -o BatchMode=yes {{}} "uname -a" < "$2"')
        names_file = work / f"names{n}"
        names_file.write_text("\n".join(names) + "\n")
        return ["sh", "-c", script, "sh", config, str(names_file)], expect_lines
    raise ValueError(tool)


def measure_fanout(tb: Testbed, sizes: list[int], trials: dict[int, int]) -> list[Comparison]:
    """One comparison per N; each trial runs every tool once, in rotating order."""
    tools = [OURS, OURS_THREADS, ASYNCSSH, PSSH, FABRIC, XARGS]
    comps: list[Comparison] = []
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        work = Path(tmp)
        for n in sizes:
            comp = Comparison("fanout", f"uname -a on {n} hosts", OURS)
            by_tool = {t: comp.add(Measurement(t, extra={"maxrss_kib": [], "peak_pss_kib": []}))
                       for t in tools}
            for trial in range(trials[n]):
                order = tools[trial % len(tools):] + tools[: trial % len(tools)]
                for tool in order:
                    m = by_tool[tool]
                    if m.error:
                        continue
                    try:
                        argv, check = _argv_for(tool, tb, n, work)
                        tool_env = {**env, "AUTOSERV_WORKERS": "threads"} if tool == OURS_THREADS else env
                        run = run_child(argv, FANOUT_TIMEOUT, sample_memory=True, env=tool_env, cwd=work)
                        check(run)
                    except Exception as exc:
                        log.exception("%s on %d hosts failed", tool, n)
                        m.error = f"{type(exc).__name__}: {exc}"[:500]
                        continue
                    m.values.append(run.wall)
                    m.extra["maxrss_kib"].append(run.maxrss_kib)
                    m.extra["peak_pss_kib"].append(run.peak_pss_kib)
                log.info("fan-out %d hosts, trial %d: %s", n, trial + 1,
                         ", ".join(f"{t} {by_tool[t].values[-1]:.2f}s" for t in tools if by_tool[t].values))
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
