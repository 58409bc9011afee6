"""Helpers for the KVM end-to-end tests: Debian sources, leftovers on a test bed host."""

from __future__ import annotations

import fcntl
import os
import subprocess
import tarfile
from pathlib import Path

from autoserv.lab.guest_image import default_cache_dir
from autoserv.lab.testbed import Testbed, TestbedHost
from autoserv.localsys import pid_alive

_SOURCES = """Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def debian_source(package: str) -> Path:
    """The directory holding ``apt-get source --download-only <package>`` files (cached).

    Uses a private apt configuration (deb-src for bookworm) so the system's
    sources and lists are left alone.
    """
    root = default_cache_dir() / "src"
    apt = root / "apt"
    (apt / "parts").mkdir(parents=True, exist_ok=True)
    (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "parts" / "bookworm-src.sources").write_text(_SOURCES)
    dest = root / package
    dest.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if list(dest.glob("*.dsc")):
            return dest
        opts = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={apt / 'parts'}",
                "-o", f"Dir::State::Lists={apt / 'lists'}", "-o", "APT::Sandbox::User=root"]
        if not any((apt / "lists").glob("*Sources*")):
            subprocess.run(["apt-get", "-q", *opts, "update"], check=True, capture_output=True)
        subprocess.run(["apt-get", "-q", *opts, "source", "--download-only", package], cwd=dest,
                       check=True, capture_output=True)
    return dest


def orig_tarball(package: str) -> Path:
    """The upstream ``<package>_<version>.orig.tar.*`` of a Debian source package."""
    found = [p for p in debian_source(package).glob(f"{package}_*.orig.tar.*") if not p.name.endswith(".asc")]
    assert found, f"no orig tarball for {package}"
    return found[0]


def retar(src_dir: Path, dest: Path, arcname: str) -> Path:
    """``src_dir`` as a gzip'd tarball (fast compression)."""
    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        tar.add(src_dir, arcname=arcname)
    return dest


def host_state(host: TestbedHost) -> Path:
    """The controller's view of the host's private ``/var/lib/autoserv``."""
    return Path(host.workdir) / "state"


def qemu_pids(tb: Testbed, host: TestbedHost) -> list[int]:
    """Live (non-zombie) qemu processes inside a netns host."""
    assert host.netns
    out = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True).stdout
    pids = []
    for p in out.split():
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmd and pid_alive(int(p)):
            pids.append(int(p))
    return pids


def taps(host: TestbedHost) -> list[str]:
    """Tap devices autoserv made inside a netns host (``kvm<hex ip>``)."""
    assert host.netns
    out = subprocess.run(["ip", "-n", host.netns, "-o", "link", "show"], capture_output=True,
                         text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
            if line.split(":")[1].strip().startswith("kvm")]


def leases(host: TestbedHost) -> list[str]:
    d = host_state(host) / "kvm" / "leases"
    return sorted(os.listdir(d)) if d.exists() else []
