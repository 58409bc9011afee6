"""A bootable disk image for a guest image: FAT + syslinux holding kernel and initramfs.

``build_boot_disk(image)`` turns a :class:`~autoserv.lab.guest_image.GuestImage`
into a small "superfloppy" disk (a FAT file system without a partition table,
syslinux in its boot sector) so a guest boots with ``-hda <disk> -snapshot``,
as the seed control file does.  Built with mtools (no loop mount, no root) in
well under a second and cached next to the image (``<image dir>/vdisk.img``).

Needs the Debian packages ``syslinux``, ``syslinux-common``, ``mtools`` and
``dosfstools``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from autoserv.errors import AutoservVirtError
from autoserv.lab.guest_image import GuestImage
from autoserv.localsys import find_tool, run_tool

__all__ = ["build_boot_disk", "syslinux_config"]

log = logging.getLogger("autoserv.boot_disk")

_TOOLS = {"mkfs.vfat": "dosfstools", "syslinux": "syslinux", "mcopy": "mtools"}


def syslinux_config(append: str) -> str:
    """``syslinux.cfg`` booting ``/vmlinuz`` with ``/initrd.gz`` at once (no prompt)."""
    return (
        "DEFAULT autoserv\nPROMPT 0\nTIMEOUT 0\n"
        "LABEL autoserv\n  LINUX /vmlinuz\n  INITRD /initrd.gz\n"
        f"  APPEND {append}\n"
    )


def _tool(name: str) -> str:
    return find_tool(name, _TOOLS[name], error=AutoservVirtError, context="boot disk: ")


def _run(argv: list[str]) -> None:
    run_tool(argv, error=AutoservVirtError, context="boot disk: ")


def build_boot_disk(image: GuestImage, dest: str | os.PathLike[str] | None = None) -> Path:
    """A bootable disk for ``image`` (cached as ``<image dir>/vdisk.img``); copied to ``dest`` if given."""
    if image.directory is None:
        raise AutoservVirtError("boot disk: the guest image has no directory to cache the disk in")
    cached = Path(image.directory) / "vdisk.img"
    if not cached.exists():
        t0 = time.monotonic()
        size = image.kernel.stat().st_size + image.initrd.stat().st_size
        mib = size // (1 << 20) + 8
        fd, tmp = tempfile.mkstemp(dir=image.directory, prefix=".vdisk-")
        os.close(fd)
        try:
            with open(tmp, "r+b") as f:
                f.truncate(mib << 20)
            _run([_tool("mkfs.vfat"), "-n", "AUTOSERV", tmp])
            _run([_tool("syslinux"), "--install", tmp])
            cfg = Path(tmp + ".cfg")
            cfg.write_text(syslinux_config(image.append))
            try:
                mcopy = _tool("mcopy")
                for src, name in ((image.kernel, "vmlinuz"), (image.initrd, "initrd.gz"),
                                  (cfg, "syslinux.cfg")):
                    _run([mcopy, "-o", "-i", tmp, str(src), f"::{name}"])
            finally:
                cfg.unlink()
            os.replace(tmp, cached)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        log.info("built boot disk %s (%d MiB) in %.2f s", cached, mib, time.monotonic() - t0)
    if dest is None:
        return cached
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_dest = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(cached, tmp_dest)
    os.replace(tmp_dest, dest)
    return dest
