"""Pure builders for running qemu on a KVM host: no I/O, table-tested.

Everything :mod:`autoserv.kvm` sends to a remote host is built here: the qemu
argv (from the user's ``qemu_options`` split with :mod:`shlex`, never pasted
into a shell line), the paths of a guest's files, the tap name, the
``qemu-ifup``/``qemu-ifdown`` scripts, the HMP monitor client, the lease
script run under ``flock``, and the parsers for ``/proc/cpuinfo``,
``/proc/modules`` and lease listings.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from autoserv.errors import AutoservVirtError
from autoserv.utils import quote_args

__all__ = [
    "GuestPaths",
    "TapNetwork",
    "UserNetwork",
    "Lease",
    "guest_paths",
    "tap_name",
    "split_options",
    "qemu_argv",
    "monitor_command",
    "monitor_reply",
    "console_command",
    "ifup_script",
    "ifdown_script",
    "cpu_vendor",
    "parse_proc_modules",
    "vendor_module",
    "LEASE_SCRIPT",
    "INSTALL_SCRIPT",
    "install_command",
    "locked",
    "LOCK_SCRIPT",
    "lease_command",
    "parse_leases",
    "accel_probe_command",
    "MANAGED_OPTIONS",
]

#: Options autoserv sets itself; a ``qemu_options`` string giving them is refused.
MANAGED_OPTIONS = frozenset({
    "-daemonize", "-pidfile", "-monitor", "-qmp", "-serial", "-nographic", "-display",
})
_ACCEL_OPTIONS = ("-accel", "-enable-kvm", "-no-kvm")

#: Seconds a lease may stay without a recorded qemu pid before it counts as dead
#: (its starter died between taking the lease and starting qemu).
LEASE_START_GRACE = 120


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
    network: TapNetwork | UserNetwork,
    accel: str = "tcg",
    bios_dir: str | None = None,
    rng: bool = True,
) -> list[str]:
    """The full qemu command line for one guest, as a list of words.

    The user's ``options`` come first, then what autoserv manages: daemonized
    with a pidfile, an HMP monitor socket, the serial console on a socket whose
    output is also logged, no display, one virtio NIC with the leased ``mac``,
    the accelerator (unless the options choose one) and a virtio RNG.
    """
    argv = [binary]
    if bios_dir:
        argv += ["-L", bios_dir]
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


_MONITOR_PY = r"""
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
buf = b""
def until(mark, t):
    global buf
    end = time.time() + t
    while mark not in buf and time.time() < end:
        try:
            d = s.recv(4096)
        except socket.timeout:
            break
        if not d:
            break
        buf += d
until(b"(qemu) ", 10)
buf = b""
s.sendall(sys.argv[2].encode() + b"\n")
until(b"(qemu) ", 10)
sys.stdout.write(buf.decode(errors="replace").replace("\r", ""))
"""


def monitor_command(socket_path: str, command: str) -> str:
    """Shell that sends one HMP ``command`` to the monitor socket and prints the reply.

    Uses ``python3`` when the KVM host has it, else ``socat``.
    """
    py = quote_args("python3 -c", [_MONITOR_PY, socket_path, command])
    so = quote_args("printf '%s\\n'", [command]) + " | " + quote_args("socat -t 2 -", [
        f"UNIX-CONNECT:{socket_path}"])
    return (f"if command -v python3 >/dev/null 2>&1; then {py}; "
            f"elif command -v socat >/dev/null 2>&1; then {so}; "
            "else echo 'autoserv: neither python3 nor socat to talk to the qemu monitor' >&2; exit 127; fi")


_CONSOLE_PY = r"""
import os, select, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
while True:
    r, _, _ = select.select([s, 0], [], [])
    if s in r:
        d = s.recv(65536)
        if not d:
            break
        os.write(1, d)
    if 0 in r:
        d = os.read(0, 65536)
        if not d:
            break
        s.sendall(d)
"""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def monitor_reply(output: str) -> str:
    """qemu's answer in the output of :func:`monitor_command`: the lines after the echoed
    command (HMP echoes it with terminal escapes), without the prompt."""
    text = _ANSI.sub("", output).replace("\r", "")
    lines = text.split("\n")[1:]  # the first line is the echoed command
    return "\n".join(lines).replace("(qemu) ", "").strip()


def console_command(paths: GuestPaths) -> str:
    """Shell that prints the serial log so far, then bridges stdin/stdout to the console socket."""
    py = quote_args("exec python3 -u -c", [_CONSOLE_PY, paths.console])
    so = quote_args("exec socat -", [f"UNIX-CONNECT:{paths.console}"])
    return (quote_args("cat", [paths.serial_log]) + " 2>/dev/null; "
            f"if command -v python3 >/dev/null 2>&1; then {py}; else {so}; fi")


def ifup_script(bridge: str) -> str:
    """``qemu-ifup``: bring the tap ``$1`` up and attach it to ``bridge``."""
    b = shlex.quote(bridge)
    return f"""#!/bin/sh
# autoserv qemu-ifup: attach tap "$1" to bridge {b}
set -e
if command -v ip >/dev/null 2>&1; then
    ip link set "$1" up
    ip link set "$1" master {b}
else
    ifconfig "$1" 0.0.0.0 up
    brctl addif {b} "$1"
fi
"""


def ifdown_script(bridge: str) -> str:
    """``qemu-ifdown``: detach the tap ``$1`` from ``bridge`` (qemu deletes the tap)."""
    b = shlex.quote(bridge)
    return f"""#!/bin/sh
# autoserv qemu-ifdown: detach tap "$1" from bridge {b}
if command -v ip >/dev/null 2>&1; then
    ip link set "$1" nomaster 2>/dev/null
    ip link set "$1" down 2>/dev/null
else
    brctl delif {b} "$1" 2>/dev/null
fi
exit 0
"""


def cpu_vendor(cpuinfo: str) -> str:
    """``"intel"`` (``vmx``) or ``"amd"`` (``svm``) from the first ``flags`` line of ``/proc/cpuinfo``."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = value.split()
            if "vmx" in flags:
                return "intel"
            if "svm" in flags:
                return "amd"
            break
    raise AutoservVirtError(
        "this CPU offers no hardware virtualization (neither vmx nor svm in /proc/cpuinfo flags)"
    )


def vendor_module(vendor: str) -> str:
    """The KVM module for a CPU vendor: ``kvm_intel`` or ``kvm_amd``."""
    return {"intel": "kvm_intel", "amd": "kvm_amd"}[vendor]


def parse_proc_modules(text: str) -> dict[str, int]:
    """``{module name: use count}`` from ``/proc/modules``."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2].isdigit():
            result[parts[0]] = int(parts[2])
    return result


# The lease script: run as `flock -w 60 <dir>/lock sh -c LEASE_SCRIPT lease <cmd> <dir> [args]`.
# One file per address, <dir>/leases/<ip>.lease, `key=value` lines.  A lease is alive while
# its qemu pid (recorded after start) runs, or — before a pid is recorded — for
# LEASE_START_GRACE seconds after it was taken.
LEASE_SCRIPT = r"""
set -u
cmd=$1; dir=$2; shift 2
leases=$dir/leases
mkdir -p "$leases" "$dir/guests"
alive() {
    case "$1" in ''|*[!0-9]*) return 1 ;; esac
    { read -r st < "/proc/$1/stat"; } 2>/dev/null || return 1
    st=${st##*) }; st=${st%% *}
    [ "$st" != Z ] || return 1
    tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}
field() { sed -n "s/^$2=//p" "$1" | head -n 1; }
state() {
    pid=$(field "$1" pid); pidfile=$(field "$1" pidfile)
    if [ -z "$pid" ] && [ -s "$pidfile" ]; then pid=$(cat "$pidfile" 2>/dev/null); fi
    if [ -n "$pid" ]; then
        if alive "$pid" "$pidfile"; then echo alive; else echo dead; fi
        return
    fi
    created=$(field "$1" created); now=$(date +%s)
    if [ $((now - ${created:-0})) -lt @GRACE@ ]; then echo starting; else echo dead; fi
}
drop() { rm -rf "$dir/guests/$1"; rm -f "$leases/$1.lease"; }
case "$cmd" in
acquire)
    tag=$1
    for f in "$leases"/*.lease; do
        [ -e "$f" ] || continue
        if [ "$(state "$f")" = dead ]; then drop "$(field "$f" ip)"; echo "reclaimed $(field "$f" ip)" >&2; fi
    done
    while read -r mac ip tap; do
        [ -n "$ip" ] || continue
        [ -e "$leases/$ip.lease" ] && continue
        grep -qixF "mac=$mac" "$leases"/*.lease 2>/dev/null && continue
        g=$dir/guests/$ip
        rm -rf "$g"; mkdir -p "$g"
        {
            echo "ip=$ip"; echo "mac=$mac"; echo "tap=$tap"; echo "owner=$tag"
            echo "created=$(date +%s)"; echo "pidfile=$g/qemu.pid"; echo "monitor=$g/monitor.sock"
            echo "console=$g/console.sock"; echo "serial_log=$g/serial.log"
        } > "$leases/.$ip.tmp"
        mv "$leases/.$ip.tmp" "$leases/$ip.lease"
        echo "$mac $ip"
        exit 0
    done
    echo "no free address: all leased" >&2
    exit 3 ;;
commit)
    f=$leases/$1.lease
    [ -e "$f" ] || { echo "no lease for $1" >&2; exit 4; }
    echo "pid=$2" >> "$f" ;;
release)
    drop "$1" ;;
list|reclaim)
    for f in "$leases"/*.lease; do
        [ -e "$f" ] || continue
        s=$(state "$f"); ip=$(field "$f" ip); mac=$(field "$f" mac)
        pid=$(field "$f" pid); owner=$(field "$f" owner)
        if [ "$cmd" = reclaim ] && [ "$s" = dead ]; then drop "$ip"; s=reclaimed; fi
        echo "$ip $mac $s ${pid:--} $owner"
    done ;;
*)
    echo "unknown lease command $cmd" >&2; exit 2 ;;
esac
""".replace("@GRACE@", str(LEASE_START_GRACE))


# The install script: unpack (and build) one source archive into its tree, run as
# `flock -w T <tree>.lock sh -c INSTALL_SCRIPT install <archive> <dest> <tar flag> <marker>
# <build 0|1> <patched 0|1> <jobs> [configure args...]`.  A tree whose marker exists is
# reused as is (same archive, same build settings).  Exit 10/11: unpack, 21: configure,
# 22: make.  `make install` is never run.
INSTALL_SCRIPT = r"""
set -u
archive=$1; dest=$2; flag=$3; marker=$4; build=$5; patched=$6; jobs=$7; shift 7
if [ -e "$dest/$marker" ]; then
    echo "AUTOSERV-STEP tree already unpacked and built with these settings: reused"
    echo "AUTOSERV-TREE $(cat "$dest/$marker")"
    exit 0
fi
echo "AUTOSERV-STEP unpack $archive"
rm -rf "$dest" && mkdir -p "$dest" || exit 10
tar -x${flag}f "$archive" -C "$dest" || exit 11
n=$(ls -A "$dest" | wc -l); first=$(ls -A "$dest" | head -n 1)
if [ "$n" -eq 1 ] && [ -d "$dest/$first" ]; then root=$dest/$first; else root=$dest; fi
cd "$root" || exit 10
if [ "$build" = 1 ]; then
    echo "AUTOSERV-STEP make clean (failure ignored)"
    make clean || true
    if [ "$patched" = 1 ]; then
        if ./configure --help 2>/dev/null | grep -q -- --with-patched-kernel; then
            set -- --with-patched-kernel "$@"
        else
            echo "AUTOSERV-STEP ./configure has no --with-patched-kernel (a modern tree): not passed"
        fi
    fi
    echo "AUTOSERV-STEP ./configure $*"
    ./configure "$@"; rc=$?
    [ $rc -eq 0 ] || { echo "AUTOSERV-FAILED configure exit status $rc"; exit 21; }
    echo "AUTOSERV-STEP make -j$jobs"
    make -j"$jobs"; rc=$?
    [ $rc -eq 0 ] || { echo "AUTOSERV-FAILED make exit status $rc"; exit 22; }
fi
echo "$root" > "$dest/$marker"
echo "AUTOSERV-TREE $root"
"""

INSTALL_STEPS = {10: "unpack", 11: "unpack", 21: "configure", 22: "make", 1: "waiting for the tree lock"}
"""What failed, by the install script's exit status."""


# Run "$@" holding the lock file $1 (waiting at most $2 s): flock(1) when the host has it,
# else a mkdir lock that a dead holder's successor takes over (e.g. busybox without flock).
LOCK_SCRIPT = r"""
lock=$1; wait=$2; shift 2
if command -v flock >/dev/null 2>&1; then exec flock -w "$wait" "$lock" "$@"; fi
i=0
while ! mkdir "$lock.d" 2>/dev/null; do
    owner=$(cat "$lock.d/pid" 2>/dev/null)
    if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then rm -rf "$lock.d"; continue; fi
    i=$((i + 1)); [ "$i" -gt $((wait * 10)) ] && { echo "timed out waiting for $lock" >&2; exit 1; }
    sleep 0.1
done
echo $$ > "$lock.d/pid"
"$@"; rc=$?
rm -rf "$lock.d"
exit $rc
"""


def locked(lock: str, argv: Sequence[str], wait: float) -> str:
    """Shell running ``argv`` while holding ``lock`` (see :data:`LOCK_SCRIPT`)."""
    return quote_args("sh -c", [LOCK_SCRIPT, "locked", lock, str(int(wait)), *argv])


def install_command(
    archive: str, dest: str, tar_flag: str, marker: str, *, build: bool, patched_kernel: bool,
    jobs: int, configure_args: Sequence[str] = (), lock_wait: float = 3 * 3600,
) -> str:
    """Shell that unpacks ``archive`` into ``dest`` (and builds it) under ``flock`` on
    ``<dest>.lock``, so concurrent installs of one tree wait for each other."""
    return (quote_args("mkdir -p", [posixpath.dirname(dest)]) + " && " +
            locked(dest + ".lock", ["sh", "-c", INSTALL_SCRIPT, "install", archive, dest, tar_flag, marker,
                                    "1" if build else "0", "1" if patched_kernel else "0", str(int(jobs)),
                                    *configure_args], lock_wait))


def lease_command(state_dir: str, command: str, *args: str, wait: float = 60) -> str:
    """Shell that runs one lease ``command`` under ``flock`` on ``<state_dir>/lock``."""
    lock = posixpath.join(state_dir, "lock")
    return (quote_args("mkdir -p", [state_dir]) + " && " +
            locked(lock, ["sh", "-c", LEASE_SCRIPT, "lease", command, state_dir, *args], wait))


def pool_lines(addresses: Iterable[Mapping[str, str] | object]) -> str:
    """The address pool as the lease script reads it: ``mac ip tap`` lines."""
    lines = []
    for a in addresses:
        mac = a["mac"] if isinstance(a, Mapping) else a.mac  # type: ignore[attr-defined]
        ip = a["ip"] if isinstance(a, Mapping) else a.ip  # type: ignore[attr-defined]
        lines.append(f"{mac} {ip} {tap_name(ip)}\n")
    return "".join(lines)


@dataclass(frozen=True)
class Lease:
    """One line of the lease listing: an address and the state of its guest."""

    ip: str
    mac: str
    state: str  # alive | starting | dead | reclaimed
    pid: int | None
    owner: str


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


def accel_probe_command(binary: str) -> str:
    """Shell that exits 0 only when KVM really works on the host: ``/dev/kvm`` usable, the
    CPU flags show vmx/svm, and ``qemu -accel kvm`` initializes and quits within 10 s."""
    q = quote_args("timeout 10", [binary, "-accel", "kvm", "-machine", "none", "-nodefaults",
                                  "-display", "none", "-monitor", "stdio"])
    return ("[ -r /dev/kvm ] && [ -w /dev/kvm ] && "
            "grep -qwE 'vmx|svm' /proc/cpuinfo && "
            f"printf 'quit\\n' | {q} >/dev/null 2>&1")


_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_.:,=/+@%-]+$")


def describe_argv(argv: Sequence[str]) -> str:
    """A copy-pasteable, shell-quoted rendering of ``argv`` for logs and errors."""
    return " ".join(a if _SAFE_TOKEN.match(a) else shlex.quote(a) for a in argv)
