"""Host classes: ``Host`` → ``RemoteHost`` → ``SSHHost`` → ``Guest`` → ``KVMGuest``.

``create_host(machine)`` builds the right class from a machine string;
``set_ssh_defaults(...)`` sets what every SSH host uses unless told otherwise
(in the current job context: :mod:`autoserv.hosts.context`).
"""

from __future__ import annotations

from typing import Any

from autoserv.hosts import context, registry
from autoserv.hosts.base import Host, RemoteHost, set_status_hook
from autoserv.hosts.defaults import get_ssh_defaults, reset_ssh_defaults, set_ssh_defaults
from autoserv.hosts.machine import Machine, mask_machine, parse_machine
from autoserv.hosts.ssh_host import SSHHost

__all__ = [
    "Host",
    "RemoteHost",
    "SSHHost",
    "Guest",
    "KVMGuest",
    "create_host",
    "Machine",
    "parse_machine",
    "mask_machine",
    "set_ssh_defaults",
    "get_ssh_defaults",
    "reset_ssh_defaults",
    "set_status_hook",
    "registry",
    "context",
]


def create_host(hostname: str | Machine, **args: Any) -> SSHHost:
    """An :class:`SSHHost` for a machine string ``[user[:pass]@]host[:port]`` (or a parsed one).

    Keyword arguments (``user``, ``port``, ``password``, ``key_file``, ...) override
    what the string says.  ``initialize`` and ``auto_monitor`` are accepted and ignored,
    as the original did for SSH hosts.  A malformed string raises :class:`AutoservUsageError`.
    """
    args.pop("initialize", None)
    args.pop("auto_monitor", None)
    machine = hostname if isinstance(hostname, Machine) else Machine.parse(hostname)
    return SSHHost(machine, **args)


def __getattr__(name: str) -> Any:
    # Guests pull in the KVM machinery; import them on first use.
    if name in ("Guest", "KVMGuest"):
        from autoserv.hosts import guest

        return getattr(guest, name)
    raise AttributeError(name)
