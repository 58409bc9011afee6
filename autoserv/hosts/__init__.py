"""Host classes: ``Host`` → ``RemoteHost`` → ``SSHHost`` → ``Guest`` → ``KVMGuest``.

``create_host(machine)`` builds the right class from a machine string;
``set_ssh_defaults(...)`` sets what every SSH host uses unless told otherwise.
"""

from __future__ import annotations

from typing import Any

from autoserv.hosts import registry
from autoserv.hosts.base import Host, RemoteHost, set_status_hook
from autoserv.hosts.defaults import get_ssh_defaults, reset_ssh_defaults, set_ssh_defaults
from autoserv.hosts.machine import mask_machine, parse_machine
from autoserv.hosts.ssh_host import SSHHost

__all__ = [
    "Host",
    "RemoteHost",
    "SSHHost",
    "Guest",
    "KVMGuest",
    "create_host",
    "parse_machine",
    "mask_machine",
    "set_ssh_defaults",
    "get_ssh_defaults",
    "reset_ssh_defaults",
    "set_status_hook",
    "registry",
]


def create_host(hostname: str, **args: Any) -> SSHHost:
    """An :class:`SSHHost` for a machine string ``[user[:pass]@]host[:port]``.

    Keyword arguments (``user``, ``port``, ``password``, ``key_file``, ...) override
    what the string says.  ``initialize`` and ``auto_monitor`` are accepted and ignored,
    as the original did for SSH hosts.
    """
    args.pop("initialize", None)
    args.pop("auto_monitor", None)
    host, user, password, port = parse_machine(hostname)
    args.setdefault("user", user)
    args.setdefault("password", password)
    args.setdefault("port", port)
    return SSHHost(host, **args)


def __getattr__(name: str) -> Any:
    # Guests pull in the KVM machinery; import them on first use.
    if name in ("Guest", "KVMGuest"):
        from autoserv.hosts import guest

        return getattr(guest, name)
    raise AttributeError(name)
