"""Address leases on a KVM host: which guest holds which address of the pool.

The pool itself (validated MAC/IP pairs) is :mod:`autoserv.virt.addresses`; a
lease is taken, committed, released, listed and reclaimed by the remote lease
script (:data:`~autoserv.virt.scripts.LEASE_SCRIPT`) under the host's lock, so
several autoserv processes sharing a host never hand out the same MAC or IP.
This module feeds the script and reads its answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autoserv.errors import AutoservVirtError
from autoserv.result import CmdResult
from autoserv.virt.qemu import tap_name
from autoserv.virt.scripts import lease_command

if TYPE_CHECKING:
    from autoserv.hosts.ssh_host import SSHHost

__all__ = ["Lease", "pool_lines", "parse_leases", "run_lease", "acquire_lease"]


@dataclass(frozen=True)
class Lease:
    """One line of the lease listing: an address and the state of its guest."""

    ip: str
    mac: str
    state: str  # alive | starting | dead | reclaimed
    pid: int | None
    owner: str


def pool_lines(addresses: Iterable[Mapping[str, str] | object]) -> str:
    """The address pool as the lease script reads it: ``mac ip tap`` lines."""
    lines = []
    for a in addresses:
        mac = a["mac"] if isinstance(a, Mapping) else a.mac  # type: ignore[attr-defined]
        ip = a["ip"] if isinstance(a, Mapping) else a.ip  # type: ignore[attr-defined]
        lines.append(f"{mac} {ip} {tap_name(ip)}\n")
    return "".join(lines)


def parse_leases(text: str) -> list[Lease]:
    """Parse the output of the lease script's ``list``/``reclaim`` commands."""
    result = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        pid = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else None
        owner = parts[4] if len(parts) > 4 else ""
        result.append(Lease(ip=parts[0], mac=parts[1], state=parts[2], pid=pid, owner=owner))
    return result


def run_lease(host: SSHHost, state_dir: str, command: str, *args: str, stdin: str | None = None,
              ignore_status: bool = False) -> CmdResult:
    """Run one lease script ``command`` on ``host`` under the lock of ``state_dir``."""
    return host.run(lease_command(state_dir, command, *args), stdin=stdin,
                    ignore_status=ignore_status, verbose=False, stdout_tee=None, timeout=120)


def acquire_lease(host: SSHHost, state_dir: str, tag: str, pool: Iterable[object]) -> tuple[str, str]:
    """Lease the first free address of ``pool`` for the owner ``tag``: ``(mac, ip)``.

    No free address, or any other failure, is an :class:`AutoservVirtError`.
    """
    pool = list(pool)
    res = run_lease(host, state_dir, "acquire", tag, stdin=pool_lines(pool), ignore_status=True)
    if res.exit_status == 3:
        raise AutoservVirtError(
            f"no free guest address on {host.hostname}: all {len(pool)} addresses "
            "of the pool are leased"
        )
    if res.exit_status != 0 or len(res.stdout.split()) != 2:
        raise AutoservVirtError(f"cannot take a guest address lease on {host.hostname}: "
                                f"{res.stderr.strip() or res.stdout.strip()}")
    mac, ip = res.stdout.split()
    return mac, ip
