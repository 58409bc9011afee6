"""The host tools the guest image is built with, and the host binaries copied into it.

:func:`tool` finds one (the error names the Debian package to install),
:func:`run` runs one (the error names the command), :func:`shared_libraries`
lists what a binary copied into the guest needs, :func:`tool_identity`
fingerprints the copied binaries for the image cache key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Sequence
from typing import Any

from autoserv.errors import AutoservVirtError
from autoserv.localsys import find_tool, run_tool

__all__ = ["GUEST_SFTP_SERVER", "run", "shared_libraries", "tool", "tool_identity"]

log = logging.getLogger("autoserv.guest_image")

GUEST_SFTP_SERVER = "/usr/lib/openssh/sftp-server"
"""Where OpenSSH's sftp-server sits, on this machine and in the guest."""

_CONTEXT = "guest image: "

# name → (candidate paths, Debian package providing it)
_HOST_TOOLS: dict[str, tuple[tuple[str, ...], str]] = {
    "busybox": (("/bin/busybox", "/usr/bin/busybox"), "busybox-static"),
    "dropbear": (("/usr/sbin/dropbear", "/sbin/dropbear"), "dropbear-bin"),
    "dropbearkey": (("/usr/bin/dropbearkey", "/bin/dropbearkey"), "dropbear-bin"),
    "sftp-server": ((GUEST_SFTP_SERVER,), "openssh-sftp-server"),
    "scp": (("/usr/bin/scp", "/bin/scp"), "openssh-client"),
    "depmod": (("/usr/sbin/depmod", "/sbin/depmod", "/usr/bin/depmod", "/bin/depmod"), "kmod"),
    "ldd": (("/usr/bin/ldd", "/bin/ldd"), "libc-bin"),
    "apt-get": (("/usr/bin/apt-get",), "apt"),
    "apt-cache": (("/usr/bin/apt-cache",), "apt"),
    "dpkg-deb": (("/usr/bin/dpkg-deb",), "dpkg"),
}

# tools whose files end up in the guest (their identity is part of the cache key)
_GUEST_TOOLS = ("busybox", "dropbear", "sftp-server", "scp")


def tool(name: str) -> str:
    """Absolute path of a host tool, or an error naming the apt package to install."""
    candidates, package = _HOST_TOOLS[name]
    return find_tool(name, package, candidates, error=AutoservVirtError, context=_CONTEXT)


def run(argv: Sequence[str], cwd: str | os.PathLike[str] | None = None) -> str:
    """Run ``argv`` (no shell), return stdout; failures raise AutoservVirtError."""
    log.debug("running %s", " ".join(argv))
    return run_tool(argv, cwd=cwd, error=AutoservVirtError, context=_CONTEXT).stdout


def shared_libraries(binary: str) -> list[str]:
    """Absolute paths of the shared libraries (and loader) ``binary`` needs, via ldd."""
    proc = subprocess.run(
        [tool("ldd"), binary], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
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


def tool_identity() -> list[list[Any]]:
    """(path, size, mtime) of every host file copied into the guest's binaries."""
    ident: list[list[Any]] = []
    for name in _GUEST_TOOLS:
        path = tool(name)
        st = os.stat(path)
        ident.append([path, st.st_size, st.st_mtime_ns])
    for loader in ("/lib64/ld-linux-x86-64.so.2",):
        with contextlib.suppress(OSError):
            st = os.stat(loader)
            ident.append([os.path.realpath(loader), st.st_size, st.st_mtime_ns])
    return ident
