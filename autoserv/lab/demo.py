"""``python -m autoserv.demo``: the seed KVM control file end to end on this machine.

Builds a one-host network-namespace test bed (a real sshd whose ``eth0`` sits
on a bridge ``br0``, as on a KVM host), the cached guest image and its boot
disk (``/var/local/vdisk.img``), a prebuilt QEMU tree
(``/var/local/src/kvm-33.tar.gz``: this machine's qemu-system-x86_64 and its
modules and firmware in the layout of a built tree), an ssh config that pins
the guests' host key for the seed's address pool (``192.168.2.1-31``, reached
through ``/32`` routes the demo adds to the test bed's lab link), then runs::

    autoserv --ssh-config <dir>/ssh_config -m tb1 control_examples/kvm_seed.control

which prints the guest's ``uname -a``.  Everything is torn down at the end.
The control file comes from the checkout, else from the copy an installed
autoserv carries as package data (setup.py puts it there at build time).
The pieces are reused by the tests (``tests/test_kvm_e2e.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path

from autoserv.errors import AutoservError
from autoserv.lab.boot_disk import build_boot_disk
from autoserv.lab.guest_image import GuestImage, build_guest_image
from autoserv.lab.testbed import Testbed, TestbedError, ssh_config_word
from autoserv.localsys import run_tool
from autoserv.virt.addresses import generate_addresses

__all__ = [
    "SEED_CONTROL",
    "SEED_TARBALL",
    "SEED_DISK",
    "SEED_POOL",
    "make_prebuilt_tarball",
    "guest_ssh_config",
    "lab_address",
    "lab_route_conflicts",
    "seed_environment",
    "main",
]

log = logging.getLogger("autoserv.demo")

def _seed_control() -> Path:
    """``control_examples/kvm_seed.control`` of the checkout this module runs from, else the
    copy an installed autoserv ships as package data (``autoserv/lab/control_examples/``)."""
    checkout = Path(__file__).resolve().parents[2] / "control_examples" / "kvm_seed.control"
    if checkout.is_file():
        return checkout
    return Path(str(resources.files("autoserv.lab") / "control_examples" / "kvm_seed.control"))


#: The seed control file the demo runs (from the checkout, else from the package data).
SEED_CONTROL = _seed_control()
SEED_TARBALL = Path("/var/local/src/kvm-33.tar.gz")
SEED_DISK = Path("/var/local/vdisk.img")
#: The seed's pool: 02:00:00:00:00:NN ↔ 192.168.2.NN, NN = 1..31.
SEED_POOL = [a.as_dict() for a in generate_addresses()]
#: The controller's address on the lab link for reaching the seed's guests (their gateway).
SEED_LAB_ADDRESS = "192.168.2.254"

_QEMU = "/usr/bin/qemu-system-x86_64"
_QEMU_MODULES = "/usr/lib/x86_64-linux-gnu/qemu"
_FIRMWARE_DIRS = ("/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu")


# The prebuilt tree's build system: configure records its arguments, make checks the
# binary is there; `make clean` keeps the prebuilt binary; `make install` refuses.
_PREBUILT_CONFIGURE = """#!/bin/sh
# prebuilt QEMU tree (autoserv demo): nothing to configure
echo "$@" > config.args
echo "prebuilt tree: configured with: $*"
"""
_PREBUILT_MAKEFILE = """# prebuilt QEMU tree (autoserv demo)
all:
\ttest -x build/qemu-system-x86_64
\t@echo "prebuilt tree: qemu-system-x86_64 is built" && touch build.stamp
clean:
\t@echo "prebuilt tree: nothing to clean"
install:
\t@echo "make install must never run" >&2 && touch INSTALL-RAN && false
"""


def make_prebuilt_tarball(dest: str | os.PathLike[str], name: str = "kvm-33") -> Path:
    """A ``<name>.tar.gz`` holding an already built QEMU tree (for ``install(build=False)``).

    Layout: ``<name>/build/qemu-system-x86_64`` (this machine's binary),
    ``<name>/lib/x86_64-linux-gnu/qemu/`` (its accelerator modules, found
    relative to the binary) and ``<name>/pc-bios/`` (the firmware, symlinks
    resolved).  Rebuilt only when the host's qemu changed.
    """
    dest = Path(dest)
    if not os.path.exists(_QEMU):
        raise FileNotFoundError(f"{_QEMU} not found: apt-get install qemu-system-x86")
    st = os.stat(_QEMU)
    recipe = hashlib.sha256((_PREBUILT_MAKEFILE + _PREBUILT_CONFIGURE + repr(_FIRMWARE_DIRS)).encode())
    stamp = f"{st.st_mtime_ns}:{st.st_size}:{recipe.hexdigest()[:16]}"
    stamp_file = dest.with_name(dest.name + ".stamp")
    if dest.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autoserv-prebuilt-") as tmp:
        tree = Path(tmp) / name
        (tree / "build").mkdir(parents=True)
        shutil.copy2(_QEMU, tree / "build" / "qemu-system-x86_64")
        if os.path.isdir(_QEMU_MODULES):
            shutil.copytree(_QEMU_MODULES, tree / "lib" / "x86_64-linux-gnu" / "qemu")
        bios = tree / "pc-bios"
        bios.mkdir()
        for d in _FIRMWARE_DIRS:
            if not os.path.isdir(d):
                continue
            for entry in sorted(os.listdir(d)):
                src = os.path.join(d, entry)
                if os.path.isfile(src) and not (bios / entry).exists():  # follows symlinks
                    shutil.copyfile(src, bios / entry)
        (tree / "configure").write_text(_PREBUILT_CONFIGURE)
        (tree / "configure").chmod(0o755)
        (tree / "Makefile").write_text(_PREBUILT_MAKEFILE)
        partial = dest.with_name(f".{dest.name}.partial")
        with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
            tar.add(tree, arcname=name)
        os.replace(partial, dest)
    stamp_file.write_text(stamp)
    return dest


def guest_ssh_config(tb: Testbed, image: GuestImage, ips: Sequence[str], directory: Path) -> Path:
    """An ssh config: the test bed's hosts plus one block for the guest IPs that pins the
    guest image's host key (a known_hosts file with exactly those entries, strict checking)."""
    known = directory / "guest_known_hosts"
    known.write_text("".join(image.known_hosts_line(ip) for ip in ips))
    config = directory / "ssh_config"
    config.write_text(
        tb.ssh_config.read_text()
        + f"\nHost {' '.join(ips)}\n"
        "    User root\n"
        f"    IdentityFile {ssh_config_word(tb.client_key)}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {ssh_config_word(known)}\n"
        "    StrictHostKeyChecking yes\n"
    )
    return config


def lab_route_conflicts(ips: Sequence[str], routes: str) -> list[str]:
    """Routes on this machine that already claim one of the guest ``ips`` as a host route.

    ``routes`` is ``ip -4 -o route show table all``.  Only a host route (``/32``) to a
    guest IP conflicts with ours; a broader route that merely covers them (a LAN on
    192.168.2.0/24, a leftover lab link) does not, because a ``/32`` is more specific.
    """
    wanted = set(ips)
    conflicts = []
    for line in routes.splitlines():
        fields = line.split()
        if fields and fields[0] in ("local", "broadcast", "unreachable", "blackhole", "prohibit"):
            fields = fields[1:]
        if fields and fields[0].removesuffix("/32") in wanted:
            conflicts.append(f"route {line.strip()}")
    return conflicts


@contextlib.contextmanager
def lab_address(tb: Testbed, ips: Sequence[str], address: str = SEED_LAB_ADDRESS) -> Iterator[None]:
    """Reach the guest ``ips`` through the test bed's lab link while inside the block.

    The controller gets ``address``/32 on the link and one ``/32`` route per guest IP with
    that source: the most specific routes there are, so packets for the guests never leave
    through another interface even if this machine sits on a 192.168.2.0/24 LAN, and
    nothing else on the machine changes.  A host route to a guest IP that is already there
    (another demo or seed test running) is an error naming it, not a silent detour.
    """
    link = tb.state.controller_link
    routes = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"],
                            capture_output=True, text=True).stdout
    conflicts = lab_route_conflicts(ips, routes)
    if conflicts:
        raise TestbedError(
            f"cannot route the guest addresses {ips[0]}..{ips[-1]} to the test bed: already in use"
            f" on this machine: {'; '.join(conflicts[:3])}"
            " (another autoserv demo or seed test running? `ip route del` the leftover)"
        )

    def batch(lines: list[str], check: bool) -> None:  # one ip process, not one per route
        argv, text = ["ip", "-force", "-batch", "-"], "\n".join(lines) + "\n"
        if check:
            run_tool(argv, input=text, error=TestbedError)
        else:
            subprocess.run(argv, input=text, text=True, capture_output=True)

    batch([f"addr add {address}/32 dev {link}"], check=True)
    try:
        batch([f"route add {ip}/32 dev {link} src {address}" for ip in ips], check=True)
        yield
    finally:
        batch([*(f"route del {ip}/32 dev {link}" for ip in ips), f"addr del {address}/32 dev {link}"],
              check=False)


@contextlib.contextmanager
def seed_environment(workdir: Path) -> Iterator[tuple[Testbed, GuestImage, Path]]:
    """Test bed + guest image + boot disk + prebuilt tarball + ssh config for the seed
    control file; yields (test bed, image, ssh config).  Tears everything down after."""
    t0 = time.monotonic()
    with Testbed(workdir / "testbed", count=1, kind="netns") as tb:
        image = build_guest_image(authorized_keys=Path(str(tb.client_key) + ".pub").read_text(),
                                  addresses=SEED_POOL)
        build_boot_disk(image, SEED_DISK)
        make_prebuilt_tarball(SEED_TARBALL)
        config = guest_ssh_config(tb, image, [a["ip"] for a in SEED_POOL], workdir)
        log.info("seed environment ready in %.1f s", time.monotonic() - t0)
        with lab_address(tb, [a["ip"] for a in SEED_POOL]):
            yield tb, image, config


def seed_command(config: Path, resultdir: Path, control: Path = SEED_CONTROL) -> list[str]:
    """The autoserv command line that runs the seed control file against the test bed."""
    return [sys.executable, "-m", "autoserv", "--ssh-config", str(config), "-m", "tb1",
            "-r", str(resultdir), str(control)]


def seed_env() -> dict[str, str]:
    """Environment for the seed run: TCG (KVM hangs on these machines) and the module step
    skipped on a kernel without module support."""
    env = dict(os.environ)
    env.setdefault("AUTOSERV_KVM_ACCEL", "tcg")
    env.setdefault("AUTOSERV_KVM_MODULES", "skip-unsupported")
    return env


def run_to_the_end(cmd: Sequence[str], env: dict[str, str], grace: float = 60) -> int:
    """Run ``cmd``; on Ctrl-C or SIGTERM pass the signal on and wait for it to clean up
    (its guests) for ``grace`` seconds before the caller tears the test bed down."""
    proc = subprocess.Popen(list(cmd), env=env)
    try:
        return proc.wait()
    except BaseException:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise


def _sigterm_unwinds() -> None:
    """SIGTERM raises KeyboardInterrupt, so ``with`` blocks tear down what they made."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns autoserv's exit status."""
    parser = argparse.ArgumentParser(prog="python -m autoserv.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--keep", metavar="DIR", help="work directory to keep (default: a temp dir)")
    parser.add_argument("-v", "--verbose", action="store_true", help="autoserv --verbose")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="demo: %(message)s", stream=sys.stderr)
    if os.geteuid() != 0:
        sys.stderr.write("demo: needs root (network namespaces, sshd, qemu)\n")
        return 2
    if not SEED_CONTROL.is_file():
        sys.stderr.write(f"demo: the seed control file is missing ({SEED_CONTROL}): reinstall autoserv"
                         " or run the demo from a checkout (./dev.sh demo)\n")
        return 2
    _sigterm_unwinds()
    work = Path(opts.keep) if opts.keep else Path(tempfile.mkdtemp(prefix="autoserv-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        with seed_environment(work) as (_tb, _image, config):
            cmd = seed_command(config, work / "results")
            if opts.verbose:
                cmd.insert(3, "--verbose")
            log.info("running: %s", shlex.join(cmd))
            t0 = time.monotonic()
            rc = run_to_the_end(cmd, seed_env())
            log.info("autoserv exited %d after %.1f s%s", rc, time.monotonic() - t0,
                     f"; results in {work / 'results'}" if opts.keep else "")
            return rc
    except KeyboardInterrupt:
        log.error("interrupted: autoserv stopped and the test bed torn down")
        return 130
    except AutoservError as exc:  # the set-up failed: say what, not a traceback
        log.error("%s", exc)
        return 1
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
