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
    """Run ``autoserv args...`` to completion; returns the completed process (text)."""
    return subprocess.run(
        autoserv_argv(*args),
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def stderr_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]
