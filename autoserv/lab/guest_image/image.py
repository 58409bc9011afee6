"""The built guest image: :class:`GuestImage`, its console markers, and where images are cached."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoserv.virt.addresses import DEFAULT_NETMASK, Address, parse_addresses

__all__ = [
    "DEFAULT_APPEND",
    "ERROR_MARKER",
    "NOADDR_MARKER",
    "READY_MARKER",
    "SSH_PORT",
    "GuestImage",
    "default_cache_dir",
]

READY_MARKER = "AUTOSERV-GUEST-READY"
"""Console line ``AUTOSERV-GUEST-READY <ip> [<ip>...]``: SSH listens on port 22."""
NOADDR_MARKER = "AUTOSERV-GUEST-NOADDR"
"""Console line ``AUTOSERV-GUEST-NOADDR <iface> <mac>``: a NIC's MAC is not in the table."""
ERROR_MARKER = "AUTOSERV-GUEST-ERROR"
"""Console line ``AUTOSERV-GUEST-ERROR <message>``: the guest could not get ready."""

DEFAULT_APPEND = "console=ttyS0 panic=-1 quiet"
"""Kernel command line for the image (serial console, reboot at once on panic)."""

SSH_PORT = 22
"""The guest's SSH server port."""


def default_cache_dir() -> Path:
    """``$AUTOSERV_CACHE`` or ``~/.cache/autoserv`` (images go to its ``guest/`` subdir)."""
    env = os.environ.get("AUTOSERV_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "autoserv"


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

    def known_hosts_line(self, host: str, port: int = SSH_PORT) -> str:
        """A ``known_hosts`` line pinning this guest's host key for ``host[:port]``."""
        name = host if port == SSH_PORT else f"[{host}]:{port}"
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
