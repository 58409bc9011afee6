"""autoserv.lab.boot_disk: a FAT + syslinux disk holding a guest image's kernel and initramfs.

Built with the real tools (mkfs.vfat, syslinux, mtools) from small stand-in kernel and initrd
files and read back with mtools; booting it is test_kvm_e2e's seed test.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from autoserv.errors import AutoservVirtError
from autoserv.lab import boot_disk
from autoserv.lab.boot_disk import build_boot_disk, syslinux_config
from autoserv.lab.guest_image import GuestImage

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("mcopy", "mtype", "syslinux", "mkfs.vfat")),
    reason="needs mtools, syslinux and dosfstools",
)


def _image(directory: Path) -> GuestImage:
    # about the real sizes (under ~1 MiB the 8 MiB disk gets FAT12, which syslinux refuses)
    (directory / "vmlinuz").write_bytes(b"K" * 6_000_000)
    (directory / "initrd.gz").write_bytes(b"I" * 4_000_000)
    return GuestImage(kernel=directory / "vmlinuz", initrd=directory / "initrd.gz",
                      host_public_key="ssh-ed25519 AAAA", kernel_release="0", directory=directory)


def _mtype(disk: Path, name: str) -> bytes:
    return subprocess.run(["mtype", "-i", str(disk), f"::{name}"], capture_output=True, check=True).stdout


def test_syslinux_config() -> None:
    assert syslinux_config("console=ttyS0 quiet") == (
        "DEFAULT autoserv\nPROMPT 0\nTIMEOUT 0\nLABEL autoserv\n  LINUX /vmlinuz\n  INITRD /initrd.gz\n"
        "  APPEND console=ttyS0 quiet\n"
    )


def test_disk_holds_kernel_initrd_and_config(tmp_path: Path) -> None:
    image = _image(tmp_path)
    disk = build_boot_disk(image, tmp_path / "out dir" / "vdisk.img")
    assert disk == tmp_path / "out dir" / "vdisk.img"
    assert (tmp_path / "vdisk.img").read_bytes() == disk.read_bytes()  # the cached copy
    assert _mtype(disk, "vmlinuz") == image.kernel.read_bytes()
    assert _mtype(disk, "initrd.gz") == image.initrd.read_bytes()
    assert _mtype(disk, "syslinux.cfg").decode() == syslinux_config(image.append)
    assert disk.read_bytes()[510:512] == b"\x55\xaa"  # syslinux's boot sector
    assert sorted(p.name for p in tmp_path.iterdir()) == ["initrd.gz", "out dir", "vdisk.img", "vmlinuz"]


def test_a_missing_tool_is_one_line_naming_the_package(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setitem(boot_disk._TOOLS, "mcopy-missing", "mtools")
    with pytest.raises(AutoservVirtError, match=r"^boot disk: mcopy-missing not found \(looked in .*\): "
                       r"install the Debian package mtools \(apt-get install mtools\)$"):
        boot_disk._tool("mcopy-missing")


def test_an_image_without_directory_is_refused(tmp_path: Path) -> None:
    image = GuestImage(kernel=tmp_path / "k", initrd=tmp_path / "i", host_public_key="", kernel_release="")
    with pytest.raises(AutoservVirtError, match="no directory to cache the disk in"):
        build_boot_disk(image)
