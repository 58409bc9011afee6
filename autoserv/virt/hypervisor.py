"""What a hypervisor is to the rest of autoserv.

:class:`Hypervisor` is the base of hypervisor objects (Autotest's
``hypervisor.Hypervisor``), bound to one host.  :class:`GuestHypervisor` is the
typed protocol a guest host (:class:`~autoserv.hosts.KVMGuest`) is given: exactly
the methods and attributes it uses of the hypervisor that started it, so another
hypervisor (or a test double for pure tests) needs only these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from autoserv.hosts.ssh_exec import HostWatch
    from autoserv.hosts.ssh_host import SSHHost
    from autoserv.virt.guests import GuestRecord

__all__ = ["Hypervisor", "GuestHypervisor"]


class Hypervisor:
    """Base of hypervisors (Autotest's ``hypervisor.Hypervisor``): bound to one host."""

    def __init__(self, host: SSHHost) -> None:
        self.host = host

    def install(self, host: SSHHost | None = None) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class GuestHypervisor(Protocol):
    """The hypervisor as :class:`~autoserv.hosts.KVMGuest` uses it (:class:`~autoserv.kvm.KVM`
    is one)."""

    @property
    def host(self) -> SSHHost:
        """The host the guests run on; the guests' consoles are reached through it."""
        ...

    @property
    def guest_host_keys(self) -> Sequence[str]:
        """OpenSSH public keys the guests' SSH servers use (pinned); empty: check strictly."""
        ...

    @property
    def guests(self) -> Mapping[str, GuestRecord]:
        """The guests this hypervisor started and has not deleted, by IP."""
        ...

    def new_guest(self, qemu_options: str | Sequence[str]) -> str:
        """Start a guest; returns its IP."""
        ...

    def guest(self, ip: str) -> GuestRecord:
        """The record of a guest this hypervisor started."""
        ...

    def guest_running(self, ip: str) -> bool:
        """Whether the guest's virtual machine still runs."""
        ...

    def guest_failure(self, ip: str) -> str:
        """What a dead guest left behind (for an error message)."""
        ...

    def watch_guest(self, ip: str) -> HostWatch | None:
        """A watch that reports at once when the guest's virtual machine ends (None: cannot
        watch now); a command in the guest waits on it too."""
        ...

    def reset_guest(self, ip: str) -> None:
        """Hard-reset the guest."""
        ...

    def fetch_console_log(self, ip: str, dest: str) -> None:
        """Copy the guest's serial log to the local file ``dest``."""
        ...

    def delete_guest(self, ip: str) -> None:
        """Stop the guest and free what it held."""
        ...
