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
never hand out the same MAC or IP; a lease whose qemu has died is reclaimed, and
so is the guest of an owner process that died (SIGKILL, OOM): its qemu is killed
when the next KVM object on the host starts a guest or refreshes
(:func:`~autoserv.virt.leases.owner_dead`).  In a job each guest is journaled
(:mod:`autoserv.journal`), so ``autoserv cleanup RESULTS_DIR`` ends it too.

Process-wide knobs (for control files that cannot pass arguments):
``AUTOSERV_KVM_ACCEL`` = ``auto`` (default: KVM when ``/dev/kvm`` really works
on the host, else TCG) | ``kvm`` | ``tcg``; ``AUTOSERV_KVM_MODULES`` =
``required`` (default: a host without module support is an error) |
``skip-unsupported`` (skip the module step on such hosts, with a warning).

This module is the public face; the work is done in :mod:`autoserv.virt`
(source, install, modules, leases, guests, qemu argv, shell scripts).
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import random
import shlex
import time
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING

from autoserv import journal
from autoserv.errors import AutoservError, AutoservInstallError, AutoservVirtError
from autoserv.hosts import registry
from autoserv.virt import guests as _guests
from autoserv.virt import modules as _modules
from autoserv.virt import qemu
from autoserv.virt.addresses import Address, parse_addresses
from autoserv.virt.guests import GuestRecord
from autoserv.virt.hypervisor import GuestHypervisor, Hypervisor
from autoserv.virt.install import choose_accel, locate_binaries, send_and_build, write_file
from autoserv.virt.leases import (
    Lease,
    acquire_lease,
    owner_dead,
    owner_tag,
    parse_leases,
    reap_lease,
    run_lease,
)
from autoserv.virt.scripts import (
    BIOS_DIR_CANDIDATES,
    HOST_BIOS_DIRS,
    QEMU_BINARY_CANDIDATES,
    check_bridge_name,
    find_qemu_binary_script,
    ifdown_script,
    ifup_script,
)
from autoserv.virt.source import Source, archive_tar_flag

if TYPE_CHECKING:
    from autoserv.hosts.ssh_exec import HostWatch
    from autoserv.hosts.ssh_host import SSHHost

__all__ = [
    "KVM",
    "Hypervisor",
    "GuestRecord",
    "DEFAULT_STATE_DIR",
    "ACCEL_ENV",
    "MODULES_ENV",
    "QEMU_BINARY_CANDIDATES",
    "BIOS_DIR_CANDIDATES",
    "HOST_BIOS_DIRS",
    "archive_tar_flag",
    "find_qemu_binary_script",
]

log = logging.getLogger("autoserv.kvm")

DEFAULT_STATE_DIR = "/var/lib/autoserv/kvm"
ACCEL_ENV = "AUTOSERV_KVM_ACCEL"
MODULES_ENV = "AUTOSERV_KVM_MODULES"


class KVM(Hypervisor):
    """KVM/qemu on the remote ``host`` (an :class:`~autoserv.hosts.SSHHost`).

    ``state_dir``: remote directory for trees, leases and guest files.
    ``bridge``: the bridge the ``qemu-ifup`` script attaches guest taps to (a
    valid Linux interface name, else an :class:`AutoservVirtError`).
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
        host: SSHHost,
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
        self.bridge = check_bridge_name(bridge)
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
        self.log: logging.Logger = getattr(host, "log", log)
        self._source = Source(self.log)
        self._accel_used: str | None = None
        self._use_tap: bool | None = None
        self._tag = owner_tag()
        self._journaled: dict[str, str | None] = {}  # guest ip -> its journal entry
        self._watcher = _guests.QemuWatcher(host, self.log)
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

    # -- get and install -----------------------------------------------------
    def get(self, location: str | os.PathLike[str] | IO[bytes] | IO[str]) -> str:
        """Fetch the KVM/QEMU source to the controller; returns the local path.

        ``location``: a local file or directory, an ``http://``, ``https://``
        or ``ftp://`` URL (downloaded, progress in the log), or a readable file
        object.  A missing path or a failed download is an :class:`AutoservError`.
        """
        return self._source.get(location)

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
        if self._source.path is None:
            raise AutoservInstallError("kvm.install: call get(location) first to fetch the source")
        if skip_unsupported_modules is None:
            skip_unsupported_modules = os.environ.get(MODULES_ENV, "required") == "skip-unsupported"
        h = self.host
        t0 = time.monotonic()
        h.run(shlex.join(["mkdir", "-p", self.state_dir, posixpath.join(self.state_dir, "src"),
                          posixpath.join(self.state_dir, "trees")]))
        write_file(h, self.ifup, ifup_script(self.bridge))
        write_file(h, self.ifdown, ifdown_script(self.bridge))
        tree = send_and_build(h, self._source, self.state_dir, build=build, patched_kernel=not insert_modules,
                              configure_args=configure_args, timeout=build_timeout, log=self.log)
        self.qemu_binary, self.bios_dirs = locate_binaries(h, tree, self.log)
        if insert_modules:
            self.inserted_modules = _modules.insert_modules(h, tree, skip_unsupported_modules, self.log)
        self._accel_used = choose_accel(h, self.qemu_binary, self.accel, self.log)
        self.addresses = pool
        self.tree = tree
        self.log.info("KVM installed on %s in %.1f s: %s (accel %s, %d addresses)", h.hostname,
                      time.monotonic() - t0, self.qemu_binary, self._accel_used, len(pool))

    def remove_modules(self) -> None:
        """Remove the modules :meth:`install` inserted (vendor module first)."""
        self.inserted_modules = _modules.remove_modules(self.host, self.inserted_modules, self.log)

    # -- guests --------------------------------------------------------------
    def _network_for(self, ip: str) -> qemu.Network:
        if self._use_tap is None:
            if self.network == "auto":
                has = self.host.run(shlex.join(["test", "-d", f"/sys/class/net/{self.bridge}/bridge"]),
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
        if self.qemu_binary is None or not self.addresses:
            raise AutoservVirtError("KVM is not installed: call install(addresses) first")
        options = qemu.split_options(qemu_options)
        self._reap_dead_owners(self.leases())
        mac, ip = acquire_lease(self.host, self.state_dir, self._tag, self.addresses)
        try:
            record = _guests.launch(
                self.host, binary=self.qemu_binary, bios_dirs=self.bios_dirs,
                accel=self._accel_used or "tcg", state_dir=self.state_dir, ip=ip, mac=mac,
                options=options, network_for=lambda: self._network_for(ip), log=self.log,
            )
            self.guests[ip] = record
            self._journaled[ip] = journal.record(
                "guest", self.host, state_dir=self.state_dir, ip=ip, mac=mac, qemu_pid=record.pid,
                tap=record.network.ifname if isinstance(record.network, qemu.TapNetwork) else None,
                owner=self._tag, directory=record.paths.directory)  # for autoserv cleanup
            try:
                _guests.check_started(self.host, record, self.start_check, self.log)
            except AutoservVirtError:
                self.guests.pop(ip, None)
                journal.ended(self._journaled.pop(ip, None))
                raise
        except BaseException:
            with contextlib.suppress(Exception):
                run_lease(self.host, self.state_dir, "release", ip)
            raise
        return ip

    def guest_running(self, ip: str) -> bool:
        """Whether the qemu of guest ``ip`` (started by this object) is still running."""
        return _guests.qemu_alive(self.host, self.guest(ip))

    def guest_failure(self, ip: str) -> str:
        """What a dead guest left behind: qemu's stderr and the tail of its console."""
        return _guests.failure_report(self.host, self.guest(ip))

    def watch_guest(self, ip: str) -> HostWatch | None:
        """A watch on guest ``ip``'s qemu (one remote watcher for all guests of this object):
        it reports at once when qemu ends; None when the KVM host cannot be reached now."""
        return _guests.start_watch(self._watcher, list(self.guests.values()), self.guest(ip),
                                   self.log)

    def guest(self, ip: str) -> GuestRecord:
        """The record of a guest this object started."""
        try:
            return self.guests[ip]
        except KeyError:
            raise AutoservVirtError(f"no guest {ip} started by this KVM object") from None

    def monitor(self, ip: str, command: str, timeout: float = 30) -> str:
        """Send one HMP monitor ``command`` to guest ``ip``; returns qemu's reply."""
        return _guests.monitor(self.host, self.guest(ip), command, timeout)

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
            if _guests.qemu_alive(self.host, rec):
                self.monitor(ip, "system_powerdown", timeout=15)
        if not _guests.stop(self.host, rec, self.powerdown_grace):
            self.log.warning("qemu %d of guest %s still running after SIGKILL", rec.pid, ip)
        run_lease(self.host, self.state_dir, "release", ip, ignore_status=True)
        self.guests.pop(ip, None)
        journal.ended(self._journaled.pop(ip, None))
        self.log.info("guest %s deleted in %.1f s", ip, time.monotonic() - t0)

    def refresh_guests(self) -> list[str]:
        """Reclaim leases whose qemu is gone (any owner) and the guests of owners that died
        (their qemu killed); forget our guests that died.

        Returns the IPs of this object's guests that are still running.
        """
        leases = parse_leases(run_lease(self.host, self.state_dir, "reclaim").stdout)
        reaped = self._reap_dead_owners(leases)
        alive = {lease.ip for lease in leases if lease.state in ("alive", "starting")} - reaped
        for ip in list(self.guests):
            if ip not in alive:
                self.log.info("guest %s is gone: lease freed", ip)
                self.guests.pop(ip)
                journal.ended(self._journaled.pop(ip, None))
        return sorted(self.guests, key=lambda a: tuple(int(x) for x in a.split(".")))

    def _reap_dead_owners(self, leases: list[Lease]) -> set[str]:
        """End the guests in ``leases`` whose owner process died (:func:`owner_dead`), even
        when their qemu still runs; returns their IPs."""
        reaped = set()
        for lease in leases:
            if lease.state in ("dead", "reclaimed") or lease.owner == self._tag:
                continue
            if not owner_dead(lease.owner):
                continue
            try:
                what = reap_lease(self.host, self.state_dir, lease.ip, lease.pid, lease.owner)
            except AutoservVirtError as exc:
                self.log.warning("%s", exc)
                continue
            if what.split()[0] in ("killed", "freed"):
                reaped.add(lease.ip)
                self.log.warning("guest %s on %s belonged to %s, which is dead: %s", lease.ip,
                                 self.host.hostname, lease.owner,
                                 "qemu killed, lease freed" if what.startswith("killed")
                                 else "lease freed")
        return reaped

    def leases(self) -> list[Lease]:
        """Every lease on the host (all autoserv processes), with its state."""
        return parse_leases(run_lease(self.host, self.state_dir, "list").stdout)

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
            self._watcher.close()
            for ip in list(self.guests):
                try:
                    self.delete_guest(ip)
                except Exception as exc:
                    self.log.warning("could not delete guest %s: %s", ip, exc)
            self._source.drop()
        finally:
            registry.unregister(self)

    def deinitialize(self) -> None:
        """Delete every guest this object started and remove the modules it inserted."""
        errors = []
        self._watcher.close()
        for ip in list(self.guests):
            try:
                self.delete_guest(ip)
            except AutoservError as exc:
                errors.append(f"{ip}: {exc}")
        self.remove_modules()
        self._source.drop()
        if errors:
            raise AutoservVirtError("deinitialize: " + "; ".join(errors))

    def console_log(self, ip: str) -> str:
        """The serial console output of guest ``ip`` so far."""
        return _guests.read_remote(self.host, self.guest(ip).paths.serial_log)

    def fetch_console_log(self, ip: str, dest: str) -> None:
        """Copy guest ``ip``'s serial log to the local file ``dest``."""
        text = self.console_log(ip)
        with open(dest, "w", encoding="utf-8") as f:
            f.write(text)


if TYPE_CHECKING:
    def _kvm_is_a_guest_hypervisor(k: KVM) -> GuestHypervisor:
        return k  # mypy checks KVM against the protocol hosts.KVMGuest takes
