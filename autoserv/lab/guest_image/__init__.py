"""A tiny, cached qemu guest built from Debian packages: kernel + initramfs.

The guest is what the test bed and the demo boot as a "remote host":

* **kernel** — the Debian cloud kernel.  Its ABI name is resolved at run time
  from the metapackage (``apt-cache depends linux-image-cloud-amd64``), the
  ``.deb`` fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``
  (nothing is installed on the controller);
* **initramfs** (cpio ``newc``, gzip), written in pure Python so every file is
  owned by root without needing root: busybox (``/init`` is busybox ``init``,
  ``/bin/sh`` and the tools), dropbear as SSH server on port 22, OpenSSH's
  ``sftp-server`` and ``scp`` with their shared libraries (found with ``ldd``),
  the virtio-net/pci/rng and KVM modules of that kernel with ``depmod`` data,
  a MAC → IP table, root's ``authorized_keys`` and an ed25519 host key
  generated once per build.

At boot the init script mounts proc/sys/devtmpfs, loads the virtio modules,
configures every ``eth*`` whose MAC is in the table (the classic Autotest way:
the MAC chosen on the qemu command line selects the address), sets the
hostname to the address's name, starts dropbear and prints
``AUTOSERV-GUEST-READY <ip> ...`` on the console once port 22 listens.  A NIC
whose MAC is not in the table is reported as ``AUTOSERV-GUEST-NOADDR <iface>
<mac>``.

Images are cached under ``<cache>/guest/<hash of all inputs>/`` where
``<cache>`` is ``cache_dir``, else ``$AUTOSERV_CACHE``, else
``~/.cache/autoserv``; ``.deb`` files are kept in ``<cache>/debs/`` and the
unpacked kernels in ``<cache>/kernels/``, so a rebuild with other keys or
addresses only re-assembles the initramfs.

The host needs the Debian packages busybox-static, dropbear-bin,
openssh-sftp-server, openssh-client, kmod, apt and dpkg (and ``apt-get update``
run once).  Booting is the caller's job (see :mod:`autoserv.kvm`); boot with
``-kernel image.kernel -initrd image.initrd -append image.append`` and a
``virtio-net-pci`` NIC whose ``mac=`` is one of the image's addresses.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import glob
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoserv.addresses import (
    DEFAULT_NETMASK,
    Address,
    check_network,
    generate_addresses,
    load_addresses,
    normalise_netmask,
    parse_addresses,
    render_mac_table,
)
from autoserv.errors import AutoservVirtError

__all__ = [
    "GuestImage",
    "build_guest_image",
    "default_cache_dir",
    "resolve_kernel_package",
    "write_cpio",
    "CpioEntry",
    "READY_MARKER",
    "NOADDR_MARKER",
    "ERROR_MARKER",
    "DEFAULT_APPEND",
    "BOOT_MODULES",
    "KVM_MODULES",
    "KERNEL_METAPACKAGE",
    "main",
]

log = logging.getLogger("autoserv.guest_image")

READY_MARKER = "AUTOSERV-GUEST-READY"
"""Console line ``AUTOSERV-GUEST-READY <ip> [<ip>...]``: SSH listens on port 22."""
NOADDR_MARKER = "AUTOSERV-GUEST-NOADDR"
"""Console line ``AUTOSERV-GUEST-NOADDR <iface> <mac>``: a NIC's MAC is not in the table."""
ERROR_MARKER = "AUTOSERV-GUEST-ERROR"
"""Console line ``AUTOSERV-GUEST-ERROR <message>``: the guest could not get ready."""

DEFAULT_APPEND = "console=ttyS0 panic=-1 quiet"
"""Kernel command line for the image (serial console, reboot at once on panic)."""

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
"""Debian metapackage naming the current cloud kernel (LZ4, virtio, no e1000)."""

BOOT_MODULES = ("virtio_pci", "virtio_net", "virtio_rng")
"""Modules the init script loads at boot (when they are not built in)."""

KVM_MODULES = ("kvm", "kvm_amd", "kvm_intel", "irqbypass")
"""Modules shipped (not loaded) so the guest can stand in for a KVM host."""

_GUEST_SFTP_SERVER = "/usr/lib/openssh/sftp-server"
_HOST_KEY_PATH = "/etc/dropbear/dropbear_ed25519_host_key"
_SSH_PORT = 22


# ----------------------------------------------------------------------------
# Result type
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestImage:
    """A built guest: boot ``kernel`` with ``initrd`` and ``append``.

    ``host_public_key`` is the guest's SSH host key in OpenSSH form
    (``ssh-ed25519 AAAA...``), for pinning.  ``modules`` are the loadable
    modules in the initramfs, ``builtin_modules`` the requested ones the kernel
    has built in.
    """

    kernel: Path
    initrd: Path
    host_public_key: str
    kernel_release: str
    append: str = DEFAULT_APPEND
    directory: Path | None = None
    kernel_package: str = ""
    addresses: tuple[Address, ...] = ()
    netmask: str = DEFAULT_NETMASK
    gateway: str | None = None
    modules: tuple[str, ...] = ()
    builtin_modules: tuple[str, ...] = ()
    build_seconds: float = field(default=0.0, compare=False)

    def known_hosts_line(self, host: str, port: int = _SSH_PORT) -> str:
        """A ``known_hosts`` line pinning this guest's host key for ``host[:port]``."""
        name = host if port == _SSH_PORT else f"[{host}]:{port}"
        return f"{name} {self.host_public_key}\n"

    def address_for_mac(self, mac: str) -> Address | None:
        """The pool entry for ``mac`` (any case), or None."""
        mac = mac.lower()
        return next((a for a in self.addresses if a.mac == mac), None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable description (stored as ``image.json``)."""
        return {
            "kernel": str(self.kernel),
            "initrd": str(self.initrd),
            "host_public_key": self.host_public_key,
            "kernel_release": self.kernel_release,
            "append": self.append,
            "directory": str(self.directory) if self.directory else None,
            "kernel_package": self.kernel_package,
            "addresses": [a.as_dict() for a in self.addresses],
            "netmask": self.netmask,
            "gateway": self.gateway,
            "modules": list(self.modules),
            "builtin_modules": list(self.builtin_modules),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], directory: Path) -> GuestImage:
        """Rebuild from :meth:`to_json` output; paths are taken relative to ``directory``."""
        return cls(
            kernel=directory / Path(data["kernel"]).name,
            initrd=directory / Path(data["initrd"]).name,
            host_public_key=data["host_public_key"],
            kernel_release=data["kernel_release"],
            append=data.get("append", DEFAULT_APPEND),
            directory=directory,
            kernel_package=data.get("kernel_package", ""),
            addresses=tuple(parse_addresses(data.get("addresses") or [])),
            netmask=data.get("netmask", DEFAULT_NETMASK),
            gateway=data.get("gateway"),
            modules=tuple(data.get("modules", ())),
            builtin_modules=tuple(data.get("builtin_modules", ())),
        )


# ----------------------------------------------------------------------------
# cpio newc writer
# ----------------------------------------------------------------------------


@dataclass
class CpioEntry:
    """One archive member: ``mode`` includes the file type bits (``stat.S_IFREG`` ...)."""

    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def write_cpio(entries: Mapping[str, CpioEntry], out: io.BufferedIOBase | io.BytesIO) -> None:
    """Write ``entries`` (path → entry) as a cpio ``newc`` archive, owner root, mtime 0.

    Paths are relative (no leading ``/``); members are written in sorted order
    so every directory precedes its contents and the archive is reproducible.
    """

    def pad(n: int) -> bytes:
        return b"\0" * ((4 - n % 4) % 4)

    def member(ino: int, name: str, entry: CpioEntry) -> None:
        raw = name.encode() + b"\0"
        fields = (
            ino,
            entry.mode,
            0,  # uid
            0,  # gid
            2 if stat.S_ISDIR(entry.mode) else 1,
            0,  # mtime
            len(entry.data),
            0,  # devmajor
            0,  # devminor
            entry.rdev[0],
            entry.rdev[1],
            len(raw),
            0,  # check
        )
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out.write(header + raw + pad(len(header) + len(raw)))
        out.write(entry.data + pad(len(entry.data)))

    for ino, name in enumerate(sorted(entries), start=1):
        member(ino, name, entries[name])
    member(0, "TRAILER!!!", CpioEntry(mode=0))


class _Tree:
    """The initramfs being assembled, in memory."""

    def __init__(self) -> None:
        self.entries: dict[str, CpioEntry] = {}

    @staticmethod
    def _norm(path: str) -> str:
        return os.path.normpath(path).lstrip("/")

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        path = self._norm(path)
        if not path or path == ".":
            return
        parent = os.path.dirname(path)
        if parent and parent not in self.entries:
            self.mkdir(parent)
        self.entries[path] = CpioEntry(stat.S_IFDIR | mode)

    def _parent(self, path: str) -> str:
        path = self._norm(path)
        parent = os.path.dirname(path)
        if parent and parent not in self.entries:
            self.mkdir(parent)
        return path

    def file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.entries[self._parent(path)] = CpioEntry(stat.S_IFREG | mode, raw)

    def copy(self, path: str, source: str | os.PathLike[str], mode: int | None = None) -> None:
        """Add the contents of ``source`` (symlinks followed) at ``path``."""
        src = Path(source)
        st = src.stat()
        self.file(path, src.read_bytes(), stat.S_IMODE(st.st_mode) if mode is None else mode)

    def symlink(self, path: str, target: str) -> None:
        self.entries[self._parent(path)] = CpioEntry(stat.S_IFLNK | 0o777, target.encode())

    def node(self, path: str, kind: int, major: int, minor: int, mode: int = 0o600) -> None:
        self.entries[self._parent(path)] = CpioEntry(kind | mode, rdev=(major, minor))

    def add_tree(self, root: Path, prefix: str = "") -> None:
        """Add every file, directory and symlink under ``root`` at ``prefix``."""
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            base = os.path.join(prefix, rel) if rel != "." else prefix
            self.mkdir(base)
            for name in sorted(dirnames + filenames):
                full = os.path.join(dirpath, name)
                dest = os.path.join(base, name)
                if os.path.islink(full):
                    self.symlink(dest, os.readlink(full))
                elif os.path.isfile(full):
                    self.copy(dest, full)

    def to_gzip(self, level: int = 6) -> bytes:
        buf = io.BytesIO()
        write_cpio(self.entries, buf)
        return gzip.compress(buf.getvalue(), compresslevel=level, mtime=0)


# ----------------------------------------------------------------------------
# Host tools
# ----------------------------------------------------------------------------

# name → (candidate paths, Debian package providing it)
_HOST_TOOLS: dict[str, tuple[tuple[str, ...], str]] = {
    "busybox": (("/bin/busybox", "/usr/bin/busybox"), "busybox-static"),
    "dropbear": (("/usr/sbin/dropbear", "/sbin/dropbear"), "dropbear-bin"),
    "dropbearkey": (("/usr/bin/dropbearkey", "/bin/dropbearkey"), "dropbear-bin"),
    "sftp-server": ((_GUEST_SFTP_SERVER,), "openssh-sftp-server"),
    "scp": (("/usr/bin/scp", "/bin/scp"), "openssh-client"),
    "depmod": (("/usr/sbin/depmod", "/sbin/depmod", "/usr/bin/depmod", "/bin/depmod"), "kmod"),
    "ldd": (("/usr/bin/ldd", "/bin/ldd"), "libc-bin"),
    "apt-get": (("/usr/bin/apt-get",), "apt"),
    "apt-cache": (("/usr/bin/apt-cache",), "apt"),
    "dpkg-deb": (("/usr/bin/dpkg-deb",), "dpkg"),
}

# tools whose files end up in the guest (their identity is part of the cache key)
_GUEST_TOOLS = ("busybox", "dropbear", "sftp-server", "scp")


def _tool(name: str) -> str:
    """Absolute path of a host tool, or an error naming the apt package to install."""
    candidates, package = _HOST_TOOLS[name]
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return found
    raise AutoservVirtError(
        f"guest image: {name} not found (looked in {', '.join(candidates)}): "
        f"install the Debian package {package} (apt-get install {package})"
    )


def _run(argv: Sequence[str], cwd: str | os.PathLike[str] | None = None) -> str:
    """Run ``argv`` (no shell), return stdout; failures raise AutoservVirtError."""
    log.debug("running %s", " ".join(argv))
    try:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise AutoservVirtError(f"guest image: cannot run {argv[0]}: {exc.strerror}") from exc
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise AutoservVirtError(
            f"guest image: {' '.join(argv)} failed with exit status {proc.returncode}: {tail}"
        )
    return proc.stdout


def _shared_libraries(binary: str) -> list[str]:
    """Absolute paths of the shared libraries (and loader) ``binary`` needs, via ldd."""
    proc = subprocess.run(
        [_tool("ldd"), binary], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    text = proc.stdout + proc.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if proc.returncode != 0:
        raise AutoservVirtError(f"guest image: ldd {binary} failed: {text.strip()}")
    libs: list[str] = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (", 1)[0].strip()
            if target == "not found":
                raise AutoservVirtError(f"guest image: {binary} needs a missing library: {line}")
            if target.startswith("/"):
                libs.append(target)
        elif line.startswith("/"):
            libs.append(line.split(" (", 1)[0])
    return libs


# ----------------------------------------------------------------------------
# Kernel: resolve, download, unpack
# ----------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$AUTOSERV_CACHE`` or ``~/.cache/autoserv`` (images go to its ``guest/`` subdir)."""
    env = os.environ.get("AUTOSERV_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "autoserv"


def _apt_lists_stamp() -> str:
    """A cheap fingerprint of apt's package lists (changes on ``apt-get update``)."""
    lists = Path("/var/lib/apt/lists")
    parts: list[str] = []
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(lists), key=lambda e: e.name):
            if entry.is_file() and entry.name != "lock":
                st = entry.stat()
                parts.append(f"{entry.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def resolve_kernel_package(
    metapackage: str = KERNEL_METAPACKAGE, cache_dir: str | os.PathLike[str] | None = None
) -> str:
    """The ABI-specific kernel package the metapackage depends on.

    E.g. ``linux-image-6.1.0-56-cloud-amd64``.  The answer is remembered in
    ``<cache>/debs/resolved.json`` until apt's package lists change, because
    ``apt-cache`` takes about a second here.
    """
    memo = Path(cache_dir or default_cache_dir()) / "debs" / "resolved.json"
    stamp = _apt_lists_stamp()
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(memo.read_text())
        if data.get("stamp") == stamp and data.get("metapackage") == metapackage:
            return str(data["package"])
    try:
        out = _run([_tool("apt-cache"), "depends", metapackage])
    except AutoservVirtError as exc:
        raise AutoservVirtError(
            f"guest image: cannot resolve {metapackage} ({exc}); run 'apt-get update' first"
        ) from None
    prefix = metapackage.rsplit("-", 2)[0] if metapackage.count("-") >= 2 else metapackage
    for line in out.splitlines():
        m = re.match(r"^\s*\|?Depends:\s*(\S+)", line)
        if m and m.group(1).startswith(prefix) and m.group(1) != metapackage:
            package = m.group(1).strip("<>")
            break
    else:
        raise AutoservVirtError(
            f"guest image: apt-cache depends {metapackage} names no kernel package;"
            " run 'apt-get update' first"
        )
    memo.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(memo, json.dumps({"metapackage": metapackage, "package": package, "stamp": stamp}))
    log.debug("%s resolves to %s", metapackage, package)
    return package


def _atomic_write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _download_deb(package: str, debs: Path) -> Path:
    """The cached ``.deb`` of ``package``, downloaded with ``apt-get download`` if absent."""
    cached = list(debs.glob(f"{glob.escape(package)}_*.deb"))
    if cached:  # the ABI name pins the kernel; take the newest download of it
        return max(cached, key=lambda p: p.stat().st_mtime_ns)
    debs.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=debs, prefix=".download-"))
    try:
        argv = [_tool("apt-get"), "download", "-q"]
        if os.geteuid() == 0:  # apt's _apt sandbox user cannot write into our cache
            argv += ["-o", "APT::Sandbox::User=root"]
        t0 = time.monotonic()
        try:
            _run([*argv, package], cwd=tmp)
        except AutoservVirtError as exc:
            raise AutoservVirtError(f"{exc}; run 'apt-get update' if {package} is unknown or stale") from None
        got = sorted(tmp.glob("*.deb"))
        if not got:
            raise AutoservVirtError(f"guest image: apt-get download {package} produced no .deb")
        dest = debs / got[0].name
        os.replace(got[0], dest)
        log.info("downloaded %s in %.1f s", dest.name, time.monotonic() - t0)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unpack_kernel(deb: Path, kernels: Path) -> Path:
    """``dpkg-deb -x`` the kernel once into ``kernels/<deb stem>/`` (with ``depmod`` run)."""
    dest = kernels / deb.stem
    if (dest / ".complete").exists():
        return dest
    kernels.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=kernels, prefix=".unpack-"))
    try:
        t0 = time.monotonic()
        _run([_tool("dpkg-deb"), "-x", str(deb), str(tmp)])
        release = _release_of(tmp)
        _run([_tool("depmod"), "-b", str(tmp), release])
        (tmp / ".complete").write_text(release + "\n")
        if dest.exists():  # a half-finished earlier attempt
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        log.info("unpacked %s (%s) in %.1f s", deb.name, release, time.monotonic() - t0)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _release_of(root: Path) -> str:
    releases = sorted(p.name for p in (root / "lib" / "modules").glob("*") if p.is_dir())
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(releases) != 1 or not kernels:
        raise AutoservVirtError(f"guest image: unexpected kernel package layout in {root}")
    return releases[0]


def _modname(path: str) -> str:
    name = os.path.basename(path)
    for ext in (".ko", ".ko.xz", ".ko.gz", ".ko.zst"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name.replace("-", "_")


def _select_modules(moddir: Path, wanted: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """Resolve module names against the kernel's ``modules.dep`` / ``modules.builtin``.

    Returns (relative .ko paths to ship incl. dependencies, loadable requested
    names, built-in requested names).
    """
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        mod, rest = line.split(":", 1)
        deps[mod] = rest.split()
        by_name[_modname(mod)] = mod
    builtin = {_modname(x) for x in (moddir / "modules.builtin").read_text().split()}
    files: list[str] = []
    loadable: list[str] = []
    built_in: list[str] = []
    for name in dict.fromkeys(n.replace("-", "_") for n in wanted):
        if name in builtin:
            built_in.append(name)
        elif name in by_name:
            loadable.append(name)
            for f in [by_name[name], *deps[by_name[name]]]:
                if f not in files:
                    files.append(f)
        else:
            raise AutoservVirtError(f"guest image: kernel module {name} not found in {moddir}")
    return files, loadable, built_in


# ----------------------------------------------------------------------------
# Guest files
# ----------------------------------------------------------------------------

_INITTAB = f"""\
# autoserv guest: busybox init
::sysinit:/etc/init.d/rcS
::respawn:/usr/sbin/dropbear -F -s -p {_SSH_PORT} -r {_HOST_KEY_PATH}
::once:/etc/init.d/ready
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
::restart:/sbin/init
"""

_RCS = r"""#!/bin/sh
# autoserv guest: mount, load modules, configure eth* by MAC, set the hostname.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /run
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/autoserv /var/log
ip link set lo up

for m in $BOOT_MODULES; do
	modprobe "$m" || echo "autoserv guest: cannot load module $m" > /dev/console
done

. /etc/autoserv/network

# the virtio NICs show up asynchronously: wait up to 5 s for the first one
i=0
while [ "$i" -lt 100 ]; do
	set -- /sys/class/net/eth*
	[ -e "$1" ] && break
	usleep 50000
	i=$((i + 1))
done

ips=
name=
first=
for dev in /sys/class/net/eth*; do
	[ -e "$dev" ] || continue
	ifc=${dev##*/}
	read -r mac < "$dev/address"
	ip=$(awk -v m="$mac" 'tolower($1) == tolower(m) { print $2; exit }' /etc/autoserv/mac-table)
	if [ -z "$ip" ]; then
		echo "AUTOSERV-GUEST-NOADDR $ifc $mac" > /dev/console
		continue
	fi
	ip addr add "$ip/$PREFIX" dev "$ifc"
	ip link set "$ifc" up
	if [ -z "$first" ]; then
		first=$ifc
		name=$(awk -v m="$mac" 'tolower($1) == tolower(m) { print $2; exit }' /etc/autoserv/names)
	fi
	ips="$ips $ip"
done

if [ -n "$first" ]; then
	if [ -n "$GATEWAY" ]; then
		ip route add default via "$GATEWAY" dev "$first"
	else
		# no gateway: treat every destination as on-link (works with qemu user networking)
		ip route add default dev "$first"
	fi
fi

hostname "${name:-autoserv-guest}"
echo "${name:-autoserv-guest}" > /etc/hostname
echo "${ips# }" > /run/autoserv/ips
"""

_READY = r"""#!/bin/sh
# autoserv guest: announce on the console once the SSH server listens.
i=0
while [ "$i" -lt 600 ]; do
	if awk '$2 ~ /:0016$/ && $4 == "0A" { found = 1 } END { exit !found }' \
		/proc/net/tcp /proc/net/tcp6 2>/dev/null; then
		echo "AUTOSERV-GUEST-READY $(cat /run/autoserv/ips)" > /dev/console
		exit 0
	fi
	usleep 50000
	i=$((i + 1))
done
echo "AUTOSERV-GUEST-ERROR ssh server not listening on port 22 after 30 s" > /dev/console
exit 1
"""

_PROFILE = """\
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
PS1='\\h:\\w\\$ '
"""


def _normalise_keys(authorized_keys: str | Sequence[str] | os.PathLike[str] | None) -> str:
    """authorized_keys text from a string, a list of lines, or a path-like file."""
    if authorized_keys is None:
        return ""
    if isinstance(authorized_keys, os.PathLike):
        try:
            text = Path(authorized_keys).read_text()
        except OSError as exc:
            raise AutoservVirtError(
                f"guest image: cannot read authorized key file {authorized_keys}: {exc.strerror}"
            ) from exc
    elif isinstance(authorized_keys, str):
        text = authorized_keys
    else:
        text = "\n".join(authorized_keys)
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    for line in lines:
        if "PRIVATE KEY" in line:
            raise AutoservVirtError("guest image: authorized_keys got a private key, not a public one")
    return "".join(line + "\n" for line in lines)


def _tool_identity() -> list[list[Any]]:
    """(path, size, mtime) of every host file copied into the guest's binaries."""
    ident: list[list[Any]] = []
    for name in _GUEST_TOOLS:
        path = _tool(name)
        st = os.stat(path)
        ident.append([path, st.st_size, st.st_mtime_ns])
    for loader in ("/lib64/ld-linux-x86-64.so.2",):
        with contextlib.suppress(OSError):
            st = os.stat(loader)
            ident.append([os.path.realpath(loader), st.st_size, st.st_mtime_ns])
    return ident


def _generate_host_key(workdir: Path) -> tuple[bytes, str]:
    """A fresh dropbear ed25519 host key and its OpenSSH public form ``ssh-ed25519 AAAA...``."""
    key = workdir / "host_key"
    _run([_tool("dropbearkey"), "-t", "ed25519", "-f", str(key)])
    out = _run([_tool("dropbearkey"), "-y", "-f", str(key)])
    for line in out.splitlines():
        if line.startswith("ssh-ed25519 "):
            public = " ".join(line.split()[:2])
            return key.read_bytes(), public
    raise AutoservVirtError(f"guest image: no ssh-ed25519 public key in dropbearkey -y output: {out}")


def _assemble(
    workdir: Path,
    kernel_root: Path,
    release: str,
    keys_text: str,
    addresses: Sequence[Address],
    gateway: str | None,
    prefix: int,
    wanted_modules: Sequence[str],
) -> tuple[bytes, str, list[str], list[str]]:
    """Build the gzip'd initramfs; returns (initrd bytes, host public key, loadable, built-in)."""
    tree = _Tree()
    for d in ("proc", "sys", "dev", "run", "mnt", "var/log", "etc/init.d", "usr/lib"):
        tree.mkdir(d)
    tree.mkdir("tmp", 0o1777)
    tree.mkdir("root", 0o700)
    tree.mkdir("root/.ssh", 0o700)
    tree.symlink("var/run", "../run")
    tree.node("dev/console", stat.S_IFCHR, 5, 1, 0o600)
    tree.node("dev/null", stat.S_IFCHR, 1, 3, 0o666)
    tree.node("dev/ttyS0", stat.S_IFCHR, 4, 64, 0o600)

    # busybox: /init, /bin/sh and every applet
    busybox = _tool("busybox")
    tree.copy("bin/busybox", busybox, 0o755)
    for applet in _run([busybox, "--list-full"]).split():
        if applet.rsplit("/", 1)[-1] in ("busybox", "linuxrc"):
            continue
        tree.symlink(applet, "/bin/busybox")
    tree.symlink("init", "bin/busybox")
    tree.symlink("bin/sh", "busybox")

    # SSH server, sftp-server, scp and their libraries
    binaries = {
        "usr/sbin/dropbear": _tool("dropbear"),
        _GUEST_SFTP_SERVER.lstrip("/"): _tool("sftp-server"),
        "usr/bin/scp": _tool("scp"),
    }
    libs: dict[str, str] = {}
    for dest, src in binaries.items():
        tree.copy(dest, src, 0o755)
        for lib in _shared_libraries(src):
            libs.setdefault(lib, os.path.realpath(lib))
    for dest, src in sorted(libs.items()):
        tree.copy(dest, src, 0o755)
    tree.symlink("usr/lib/sftp-server", "openssh/sftp-server")  # dropbear's built-in path

    # kernel modules of this kernel, with depmod data
    moddir = kernel_root / "lib" / "modules" / release
    files, loadable, built_in = _select_modules(moddir, wanted_modules)
    stage = workdir / "modules"
    stage_moddir = stage / "lib" / "modules" / release
    stage_moddir.mkdir(parents=True)
    for meta in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (moddir / meta).exists():
            shutil.copy2(moddir / meta, stage_moddir / meta)
    for rel in files:
        (stage_moddir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(moddir / rel, stage_moddir / rel)
    _run([_tool("depmod"), "-b", str(stage), release])
    tree.add_tree(stage / "lib", "lib")

    # SSH keys
    host_key, host_public = _generate_host_key(workdir)
    tree.file(_HOST_KEY_PATH, host_key, 0o600)
    tree.file("root/.ssh/authorized_keys", keys_text, 0o600)

    # accounts, init, network tables
    tree.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    tree.file("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o600)
    tree.file("etc/group", "root:x:0:\ntty:x:5:\n")
    tree.file("etc/shells", "/bin/sh\n")
    tree.file("etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files\n")
    tree.file("etc/hosts", "127.0.0.1\tlocalhost\n" + "".join(f"{a.ip}\t{a.name}\n" for a in addresses))
    tree.file("etc/profile", _PROFILE)
    tree.file("etc/inittab", _INITTAB)
    boot_modules = " ".join(m for m in BOOT_MODULES if m in loadable)
    tree.file("etc/init.d/rcS", _RCS.replace("$BOOT_MODULES", boot_modules), 0o755)
    tree.file("etc/init.d/ready", _READY, 0o755)
    tree.file("etc/autoserv/mac-table", render_mac_table(addresses))
    tree.file("etc/autoserv/names", "".join(f"{a.mac} {a.name}\n" for a in addresses))
    tree.file("etc/autoserv/network", f"PREFIX={prefix}\nGATEWAY={gateway or ''}\n")
    return tree.to_gzip(), host_public, loadable, built_in


# ----------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_cached(directory: Path) -> GuestImage | None:
    try:
        data = json.loads((directory / "image.json").read_text())
        image = GuestImage.from_json(data, directory)
    except (OSError, ValueError, KeyError, AutoservVirtError):
        return None
    if image.kernel.is_file() and image.initrd.is_file():
        return image
    return None


def build_guest_image(
    cache_dir: str | os.PathLike[str] | None = None,
    authorized_keys: str | Sequence[str] | os.PathLike[str] | None = None,
    addresses: object = None,
    netmask: str = DEFAULT_NETMASK,
    gateway: str | None = None,
    force: bool = False,
    extra_modules: Sequence[str] = (),
    kernel_metapackage: str = KERNEL_METAPACKAGE,
) -> GuestImage:
    """Build (or fetch from the cache) the guest kernel + initramfs.

    ``authorized_keys``: root's ``authorized_keys`` content (a string of one or
    more OpenSSH public-key lines, a list of lines, or a path-like object naming
    a file).  ``addresses``: the pool as given to ``kvm.install()`` (default
    :func:`~autoserv.addresses.generate_addresses`), with ``netmask`` and
    ``gateway`` (without a gateway the default route is on-link).
    ``extra_modules``: more kernel modules (with their dependencies) to ship.
    ``force`` rebuilds even when a cached image exists (new host key).

    The cache key covers every input, the kernel package, the host binaries
    copied in and this module's source, so a repeated call with the same
    inputs returns in milliseconds.
    """
    t0 = time.monotonic()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    pool = parse_addresses(generate_addresses() if addresses is None else addresses)
    prefix, gw = check_network(pool, netmask, gateway)
    mask = normalise_netmask(netmask)
    keys_text = _normalise_keys(authorized_keys)
    if not keys_text:
        log.warning("guest image without authorized_keys: nobody will be able to log in")
    wanted = [*BOOT_MODULES, *KVM_MODULES, *extra_modules]

    package = resolve_kernel_package(kernel_metapackage, root)
    deb = _download_deb(package, root / "debs")
    inputs = {
        "recipe": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "deb": deb.name,
        "tools": _tool_identity(),
        "authorized_keys": keys_text,
        "addresses": [a.as_dict() for a in pool],
        "netmask": mask,
        "gateway": gw,
        "modules": wanted,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]
    directory = root / "guest" / digest
    if not force:
        cached = _load_cached(directory)
        if cached is not None:
            log.debug("guest image cache hit %s (%.3f s)", directory, time.monotonic() - t0)
            return cached

    with _locked(root / "guest" / ".lock"):
        if not force:
            cached = _load_cached(directory)
            if cached is not None:
                return cached
        kernel_root = _unpack_kernel(deb, root / "kernels")
        release = _release_of(kernel_root)
        work = Path(tempfile.mkdtemp(dir=root / "guest", prefix=f".build-{digest}-"))
        try:
            initrd, host_public, loadable, built_in = _assemble(
                work, kernel_root, release, keys_text, pool, gw, prefix, wanted
            )
            out = work / "image"
            out.mkdir()
            vmlinuz = kernel_root / "boot" / f"vmlinuz-{release}"
            try:
                os.link(vmlinuz, out / "vmlinuz")
            except OSError:
                shutil.copyfile(vmlinuz, out / "vmlinuz")
            (out / "initrd.gz").write_bytes(initrd)
            (out / "host_key.pub").write_text(host_public + "\n")
            image = GuestImage(
                kernel=directory / "vmlinuz",
                initrd=directory / "initrd.gz",
                host_public_key=host_public,
                kernel_release=release,
                directory=directory,
                kernel_package=deb.stem,
                addresses=tuple(pool),
                netmask=mask,
                gateway=gw,
                modules=tuple(loadable),
                builtin_modules=tuple(built_in),
            )
            (out / "image.json").write_text(json.dumps(image.to_json(), indent=2) + "\n")
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(out, directory)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - t0
    log.info(
        "built guest image %s (kernel %s, initrd %.1f MB) in %.2f s",
        directory,
        release,
        image.initrd.stat().st_size / 1e6,
        elapsed,
    )
    return dataclasses.replace(image, build_seconds=elapsed)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m autoserv.guest_image``: build (or find) the image, print its paths."""
    parser = argparse.ArgumentParser(
        prog="python -m autoserv.guest_image", description="Build the cached autoserv qemu guest."
    )
    parser.add_argument("--cache", metavar="DIR", help="cache root (default $AUTOSERV_CACHE)")
    parser.add_argument(
        "--authorized-key",
        metavar="FILE",
        action="append",
        help="public key file for root (repeatable; default ~/.ssh/id_*.pub)",
    )
    parser.add_argument("--addresses", metavar="FILE.json", help="address list (kvm.install)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--json", action="store_true", help="print a JSON description")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        stream=sys.stderr,
    )
    key_files = args.authorized_key or sorted(str(p) for p in (Path.home() / ".ssh").glob("id_*.pub"))
    try:
        keys = "".join(Path(f).read_text() for f in key_files)
    except OSError as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc.filename}: {exc.strerror}\n")
        return 1
    try:
        kwargs: dict[str, Any] = {}
        if args.addresses:
            config = load_addresses(args.addresses)
            kwargs = {
                "addresses": list(config.addresses),
                "netmask": config.netmask,
                "gateway": config.gateway,
            }
        image = build_guest_image(cache_dir=args.cache, authorized_keys=keys, force=args.force, **kwargs)
    except AutoservVirtError as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(image.to_json(), indent=2) + "\n")
    else:
        sys.stdout.write(
            f"kernel: {image.kernel}\n"
            f"initrd: {image.initrd}\n"
            f"append: {image.append}\n"
            f"kernel_release: {image.kernel_release}\n"
            f"host_public_key: {image.host_public_key}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
