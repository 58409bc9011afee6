"""Helpers shared by the host tests (test_host_*.py)."""

from __future__ import annotations

import os

from autoserv import hosts
from autoserv.lab.testbed import Testbed


def alive(host: hosts.SSHHost, pattern: str) -> list[str]:
    """Live (non-zombie) processes on ``host`` whose command line matches ``pattern``."""
    out = host.run(f"pgrep -a -f {pattern!s} || true", verbose=False).stdout
    return [line for line in out.splitlines() if line.strip()]


def direct(testbed: Testbed, **kw: object) -> hosts.SSHHost:
    """An SSHHost for the first test bed host by address and port, without the ssh config."""
    th = testbed.hosts[0]
    return hosts.SSHHost(
        th.address, port=th.port, key_file=str(testbed.client_key), ssh_config=os.devnull, **kw
    )  # type: ignore[arg-type]
