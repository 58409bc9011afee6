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

The package, by concern: :mod:`.image` (the result type, console markers,
cache root), :mod:`.cpio` (the cpio writer), :mod:`.tools` (host tools and
binaries), :mod:`.kernel` (the Debian kernel fetch), :mod:`.builder` (the
initramfs and the cache), :mod:`.cli` (``python -m autoserv.guest_image``);
the guest's init scripts are the package data files in ``files/``.
"""

from autoserv.lab.guest_image.builder import BOOT_MODULES, KVM_MODULES, build_guest_image
from autoserv.lab.guest_image.cli import main
from autoserv.lab.guest_image.cpio import CpioEntry, write_cpio
from autoserv.lab.guest_image.image import (
    DEFAULT_APPEND,
    ERROR_MARKER,
    NOADDR_MARKER,
    READY_MARKER,
    GuestImage,
    default_cache_dir,
)
from autoserv.lab.guest_image.kernel import KERNEL_METAPACKAGE, resolve_kernel_package

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
