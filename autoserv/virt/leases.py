"""Address leases on a KVM host: which guest holds which address of the pool.

The pool itself (validated MAC/IP pairs) is :mod:`autoserv.virt.addresses`; a
lease is taken, committed, released, listed and reclaimed by the remote lease
script (:data:`~autoserv.virt.scripts.LEASE_SCRIPT`) under the host's lock, so
several autoserv processes sharing a host never hand out the same MAC or IP.
This module feeds the script and reads its answers.

Each lease names its owner, the controller process that took it
(:func:`owner_tag`): its host name, pid and start time, and a digest of the
kernel boot and pid namespace the pid is valid in.  A controller in the same
namespace can tell whether that process still runs (:func:`owner_dead`); a
guest whose owner died (SIGKILL, OOM, power cut) is then reaped with
:func:`reap_lease` — qemu killed, tap, files and lease freed — by the next job
on that KVM host or by ``autoserv cleanup``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autoserv import jobmark
from autoserv.errors import AutoservVirtError
from autoserv.localsys import pid_alive, start_time
from autoserv.result import CmdResult
from autoserv.virt.qemu import tap_name
from autoserv.virt.scripts import lease_command

if TYPE_CHECKING:
    from autoserv.hosts.ssh_host import SSHHost

__all__ = ["Lease", "pool_lines", "parse_leases", "run_lease", "acquire_lease", "owner_tag",
           "owner_dead", "reap_lease", "REAP_ANSWERS"]


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


@functools.cache
def _namespace() -> str:
    """A digest of this kernel boot and pid namespace: where a pid in an owner tag is valid."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return "unknown"
    return hashlib.sha256(f"{boot} {ns}".encode()).hexdigest()[:12]


_TAG = re.compile(r"^(?P<host>[^\s:]+):(?P<pid>\d+):(?P<start>\d+):(?P<ns>[0-9a-f]{12})"
                  r":(?P<job>[0-9a-f]+|-)$")


def owner_tag(pid: int | None = None) -> str:
    """The owner written into the leases process ``pid`` (default: this one) takes:
    ``<host>:<pid>:<start ticks>:<namespace digest>:<job id or ->``."""
    pid = os.getpid() if pid is None else pid
    host = re.sub(r"[\s:]", "_", socket.gethostname()) or "localhost"
    return f"{host}:{pid}:{start_time(pid)}:{_namespace()}:{jobmark.current() or '-'}"


def owner_dead(tag: str) -> bool:
    """True when ``tag`` (from :func:`owner_tag`) names a process of this pid namespace that
    no longer runs.  A tag of another machine or namespace, or of an older format, is never
    taken for dead: its owner cannot be checked from here."""
    m = _TAG.match(tag)
    if m is None or m["ns"] != _namespace():
        return False
    return not pid_alive(int(m["pid"]), int(m["start"]))


#: What :func:`reap_lease` may answer: the lease is gone already, belongs to someone else
#: now, was freed (its qemu had ended) or its qemu was killed; ``+ " tap"``: a tap removed.
REAP_ANSWERS = ("gone", "taken", "freed", "killed")


def reap_lease(host: SSHHost, state_dir: str, ip: str, pid: int | None, owner: str) -> str:
    """End the guest holding ``ip`` on ``host`` if its lease still names ``owner`` and
    ``pid``: kill its qemu, remove its tap, files and lease.  Returns the script's answer
    (see :data:`REAP_ANSWERS`); a qemu that survives SIGKILL is an :class:`AutoservVirtError`."""
    res = run_lease(host, state_dir, "reap", ip, str(pid) if pid else "-", owner, ignore_status=True)
    answer = res.stdout.strip()
    if res.exit_status != 0 or answer.split(" ", 1)[0] not in REAP_ANSWERS:
        raise AutoservVirtError(f"cannot reap guest {ip} on {host.hostname}: "
                                f"{res.stderr.strip() or answer or f'exit status {res.exit_status}'}")
    return answer
