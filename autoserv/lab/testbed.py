"""The local test bed: real OpenSSH ``sshd`` hosts on this machine.

A :class:`Testbed` starts N hosts of one of two kinds:

``loopback``
    ``sshd`` on ``127.0.0.1`` with its own port.
``netns``
    each host in its own network namespace with its own IP on a private
    subnet of ``10.231.0.0/16`` (a ``/24`` up to 213 hosts, larger beyond:
    :func:`lab_prefixlen`); the hosts' ``eth0`` ports sit on a bridge in a *lab* namespace,
    and a veth from the controller's namespace into that bridge makes them
    reachable from here.  Inside each host, ``eth0`` is enslaved to a bridge
    ``br0`` holding the host's IP, as on a real KVM host, so a qemu guest's
    tap added to ``br0`` lands on the lab network too.  Nothing is forwarded
    out of the lab.

Every host runs in a private mount namespace where root's ``~/.bashrc`` is a
one-line file (this machine's real one adds ~120 ms to every command),
``/var/lib/autoserv`` is the host's own state directory, and, when a password
is configured, ``/etc/shadow`` is a generated one.  Keys (host keys, a client
key), ``known_hosts`` and an ``ssh_config`` with one ``Host tbN`` entry per
host are generated in the test bed directory.  ``down()`` kills exactly the
processes it started (and their descendants, and anything left inside its
namespaces) and deletes the namespaces and links it made.

The command ``autoserv-testbed up|down|status`` drives the same class; its
state lives in ``<dir>/testbed.json`` so ``down`` works from another process.

Every running test bed is also registered in ``/run/autoserv/testbeds/``
with its owner process.  ``up()`` first tears down *leftovers*: test beds
whose owner died without ``down()`` (a killed test run; a test bed started by
``autoserv-testbed up`` has no owner and counts as a leftover only when all its
hosts are gone).  Processes are matched by pid *and* start time, so a reused
pid is never killed.

At scale: a loopback host's port comes from binding port 0 and releasing it, so
two hosts may race for one port; ``up()`` checks that each port is served by
that host's *own* sshd (not just by some sshd) and restarts a host that lost on a
new port.  A netns bed of more than :data:`NEIGH_DEFAULT_OK` hosts raises the
kernel's neighbour table thresholds (``gc_thresh1/2/3``, whose defaults overflow
at ~1000 neighbours) and ``down()`` puts the old values back.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autoserv.deadline import Deadline, backoff
from autoserv.errors import AutoservError
from autoserv.localsys import descendants, free_port, pid_alive, run_tool, ssh_banner, start_time

log = logging.getLogger("autoserv.lab.testbed")

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
#: Where a remote host keeps autoserv's state (KVM trees, leases); private per test bed host.
REMOTE_STATE_DIR = "/var/lib/autoserv"
SUBNET_BASE = "10.231"  # test bed subnets: inside 10.231.0.0/16, in namespaces we create
KINDS = ("loopback", "netns")
#: Host N of a netns bed is at the subnet's address + HOST_OFFSET + N; guests come after.
HOST_OFFSET = 9
#: Addresses kept free for guests on the lab network after the hosts.
GUEST_ROOM = 32
#: Up to this many netns hosts the kernel's default neighbour table thresholds suffice.
NEIGH_DEFAULT_OK = 500
NEIGH_SYSCTL = "/proc/sys/net/ipv4/neigh/default/gc_thresh{}"


def lab_prefixlen(count: int) -> int:
    """The prefix length of a lab subnet for ``count`` hosts: /24 while they and the
    guest room fit (213 hosts), else the smallest that holds them (/20: 4000 hosts)."""
    need = HOST_OFFSET + count + GUEST_ROOM + 2  # + network and broadcast
    prefixlen = 24
    while (1 << (32 - prefixlen)) < need:
        prefixlen -= 1
    if prefixlen < 17:
        raise TestbedError(f"a netns test bed of {count} hosts does not fit in {SUBNET_BASE}.0.0/16")
    return prefixlen


def bridge_mac(name: str) -> str:
    """The fixed MAC of the test bed bridge ``name`` (e.g. ``<netns>/br0``): locally
    administered, unicast, the same for the same name.

    A bridge without an address of its own takes the lowest MAC of its ports, so a
    guest's tap sorting lower than ``eth0`` changes the KVM host's MAC on the lab network
    when the tap comes and again when its qemu dies, and the controller's connection to
    the host stalls on a stale neighbour entry.  A MAC set at creation never changes.
    """
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()
    return ":".join(f"{b:02x}" for b in (0x0A, *digest[:5]))


def listen_timeout(start_timeout: float, count: int) -> float:
    """How long ``up()`` waits for ``count`` started hosts to answer: ``start_timeout``, plus
    0.1 s a host beyond the first 100.  The wait checks the hosts one after another, and
    one pass over 1000 hosts takes tens of seconds on a loaded 2-core machine: a fixed 20 s
    ran out there before the hosts that missed their first check were checked again."""
    return start_timeout + 0.1 * max(0, count - 100)


def guest_offset(count: int) -> int:
    """Where the guest addresses start in a lab subnet with ``count`` hosts (100 for small beds)."""
    return max(100, HOST_OFFSET + count + 1)


def neigh_thresholds(count: int, current: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """``gc_thresh1/2/3`` for a netns bed of ``count`` hosts (never lower than ``current``);
    None when ``current`` already holds them."""
    if count <= NEIGH_DEFAULT_OK:
        return None
    need = count + 128
    wanted = (need, 2 * need, 4 * need)
    new = tuple(max(c, w) for c, w in zip(current, wanted, strict=True))
    return None if new == current else new  # type: ignore[return-value]


#: root's ``.bashrc`` on a ``noisy`` test bed host: what real rc files print before every
#: command (a banner on stdout, warnings on stderr, lines without a final newline).
NOISY_BASHRC = """# autoserv test bed: a noisy login environment
echo "Welcome to a noisy test bed host (stdout banner)"
echo "stty: 'standard input': Inappropriate ioctl for device" >&2
printf 'no newline on stderr ' >&2
printf 'no newline on stdout '
"""


# Each host runs sshd under a supervisor loop: a simulated reboot makes sshd
# (and every process of that host) exit and the loop start it again after a
# short "boot"; a simulated power-off ends the loop.  The loop waits (at most
# 10 s) for the power worker to finish killing and to write the new boot id:
# an sshd started earlier could be killed by the worker's late sweep, or
# answer a controller with the old boot id (both seen on a loaded CI machine).
_SUPERVISOR = (
    "echo $$ > {workdir}/supervisor.pid; "
    "while :; do rm -f {workdir}/rebooting {workdir}/rebooted; "
    f'{shlex.quote(SSHD)} -D -e -f "$1" -E "$2"; '
    "[ -e {workdir}/rebooting ] || break; "
    "n=0; while [ ! -e {workdir}/rebooted ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; "
    "sleep 0.5; done"
)

# Installed over reboot/poweroff/halt/shutdown (and systemctl, which they link
# to on Debian) inside each test bed host: the real machine is never rebooted.
# ``runlevel`` and ``systemctl is-system-running`` answer for the host: shutting
# down while it reboots, or while ``<workdir>/stopping`` exists (set_stopping()).
_POWER_SCRIPT = """#!/bin/sh
# autoserv test bed: simulated power control for this host only
W={workdir}
PYTHON={python}
case "$(basename "$0") $*" in
  runlevel*)  # what verify asks: 0/6 while this host shuts down or reboots
    if [ -e $W/rebooting ]; then echo "5 6"; elif [ -e $W/stopping ]; then echo "5 0"
    else echo "N 5"; fi; exit 0 ;;
  "systemctl is-system-running"*)
    if [ -e $W/rebooting ] || [ -e $W/stopping ]; then echo stopping; exit 1; fi
    echo running; exit 0 ;;
  reboot*|"shutdown -r"*|"systemctl reboot"*) action=reboot ;;
  poweroff*|halt*|shutdown*|"systemctl poweroff"*|"systemctl halt"*) action=poweroff ;;
  *) echo "$(basename "$0"): not available on an autoserv test bed host" >&2; exit 1 ;;
esac
[ "$action" = reboot ] && touch "$W/rebooting"
"$PYTHON" -I -S "$W/power-worker.py" "$W" </dev/null >/dev/null 2>&1 &
exit 0
"""

# Run in the background by the power script: kills every process of this host
# (its mount namespace) but the supervisor, sweeping again until none is left,
# and only then gives the host a new boot id and lets the supervisor boot it.
# A controller that sees the new boot id knows the old sessions are gone.  In
# Python: a shell sweep forks per process and, slowed down on a busy machine
# whose pids wrap (pid_max 32768), killed new sessions that reused old pids.
_POWER_WORKER = """import os, sys, time, uuid
w = sys.argv[1]
time.sleep(0.3)
me, mine = os.readlink("/proc/self/ns/mnt"), os.getpid()
with open(w + "/supervisor.pid") as f:
    spare = {int(f.read()), mine}
for _ in range(10):
    killed = 0
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in spare:
            continue
        try:
            if os.readlink("/proc/" + d + "/ns/mnt") == me:
                os.kill(int(d), 9)
                killed += 1
        except OSError:
            pass
    if not killed:
        break
    time.sleep(0.05)
with open(w + "/boot_id", "w") as f:
    f.write(str(uuid.uuid4()) + "\\n")
open(w + "/rebooted", "w").close()
"""


def _power_targets() -> list[str]:
    """Real files behind the power commands (bind-mounting follows symlinks)."""
    targets: list[str] = []
    for name in ("/bin/systemctl", "/usr/sbin/reboot", "/usr/sbin/poweroff",
                 "/usr/sbin/halt", "/usr/sbin/shutdown", "/sbin/reboot"):
        if os.path.exists(name):
            real = os.path.realpath(name)
            if real not in targets:
                targets.append(real)
    return targets


class TestbedError(AutoservError):
    """The test bed could not be set up (missing sshd, no namespaces, ...)."""

    __test__ = False


@dataclass
class TestbedHost:
    """One test bed host: how to reach it and where its files are."""

    __test__ = False

    name: str
    address: str
    port: int
    workdir: str
    pid: int = 0
    netns: str = ""
    pid_start: int = 0  # start time of ``pid`` (clock ticks since boot): guards against pid reuse

    @property
    def machine(self) -> str:
        """The ``host:port`` machine string for ``-m`` when not using the ssh config."""
        return self.address if self.port == 22 else f"{self.address}:{self.port}"


@dataclass
class TestbedState:
    kind: str
    directory: str
    hosts: list[TestbedHost] = field(default_factory=list)
    lab_netns: str = ""
    controller_link: str = ""
    subnet: str = ""
    gateway: str = ""
    netns_prefix: str = ""
    password: str | None = None
    namespaces: list[str] = field(default_factory=list)  # every namespace made, in order
    #: gc_thresh1/2/3 before up() raised them, and what it set (restored by down())
    neigh_saved: list[int] = field(default_factory=list)
    neigh_set: list[int] = field(default_factory=list)
    owner_pid: int = 0  # the process that must call down(); 0 once detached (autoserv-testbed up)
    owner_start: int = 0


def _run(argv: list[str], input: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_tool(argv, input=input, error=TestbedError)


def _q(value: str | os.PathLike[str]) -> str:
    """One shell word: ``shlex.quote`` of a string or a path."""
    return shlex.quote(os.fspath(value))


def ssh_config_word(path: str | os.PathLike[str]) -> str:
    """A path as one argument of an OpenSSH config file (``ssh_config``, ``sshd_config``).

    Double-quoted when it holds a space; a path OpenSSH cannot express there
    (a double quote, a newline) is an error, not a broken config.
    """
    text = os.fspath(path)
    if '"' in text or "\n" in text:
        raise TestbedError(f"test bed path {text!r}: OpenSSH config files cannot hold it")
    return f'"{text}"' if any(c.isspace() for c in text) else text


def _keygen(path: Path, comment: str) -> str:
    if not path.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return Path(str(path) + ".pub").read_text().strip()


def _kill_tree(pid: int, grace: float = 2.0) -> None:
    """SIGTERM ``pid`` and its descendants, then SIGKILL what is left after ``grace``."""
    pids = [pid, *descendants(pid)]
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGTERM)
    deadline = Deadline(grace)
    while not deadline.expired() and any(pid_alive(p) for p in pids):
        time.sleep(0.02)
    for p in pids:
        if pid_alive(p):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
    for p in pids:  # reap our own children
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p, os.WNOHANG)


REGISTRY_DIR = Path("/run/autoserv/testbeds")


def _registered() -> list[tuple[Path, TestbedState]]:
    out = []
    for path in sorted(REGISTRY_DIR.glob("*.json")) if REGISTRY_DIR.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            hosts = [TestbedHost(**h) for h in data.pop("hosts")]
            out.append((path, TestbedState(hosts=hosts, **data)))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring unreadable test bed registration %s: %s", path, exc)
    return out


def _is_leftover(state: TestbedState) -> bool:
    if state.owner_pid:
        return not pid_alive(state.owner_pid, state.owner_start)
    return not any(pid_alive(h.pid, h.pid_start) for h in state.hosts)


def reap_leftovers() -> list[str]:
    """Tear down registered test beds whose owner is gone; returns their directories."""
    reaped = []
    for path, state in _registered():
        if not _is_leftover(state):
            continue
        log.warning("tearing down a leftover test bed in %s (owner pid %s is gone)",
                    state.directory, state.owner_pid or "-")
        tb = Testbed(state.directory, count=max(1, len(state.hosts)), kind=state.kind)
        tb.state = state
        tb.down()
        path.unlink(missing_ok=True)
        reaped.append(state.directory)
    return reaped


def _sshd_pid(host: TestbedHost) -> int:
    try:
        return int(Path(host.workdir, "sshd.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _listening_inodes(port: int, table: str = "/proc/net/tcp") -> set[str]:
    """The socket inodes listening on TCP ``port`` (any IPv4 address) in this namespace."""
    found = set()
    with open(table) as f:
        next(f, None)
        for line in f:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                found.add(parts[9])
    return found


def port_served_by(port: int, pid: int) -> bool:
    """Whether process ``pid`` holds a socket listening on TCP ``port`` (Linux /proc)."""
    if pid <= 0:
        return False
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                return True
    return False


def _netns_list() -> set[str]:
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return {line.split()[0] for line in res.stdout.splitlines() if line.strip()}


def _pick_subnet(prefixlen: int = 24) -> ipaddress.IPv4Network:
    """A free subnet of ``prefixlen`` inside 10.231.0.0/16 (not 10.231.0.x): not routed here yet."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    used = []
    for line in routes.splitlines():
        with contextlib.suppress(ValueError, IndexError):
            used.append(ipaddress.ip_network(line.split()[0], strict=False))
    base = ipaddress.IPv4Network(f"{SUBNET_BASE}.0.0/16")
    choices = [n for n in base.subnets(new_prefix=prefixlen) if int(n.network_address) & 0xFF00]
    for _ in range(200):
        net = choices[secrets.randbelow(len(choices))]
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise TestbedError(f"no free /{prefixlen} subnet in {base} for the test bed")


#: sshd's ``MaxStartups`` on test bed hosts unless asked otherwise.
DEFAULT_MAX_STARTUPS = "400:30:800"


class Testbed:
    """N real sshd hosts; use as a context manager or call ``up()``/``down()``.

    ``tb.hosts``, ``tb.ssh_config``, ``tb.client_key``, ``tb.known_hosts``,
    ``tb.machines`` tell how to reach them.  With ``password`` set, root can
    also log in with that password (a private ``/etc/shadow`` per host).
    With ``noisy``, root's ``.bashrc`` prints banners on stdout and stderr for
    every command, as many real hosts' rc files do (:data:`NOISY_BASHRC`).
    ``max_startups`` is each sshd's ``MaxStartups`` (``start:rate:full`` or one
    number): a small one makes hosts that drop connections past it, as busy
    real hosts do; the default admits a few hundred at once.
    """

    __test__ = False

    def __init__(
        self,
        directory: str | os.PathLike[str],
        count: int = 3,
        kind: str = "loopback",
        password: str | None = None,
        start_timeout: float = 20.0,
        scp: bool = True,
        sftp: bool = True,
        noisy: bool = False,
        max_startups: str = DEFAULT_MAX_STARTUPS,
    ) -> None:
        if kind not in KINDS:
            raise TestbedError(f"unknown test bed kind {kind!r} (choose from {', '.join(KINDS)})")
        if count < 1:
            raise TestbedError("a test bed needs at least one host")
        self.dir = Path(directory).resolve()
        self.count = count
        self.kind = kind
        self.password = password
        self.start_timeout = start_timeout
        self.with_scp = scp
        self.with_sftp = sftp
        self.noisy = noisy
        if not re.fullmatch(r"\d+(:\d+:\d+)?", max_startups):
            raise TestbedError(f"MaxStartups must be N or start:rate:full, not {max_startups!r}")
        self.max_startups = max_startups
        self.state = TestbedState(kind=kind, directory=str(self.dir), password=password)
        self._procs: list[subprocess.Popen[bytes]] = []

    # -- paths -------------------------------------------------------------
    @property
    def client_key(self) -> Path:
        return self.dir / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def hosts(self) -> list[TestbedHost]:
        return self.state.hosts

    @property
    def machines(self) -> list[str]:
        """Host names to pass with ``-m`` together with ``--ssh-config``."""
        return [h.name for h in self.hosts]

    @property
    def subnet(self) -> str:
        """The lab subnet (netns kind), e.g. ``10.231.7.0/24``."""
        return self.state.subnet

    @property
    def gateway(self) -> str:
        """The controller's address on the lab network (netns kind)."""
        return self.state.gateway

    def guest_addresses(self, count: int = 8) -> list[dict[str, str]]:
        """An address pool for guests on the lab network (netns kind): ``{"mac", "ip"}`` dicts."""
        if self.kind != "netns":
            raise TestbedError("guest addresses on the lab network need a netns test bed")
        net = ipaddress.ip_network(self.state.subnet)
        k = int(str(net.network_address).split(".")[2])
        first = guest_offset(len(self.hosts))
        if first + count >= net.num_addresses - 1:
            raise TestbedError(f"no room for {count} guest addresses in {net}")
        return [
            {"mac": f"02:00:e7:{k:02x}:{(first + i) >> 8:02x}:{(first + i) & 0xFF:02x}",
             "ip": str(net.network_address + first + i)}
            for i in range(count)
        ]

    # -- lifecycle -------------------------------------------------------
    def __enter__(self) -> Testbed:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> Testbed:
        """Generate keys and configs, start the hosts, wait until each accepts TCP."""
        if not os.path.exists(SSHD):
            raise TestbedError("sshd not found: install openssh-server (apt-get install openssh-server)")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.makedirs("/run/sshd", exist_ok=True)
        os.makedirs(REMOTE_STATE_DIR, exist_ok=True)
        client_pub = _keygen(self.client_key, "autoserv-testbed-client")
        (self.dir / "authorized_keys").write_text(client_pub + "\n")
        (self.dir / "bashrc").write_text(NOISY_BASHRC if self.noisy else
                                         "# autoserv test bed: clean login environment\n")
        shadow = self._write_shadow() if self.password else None
        reap_leftovers()
        self.state.owner_pid, self.state.owner_start = os.getpid(), start_time(os.getpid())
        try:
            if self.kind == "netns":
                self._make_lab()
            for i in range(1, self.count + 1):
                host = self._start_host(i, shadow)
                self.state.hosts.append(host)
                self._save()
            self._write_known_hosts()
            self._write_ssh_config()
            self._save()
            self._wait_listening()
            if self.kind == "loopback":
                self._claim_ports(shadow)
        except BaseException:
            self.down()
            raise
        log.info("test bed up: %d %s hosts in %s", self.count, self.kind, self.dir)
        return self

    def down(self) -> None:
        """Stop what ``up()`` started and delete the namespaces and links; idempotent.

        The bed's ``ssh_config`` goes too: its addresses now belong to no namespace of ours,
        and a connection to one would leave through the default route to whatever network
        owns it (a stale config used again fails at once, naming the file).
        """
        state_file = self.dir / "testbed.json"
        was_up = bool(self.state.hosts) or state_file.exists()
        existing = _netns_list()
        for host in self.state.hosts:
            if pid_alive(host.pid, host.pid_start):
                _kill_tree(host.pid)
        for ns in [*self.state.namespaces, *(h.netns for h in self.state.hosts)]:
            if ns and ns != self.state.lab_netns and ns in existing:
                self._kill_netns_pids(ns)
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
                existing.discard(ns)
        for proc in self._procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
        self._procs.clear()
        if self.state.lab_netns and self.state.lab_netns in _netns_list():
            self._kill_netns_pids(self.state.lab_netns)
            subprocess.run(["ip", "netns", "del", self.state.lab_netns], capture_output=True)
        if self.state.controller_link:
            subprocess.run(["ip", "link", "del", self.state.controller_link], capture_output=True)
        self._restore_neigh()
        self.state.hosts = []
        self.state.namespaces = []
        self.state.lab_netns = self.state.controller_link = ""
        if state_file.exists():
            state_file.unlink()
        if was_up:
            self.ssh_config.unlink(missing_ok=True)
        self._registration().unlink(missing_ok=True)

    @staticmethod
    def _kill_netns_pids(ns: str) -> None:
        res = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for p in res.stdout.split():
            _kill_tree(int(p), grace=1.0)

    # -- pieces ----------------------------------------------------------
    def _write_shadow(self) -> Path:
        assert self.password is not None
        hashed = _run(["openssl", "passwd", "-6", "-stdin"], input=self.password).stdout.strip()
        lines = []
        with open("/etc/shadow") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if parts[0] == "root":
                    parts[1] = hashed
                lines.append(":".join(parts))
        path = self.dir / "shadow"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def _make_lab(self) -> None:
        net = _pick_subnet(lab_prefixlen(self.count))
        k = int(str(net.network_address).split(".")[2])
        prefix = f"asv{os.getpid() % 100000}{k}"
        self.state.netns_prefix = prefix
        self.state.subnet = str(net)
        self.state.gateway = str(net.network_address + 1)
        self._size_neigh()
        lab = f"{prefix}lab"
        self.state.namespaces.append(lab)
        self.state.lab_netns = lab
        self._save()  # recorded before it exists: a killed up() still gets it deleted
        _run(["ip", "netns", "add", lab])
        _run(["ip", "-n", lab, "link", "set", "lo", "up"])
        _run(["ip", "-n", lab, "link", "add", "br0", "address", bridge_mac(f"{lab}/br0"),
              "type", "bridge"])
        _run(["ip", "-n", lab, "link", "set", "br0", "up"])
        ctl = f"asvc{k}x{os.getpid() % 10000}"[:15]
        _run(["ip", "link", "add", ctl, "type", "veth", "peer", "name", "ctl", "netns", lab])
        self.state.controller_link = ctl
        self._save()
        _run(["ip", "addr", "add", f"{self.state.gateway}/{net.prefixlen}", "dev", ctl])
        _run(["ip", "link", "set", ctl, "up"])
        _run(["ip", "-n", lab, "link", "set", "ctl", "master", "br0"])
        _run(["ip", "-n", lab, "link", "set", "ctl", "up"])

    def _start_host(self, index: int, shadow: Path | None) -> TestbedHost:
        name = f"tb{index}"
        workdir = self.dir / name
        (workdir / "state").mkdir(parents=True, exist_ok=True)
        _keygen(workdir / "ssh_host_ed25519_key", f"autoserv-testbed-{name}")
        netns = ""
        if self.kind == "loopback":
            address, port, listen = "127.0.0.1", free_port(), "127.0.0.1"
        else:
            net = ipaddress.ip_network(self.state.subnet)
            address, port, listen = str(net.network_address + HOST_OFFSET + index), 22, "0.0.0.0"
            netns = f"{self.state.netns_prefix}h{index}"
            self._make_host_netns(netns, index, address)
        config = workdir / "sshd_config"
        config.write_text(self._sshd_config(workdir, port, listen))
        boot_id = workdir / "boot_id"
        boot_id.write_text(Path("/proc/sys/kernel/random/uuid").read_text())
        power = workdir / "power"
        power.write_text(_POWER_SCRIPT.format(workdir=_q(workdir), python=_q(sys.executable)))
        (workdir / "power-worker.py").write_text(_POWER_WORKER)
        power.chmod(0o755)
        binds: list[tuple[str | Path, str]] = [
            (self.dir / "bashrc", "/root/.bashrc"),
            (workdir / "state", REMOTE_STATE_DIR),
            (boot_id, "/proc/sys/kernel/random/boot_id"),
        ]
        binds += [(power, target) for target in _power_targets()]
        if not self.with_scp:  # a host that only speaks SFTP
            binds += [("/dev/null", p) for p in ("/usr/bin/scp",) if os.path.exists(p)]
        if shadow is not None:
            binds.append((shadow, "/etc/shadow"))
        script = " && ".join([
            f"hostname {_q(name)}",
            *(f"mount --bind -- {_q(src)} {_q(dest)}" for src, dest in binds),
            _SUPERVISOR.format(workdir=_q(workdir)),
        ])
        argv = [
            "unshare", "--mount", "--uts", "--propagation", "private",
            "sh", "-c", script, "sshd", str(config), str(workdir / "sshd.log"),
        ]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(workdir / "start.log", "wb"), start_new_session=True,
        )
        self._procs.append(proc)
        return TestbedHost(name, address, port, str(workdir), proc.pid, netns, start_time(proc.pid))

    def _make_host_netns(self, ns: str, index: int, address: str) -> None:
        lab = self.state.lab_netns
        self.state.namespaces.append(ns)
        self._save()
        _run(["ip", "netns", "add", ns])
        _run(["ip", "-n", lab, "link", "add", f"h{index}", "type", "veth",
              "peer", "name", "eth0", "netns", ns])
        _run(["ip", "-n", lab, "link", "set", f"h{index}", "master", "br0"])
        _run(["ip", "-n", lab, "link", "set", f"h{index}", "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", ns, "link", "add", "br0", "address", bridge_mac(f"{ns}/br0"),
              "type", "bridge"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "master", "br0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        prefixlen = ipaddress.ip_network(self.state.subnet).prefixlen
        _run(["ip", "-n", ns, "addr", "add", f"{address}/{prefixlen}", "dev", "br0"])
        _run(["ip", "-n", ns, "link", "set", "br0", "up"])

    def _sshd_config(self, workdir: Path, port: int, listen: str) -> str:
        pw = "yes" if self.password else "no"
        return "\n".join([
            f"Port {port}",
            f"ListenAddress {listen}",
            f"HostKey {ssh_config_word(workdir / 'ssh_host_ed25519_key')}",
            f"PidFile {ssh_config_word(workdir / 'sshd.pid')}",
            f"AuthorizedKeysFile {ssh_config_word(self.dir / 'authorized_keys')}",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            f"PermitRootLogin {'yes' if self.password else 'prohibit-password'}",
            f"PasswordAuthentication {pw}",
            "KbdInteractiveAuthentication no",
            f"MaxStartups {self.max_startups}",
            "MaxSessions 200",
            "MaxAuthTries 10",
            "LogLevel ERROR",
            f"Subsystem sftp {SFTP_SERVER}" if self.with_sftp else "# no sftp subsystem",
            "",
        ])

    def _known_name(self, host: TestbedHost) -> str:
        names = [host.address if host.port == 22 else f"[{host.address}]:{host.port}"]
        return ",".join(names)

    def _write_known_hosts(self) -> None:
        known = []
        for host in self.hosts:
            pub = Path(host.workdir, "ssh_host_ed25519_key.pub").read_text().split()
            known.append(f"{self._known_name(host)} {pub[0]} {pub[1]}")
        self.known_hosts.write_text("\n".join(known) + "\n")

    def _claim_ports(self, shadow: Path | None, attempts: int = 5) -> None:
        """Restart, on a new port, each loopback host whose port another host's sshd won."""
        for _ in range(attempts):
            lost = [h for h in self.hosts if not port_served_by(h.port, _sshd_pid(h))]
            if not lost:
                return
            log.info("test bed: %d host(s) lost their port to another sshd; restarting: %s",
                     len(lost), ", ".join(h.name for h in lost))
            for host in lost:
                if pid_alive(host.pid, host.pid_start):
                    _kill_tree(host.pid)
                index = self.hosts.index(host)
                self.state.hosts[index] = self._start_host(index + 1, shadow)
                self._save()
            self._write_known_hosts()
            self._write_ssh_config()
            self._wait_listening()
        raise TestbedError(f"test bed hosts could not get a port of their own after {attempts} tries")

    def _size_neigh(self) -> None:
        current = tuple(int(Path(NEIGH_SYSCTL.format(i)).read_text()) for i in (1, 2, 3))
        new = neigh_thresholds(self.count, current)  # type: ignore[arg-type]
        if new is None:
            return
        self.state.neigh_saved, self.state.neigh_set = list(current), list(new)
        self._save()  # recorded first: a killed up() still gets them restored
        log.info("test bed: neighbour table thresholds %s -> %s for %d hosts", current, new,
                 self.count)
        for i, value in zip((3, 2, 1), reversed(new), strict=True):  # largest first
            Path(NEIGH_SYSCTL.format(i)).write_text(f"{value}\n")

    def _restore_neigh(self) -> None:
        """Put back the thresholds ``up()`` raised, unless someone changed them since."""
        if not self.state.neigh_saved:
            return
        current = [int(Path(NEIGH_SYSCTL.format(i)).read_text()) for i in (1, 2, 3)]
        if current == self.state.neigh_set:
            for i, value in zip((1, 2, 3), self.state.neigh_saved, strict=True):
                Path(NEIGH_SYSCTL.format(i)).write_text(f"{value}\n")
        self.state.neigh_saved, self.state.neigh_set = [], []

    def _write_ssh_config(self) -> None:
        blocks = []
        for h in self.hosts:
            blocks.append("\n".join([
                f"Host {h.name}",
                f"    HostName {h.address}",
                f"    Port {h.port}",
                "    User root",
                f"    IdentityFile {ssh_config_word(self.client_key)}",
                "    IdentitiesOnly yes",
                f"    UserKnownHostsFile {ssh_config_word(self.known_hosts)}",
                "    StrictHostKeyChecking yes",
                "",
            ]))
        self.ssh_config.write_text("\n".join(blocks))

    def _wait_listening(self) -> None:
        timeout = listen_timeout(self.start_timeout, len(self.hosts))
        deadline = Deadline(timeout)
        pending = list(self.hosts)
        delays = backoff(0.005, 1.5, 0.2)
        while pending:
            for host in list(pending):
                if ssh_banner(host.address, host.port, deadline.remaining(2.0) or 0.1, connect_timeout=0.5):
                    pending.remove(host)
                elif not pid_alive(host.pid):
                    start_log = Path(host.workdir, "start.log").read_text(errors="replace")
                    raise TestbedError(f"sshd for {host.name} exited at start: {start_log.strip()}")
            if pending:
                if deadline.expired():
                    names = ", ".join(h.name for h in pending)
                    raise TestbedError(f"test bed hosts not listening after {timeout:.0f} s: {names}")
                deadline.sleep(next(delays))

    def _registration(self) -> Path:
        return REGISTRY_DIR / (hashlib.sha256(str(self.dir).encode()).hexdigest()[:16] + ".json")

    def _save(self) -> None:
        data = asdict(self.state)
        data["password"] = None  # never stored on disk
        text = json.dumps(data, indent=2)
        (self.dir / "testbed.json").write_text(text)
        REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
        self._registration().write_text(text)

    def detach(self) -> None:
        """Let the hosts outlive this process (``autoserv-testbed up``): ``down()`` from any
        process stops them; a later ``up()`` reaps them only once all hosts are gone."""
        for p in self._procs:
            p.returncode = 0  # not waited for here
        self._procs.clear()
        self.state.owner_pid = self.state.owner_start = 0
        self._save()

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Testbed:
        """Re-attach to a test bed started by another process (``autoserv-testbed up``)."""
        path = Path(directory).resolve() / "testbed.json"
        if not path.exists():
            raise TestbedError(f"no test bed in {path.parent} (no testbed.json)")
        data = json.loads(path.read_text())
        hosts = [TestbedHost(**h) for h in data.pop("hosts")]
        tb = cls(directory, count=max(1, len(hosts)), kind=data["kind"])
        tb.state = TestbedState(hosts=hosts, **data)
        return tb

    def set_stopping(self, name: str, stopping: bool = True) -> None:
        """Make host ``name`` say it is shutting down (runlevel 0, systemd 'stopping') or not."""
        host = next((h for h in self.hosts if h.name == name), None)
        if host is None:
            raise TestbedError(f"no test bed host {name!r}")
        marker = Path(host.workdir) / "stopping"
        if stopping:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    def sshd_pids(self) -> list[int]:
        """Each host's sshd listener pid, in host order (0 where none is known): the process
        that forks, and reaps, every SSH session of that host."""
        return [_sshd_pid(h) for h in self.hosts]

    def status(self) -> list[tuple[TestbedHost, bool]]:
        """Each host and whether its sshd is still running."""
        return [(h, bool(h.pid) and pid_alive(h.pid)) for h in self.hosts]


def default_dir() -> Path:
    """``$AUTOSERV_TESTBED_DIR`` or ``~/.local/state/autoserv/testbed``."""
    env = os.environ.get("AUTOSERV_TESTBED_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "autoserv" / "testbed"


def main(argv: list[str] | None = None) -> int:
    """``autoserv-testbed up|down|status``."""
    parser = argparse.ArgumentParser(
        prog="autoserv-testbed",
        description="Start, inspect or stop a local test bed of real sshd hosts.",
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=None, help="test bed directory (default: %(default)s)")
    parser.add_argument("-n", "--count", type=int, default=3, help="number of hosts (up)")
    parser.add_argument("--kind", choices=KINDS, default="loopback", help="host kind (up)")
    parser.add_argument("--noisy", action="store_true",
                        help="root's .bashrc prints banners on stdout and stderr (up)")
    parser.add_argument("--max-startups", default=DEFAULT_MAX_STARTUPS, metavar="N|S:R:F",
                        help="each sshd's MaxStartups; e.g. 1 makes hosts that drop "
                             "concurrent connections (up; default: %(default)s)")
    opts = parser.parse_args(argv)
    directory = opts.dir or default_dir()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        if opts.action == "up":
            if (directory / "testbed.json").exists():
                Testbed.load(directory).down()
            tb = Testbed(directory, count=opts.count, kind=opts.kind, noisy=opts.noisy,
                         max_startups=opts.max_startups).up()
            tb.detach()
            print(f"# {tb.count} {tb.kind} hosts up; state in {directory}")
            print(f"# use: autoserv --ssh-config {_q(tb.ssh_config)} -m {','.join(tb.machines)} CONTROL")
            print(f"# or:  ssh -F {_q(tb.ssh_config)} {tb.machines[0]}")
            print(tb.ssh_config.read_text(), end="")
        elif opts.action == "down":
            if not (directory / "testbed.json").exists():
                print(f"no test bed in {directory}")
                return 0
            Testbed.load(directory).down()
            print(f"test bed in {directory} is down")
        else:
            tb = Testbed.load(directory)
            for host, alive in tb.status():
                state = "up" if alive else "DOWN"
                print(f"{host.name}\t{host.address}:{host.port}\t{state}\t{host.workdir}")
    except AutoservError as exc:
        print(f"autoserv-testbed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
