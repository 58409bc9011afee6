"""The guest's kernel, from Debian: resolve the ABI package, download the ``.deb``, unpack it.

Nothing is installed on the controller: ``apt-cache depends`` names the
package behind :data:`KERNEL_METAPACKAGE`, ``apt-get download`` fetches it
into ``<cache>/debs/`` and ``dpkg-deb -x`` unpacks it once into
``<cache>/kernels/``.  :func:`select_modules` resolves module names (with
their dependencies) against the unpacked kernel.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from autoserv.errors import AutoservVirtError
from autoserv.lab.guest_image.image import default_cache_dir
from autoserv.lab.guest_image.tools import run, tool

__all__ = [
    "KERNEL_METAPACKAGE",
    "download_deb",
    "release_of",
    "resolve_kernel_package",
    "select_modules",
    "unpack_kernel",
]

log = logging.getLogger("autoserv.guest_image")

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
"""Debian metapackage naming the current cloud kernel (LZ4, virtio, no e1000)."""


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
        out = run([tool("apt-cache"), "depends", metapackage])
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


def download_deb(package: str, debs: Path) -> Path:
    """The cached ``.deb`` of ``package``, downloaded with ``apt-get download`` if absent."""
    cached = list(debs.glob(f"{glob.escape(package)}_*.deb"))
    if cached:  # the ABI name pins the kernel; take the newest download of it
        return max(cached, key=lambda p: p.stat().st_mtime_ns)
    debs.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=debs, prefix=".download-"))
    try:
        argv = [tool("apt-get"), "download", "-q"]
        if os.geteuid() == 0:  # apt's _apt sandbox user cannot write into our cache
            argv += ["-o", "APT::Sandbox::User=root"]
        t0 = time.monotonic()
        try:
            run([*argv, package], cwd=tmp)
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


def unpack_kernel(deb: Path, kernels: Path) -> Path:
    """``dpkg-deb -x`` the kernel once into ``kernels/<deb stem>/`` (with ``depmod`` run)."""
    dest = kernels / deb.stem
    if (dest / ".complete").exists():
        return dest
    kernels.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=kernels, prefix=".unpack-"))
    try:
        t0 = time.monotonic()
        run([tool("dpkg-deb"), "-x", str(deb), str(tmp)])
        release = release_of(tmp)
        run([tool("depmod"), "-b", str(tmp), release])
        (tmp / ".complete").write_text(release + "\n")
        if dest.exists():  # a half-finished earlier attempt
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        log.info("unpacked %s (%s) in %.1f s", deb.name, release, time.monotonic() - t0)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def release_of(root: Path) -> str:
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


def select_modules(moddir: Path, wanted: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
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
