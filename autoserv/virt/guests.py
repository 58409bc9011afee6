"""Guest lifecycle on a KVM host: start qemu under a lease, watch it, talk to its
monitor, stop it.

The functions take the KVM host (an :class:`~autoserv.hosts.SSHHost`) and a
:class:`GuestRecord`; the :class:`~autoserv.kvm.KVM` object keeps the records and
the leases.  The argv is built by :mod:`autoserv.virt.qemu`, the shell by
:mod:`autoserv.virt.scripts`.

:class:`QemuWatcher` keeps one channel open on the KVM host whose remote shell
reports at once when a watched qemu ends; a guest's commands wait on it as well
as on their own channel (:class:`GuestWatch`), so a command in a guest whose
virtual machine died ends then, not at its timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import paramiko

from autoserv import jobmark, journal
from autoserv.errors import AutoservError, AutoservVirtError
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
    "QemuWatcher",
    "GuestWatch",
    "guest_key",
    "start_watch",
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


def guest_key(record: GuestRecord) -> tuple[int, float]:
    """What tells one started guest from any other: its qemu pid and when it was started."""
    return (record.pid, record.started)


class QemuWatcher:
    """One channel on the KVM host ``host`` whose remote shell (:func:`scripts.watch_command`)
    prints a line the moment one of the watched qemu processes ends.

    :meth:`watch` (re)starts it when asked for a qemu it does not watch yet, or when the
    channel is gone (the host's connection dropped, or this is a forked child): one channel
    for all guests of a KVM object, so many guests do not use up the host's ``MaxSessions``.
    :meth:`close` ends it (the remote shell ends with its channel's stdin).  Thread-safe.
    """

    def __init__(self, host: SSHHost, log: logging.Logger) -> None:
        self.host = host
        self.log = log
        self._lock = threading.Lock()
        self._chan: paramiko.Channel | None = None
        self._owner = 0  # the process that opened the channel
        self._marker = ""
        self._watched: dict[int, tuple[int, float]] = {}  # remote pid -> guest key
        self._ended: set[tuple[int, float]] = set()
        self._buf = b""

    def watch(self, records: Iterable[GuestRecord], timeout: float = 30) -> None:
        """Watch the qemu of every one of ``records`` (restarting the remote watcher if needed)."""
        records = list(records)
        with self._lock:
            self._read()
            if self._running() and {guest_key(r) for r in records} <= {*self._watched.values(),
                                                                      *self._ended}:
                return
            self._stop()
            marker = f"AUTOSERV_QEMU_ENDED_{secrets.token_hex(6)}"
            todo = [r for r in records if guest_key(r) not in self._ended]
            pairs = [(r.pid, r.paths.pidfile) for r in todo]
            command = jobmark.export_command(self.host.hostname) + scripts.watch_command(marker, pairs)
            chan = self.host.transport(timeout).open_session(timeout=timeout)
            journal.record("command", self.host, channel=chan, command="(guest watcher)")
            try:
                chan.exec_command(command)
            except BaseException:
                chan.close()
                raise
            self._chan, self._owner, self._marker, self._buf = chan, os.getpid(), marker, b""
            self._watched = {r.pid: guest_key(r) for r in todo}
            self.log.debug("watching qemu %s on %s", sorted(self._watched), self.host.hostname)

    def _running(self) -> bool:
        chan = self._chan
        return (chan is not None and self._owner == os.getpid() and not chan.closed
                and not chan.eof_received and chan.get_transport() is not None
                and bool(chan.get_transport().is_active()))  # type: ignore[union-attr]

    def _read(self) -> None:
        """Take in what the remote watcher printed (called under the lock)."""
        chan = self._chan
        if chan is None or self._owner != os.getpid():
            return
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            while chan.recv_ready():
                data = chan.recv(4096)
                if not data:
                    break
                self._buf += data
        mark = self._marker.encode()
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            words = line.split()
            if mark in words:  # whatever the login shell printed first is not ours
                after = words[words.index(mark) + 1:]
                key = self._watched.get(int(after[0])) if after and after[0].isdigit() else None
                if key is not None:
                    self._ended.add(key)
        self._buf = self._buf[-4096:]

    def ended(self, key: tuple[int, float]) -> bool:
        """The watcher saw the qemu of the guest ``key`` (:func:`guest_key`) end."""
        with self._lock:
            self._read()
            return key in self._ended

    def watching(self, key: tuple[int, float]) -> bool:
        """The remote watcher runs and watches the qemu of guest ``key``."""
        with self._lock:
            return key in self._watched.values() and self._running()

    def fileno(self) -> int:
        """A descriptor that turns readable when the watcher has news (for ``select``)."""
        chan = self._chan
        if chan is None:
            raise AutoservVirtError("the guest watcher is not running")
        return int(chan.fileno())

    def _stop(self) -> None:
        chan, self._chan = self._chan, None
        if chan is not None and self._owner == os.getpid():  # a forked child leaves the
            with contextlib.suppress(Exception):  # parent's channel alone
                chan.close()
        self._watched = {}

    def close(self) -> None:
        """Stop watching (idempotent)."""
        with self._lock:
            self._stop()


class GuestWatch:
    """What a guest's command waits on besides its own channel: whether its qemu ended.

    Given to :class:`~autoserv.hosts.ssh_exec.SSHExecution` as its ``watch``."""

    def __init__(self, watcher: QemuWatcher, record: GuestRecord) -> None:
        self.watcher = watcher
        self.key = guest_key(record)

    def fileno(self) -> int:
        return self.watcher.fileno()

    def gone(self) -> bool:
        """The guest's qemu ended."""
        return self.watcher.ended(self.key)

    def watching(self) -> bool:
        """The watcher still runs (else a waiter stops selecting on it)."""
        return self.watcher.watching(self.key)


def start_watch(watcher: QemuWatcher, records: Iterable[GuestRecord], record: GuestRecord,
                log: logging.Logger) -> GuestWatch | None:
    """A :class:`GuestWatch` for ``record`` (one of ``records``, all watched), or None (and a
    debug line) when the watcher cannot be started now (the KVM host unreachable)."""
    try:
        watcher.watch(records)
    except (AutoservError, OSError, EOFError, paramiko.SSHException) as exc:
        log.debug("cannot watch qemu %d of guest %s: %s", record.pid, record.ip, exc)
        return None
    return GuestWatch(watcher, record)
