"""``python -m autoserv.demo``: the seed KVM control file end to end on this machine.

Builds a one-host network-namespace test bed (a real sshd whose ``eth0`` sits
on a bridge ``br0``, as on a KVM host), the cached guest image and its boot
disk (``/var/local/vdisk.img``), a prebuilt QEMU tree
(``/var/local/src/kvm-33.tar.gz``: this machine's qemu-system-x86_64 and its
modules and firmware in the layout of a built tree), an ssh config that pins
the guests' host key for the seed's address pool (``192.168.2.1-31``, reached
through an address the demo adds on the test bed's lab link), then runs::

    autoserv --ssh-config <dir>/ssh_config -m tb1 control_examples/kvm_seed.control

which prints the guest's ``uname -a``.  Everything is torn down at the end.
The pieces are reused by the tests (``tests/test_kvm_e2e.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from autoserv.addresses import generate_addresses
from autoserv.boot_disk import build_boot_disk
from autoserv.guest_image import GuestImage, build_guest_image
from autoserv.testbed import Testbed

__all__ = [
    "SEED_CONTROL",
    "SEED_TARBALL",
    "SEED_DISK",
    "SEED_POOL",
    "make_prebuilt_tarball",
    "guest_ssh_config",
    "lab_address",
    "seed_environment",
    "main",
]

log = logging.getLogger("autoserv.demo")

REPO = Path(__file__).resolve().parent.parent
SEED_CONTROL = REPO / "control_examples" / "kvm_seed.control"
SEED_TARBALL = Path("/var/local/src/kvm-33.tar.gz")
SEED_DISK = Path("/var/local/vdisk.img")
#: The seed's pool: 02:00:00:00:00:NN ↔ 192.168.2.NN, NN = 1..31.
SEED_POOL = [a.as_dict() for a in generate_addresses()]
#: The controller's address on the lab bridge for reaching the seed's guests.
SEED_LAB_ADDRESS = "192.168.2.254/24"

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
        f"    IdentityFile {tb.client_key}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {known}\n"
        "    StrictHostKeyChecking yes\n"
    )
    return config


@contextlib.contextmanager
def lab_address(tb: Testbed, address: str = SEED_LAB_ADDRESS) -> Iterator[None]:
    """Give the controller ``address`` on the test bed's lab link while inside the block."""
    link = tb.state.controller_link
    subprocess.run(["ip", "addr", "add", address, "dev", link], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "addr", "del", address, "dev", link], capture_output=True)


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
        with lab_address(tb):
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
    work = Path(opts.keep) if opts.keep else Path(tempfile.mkdtemp(prefix="autoserv-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        with seed_environment(work) as (_tb, _image, config):
            cmd = seed_command(config, work / "results")
            if opts.verbose:
                cmd.insert(3, "--verbose")
            log.info("running: %s", " ".join(cmd))
            t0 = time.monotonic()
            rc = subprocess.run(cmd, env=seed_env(), check=False).returncode
            log.info("autoserv exited %d after %.1f s%s", rc, time.monotonic() - t0,
                     f"; results in {work / 'results'}" if opts.keep else "")
            return rc
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
