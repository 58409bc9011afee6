"""Installing KVM on a remote host: send the source, configure and make it there, find
the built qemu and its BIOS directories, probe the accelerator.  ``make install`` is
never run: the tree is used where it was built.

Each function does one remote step on an :class:`~autoserv.hosts.SSHHost` and logs
to the ``log`` it is given; the shell they run is built in :mod:`autoserv.virt.scripts`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import shlex
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from autoserv.errors import AutoservInstallError
from autoserv.virt import scripts
from autoserv.virt.source import Source, archive_stem

if TYPE_CHECKING:
    from autoserv.hosts.ssh_host import SSHHost

__all__ = ["write_file", "send_and_build", "locate_binaries", "choose_accel"]


def write_file(host: SSHHost, path: str, text: str, mode: str = "755") -> None:
    """Write ``text`` to ``path`` on ``host``, replaced atomically (another process may be
    running the old file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    host.run("cat > " + shlex.quote(tmp) + " && "
             + shlex.join(["chmod", mode, tmp]) + " && " + shlex.join(["mv", "-f", tmp, path]),
             stdin=text, verbose=False)


def send_and_build(host: SSHHost, source: Source, state_dir: str, *, build: bool, patched_kernel: bool,
                   configure_args: Sequence[str], timeout: float, log: logging.Logger) -> str:
    """Send the source to ``<state_dir>/src`` (unless the same archive is there), then unpack
    it and, with ``build``, configure and make it, in one locked remote step; returns the tree."""
    local, flag, key = source.archive()
    name = os.path.basename(local)
    remote_archive = posixpath.join(state_dir, "src", f"{key}-{name}")
    size = os.path.getsize(local)
    have = host.run(shlex.join(["stat", "-c", "%s", remote_archive]) + " 2>/dev/null || true",
                    verbose=False, stdout_tee=None).stdout.strip()
    if have != str(size):
        partial = f"{remote_archive}.{os.getpid()}.partial"
        log.info("sending %s (%d bytes) to %s:%s", local, size, host.hostname, remote_archive)
        host.send_file(local, partial)
        host.run(shlex.join(["mv", "-f", partial, remote_archive]))
    else:
        log.info("%s:%s is already there", host.hostname, remote_archive)
    settings = json.dumps([build, patched_kernel, list(configure_args)])
    marker = ".autoserv-ready-" + hashlib.sha256(settings.encode()).hexdigest()[:12]
    dest = posixpath.join(state_dir, "trees", f"{archive_stem(name) or 'tree'}-{key}")
    jobs = 2 * max(1, host.get_num_cpu()) if build else 1
    command = scripts.install_command(remote_archive, dest, flag, marker, build=build,
                                      patched_kernel=patched_kernel, jobs=jobs,
                                      configure_args=configure_args, lock_wait=timeout)
    t0 = time.monotonic()
    res = host.run(command, timeout=timeout + 60, ignore_status=True)
    if res.exit_status != 0:
        step = scripts.INSTALL_STEPS.get(res.exit_status or 0, "unpack/build")
        text = (res.stdout + "\n" + res.stderr).strip().splitlines()
        tail = "\n".join(text[-30:])
        failed = [line.split()[-1] for line in res.stdout.splitlines()
                  if line.startswith("AUTOSERV-FAILED ")]
        status = failed[-1] if failed else res.exit_status
        raise AutoservInstallError(
            f"kvm.install: {step} failed on {host.hostname} in {dest} (exit status "
            f"{status}); last output lines:\n{tail}"
        )
    trees = [line.split(" ", 1)[1] for line in res.stdout.splitlines()
             if line.startswith("AUTOSERV-TREE ")]
    if not trees:
        raise AutoservInstallError(f"kvm.install: no tree reported by the install step:\n{res.stdout}")
    log.info("source %s in %.1f s (build=%s): %s", "unpacked and built" if build else "unpacked",
             time.monotonic() - t0, build, trees[-1])
    return trees[-1]


def locate_binaries(host: SSHHost, tree: str, log: logging.Logger) -> tuple[str, list[str]]:
    """The qemu-system-x86_64 built in ``tree`` (it must run) and the BIOS directories,
    the tree's first, then the host's."""
    out = host.run(scripts.find_qemu_binary_script(tree), verbose=False, stdout_tee=None).stdout
    binary = None
    bios: list[str] = []
    for line in out.splitlines():
        kind, _, path = line.partition(" ")
        if kind == "bin" and binary is None:
            binary = path
        elif kind == "bios" and path not in bios:
            bios.append(path)
    if binary is None:
        raise AutoservInstallError(
            f"kvm.install: no qemu-system-x86_64 in {tree} (looked in "
            f"{', '.join(scripts.QEMU_BINARY_CANDIDATES)}); was the tree built?"
        )
    res = host.run(shlex.join([binary, "--version"]), ignore_status=True, verbose=False, stdout_tee=None)
    if res.exit_status != 0:
        raise AutoservInstallError(f"kvm.install: {binary} does not run on {host.hostname}: "
                                   f"{(res.stderr or res.stdout).strip()}")
    log.info("qemu: %s (%s); BIOS dirs: %s", binary, res.stdout.splitlines()[0].strip()
             if res.stdout.strip() else "?", ", ".join(bios) or "qemu's default")
    return binary, bios


def choose_accel(host: SSHHost, binary: str, accel: str, log: logging.Logger) -> str:
    """``accel`` unless it is ``"auto"``: then ``"kvm"`` when KVM really works on the host
    (see :func:`~autoserv.virt.scripts.accel_probe_command`), else ``"tcg"``."""
    if accel != "auto":
        return accel
    ok = host.run(scripts.accel_probe_command(binary), ignore_status=True,
                  verbose=False, stdout_tee=None, stderr_tee=None, timeout=30).exit_status == 0
    log.info("KVM acceleration %s on %s", "works" if ok else "unavailable (using TCG)", host.hostname)
    return "kvm" if ok else "tcg"
