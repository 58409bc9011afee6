"""Helpers for running the autoserv CLI in tests (as a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
