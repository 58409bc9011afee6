"""Every shell text autoserv sends to a KVM host, built as strings: no I/O.

Each builder returns one shell line (or a whole script) with every argument
quoted; a unit test runs ``sh -n`` over each.  Here: the zombie-aware
liveness check of a guest's qemu, the stop sequence and the watcher that reports a
qemu's end at once, the lock
(``flock`` or a ``mkdir`` lock), the lease script, the unpack-and-build
script, the lookup of the built binary and BIOS directories, the KVM
acceleration probe, the HMP monitor and serial console clients, and the
``qemu-ifup``/``qemu-ifdown`` scripts (with the check of the bridge name
they are given).
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Sequence

from autoserv.errors import AutoservVirtError
from autoserv.localsys import ALIVE_SH
from autoserv.virt.qemu import GuestPaths

__all__ = [
    "alive_command",
    "stop_command",
    "WATCH_INTERVAL",
    "WATCH_SCRIPT",
    "watch_command",
    "LOCK_SCRIPT",
    "locked",
    "LEASE_START_GRACE",
    "LEASE_SCRIPT",
    "lease_command",
    "INSTALL_SCRIPT",
    "INSTALL_STEPS",
    "install_command",
    "QEMU_BINARY_CANDIDATES",
    "BIOS_DIR_CANDIDATES",
    "HOST_BIOS_DIRS",
    "find_qemu_binary_script",
    "accel_probe_command",
    "monitor_command",
    "monitor_reply",
    "console_command",
    "check_bridge_name",
    "ifup_script",
    "ifdown_script",
]

# --- liveness of a guest's qemu ------------------------------------------------------------
# `alive PID PIDFILE` is localsys.ALIVE_SH (the one /proc liveness test, zombie-aware): the
# command line must name the guest's pidfile, so a reused pid never counts as our qemu.


def alive_command(pid: int, pidfile: str) -> str:
    """Shell exiting 0 only while qemu ``pid`` (started with ``pidfile``) is alive."""
    return shlex.join(["sh", "-c", ALIVE_SH + '\nalive "$1" "$2"', "alive", str(pid), pidfile])


def stop_command(pid: int, pidfile: str, grace: float) -> str:
    """Shell that waits up to ``grace`` seconds for qemu ``pid`` to exit, then sends SIGTERM
    (waits 3 s) and SIGKILL (waits 5 s); exits 0 once the process is gone."""
    steps = max(1, int(grace / 0.1))
    script = ALIVE_SH + "\n" + (
        f'i=0; while alive "$1" "$2" && [ $i -lt {steps} ]; do sleep 0.1; i=$((i+1)); done; '
        'if alive "$1" "$2"; then kill -TERM "$1" 2>/dev/null; i=0; '
        'while alive "$1" "$2" && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; fi; '
        'if alive "$1" "$2"; then kill -KILL "$1" 2>/dev/null; i=0; '
        'while alive "$1" "$2" && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; fi; '
        '! alive "$1" "$2"'
    )
    return shlex.join(["sh", "-c", script, "stop", str(pid), pidfile])


#: Seconds between two looks of the guest watcher at its qemu processes.
WATCH_INTERVAL = 0.5

# The guest watcher: `sh -c WATCH_SCRIPT watch <marker> <pid> <pidfile> [<pid> <pidfile>...]`.
# A background loop prints "<marker> <pid>" for each qemu that ends (zombie-aware, reused pids
# do not count: the command line must name the pidfile) and stops when none is left; the
# shell itself reads its stdin, which ends when the channel is closed or the controller's
# connection dies, and then stops the loop: no watcher outlives its controller.
WATCH_SCRIPT = ALIVE_SH + r"""
m=$1; shift
(
    while [ $# -gt 0 ]; do
        n=$#; i=0
        while [ $i -lt $n ]; do
            pid=$1; pf=$2; shift 2; i=$((i + 2))
            if alive "$pid" "$pf"; then set -- "$@" "$pid" "$pf"; else echo "$m $pid" || exit 0; fi
        done
        [ $# -eq 0 ] || sleep @INTERVAL@
    done
) &
w=$!
cat >/dev/null
kill "$w" 2>/dev/null
exit 0
""".replace("@INTERVAL@", str(WATCH_INTERVAL))


def watch_command(marker: str, guests: Sequence[tuple[int, str]]) -> str:
    """Shell that watches the qemu processes ``guests`` (``(pid, pidfile)`` pairs) and prints
    ``<marker> <pid>`` for each that ends, until its stdin closes (see :data:`WATCH_SCRIPT`)."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", marker):
        raise ValueError(f"a watcher marker is letters, digits and '_', not {marker!r}")
    words = [w for pid, pidfile in guests for w in (str(int(pid)), pidfile)]
    return shlex.join(["sh", "-c", WATCH_SCRIPT, "watch", marker, *words])


# --- the lock --------------------------------------------------------------------------------

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
    return shlex.join(["sh", "-c", LOCK_SCRIPT, "locked", lock, str(int(wait)), *argv])


# --- the lease script ------------------------------------------------------------------------

#: Seconds a lease may stay without a recorded qemu pid before it counts as dead
#: (its starter died between taking the lease and starting qemu).
LEASE_START_GRACE = 120

# The lease script: run as `flock -w 60 <dir>/lock sh -c LEASE_SCRIPT lease <cmd> <dir> [args]`.
# One file per address, <dir>/leases/<ip>.lease, `key=value` lines.  A lease is alive while
# its qemu pid (recorded after start) runs, or — before a pid is recorded — for
# LEASE_START_GRACE seconds after it was taken.  `reap` ends a guest whose owner is dead
# (the controller tells, see autoserv.virt.leases.owner_dead) even if its qemu still runs.
LEASE_SCRIPT = r"""
set -u
cmd=$1; dir=$2; shift 2
leases=$dir/leases
mkdir -p "$leases" "$dir/guests"
@ALIVE@
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
reap)
    # reap IP PID OWNER: end the guest of a dead owner (its qemu, tap, files and lease), only
    # while the lease still names that owner and pid ("-": none recorded)
    f=$leases/$1.lease
    [ -e "$f" ] || { echo gone; exit 0; }
    pid=$(field "$f" pid)
    if [ "$(field "$f" owner)" != "$3" ] || [ "${pid:--}" != "$2" ]; then echo taken; exit 0; fi
    pidfile=$(field "$f" pidfile); tap=$(field "$f" tap); what=freed
    if alive "$pid" "$pidfile"; then
        what=killed
        kill -TERM "$pid" 2>/dev/null; i=0
        while alive "$pid" "$pidfile" && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$pid" 2>/dev/null; i=0
        while alive "$pid" "$pidfile" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        if alive "$pid" "$pidfile"; then echo "qemu $pid still runs after SIGKILL" >&2; exit 5; fi
    fi
    if [ -n "$tap" ] && [ -e "/sys/class/net/$tap" ] && ip link del "$tap" 2>/dev/null; then
        what="$what tap"
    fi
    drop "$1"
    echo "$what" ;;
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
""".replace("@GRACE@", str(LEASE_START_GRACE)).replace("@ALIVE@", ALIVE_SH)


def lease_command(state_dir: str, command: str, *args: str, wait: float = 60) -> str:
    """Shell that runs one lease ``command`` under the lock ``<state_dir>/lock``."""
    lock = posixpath.join(state_dir, "lock")
    return (shlex.join(["mkdir", "-p", state_dir]) + " && " +
            locked(lock, ["sh", "-c", LEASE_SCRIPT, "lease", command, state_dir, *args], wait))


# --- unpack and build ------------------------------------------------------------------------

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


def install_command(
    archive: str, dest: str, tar_flag: str, marker: str, *, build: bool, patched_kernel: bool,
    jobs: int, configure_args: Sequence[str] = (), lock_wait: float = 3 * 3600,
) -> str:
    """Shell that unpacks ``archive`` into ``dest`` (and builds it) holding the lock
    ``<dest>.lock``, so concurrent installs of one tree wait for each other."""
    return (shlex.join(["mkdir", "-p", posixpath.dirname(dest)]) + " && " +
            locked(dest + ".lock", ["sh", "-c", INSTALL_SCRIPT, "install", archive, dest, tar_flag, marker,
                                    "1" if build else "0", "1" if patched_kernel else "0", str(int(jobs)),
                                    *configure_args], lock_wait))


# --- the built binary, BIOS directories, acceleration ----------------------------------------

#: Where a built tree keeps qemu-system-x86_64, oldest layout first.
QEMU_BINARY_CANDIDATES = (
    "qemu/x86_64-softmmu/qemu-system-x86_64",  # kvm-NN tarballs (2008)
    "x86_64-softmmu/qemu-system-x86_64",  # qemu-kvm / QEMU before meson
    "build/qemu-system-x86_64",  # QEMU >= 5.2 (meson)
    "build/x86_64-softmmu/qemu-system-x86_64",
    "qemu-system-x86_64",
)
#: BIOS directories tried, in order: the tree's, then the host's.
BIOS_DIR_CANDIDATES = ("qemu/pc-bios", "pc-bios", "build/pc-bios")
HOST_BIOS_DIRS = ("/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu")


def find_qemu_binary_script(tree: str) -> str:
    """Shell printing ``bin <path>`` for the first executable qemu-system-x86_64 in ``tree``
    (see :data:`QEMU_BINARY_CANDIDATES`), then ``bios <dir>`` for each existing BIOS
    directory, one per line."""
    bins = " ".join(shlex.quote(posixpath.join(tree, c)) for c in QEMU_BINARY_CANDIDATES)
    bios = " ".join(shlex.quote(posixpath.join(tree, c)) for c in BIOS_DIR_CANDIDATES)
    host = " ".join(HOST_BIOS_DIRS)
    return (
        f"for b in {bins}; do if [ -f \"$b\" ] && [ -x \"$b\" ]; then echo \"bin $b\"; break; fi; done; "
        f"for d in {bios}; do "
        "if [ -e \"$d/bios-256k.bin\" ] || [ -e \"$d/bios.bin\" ] || [ -e \"$d/kvmvapic.bin\" ]; then "
        "echo \"bios $d\"; fi; done; "
        f"for d in {host}; do [ -d \"$d\" ] && echo \"bios $d\"; done; true"
    )


def accel_probe_command(binary: str) -> str:
    """Shell that exits 0 only when KVM really works on the host: ``/dev/kvm`` usable, the
    CPU flags show vmx/svm, and ``qemu -accel kvm`` initializes and quits within 10 s."""
    q = shlex.join(["timeout", "10", binary, "-accel", "kvm", "-machine", "none", "-nodefaults",
                    "-display", "none", "-monitor", "stdio"])
    return ("[ -r /dev/kvm ] && [ -w /dev/kvm ] && "
            "grep -qwE 'vmx|svm' /proc/cpuinfo && "
            f"printf 'quit\\n' | {q} >/dev/null 2>&1")


# --- monitor and console ---------------------------------------------------------------------

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
    py = shlex.join(["python3", "-c", _MONITOR_PY, socket_path, command])
    so = (shlex.join(["printf", "%s\\n", command]) + " | "
          + shlex.join(["socat", "-t", "2", "-", f"UNIX-CONNECT:{socket_path}"]))
    return (f"if command -v python3 >/dev/null 2>&1; then {py}; "
            f"elif command -v socat >/dev/null 2>&1; then {so}; "
            "else echo 'autoserv: neither python3 nor socat to talk to the qemu monitor' >&2; exit 127; fi")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def monitor_reply(output: str) -> str:
    """qemu's answer in the output of :func:`monitor_command`: the lines after the echoed
    command (HMP echoes it with terminal escapes), without the prompt."""
    text = _ANSI.sub("", output).replace("\r", "")
    lines = text.split("\n")[1:]  # the first line is the echoed command
    return "\n".join(lines).replace("(qemu) ", "").strip()


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


def console_command(paths: GuestPaths) -> str:
    """Shell that prints the serial log so far, then bridges stdin/stdout to the console socket."""
    py = shlex.join(["exec", "python3", "-u", "-c", _CONSOLE_PY, paths.console])
    so = shlex.join(["exec", "socat", "-", f"UNIX-CONNECT:{paths.console}"])
    return (shlex.join(["cat", paths.serial_log]) + " 2>/dev/null; "
            f"if command -v python3 >/dev/null 2>&1; then {py}; else {so}; fi")


# --- the tap scripts -------------------------------------------------------------------------

_IFNAMSIZ = 16  # the kernel's limit, with the terminating NUL
_KERNEL_SPACE = frozenset(b"\t\n\v\f\r \xa0")  # what the kernel's isspace() is true for


def check_bridge_name(name: object) -> str:
    """``name`` when it is a valid Linux interface name, else an :class:`AutoservVirtError`.

    The rules of the kernel's ``dev_valid_name()``: 1 to 15 bytes, not ``.``
    or ``..``, no ``/``, no ``:``, no whitespace (nor a NUL byte).
    """
    if not isinstance(name, str):
        raise AutoservVirtError(f"bridge name must be a string, not {type(name).__name__}")
    try:
        raw = name.encode()
    except UnicodeEncodeError:
        raw = None
    if raw is None:
        reason = "not encodable as UTF-8"
    elif not raw:
        reason = "empty"
    elif len(raw) >= _IFNAMSIZ:
        reason = f"{len(raw)} bytes long, at most {_IFNAMSIZ - 1}"
    elif name in (".", ".."):
        reason = "'.' and '..' are not interface names"
    elif "/" in name:
        reason = "contains '/'"
    elif ":" in name:
        reason = "contains ':'"
    elif _KERNEL_SPACE.intersection(raw):
        reason = "contains whitespace"
    elif "\0" in name:
        reason = "contains a NUL byte"
    else:
        return name
    raise AutoservVirtError(f"bridge {name!r} is not a valid Linux interface name: {reason}")


def ifup_script(bridge: str) -> str:
    """``qemu-ifup``: bring the tap ``$1`` up and attach it to ``bridge`` (checked by
    :func:`check_bridge_name`; set in one quoted assignment, never in a comment)."""
    b = shlex.quote(check_bridge_name(bridge))
    return f"""#!/bin/sh
# autoserv qemu-ifup: attach the tap "$1" to the bridge "$bridge"
set -e
bridge={b}
if command -v ip >/dev/null 2>&1; then
    ip link set "$1" up
    ip link set "$1" master "$bridge"
else
    ifconfig "$1" 0.0.0.0 up
    brctl addif "$bridge" "$1"
fi
"""


def ifdown_script(bridge: str) -> str:
    """``qemu-ifdown``: detach the tap ``$1`` from ``bridge`` (qemu deletes the tap)."""
    b = shlex.quote(check_bridge_name(bridge))
    return f"""#!/bin/sh
# autoserv qemu-ifdown: detach the tap "$1" from the bridge "$bridge"
bridge={b}
if command -v ip >/dev/null 2>&1; then
    ip link set "$1" nomaster 2>/dev/null
    ip link set "$1" down 2>/dev/null
else
    brctl delif "$bridge" "$1" 2>/dev/null
fi
exit 0
"""
