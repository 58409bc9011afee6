"""Host classes: ``Host`` → ``RemoteHost`` → ``SSHHost`` → ``Guest`` → ``KVMGuest``.

``create_host(machine)`` builds the right class from a machine string;
``set_ssh_defaults(...)`` sets what every SSH host uses unless told otherwise
(in the current job context: :mod:`autoserv.hosts.context`).
"""

from __future__ import annotations

import sys
from typing import Any

# paramiko imports invoke (~40 ms of every start, where invoke is installed, e.g. with
# Fabric) only to run the ``Match exec`` lines of ssh configs: load paramiko without it; a
# config that has such a line gets it then (paramiko_ext.enable_match_exec).
_without_invoke = "paramiko" not in sys.modules and "invoke" not in sys.modules
if _without_invoke:
    sys.modules["invoke"] = None  # type: ignore[assignment]  # importing it raises ImportError
try:
    import paramiko  # noqa: F401
finally:
    if _without_invoke and sys.modules.get("invoke", 0) is None:
        del sys.modules["invoke"]

from autoserv.hosts import context, registry  # noqa: E402
from autoserv.hosts.base import Host, RemoteHost, set_status_hook  # noqa: E402
from autoserv.hosts.defaults import get_ssh_defaults, reset_ssh_defaults, set_ssh_defaults  # noqa: E402
from autoserv.hosts.machine import Machine, mask_machine, parse_machine  # noqa: E402
from autoserv.hosts.ssh_host import SSHHost  # noqa: E402

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
