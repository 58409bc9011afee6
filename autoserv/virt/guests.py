"""Guest lifecycle on a KVM host: start qemu under a lease, watch it, talk to its
monitor, stop it.

The functions take the KVM host (an :class:`~autoserv.hosts.SSHHost`) and a
:class:`GuestRecord`; the :class:`~autoserv.kvm.KVM` object keeps the records and
the leases.  The argv is built by :mod:`autoserv.virt.qemu`, the shell by
:mod:`autoserv.virt.scripts`.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autoserv.errors import AutoservVirtError
from autoserv.virt import qemu, scripts
from autoserv.virt.leases import run_lease

if TYPE_CHECKING:
    from autoserv.hosts.ssh_host import SSHHost

__all__ = [
    "GuestRecord",
    "read_remote",
    "launch",
    "check_started",
    "qemu_alive",
    "failure_report",
    "monitor",
    "stop",
]


@dataclass
class GuestRecord:
    """A guest a KVM object started: its address and files on the host."""

    ip: str
    mac: str
    pid: int
    paths: qemu.GuestPaths
    network: qemu.Network
    argv: list[str]
    started: float


def read_remote(host: SSHHost, path: str, tail: int | None = None) -> str:
    """The text of ``path`` on ``host`` (its last ``tail`` lines); ``""`` when unreadable."""
    cmd = shlex.join(["tail", "-n", str(tail), path]) if tail else shlex.join(["cat", path])
    return host.run(cmd + " 2>/dev/null || true", verbose=False, stdout_tee=None, timeout=60).stdout


def launch(host: SSHHost, *, binary: str, bios_dirs: Sequence[str], accel: str, state_dir: str,
           ip: str, mac: str, options: Sequence[str], network_for: Callable[[], qemu.Network],
           log: logging.Logger) -> GuestRecord:
    """Start qemu daemonized for the leased ``ip``/``mac`` and record its pid in the lease.

    With user-mode networking a host port already taken is retried with
    another (``network_for`` draws a new one), three attempts in all; any other
    failure is an :class:`AutoservVirtError` with qemu's stderr and the command.
    """
    paths = qemu.guest_paths(state_dir, ip)
    last_error = ""
    for _attempt in range(3):
        network = network_for()
        argv = qemu.qemu_argv(binary, options, mac=mac, paths=paths, network=network, accel=accel,
                              bios_dirs=bios_dirs)
        log.info("starting guest %s (%s): %s", ip, mac, qemu.describe_argv(argv))
        cmd = shlex.join(argv) + " </dev/null >/dev/null 2>" + shlex.quote(paths.stderr_log)
        t0 = time.monotonic()
        res = host.run(cmd, ignore_status=True, timeout=120, stdout_tee=None, stderr_tee=None)
        if res.exit_status == 0:
            break
        last_error = read_remote(host, paths.stderr_log)
        if isinstance(network, qemu.UserNetwork) and "hostfwd" in last_error:
            continue  # the random host port was taken: try another
        reason = last_error.strip() or "no message on its stderr"  # on the first line
        raise AutoservVirtError(
            f"qemu failed to start guest {ip} on {host.hostname} (exit status "
            f"{res.exit_status}): {reason}\ncommand: {qemu.describe_argv(argv)}"
        )
    else:
        raise AutoservVirtError(f"qemu failed to start guest {ip}: {last_error.strip()}")
    pid_text = read_remote(host, paths.pidfile).strip()
    if not pid_text.isdigit():
        raise AutoservVirtError(f"qemu for guest {ip} wrote no pid to {paths.pidfile}")
    pid = int(pid_text)
    run_lease(host, state_dir, "commit", ip, str(pid))
    return GuestRecord(ip, mac, pid, paths, network, argv, t0)


def check_started(host: SSHHost, record: GuestRecord, start_check: float, log: logging.Logger) -> None:
    """After ``start_check`` seconds qemu must still run, else an :class:`AutoservVirtError`
    with its stderr and the console tail."""
    time.sleep(start_check)
    if not qemu_alive(host, record):
        stderr = read_remote(host, record.paths.stderr_log).strip()
        console = read_remote(host, record.paths.serial_log, tail=20).strip()
        raise AutoservVirtError(
            f"qemu for guest {record.ip} exited at once on {host.hostname}:\n{stderr}"
            + (f"\nconsole:\n{console}" if console else "")
        )
    network = record.network
    log.info("guest %s started (qemu pid %d, %s)", record.ip, record.pid,
             f"tap {network.ifname}" if isinstance(network, qemu.TapNetwork)
             else f"SSH forwarded from 127.0.0.1:{network.host_port}")


def qemu_alive(host: SSHHost, record: GuestRecord) -> bool:
    """Whether the guest's qemu still runs (a zombie or a reused pid does not count)."""
    res = host.run(scripts.alive_command(record.pid, record.paths.pidfile),
                   ignore_status=True, verbose=False, stdout_tee=None, timeout=60)
    return res.exit_status == 0


def failure_report(host: SSHHost, record: GuestRecord) -> str:
    """What a dead guest left behind: qemu's stderr and the tail of its console."""
    stderr = read_remote(host, record.paths.stderr_log, tail=20).strip()
    console = read_remote(host, record.paths.serial_log, tail=20).strip()
    return "\n".join(part for part in (stderr and f"qemu stderr:\n{stderr}",
                                        console and f"console:\n{console}") if part)


def monitor(host: SSHHost, record: GuestRecord, command: str, timeout: float = 30) -> str:
    """Send one HMP monitor ``command`` to the guest's qemu; returns its reply."""
    res = host.run(scripts.monitor_command(record.paths.monitor, command), timeout=timeout,
                   ignore_status=True, verbose=False, stdout_tee=None)
    if res.exit_status != 0:
        raise AutoservVirtError(f"monitor command {command!r} for guest {record.ip} failed: "
                                f"{res.stderr.strip()}")
    return scripts.monitor_reply(res.stdout)


def stop(host: SSHHost, record: GuestRecord, grace: float) -> bool:
    """Wait up to ``grace`` seconds for qemu to exit, then SIGTERM, then SIGKILL; True once
    it is gone.  (The caller asks the guest to power down first.)"""
    res = host.run(scripts.stop_command(record.pid, record.paths.pidfile, grace),
                   ignore_status=True, verbose=False, timeout=grace + 30)
    return res.exit_status == 0
