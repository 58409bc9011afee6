"""Assemble the guest's initramfs and build (or find in the cache) the whole image.

:func:`build_guest_image` resolves and unpacks the kernel (:mod:`.kernel`),
assembles the initramfs (:mod:`.cpio`) from the host tools (:mod:`.tools`)
and the init scripts shipped as package data in ``files/``, and caches the
result under a hash of every input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path

from autoserv.errors import AutoservVirtError
from autoserv.lab.guest_image.cpio import CpioTree
from autoserv.lab.guest_image.image import SSH_PORT, GuestImage, default_cache_dir
from autoserv.lab.guest_image.kernel import (
    KERNEL_METAPACKAGE,
    download_deb,
    release_of,
    resolve_kernel_package,
    select_modules,
    unpack_kernel,
)
from autoserv.lab.guest_image.tools import GUEST_SFTP_SERVER, run, shared_libraries, tool, tool_identity
from autoserv.virt.addresses import (
    DEFAULT_NETMASK,
    Address,
    check_network,
    generate_addresses,
    normalise_netmask,
    parse_addresses,
    render_mac_table,
)

__all__ = ["BOOT_MODULES", "KVM_MODULES", "build_guest_image", "guest_file", "inittab", "recipe_digest"]

log = logging.getLogger("autoserv.guest_image")

BOOT_MODULES = ("virtio_pci", "virtio_net", "virtio_rng")
"""Modules the init script loads at boot (when they are not built in)."""

KVM_MODULES = ("kvm", "kvm_amd", "kvm_intel", "irqbypass")
"""Modules shipped (not loaded) so the guest can stand in for a KVM host."""

_HOST_KEY_PATH = "/etc/dropbear/dropbear_ed25519_host_key"
_FILES = resources.files("autoserv.lab.guest_image") / "files"


def guest_file(name: str) -> str:
    """A file of the guest shipped as package data (``files/<name>``: rcS, ready, inittab, profile)."""
    return (_FILES / name).read_text()


def inittab() -> str:
    """busybox init's ``/etc/inittab``: ``rcS``, then dropbear respawned on the SSH port, then ``ready``."""
    return guest_file("inittab").replace("@SSH_PORT@", str(SSH_PORT)).replace("@HOST_KEY@", _HOST_KEY_PATH)


def recipe_digest() -> str:
    """A hash of this package's code and guest files: a changed recipe is a new image."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted([*root.glob("*.py"), *(root / "files").iterdir()]):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


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


def _generate_host_key(workdir: Path) -> tuple[bytes, str]:
    """A fresh dropbear ed25519 host key and its OpenSSH public form ``ssh-ed25519 AAAA...``."""
    key = workdir / "host_key"
    run([tool("dropbearkey"), "-t", "ed25519", "-f", str(key)])
    out = run([tool("dropbearkey"), "-y", "-f", str(key)])
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
    tree = CpioTree()
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
    busybox = tool("busybox")
    tree.copy("bin/busybox", busybox, 0o755)
    for applet in run([busybox, "--list-full"]).split():
        if applet.rsplit("/", 1)[-1] in ("busybox", "linuxrc"):
            continue
        tree.symlink(applet, "/bin/busybox")
    tree.symlink("init", "bin/busybox")
    tree.symlink("bin/sh", "busybox")

    # SSH server, sftp-server, scp and their libraries
    binaries = {
        "usr/sbin/dropbear": tool("dropbear"),
        GUEST_SFTP_SERVER.lstrip("/"): tool("sftp-server"),
        "usr/bin/scp": tool("scp"),
    }
    libs: dict[str, str] = {}
    for dest, src in binaries.items():
        tree.copy(dest, src, 0o755)
        for lib in shared_libraries(src):
            libs.setdefault(lib, os.path.realpath(lib))
    for dest, src in sorted(libs.items()):
        tree.copy(dest, src, 0o755)
    tree.symlink("usr/lib/sftp-server", "openssh/sftp-server")  # dropbear's built-in path

    # kernel modules of this kernel, with depmod data
    moddir = kernel_root / "lib" / "modules" / release
    files, loadable, built_in = select_modules(moddir, wanted_modules)
    stage = workdir / "modules"
    stage_moddir = stage / "lib" / "modules" / release
    stage_moddir.mkdir(parents=True)
    for meta in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (moddir / meta).exists():
            shutil.copy2(moddir / meta, stage_moddir / meta)
    for rel in files:
        (stage_moddir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(moddir / rel, stage_moddir / rel)
    run([tool("depmod"), "-b", str(stage), release])
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
    tree.file("etc/profile", guest_file("profile"))
    tree.file("etc/inittab", inittab())
    boot_modules = " ".join(m for m in BOOT_MODULES if m in loadable)
    tree.file("etc/init.d/rcS", guest_file("rcS").replace("@BOOT_MODULES@", boot_modules), 0o755)
    tree.file("etc/init.d/ready", guest_file("ready"), 0o755)
    tree.file("etc/autoserv/mac-table", render_mac_table(addresses))
    tree.file("etc/autoserv/names", "".join(f"{a.mac} {a.name}\n" for a in addresses))
    tree.file("etc/autoserv/network", f"PREFIX={prefix}\nGATEWAY={gateway or ''}\n")
    return tree.to_gzip(), host_public, loadable, built_in


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
    :func:`~autoserv.virt.addresses.generate_addresses`), with ``netmask`` and
    ``gateway`` (without a gateway the default route is on-link).
    ``extra_modules``: more kernel modules (with their dependencies) to ship.
    ``force`` rebuilds even when a cached image exists (new host key).

    The cache key covers every input, the kernel package, the host binaries
    copied in and this package's code and guest files, so a repeated call with the same
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
    deb = download_deb(package, root / "debs")
    inputs = {
        "recipe": recipe_digest(),
        "deb": deb.name,
        "tools": tool_identity(),
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
        kernel_root = unpack_kernel(deb, root / "kernels")
        release = release_of(kernel_root)
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
