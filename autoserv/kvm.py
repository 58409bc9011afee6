"""KVM on a remote host: fetch, build, kernel modules, address leases and guests.

``kvm.KVM(host)`` is Autotest's hypervisor object, driven over an
:class:`~autoserv.hosts.SSHHost`::

    k = kvm.KVM(host)
    k.get("/var/local/src/kvm-33.tar.gz")    # local file/dir, http(s)/ftp URL, or a file object
    k.install(addresses)                     # send, unpack, build (never `make install`), modules
    ip = k.new_guest("-m 256 -hda /var/local/vdisk.img -snapshot")
    k.delete_guest(ip)
    k.deinitialize()

Everything it keeps on the host lives under ``state_dir`` (default
``/var/lib/autoserv/kvm``): the source and the unpacked tree, the
``qemu-ifup``/``qemu-ifdown`` scripts, one lease file per address in use
(``leases/<ip>.lease``) and each guest's pidfile, monitor and console sockets
and serial log (``guests/<ip>/``).  Leases are taken and freed under
``flock`` on ``<state_dir>/lock``, so several autoserv processes sharing a host
never hand out the same MAC or IP; a lease whose qemu has died is reclaimed.

Process-wide knobs (for control files that cannot pass arguments):
``AUTOSERV_KVM_ACCEL`` = ``auto`` (default: KVM when ``/dev/kvm`` really works
on the host, else TCG) | ``kvm`` | ``tcg``; ``AUTOSERV_KVM_MODULES`` =
``required`` (default: a host without module support is an error) |
``skip-unsupported`` (skip the module step on such hosts, with a warning).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import random
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from autoserv import qemu
from autoserv.addresses import Address, parse_addresses
from autoserv.errors import AutoservError, AutoservInstallError, AutoservRunError, AutoservVirtError
from autoserv.hosts import registry
from autoserv.utils import quote_args

__all__ = [
    "KVM",
    "Hypervisor",
    "GuestRecord",
    "DEFAULT_STATE_DIR",
    "ACCEL_ENV",
    "MODULES_ENV",
    "archive_tar_flag",
    "find_qemu_binary_script",
]

log = logging.getLogger("autoserv.kvm")

DEFAULT_STATE_DIR = "/var/lib/autoserv/kvm"
ACCEL_ENV = "AUTOSERV_KVM_ACCEL"
MODULES_ENV = "AUTOSERV_KVM_MODULES"

#: Where a built tree keeps qemu-system-x86_64, oldest layout first.
QEMU_BINARY_CANDIDATES = (
    "qemu/x86_64-softmmu/qemu-system-x86_64",  # kvm-NN tarballs (2008)
    "x86_64-softmmu/qemu-system-x86_64",  # qemu-kvm / QEMU before meson
    "build/qemu-system-x86_64",  # QEMU >= 5.2 (meson)
    "build/x86_64-softmmu/qemu-system-x86_64",
    "qemu-system-x86_64",
)
#: BIOS directories tried, in order: the tree's, then the host's.
BIOS_DIR_CANDIDATES = ("qemu/pc-bios", "pc-bios", "build/pc-bios")
HOST_BIOS_DIRS = ("/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar")


def archive_tar_flag(name: str, head: bytes = b"") -> str:
    """The ``tar -x`` compression flag for an archive: ``z``, ``j``, ``J`` or ``""``.

    Judged by the file's magic bytes (``head``, the first 512 bytes) and, when
    those are absent, by its name; anything else is an :class:`AutoservInstallError`.
    """
    if head.startswith(b"\x1f\x8b"):
        return "z"
    if head.startswith(b"BZh"):
        return "j"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "J"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return ""
    lower = name.lower()
    for suffixes, flag in (((".tar.gz", ".tgz"), "z"), ((".tar.bz2", ".tbz2"), "j"),
                           ((".tar.xz", ".txz"), "J"), ((".tar",), "")):
        if lower.endswith(suffixes) and not head:
            return flag
    raise AutoservInstallError(
        f"{name}: not a source archive autoserv can unpack ({', '.join(_ARCHIVE_SUFFIXES)})"
    )


def find_qemu_binary_script(tree: str) -> str:
    """Shell printing the first executable qemu-system-x86_64 in ``tree`` (see
    :data:`QEMU_BINARY_CANDIDATES`) and then each existing BIOS directory, one per line."""
    bins = " ".join(quote_args("", [posixpath.join(tree, c)]).strip() for c in QEMU_BINARY_CANDIDATES)
    bios = " ".join(quote_args("", [posixpath.join(tree, c)]).strip() for c in BIOS_DIR_CANDIDATES)
    host = " ".join(HOST_BIOS_DIRS)
    return (
        f"for b in {bins}; do if [ -f \"$b\" ] && [ -x \"$b\" ]; then echo \"bin $b\"; break; fi; done; "
        f"for d in {bios}; do "
        "if [ -e \"$d/bios-256k.bin\" ] || [ -e \"$d/bios.bin\" ] || [ -e \"$d/kvmvapic.bin\" ]; then "
        "echo \"bios $d\"; fi; done; "
        f"for d in {host}; do [ -d \"$d\" ] && echo \"bios $d\"; done; true"
    )


@dataclass
class GuestRecord:
    """A guest this KVM object started: its address and files on the host."""

    ip: str
    mac: str
    pid: int
    paths: qemu.GuestPaths
    network: qemu.TapNetwork | qemu.UserNetwork
    argv: list[str]
    started: float



class Hypervisor:
    """Base of hypervisors (Autotest's ``hypervisor.Hypervisor``): bound to one host."""

    def __init__(self, host: Any) -> None:
        self.host = host

    def install(self, host: Any | None = None) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class KVM(Hypervisor):
    """KVM/qemu on the remote ``host`` (an :class:`~autoserv.hosts.SSHHost`).

    ``state_dir``: remote directory for trees, leases and guest files.
    ``bridge``: the bridge the ``qemu-ifup`` script attaches guest taps to.
    ``network``: ``"auto"`` (a tap on ``bridge`` when the host has it, else
    user-mode networking with a port forward), ``"tap"`` or ``"user"``.
    ``accel``: ``"auto"`` | ``"kvm"`` | ``"tcg"`` (default ``$AUTOSERV_KVM_ACCEL``
    or ``auto``).  ``guest_host_keys``: OpenSSH public keys the guests' SSH
    servers use (pinned by :class:`~autoserv.hosts.KVMGuest`); without them guests
    are checked strictly against known_hosts.  ``powerdown_grace``: seconds
    :meth:`delete_guest` waits after ``system_powerdown`` before killing qemu.
    """

    def __init__(
        self,
        host: Any,
        *,
        state_dir: str = DEFAULT_STATE_DIR,
        bridge: str = "br0",
        network: str = "auto",
        accel: str | None = None,
        guest_host_keys: Iterable[str] = (),
        powerdown_grace: float = 5.0,
        start_check: float = 0.5,
    ) -> None:
        super().__init__(host)
        if network not in ("auto", "tap", "user"):
            raise AutoservVirtError(f"network must be auto, tap or user, not {network!r}")
        accel = accel or os.environ.get(ACCEL_ENV) or "auto"
        if accel not in ("auto", "kvm", "tcg"):
            raise AutoservVirtError(f"accel must be auto, kvm or tcg, not {accel!r}")
        self.state_dir = state_dir.rstrip("/") or "/"
        self.bridge = bridge
        self.network = network
        self.accel = accel
        self.guest_host_keys = tuple(guest_host_keys)
        self.powerdown_grace = powerdown_grace
        self.start_check = start_check
        self.addresses: list[Address] = []
        self.qemu_binary: str | None = None
        self.bios_dirs: list[str] = []
        self.tree: str | None = None
        self.inserted_modules: list[str] = []
        self.guests: dict[str, GuestRecord] = {}
        self._source: str | None = None  # local path (file or directory)
        self._source_tmp: str | None = None
        self._accel_used: str | None = None
        self._use_tap: bool | None = None
        self._tag = f"{socket.gethostname()}:{os.getpid()}"
        self.log = getattr(host, "log", log)
        self._closed = False
        registry.register(self)  # the job closes it: no guest of ours outlives autoserv

    def __repr__(self) -> str:
        return f"<KVM on {getattr(self.host, 'hostname', self.host)}>"

    # -- paths -------------------------------------------------------------
    @property
    def ifup(self) -> str:
        return posixpath.join(self.state_dir, "qemu-ifup")

    @property
    def ifdown(self) -> str:
        return posixpath.join(self.state_dir, "qemu-ifdown")

    # -- get ---------------------------------------------------------------
    def get(self, location: str | os.PathLike[str] | IO[bytes] | IO[str]) -> str:
        """Fetch the KVM/QEMU source to the controller; returns the local path.

        ``location``: a local file or directory, an ``http://``, ``https://``
        or ``ftp://`` URL (downloaded, progress in the log), or a readable file
        object.  A missing path or a failed download is an :class:`AutoservError`.
        """
        self._drop_tmp()
        if hasattr(location, "read"):
            name = os.path.basename(str(getattr(location, "name", "") or "")) or "source.tar"
            self._source_tmp = tempfile.mkdtemp(prefix="autoserv-kvm-src-")
            path = os.path.join(self._source_tmp, name)
            with open(path, "wb") as out:
                while True:
                    chunk = location.read(1 << 20)  # type: ignore[union-attr]
                    if not chunk:
                        break
                    out.write(chunk.encode() if isinstance(chunk, str) else chunk)
            self._source = path
            self.log.info("kvm source from a file object: %s (%d bytes)", name, os.path.getsize(path))
            return path
        loc = os.fspath(location)  # type: ignore[arg-type]
        scheme = urllib.parse.urlsplit(loc).scheme.lower()
        if scheme in ("http", "https", "ftp"):
            self._source = self._download(loc)
            return self._source
        if scheme == "file":
            loc = urllib.parse.unquote(urllib.parse.urlsplit(loc).path)
        elif scheme and len(scheme) > 1:
            raise AutoservError(f"kvm.get: unsupported URL scheme {scheme!r} in {loc!r}")
        if not os.path.exists(loc):
            raise AutoservError(f"kvm.get: {loc} does not exist (expected a file, a directory or a URL)")
        if os.path.isfile(loc):
            with open(loc, "rb") as f:
                archive_tar_flag(loc, f.read(512))
        self._source = os.path.abspath(loc)
        self.log.info("kvm source: %s", self._source)
        return self._source

    def _download(self, url: str) -> str:
        name = os.path.basename(urllib.parse.urlsplit(url).path) or "source.tar.gz"
        self._source_tmp = tempfile.mkdtemp(prefix="autoserv-kvm-src-")
        path = os.path.join(self._source_tmp, name)
        self.log.info("downloading %s", url)
        start = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(path, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0)
                done = 0
                last = start
                while True:
                    chunk = resp.read(1 << 18)
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    now = time.monotonic()
                    if now - last >= 2.0:
                        last = now
                        pct = f" ({100 * done // total}%)" if total else ""
                        self.log.info("downloaded %d of %s bytes%s", done, total or "?", pct)
                if total and done != total:
                    raise AutoservError(f"kvm.get: download of {url} truncated ({done} of {total} bytes)")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self._drop_tmp()
            if isinstance(exc, urllib.error.HTTPError):
                reason: object = f"HTTP {exc.code} {exc.reason}"
            else:
                reason = getattr(exc, "reason", None) or exc
            raise AutoservError(f"kvm.get: cannot download {url}: {reason}") from None
        except BaseException:
            self._drop_tmp()
            raise
        self.log.info("downloaded %s: %d bytes in %.1f s", url, done, time.monotonic() - start)
        with open(path, "rb") as f:
            archive_tar_flag(name, f.read(512))
        return path

    def _drop_tmp(self) -> None:
        if self._source_tmp:
            shutil.rmtree(self._source_tmp, ignore_errors=True)
            self._source_tmp = None

    # -- install -----------------------------------------------------------
    def install(  # type: ignore[override]
        self,
        addresses: object,
        build: bool = True,
        insert_modules: bool = True,
        configure_args: Sequence[str] = (),
        skip_unsupported_modules: bool | None = None,
        build_timeout: float = 3 * 3600,
    ) -> None:
        """Install KVM on the host from the source given to :meth:`get`.

        ``addresses``: the guest address pool (``{"mac", "ip"}`` dicts),
        validated before the host is touched.  The source is sent and unpacked
        under ``state_dir``; with ``build``: ``make clean`` (failure ignored),
        ``./configure`` (+ ``--with-patched-kernel`` when modules are not
        inserted and the tree's configure knows it, + ``configure_args``),
        ``make -j<2 × cpus>`` — never ``make install`` — output streamed to the
        host's debug log.  Then qemu-system-x86_64 and the BIOS dirs are found in
        the tree, and with ``insert_modules`` the KVM modules are loaded.
        ``skip_unsupported_modules`` (default ``$AUTOSERV_KVM_MODULES`` ==
        ``skip-unsupported``) skips the module step on a kernel without modules.
        """
        pool = parse_addresses(addresses)
        if self._source is None:
            raise AutoservInstallError("kvm.install: call get(location) first to fetch the source")
        if skip_unsupported_modules is None:
            skip_unsupported_modules = os.environ.get(MODULES_ENV, "required") == "skip-unsupported"
        h = self.host
        t0 = time.monotonic()
        h.run(quote_args("mkdir -p", [self.state_dir, posixpath.join(self.state_dir, "src"),
                                      posixpath.join(self.state_dir, "trees")]))
        self._write_scripts()
        tree = self._send_and_build(build, insert_modules, configure_args, build_timeout)
        self._locate_binaries(tree)
        if insert_modules:
            self._insert_modules(tree, skip_unsupported_modules)
        self._accel_used = self._choose_accel()
        self.addresses = pool
        self.tree = tree
        self.log.info("KVM installed on %s in %.1f s: %s (accel %s, %d addresses)", h.hostname,
                      time.monotonic() - t0, self.qemu_binary, self._accel_used, len(pool))

    def _write_scripts(self) -> None:
        for path, text in ((self.ifup, qemu.ifup_script(self.bridge)),
                           (self.ifdown, qemu.ifdown_script(self.bridge))):
            tmp = f"{path}.{os.getpid()}.tmp"  # replaced atomically: another process may run it
            self.host.run(quote_args("cat >", [tmp]) + " && " + quote_args("chmod 755", [tmp]) + " && "
                          + quote_args("mv -f", [tmp, path]), stdin=text, verbose=False)

    def _local_archive(self) -> tuple[str, str, str]:
        """(local archive path, tar flag, content key); a directory is tarred first."""
        assert self._source is not None
        src = self._source
        if os.path.isdir(src):
            name = os.path.basename(src.rstrip("/")) or "tree"
            tmp = self._source_tmp or tempfile.mkdtemp(prefix="autoserv-kvm-src-")
            self._source_tmp = tmp
            path = os.path.join(tmp, f"{name}.tar")
            with tarfile.open(path, "w") as tar:
                tar.add(src, arcname=name)
            src = path
        with open(src, "rb") as f:
            flag = archive_tar_flag(src, f.read(512))
            digest = hashlib.sha256()
            f.seek(0)
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return src, flag, digest.hexdigest()[:16]

    def _send_and_build(self, build: bool, insert_modules: bool, configure_args: Sequence[str],
                        timeout: float) -> str:
        """Send the source, then unpack and build it in one locked remote step; returns the tree."""
        h = self.host
        local, flag, key = self._local_archive()
        name = os.path.basename(local)
        base = name
        for suffix in _ARCHIVE_SUFFIXES:
            if base.lower().endswith(suffix):
                base = base[: -len(suffix)]
                break
        remote_archive = posixpath.join(self.state_dir, "src", f"{key}-{name}")
        size = os.path.getsize(local)
        have = h.run(quote_args("stat -c %s", [remote_archive]) + " 2>/dev/null || true",
                     verbose=False, stdout_tee=None).stdout.strip()
        if have != str(size):
            partial = f"{remote_archive}.{os.getpid()}.partial"
            self.log.info("sending %s (%d bytes) to %s:%s", local, size, h.hostname, remote_archive)
            h.send_file(local, partial)
            h.run(quote_args("mv -f", [partial, remote_archive]))
        else:
            self.log.info("%s:%s is already there", h.hostname, remote_archive)
        settings = json.dumps([build, not insert_modules, list(configure_args)])
        marker = ".autoserv-ready-" + hashlib.sha256(settings.encode()).hexdigest()[:12]
        dest = posixpath.join(self.state_dir, "trees", f"{base or 'tree'}-{key}")
        jobs = 2 * max(1, h.get_num_cpu()) if build else 1
        command = qemu.install_command(remote_archive, dest, flag, marker, build=build,
                                       patched_kernel=not insert_modules, jobs=jobs,
                                       configure_args=configure_args, lock_wait=timeout)
        t0 = time.monotonic()
        res = h.run(command, timeout=timeout + 60, ignore_status=True)
        if res.exit_status != 0:
            step = qemu.INSTALL_STEPS.get(res.exit_status or 0, "unpack/build")
            text = (res.stdout + "\n" + res.stderr).strip().splitlines()
            tail = "\n".join(text[-30:])
            failed = [line.split()[-1] for line in res.stdout.splitlines()
                      if line.startswith("AUTOSERV-FAILED ")]
            status = failed[-1] if failed else res.exit_status
            raise AutoservInstallError(
                f"kvm.install: {step} failed on {h.hostname} in {dest} (exit status "
                f"{status}); last output lines:\n{tail}"
            )
        trees = [line.split(" ", 1)[1] for line in res.stdout.splitlines()
                 if line.startswith("AUTOSERV-TREE ")]
        if not trees:
            raise AutoservInstallError(f"kvm.install: no tree reported by the install step:\n{res.stdout}")
        self.log.info("source %s in %.1f s (build=%s): %s", "unpacked and built" if build else "unpacked",
                      time.monotonic() - t0, build, trees[-1])
        return trees[-1]

    def _locate_binaries(self, tree: str) -> None:
        out = self.host.run(find_qemu_binary_script(tree), verbose=False, stdout_tee=None).stdout
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
                f"{', '.join(QEMU_BINARY_CANDIDATES)}); was the tree built?"
            )
        res = self.host.run(quote_args("", [binary, "--version"]).strip(), ignore_status=True,
                            verbose=False, stdout_tee=None)
        if res.exit_status != 0:
            raise AutoservInstallError(f"kvm.install: {binary} does not run on {self.host.hostname}: "
                                       f"{(res.stderr or res.stdout).strip()}")
        self.qemu_binary = binary
        self.bios_dirs = bios
        self.log.info("qemu: %s (%s); BIOS dirs: %s", binary, res.stdout.splitlines()[0].strip()
                      if res.stdout.strip() else "?", ", ".join(bios) or "qemu's default")

    def _choose_accel(self) -> str:
        if self.accel != "auto":
            return self.accel
        assert self.qemu_binary is not None
        ok = self.host.run(qemu.accel_probe_command(self.qemu_binary), ignore_status=True,
                           verbose=False, stdout_tee=None, stderr_tee=None, timeout=30).exit_status == 0
        self.log.info("KVM acceleration %s on %s", "works" if ok else "unavailable (using TCG)",
                      self.host.hostname)
        return "kvm" if ok else "tcg"

    # -- modules -------------------------------------------------------------
    def _proc_modules(self) -> dict[str, int]:
        text = self.host.run("cat /proc/modules", verbose=False, stdout_tee=None).stdout
        return qemu.parse_proc_modules(text)

    def _insert_modules(self, tree: str, skip_unsupported: bool) -> None:
        h = self.host
        if h.run("test -r /proc/modules", ignore_status=True, verbose=False).exit_status != 0:
            msg = (f"{h.hostname}: the running kernel has no loadable module support "
                   "(no /proc/modules): cannot insert the KVM modules; use "
                   "install(insert_modules=False) with a kernel that has KVM built in")
            if skip_unsupported:
                self.log.warning("%s; skipping the module step as asked", msg)
                return
            raise AutoservVirtError(msg)
        vendor = qemu.cpu_vendor(h.run("cat /proc/cpuinfo", verbose=False, stdout_tee=None).stdout)
        vmod = qemu.vendor_module(vendor)
        before = self._proc_modules()
        for name in ("kvm_intel", "kvm_amd", "kvm"):
            loaded = self._proc_modules()
            if name in loaded and loaded[name] == 0:
                self.log.info("removing unused module %s", name)
                h.run("rmmod", args=[name], ignore_status=True)
        found = h.run(quote_args("find", [tree, "-name", "kvm.ko", "-o", "-name", f"{vmod}.ko",
                                          "-o", "-name", f"{vmod.replace('_', '-')}.ko"]),
                      verbose=False, stdout_tee=None, ignore_status=True).stdout.split()
        by_name = {os.path.basename(p)[:-3].replace("-", "_"): p for p in found}
        loaded = self._proc_modules()
        for name in ("kvm", vmod):
            if name in loaded:
                self.log.info("module %s already loaded: skipped", name)
                continue
            if "kvm" in by_name and vmod in by_name:
                self.log.info("inserting %s from the tree", by_name[name])
                cmd = quote_args("insmod", [by_name[name]])
            else:
                self.log.info("inserting the running kernel's %s (modprobe)", name)
                cmd = quote_args("modprobe", [name])
            try:
                h.run(cmd)
            except AutoservRunError as exc:
                raise AutoservVirtError(f"cannot load KVM module {name} on {h.hostname}: "
                                        f"{exc.result_obj.stderr.strip() if exc.result_obj else exc}"
                                        ) from None
        after = self._proc_modules()
        new = [m for m in after if m not in before and m in ("kvm", "kvm_amd", "kvm_intel", "irqbypass")]
        # remove order: vendor module, kvm, then helpers it pulled in
        order = {vmod: 0, "kvm": 1, "irqbypass": 2}
        self.inserted_modules = sorted(new, key=lambda m: order.get(m, 3))
        self.log.info("KVM modules loaded on %s: %s (inserted by us: %s)", h.hostname,
                      ", ".join(m for m in after if m.startswith("kvm")), ", ".join(self.inserted_modules))

    def remove_modules(self) -> None:
        """Remove the modules :meth:`install` inserted (vendor module first)."""
        for name in list(self.inserted_modules):
            res = self.host.run("rmmod", args=[name], ignore_status=True)
            if res.exit_status == 0:
                self.inserted_modules.remove(name)
            else:
                self.log.warning("cannot remove module %s: %s", name, res.stderr.strip())

    # -- guests --------------------------------------------------------------
    def _check_installed(self) -> None:
        if self.qemu_binary is None or not self.addresses:
            raise AutoservVirtError("KVM is not installed: call install(addresses) first")

    def _lease(self, command: str, *args: str, stdin: str | None = None,
               ignore_status: bool = False) -> Any:
        return self.host.run(qemu.lease_command(self.state_dir, command, *args), stdin=stdin,
                             ignore_status=ignore_status, verbose=False, stdout_tee=None, timeout=120)

    def _network_for(self, ip: str) -> qemu.TapNetwork | qemu.UserNetwork:
        if self._use_tap is None:
            if self.network == "auto":
                has = self.host.run(quote_args("test -d", [f"/sys/class/net/{self.bridge}/bridge"]),
                                    ignore_status=True, verbose=False).exit_status == 0
                self._use_tap = has
                self.log.info("bridge %s %s on %s: %s networking", self.bridge,
                              "found" if has else "not found", self.host.hostname,
                              "tap" if has else "user-mode")
            else:
                self._use_tap = self.network == "tap"
        if self._use_tap:
            return qemu.TapNetwork(qemu.tap_name(ip), self.ifup, self.ifdown)
        return qemu.UserNetwork(ip, random.randint(20000, 59999))

    def new_guest(self, qemu_options: str | Sequence[str]) -> str:
        """Start a guest on the first free address; returns its IP.

        The lease (pid, MAC, IP, monitor, serial log) is written under the
        remote lock before qemu starts; qemu runs daemonized and must still be
        alive ``start_check`` seconds later, else its stderr and console are in
        the :class:`AutoservVirtError`.  No free address → :class:`AutoservVirtError`.
        """
        self._check_installed()
        assert self.qemu_binary is not None
        options = qemu.split_options(qemu_options)
        res = self._lease("acquire", self._tag, stdin=qemu.pool_lines(self.addresses), ignore_status=True)
        if res.exit_status == 3:
            raise AutoservVirtError(
                f"no free guest address on {self.host.hostname}: all {len(self.addresses)} addresses "
                "of the pool are leased"
            )
        if res.exit_status != 0 or len(res.stdout.split()) != 2:
            raise AutoservVirtError(f"cannot take a guest address lease on {self.host.hostname}: "
                                    f"{res.stderr.strip() or res.stdout.strip()}")
        mac, ip = res.stdout.split()
        try:
            return self._start(ip, mac, options)
        except BaseException:
            with contextlib.suppress(Exception):
                self._lease("release", ip)
            raise

    def _start(self, ip: str, mac: str, options: list[str]) -> str:
        assert self.qemu_binary is not None
        paths = qemu.guest_paths(self.state_dir, ip)
        last_error = ""
        for _attempt in range(3):
            network = self._network_for(ip)
            argv = qemu.qemu_argv(
                self.qemu_binary, options, mac=mac, paths=paths, network=network,
                accel=self._accel_used or "tcg", bios_dir=None,
            )
            bios: list[str] = []
            for d in self.bios_dirs:
                bios += ["-L", d]
            argv = [argv[0], *bios, *argv[1:]]
            self.log.info("starting guest %s (%s): %s", ip, mac, qemu.describe_argv(argv))
            cmd = (quote_args("", argv).strip() + " </dev/null >/dev/null 2>"
                   + quote_args("", [paths.stderr_log]).strip())
            t0 = time.monotonic()
            res = self.host.run(cmd, ignore_status=True, timeout=120, stdout_tee=None, stderr_tee=None)
            if res.exit_status == 0:
                break
            last_error = self._read(paths.stderr_log)
            if isinstance(network, qemu.UserNetwork) and "hostfwd" in last_error:
                continue  # the random host port was taken: try another
            raise AutoservVirtError(
                f"qemu failed to start guest {ip} on {self.host.hostname} (exit status "
                f"{res.exit_status}):\n{last_error.strip()}\ncommand: {qemu.describe_argv(argv)}"
            )
        else:
            raise AutoservVirtError(f"qemu failed to start guest {ip}: {last_error.strip()}")
        pid_text = self._read(paths.pidfile).strip()
        if not pid_text.isdigit():
            raise AutoservVirtError(f"qemu for guest {ip} wrote no pid to {paths.pidfile}")
        pid = int(pid_text)
        self._lease("commit", ip, str(pid))
        record = GuestRecord(ip, mac, pid, paths, network, argv, t0)
        self.guests[ip] = record
        time.sleep(self.start_check)
        if not self._alive(record):
            stderr = self._read(paths.stderr_log).strip()
            console = self._read(paths.serial_log, tail=20).strip()
            self.guests.pop(ip, None)
            raise AutoservVirtError(
                f"qemu for guest {ip} exited at once on {self.host.hostname}:\n{stderr}"
                + (f"\nconsole:\n{console}" if console else "")
            )
        self.log.info("guest %s started (qemu pid %d, %s)", ip, pid,
                      f"tap {network.ifname}" if isinstance(network, qemu.TapNetwork)
                      else f"SSH forwarded from 127.0.0.1:{network.host_port}")
        return ip

    def _read(self, path: str, tail: int | None = None) -> str:
        cmd = quote_args(f"tail -n {tail}", [path]) if tail else quote_args("cat", [path])
        return self.host.run(cmd + " 2>/dev/null || true", verbose=False, stdout_tee=None,
                             timeout=60).stdout

    def _alive(self, record: GuestRecord) -> bool:
        script = ('{ read -r st < "/proc/$1/stat"; } 2>/dev/null || exit 1; st=${st##*) }; '
                  '[ "${st%% *}" != Z ] || exit 1; tr "\\0" " " < "/proc/$1/cmdline" | grep -qF -- "$2"')
        res = self.host.run(quote_args("sh -c", [script, "alive", str(record.pid),
                                                   record.paths.pidfile]),
                            ignore_status=True, verbose=False, stdout_tee=None, timeout=60)
        return res.exit_status == 0

    def guest_running(self, ip: str) -> bool:
        """Whether the qemu of guest ``ip`` (started by this object) is still running."""
        return self._alive(self.guest(ip))

    def guest_failure(self, ip: str) -> str:
        """What a dead guest left behind: qemu's stderr and the tail of its console."""
        rec = self.guest(ip)
        stderr = self._read(rec.paths.stderr_log, tail=20).strip()
        console = self._read(rec.paths.serial_log, tail=20).strip()
        return "\n".join(part for part in (stderr and f"qemu stderr:\n{stderr}",
                                            console and f"console:\n{console}") if part)

    def guest(self, ip: str) -> GuestRecord:
        """The record of a guest this object started."""
        try:
            return self.guests[ip]
        except KeyError:
            raise AutoservVirtError(f"no guest {ip} started by this KVM object") from None

    def monitor(self, ip: str, command: str, timeout: float = 30) -> str:
        """Send one HMP monitor ``command`` to guest ``ip``; returns qemu's reply."""
        rec = self.guest(ip)
        res = self.host.run(qemu.monitor_command(rec.paths.monitor, command), timeout=timeout,
                            ignore_status=True, verbose=False, stdout_tee=None)
        if res.exit_status != 0:
            raise AutoservVirtError(f"monitor command {command!r} for guest {ip} failed: "
                                    f"{res.stderr.strip()}")
        return qemu.monitor_reply(res.stdout)

    def reset_guest(self, ip: str) -> None:
        """Hard-reset guest ``ip`` (monitor ``system_reset``): the guest reboots at once."""
        reply = self.monitor(ip, "system_reset")
        if reply:
            raise AutoservVirtError(f"system_reset of guest {ip} failed: {reply}")
        self.log.info("guest %s reset", ip)

    def delete_guest(self, ip: str) -> None:
        """Stop guest ``ip``: ``system_powerdown``, then SIGTERM and SIGKILL after the grace
        period (waiting for the pid to go), remove its files and free its lease."""
        rec = self.guests.get(ip)
        if rec is None:
            raise AutoservVirtError(f"no guest {ip} started by this KVM object")
        t0 = time.monotonic()
        with contextlib.suppress(AutoservError):
            if self._alive(rec):
                self.monitor(ip, "system_powerdown", timeout=15)
        steps = max(1, int(self.powerdown_grace / 0.1))
        script = (
            'alive() { { read -r st < "/proc/$1/stat"; } 2>/dev/null || return 1; st=${st##*) }; '
            '[ "${st%% *}" != Z ] || return 1; tr "\\0" " " < "/proc/$1/cmdline" | grep -qF -- "$2"; }; '
            f'i=0; while alive "$1" "$2" && [ $i -lt {steps} ]; do sleep 0.1; i=$((i+1)); done; '
            'if alive "$1" "$2"; then kill -TERM "$1" 2>/dev/null; i=0; '
            'while alive "$1" "$2" && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; fi; '
            'if alive "$1" "$2"; then kill -KILL "$1" 2>/dev/null; i=0; '
            'while alive "$1" "$2" && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; fi; '
            '! alive "$1" "$2"'
        )
        res = self.host.run(quote_args("sh -c", [script, "stop", str(rec.pid), rec.paths.pidfile]),
                            ignore_status=True, verbose=False, timeout=self.powerdown_grace + 30)
        if res.exit_status != 0:
            self.log.warning("qemu %d of guest %s still running after SIGKILL", rec.pid, ip)
        self._lease("release", ip, ignore_status=True)
        self.guests.pop(ip, None)
        self.log.info("guest %s deleted in %.1f s", ip, time.monotonic() - t0)

    def refresh_guests(self) -> list[str]:
        """Reclaim leases whose qemu is gone (any owner); forget our guests that died.

        Returns the IPs of this object's guests that are still running.
        """
        leases = qemu.parse_leases(self._lease("reclaim").stdout)
        alive = {lease.ip for lease in leases if lease.state in ("alive", "starting")}
        for ip in list(self.guests):
            if ip not in alive:
                self.log.info("guest %s is gone: lease freed", ip)
                self.guests.pop(ip)
        return sorted(self.guests, key=lambda a: tuple(int(x) for x in a.split(".")))

    def leases(self) -> list[qemu.Lease]:
        """Every lease on the host (all autoserv processes), with its state."""
        return qemu.parse_leases(self._lease("list").stdout)

    def close(self) -> None:
        """Delete every guest this object started (idempotent; never raises).

        The job's host registry calls it at the end and on SIGINT/SIGTERM, after
        the :class:`~autoserv.hosts.KVMGuest` objects (newer) and before the KVM
        host itself (older), so guests started with :meth:`new_guest` directly
        do not survive autoserv either.  Modules stay: see :meth:`deinitialize`.
        """
        if self._closed:
            return
        self._closed = True
        try:
            for ip in list(self.guests):
                try:
                    self.delete_guest(ip)
                except Exception as exc:
                    self.log.warning("could not delete guest %s: %s", ip, exc)
            self._drop_tmp()
        finally:
            registry.unregister(self)

    def deinitialize(self) -> None:
        """Delete every guest this object started and remove the modules it inserted."""
        errors = []
        for ip in list(self.guests):
            try:
                self.delete_guest(ip)
            except AutoservError as exc:
                errors.append(f"{ip}: {exc}")
        self.remove_modules()
        self._drop_tmp()
        if errors:
            raise AutoservVirtError("deinitialize: " + "; ".join(errors))

    def console_log(self, ip: str) -> str:
        """The serial console output of guest ``ip`` so far."""
        return self._read(self.guest(ip).paths.serial_log)

    def fetch_console_log(self, ip: str, dest: str) -> None:
        """Copy guest ``ip``'s serial log to the local file ``dest``."""
        text = self.console_log(ip)
        with open(dest, "w", encoding="utf-8") as f:
            f.write(text)
