"""Pure qemu argv builders: no I/O, no shell text, table-tested.

The qemu command line of one guest is built here as a list of words: the
user's ``qemu_options`` split with :mod:`shlex` (never pasted into a shell
line), the BIOS directories, and what autoserv manages itself (pidfile,
monitor, serial console, display, NIC, accelerator).  Also here: where a
guest's files live on the KVM host and the name of its tap.  The shell that
runs on the host is in :mod:`autoserv.virt.scripts`.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from autoserv.errors import AutoservVirtError

__all__ = [
    "MANAGED_OPTIONS",
    "GuestPaths",
    "TapNetwork",
    "UserNetwork",
    "Network",
    "guest_paths",
    "tap_name",
    "split_options",
    "qemu_argv",
    "describe_argv",
]

#: Options autoserv sets itself; a ``qemu_options`` string giving them is refused.
MANAGED_OPTIONS = frozenset({
    "-daemonize", "-pidfile", "-monitor", "-qmp", "-serial", "-nographic", "-display",
})
_ACCEL_OPTIONS = ("-accel", "-enable-kvm", "-no-kvm")


@dataclass(frozen=True)
class GuestPaths:
    """Where one guest's files live on the KVM host (all under ``directory``)."""

    directory: str
    pidfile: str
    monitor: str
    console: str
    serial_log: str
    stderr_log: str
    lease: str


def guest_paths(state_dir: str, ip: str) -> GuestPaths:
    """The files of the guest holding ``ip`` under the remote ``state_dir``.

    The lease script derives the same paths (``$dir/guests/$ip/...``); a unit
    test checks both agree.
    """
    d = posixpath.join(state_dir, "guests", ip)
    return GuestPaths(
        directory=d,
        pidfile=posixpath.join(d, "qemu.pid"),
        monitor=posixpath.join(d, "monitor.sock"),
        console=posixpath.join(d, "console.sock"),
        serial_log=posixpath.join(d, "serial.log"),
        stderr_log=posixpath.join(d, "qemu.stderr"),
        lease=posixpath.join(state_dir, "leases", f"{ip}.lease"),
    )


def tap_name(ip: str) -> str:
    """A tap name unique per address and within IFNAMSIZ: ``kvm`` + the IPv4 in hex."""
    return f"kvm{int(ipaddress.IPv4Address(ip)):08x}"


@dataclass(frozen=True)
class TapNetwork:
    """A tap device attached to a bridge by the ``ifup`` script."""

    ifname: str
    ifup: str
    ifdown: str


@dataclass(frozen=True)
class UserNetwork:
    """User-mode networking (``restrict=on``) with the guest's SSH port forwarded to
    ``127.0.0.1:<host_port>`` on the KVM host."""

    guest_ip: str
    host_port: int


Network = TapNetwork | UserNetwork
"""How a guest's one NIC reaches the world."""


def split_options(qemu_options: str | Sequence[str]) -> list[str]:
    """``qemu_options`` as an argv list (a string is split with :func:`shlex.split`).

    Options autoserv manages itself (``-daemonize``, ``-pidfile``, ``-monitor``,
    ``-serial``, ``-display``, ``-nographic``, ``-qmp``) are refused.
    """
    if isinstance(qemu_options, str):
        try:
            argv = shlex.split(qemu_options)
        except ValueError as exc:
            raise AutoservVirtError(f"cannot parse qemu options {qemu_options!r}: {exc}") from None
    else:
        argv = [str(a) for a in qemu_options]
    for word in argv:
        flag = "-" + word.lstrip("-") if word.startswith("-") else ""
        if flag.split("=", 1)[0] in MANAGED_OPTIONS:
            raise AutoservVirtError(
                f"qemu option {word} is managed by autoserv (it sets the pidfile, monitor, "
                "serial console and display itself); remove it from qemu_options"
            )
    return argv


def _has_accel(argv: Sequence[str]) -> bool:
    for i, word in enumerate(argv):
        w = "-" + word.lstrip("-") if word.startswith("-") else word
        if w in _ACCEL_OPTIONS:
            return True
        if w in ("-machine", "-M") and i + 1 < len(argv) and "accel=" in argv[i + 1]:
            return True
    return False


def qemu_argv(
    binary: str,
    options: Sequence[str],
    *,
    mac: str,
    paths: GuestPaths,
    network: Network,
    accel: str = "tcg",
    bios_dirs: Sequence[str] = (),
    rng: bool = True,
) -> list[str]:
    """The full qemu command line for one guest, as a list of words.

    ``-L <dir>`` for each of ``bios_dirs`` (in order: qemu searches them
    first to last) comes right after the binary, then the user's ``options``,
    then what autoserv manages: daemonized with a pidfile, an HMP monitor
    socket, the serial console on a socket whose output is also logged, no
    display, one virtio NIC with the leased ``mac``, the accelerator (unless
    the options choose one) and a virtio RNG.
    """
    argv = [binary]
    for directory in bios_dirs:
        argv += ["-L", directory]
    argv += list(options)
    argv += [
        "-daemonize", "-pidfile", paths.pidfile,
        "-monitor", f"unix:{paths.monitor},server=on,wait=off",
        "-chardev", f"socket,id=console0,path={paths.console},server=on,wait=off,"
                    f"logfile={paths.serial_log},logappend=on",
        "-serial", "chardev:console0",
        "-display", "none",
    ]
    if isinstance(network, TapNetwork):
        argv += ["-netdev", f"tap,id=n0,ifname={network.ifname},script={network.ifup},"
                            f"downscript={network.ifdown}"]
    else:
        argv += ["-netdev", f"user,id=n0,restrict=on,"
                            f"hostfwd=tcp:127.0.0.1:{network.host_port}-{network.guest_ip}:22"]
    argv += ["-device", f"virtio-net-pci,netdev=n0,mac={mac}"]
    if not _has_accel(options):
        argv += ["-accel", accel]
    if rng:
        argv += ["-device", "virtio-rng-pci"]
    return argv


_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_.:,=/+@%-]+$")


def describe_argv(argv: Sequence[str]) -> str:
    """A copy-pasteable, shell-quoted rendering of ``argv`` for logs and errors."""
    return " ".join(a if _SAFE_TOKEN.match(a) else shlex.quote(a) for a in argv)
