"""Helpers for running the autoserv CLI in tests (as a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from autoserv.deadline import Deadline

if TYPE_CHECKING:
    from autoserv.lab.testbed import Testbed

REPO = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("AUTOSERV_SSH_PASS", None)
    env.pop("AUTOSERV_SSH_CONFIG", None)
    env.update(extra)
    return env


def autoserv_argv(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "autoserv", *map(str, args)]


def run_autoserv(
    *args: str | os.PathLike[str], cwd: str | os.PathLike[str], timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``autoserv args...`` to completion; returns the completed process (text).

    If it outlives ``timeout``, it gets SIGTERM (so it cleans up: workers, remote
    commands) and the test fails with what it printed.
    """
    argv = autoserv_argv(*args)
    proc = subprocess.Popen(argv, cwd=cwd, env=cli_env(**env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise AssertionError(
            f"autoserv did not finish within {timeout} s: {argv}\n{out[-5000:]}\n{err}"
        ) from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def stderr_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def write(path: Path, text: str) -> Path:
    """Write ``text`` (dedented) to ``path``, making its directory; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def bed_args(tb: Testbed) -> list[str]:
    """``-m`` with every test bed host and ``--ssh-config`` of the bed."""
    return ["-m", ",".join(tb.machines), "--ssh-config", str(tb.ssh_config)]


def remote_processes(tb: Testbed, pattern: str) -> list[str]:
    """Command lines containing ``pattern`` on each test bed host, as its own ``ps`` shows them."""
    from autoserv import hosts

    found = []
    for machine in tb.machines:
        with hosts.SSHHost(machine, ssh_config=str(tb.ssh_config)) as h:
            out = h.run("ps -eo args", verbose=False, stdout_tee=None).stdout
        found += [f"{machine}: {line}" for line in out.splitlines()
                  if pattern in line and "ps -eo" not in line]
    return found


def wait_for(check: Callable[[], bool], what: str, proc: subprocess.Popen[str],
             seconds: float = 120) -> None:
    """Poll ``check`` until it holds; fail if autoserv (``proc``) ends first or time runs out."""
    deadline = Deadline(seconds)
    while not check():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"autoserv ended while waiting for {what}:\n{out[-3000:]}\n{err}")
        if deadline.expired():
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)  # polling, not a timed assertion
