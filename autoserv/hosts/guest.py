"""Guests: SSH hosts that are virtual machines started by a hypervisor.

``hosts.KVMGuest(kvm, qemu_options)`` starts a qemu guest through
``kvm.new_guest(qemu_options)`` and is from then on an
:class:`~autoserv.hosts.SSHHost` whose hostname is the leased IP (user root,
port 22).  Its SSH host key is known in advance: the keys given to the
:class:`~autoserv.kvm.KVM` object (``guest_host_keys``) are pinned, and
without them the key must already be in known_hosts (policy ``strict``) —
never learned blindly.

``close()`` (idempotent; the job's host registry calls it at the end of the
job and on SIGINT/SIGTERM) copies the serial log into the job's results
directory, deletes the guest (its qemu, files and lease) and disconnects.
``g.console`` is a pexpect handle on the serial console, reached through the
KVM host's SSH connection (no network to the guest needed).

A command in the guest also waits on a watch of its qemu on the KVM host
(``kvm.watch_guest``): when the virtual machine dies under it, ``run()`` ends at
once with :class:`~autoserv.errors.AutoservGuestDiedError` (even with
``ignore_status``), instead of waiting on a connection that no longer answers
until the command's timeout.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paramiko
import pexpect.fdpexpect

from autoserv.deadline import Deadline
from autoserv.errors import AutoservError, AutoservGuestDiedError, AutoservVirtError
from autoserv.hosts import context
from autoserv.hosts.ssh_exec import SSHExecution
from autoserv.hosts.ssh_host import SSHHost
from autoserv.result import CmdResult
from autoserv.run_core import Execution, Failure, Stdin
from autoserv.streams import StreamCollector
from autoserv.virt.hypervisor import GuestHypervisor
from autoserv.virt.qemu import UserNetwork
from autoserv.virt.scripts import console_command

__all__ = ["Guest", "KVMGuest", "GuestConsole", "job_results_dir"]


def job_results_dir() -> str | None:
    """The results directory of the job running in this process (its context), or None."""
    return context.current().resultdir


class GuestConsole(pexpect.fdpexpect.fdspawn):
    """A pexpect handle on a guest's serial console.

    Starts with everything the console printed since boot, then follows it
    live; ``send``/``sendline`` type into the console.  ``close()`` ends the
    remote reader.
    """

    def __init__(self, transport: paramiko.Transport, command: str, timeout: float = 30,
                 **kwargs: Any) -> None:
        self._chan = transport.open_session(timeout=30)
        self._chan.exec_command(command)
        self._local, self._remote = socket.socketpair()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._from_chan, daemon=True, name="autoserv-console-out"),
            threading.Thread(target=self._to_chan, daemon=True, name="autoserv-console-in"),
        ]
        for t in self._threads:
            t.start()
        super().__init__(self._local.fileno(), timeout=timeout, encoding="utf-8",
                         codec_errors="replace", **kwargs)

    def _pump(self, read: Callable[[int], bytes], write: Callable[[bytes], object],
              errors: tuple[type[BaseException], ...]) -> None:
        """Copy from ``read`` to ``write`` until EOF, :meth:`close` or one of ``errors``."""
        try:
            while not self._stop.is_set():
                data = read(65536)
                if not data:
                    break
                write(data)
        except errors:
            pass

    def _from_chan(self) -> None:
        try:
            self._pump(self._chan.recv, self._remote.sendall, (OSError,))
        finally:
            with contextlib.suppress(OSError):
                self._remote.shutdown(socket.SHUT_WR)

    def _to_chan(self) -> None:
        self._pump(self._remote.recv, self._chan.sendall, (OSError, EOFError, paramiko.SSHException))

    def close(self) -> None:  # type: ignore[override]
        """Stop following the console (idempotent)."""
        self._stop.set()
        with contextlib.suppress(Exception):
            self._chan.close()
        with contextlib.suppress(OSError):
            self._remote.close()
        with contextlib.suppress(Exception):
            super().close()
        with contextlib.suppress(OSError):
            self._local.close()


class Guest(SSHHost):
    """A virtual machine reached over SSH; ``hypervisor`` is what started it."""

    def __init__(self, hostname: str, hypervisor: GuestHypervisor, **ssh_args: Any) -> None:
        self.hypervisor = hypervisor
        super().__init__(hostname, **ssh_args)


class KVMGuest(Guest):
    """A qemu guest started on ``kvm`` (a :class:`~autoserv.kvm.KVM`, or any
    :class:`~autoserv.virt.hypervisor.GuestHypervisor`) with ``qemu_options``.

    ``ssh_args`` go to :class:`~autoserv.hosts.SSHHost` (``key_file``,
    ``known_hosts``, ``connect_timeout``, ...).  The control file calls
    :meth:`wait_up` itself, as with Autotest.
    """

    LIVENESS_INTERVAL = 5.0  # seconds between checks that qemu still runs, in wait_up()

    def __init__(self, kvm: GuestHypervisor, qemu_options: str | Sequence[str], **ssh_args: Any) -> None:
        self.kvm = kvm
        self._console: GuestConsole | None = None
        self._deleted = False
        ip = kvm.new_guest(qemu_options)
        self.ip = ip
        try:
            record = kvm.guest(ip)
            ssh_args.setdefault("user", "root")
            if isinstance(record.network, UserNetwork):
                # user-mode networking: SSH forwarded to 127.0.0.1:<port> on the KVM host,
                # reached through the host's own SSH connection
                ssh_args.setdefault("via", kvm.host)
                ssh_args.setdefault("via_target", ("127.0.0.1", record.network.host_port))
            if kvm.guest_host_keys:
                ssh_args.setdefault("pinned_host_keys", kvm.guest_host_keys)
            else:
                ssh_args.setdefault("host_key_policy", "strict")
            if ssh_args.get("host_key_policy") in ("accept-new", "off"):
                raise AutoservVirtError(
                    "KVMGuest: guest host keys are pinned or checked strictly, never "
                    f"accepted blindly (host_key_policy={ssh_args['host_key_policy']!r})"
                )
            super().__init__(ip, kvm, **ssh_args)
        except BaseException:
            with contextlib.suppress(Exception):
                kvm.delete_guest(ip)
            raise
        self.log.info("guest %s on %s (MAC %s)", ip, kvm.host.hostname, record.mac)

    def wait_up(self, timeout: float | None = None) -> bool:
        """Wait until the guest answers over SSH; False when ``timeout`` passes first.

        A guest that died (kernel panic with ``-no-reboot``, qemu crash, killed)
        is an :class:`~autoserv.errors.AutoservGuestDiedError` (an
        :class:`AutoservVirtError`) with qemu's stderr and the console tail,
        instead of a wait that never ends: the watch of its qemu fires at once,
        and every ``LIVENESS_INTERVAL`` seconds qemu is checked on the KVM host.
        """
        deadline = Deadline(timeout)
        while True:
            try:
                if super().wait_up(deadline.remaining(self.LIVENESS_INTERVAL)):
                    return True
                died = not deadline.expired() and not self.kvm.guest_running(self.ip)
            except AutoservGuestDiedError:  # a probe saw the watch of its qemu fire
                died = True
            if died:
                raise self._died(f"while waiting for it to come up (after {deadline.elapsed():.0f} s)",
                                 None) from None
            if deadline.expired():
                return False
            self.log.debug("guest %s: qemu running, SSH not answering yet (%.0f s)",
                           self.ip, deadline.elapsed())

    # -- run: the command also waits on the watch of the guest's qemu ----------------------
    def _died(self, while_: str, result: CmdResult | None) -> AutoservGuestDiedError:
        """The error for a guest whose qemu ended (the connection to it is dropped: it stalls)."""
        self.disconnect()
        detail = ""
        with contextlib.suppress(AutoservError):
            detail = self.kvm.guest_failure(self.ip)
        return AutoservGuestDiedError(
            f"guest {self.ip} on {self.kvm.host.hostname} died {while_}"
            + (f"\n{detail}" if detail else ""), result)

    def _answers(self, timeout: float) -> bool:
        """Before each probe of :meth:`wait_up`: a guest whose qemu ended never will."""
        watch = self.kvm.watch_guest(self.ip) if self.ip in self.kvm.guests else None
        if watch is not None and watch.gone():
            raise AutoservGuestDiedError(f"guest {self.ip} died", None)  # (wait_up says more)
        return super()._answers(timeout)

    def _start(self, command: str, stdin: Stdin, out: StreamCollector, err: StreamCollector,
               connect_timeout: float | None) -> Execution:
        watch = self.kvm.watch_guest(self.ip) if self.ip in self.kvm.guests else None
        if watch is not None and watch.gone():
            raise self._died("before the command could start", None)
        execution = super()._start(command, stdin, out, err, connect_timeout)
        if isinstance(execution, SSHExecution):
            execution.watch = watch
        return execution

    def _run_error(self, failure: Failure, result: CmdResult, execution: Execution,
                   timeout: float | None) -> Exception:
        if failure == "lost" and isinstance(execution, SSHExecution) and execution.gone:
            return self._died("while running a command", result)
        return super()._run_error(failure, result, execution, timeout)

    @property
    def console(self) -> GuestConsole:
        """A pexpect handle on the serial console (opened on first use)."""
        if self._console is None or self._console.closed:
            rec = self.kvm.guest(self.ip)
            self._console = GuestConsole(self.kvm.host.transport(), console_command(rec.paths))
        return self._console

    def reset(self) -> None:
        """Hard reset through the qemu monitor (``system_reset``)."""
        self.kvm.reset_guest(self.ip)

    def save_console_log(self, directory: str | None = None) -> str | None:
        """Copy the serial log to ``<directory>/guest-<ip>.serial.log`` (default: the job's
        results dir); returns the path, or None outside a job."""
        directory = directory or job_results_dir()
        if directory is None:
            return None
        path = os.path.join(directory, f"guest-{self.ip}.serial.log")
        self.kvm.fetch_console_log(self.ip, path)
        return path

    def close(self) -> None:
        """Disconnect, save the serial log (under a job), delete the guest; idempotent."""
        try:
            super().close()
        finally:
            if self._console is not None:
                self._console.close()
            if not self._deleted:
                self._deleted = True
                try:
                    with contextlib.suppress(AutoservError, OSError):
                        saved = self.save_console_log()
                        if saved:
                            self.log.info("serial log of guest %s saved to %s", self.ip, saved)
                finally:
                    if self.ip in self.kvm.guests:
                        self.kvm.delete_guest(self.ip)
