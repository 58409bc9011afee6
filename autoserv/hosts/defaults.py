"""Process-wide SSH defaults: the runner sets them from its flags once.

Precedence for each setting of an :class:`~autoserv.hosts.SSHHost`: the
argument given to the host, then these defaults (from the command line or
the environment), then ``~/.ssh/config`` (or ``--ssh-config``), then the
built-in value.  A password may come from ``AUTOSERV_SSH_PASS`` so it never
has to appear on a command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

from autoserv.secret import Secret

HOST_KEY_POLICIES = ("strict", "accept-new", "off")
PASSWORD_ENV = "AUTOSERV_SSH_PASS"
SSH_CONFIG_ENV = "AUTOSERV_SSH_CONFIG"


@dataclass(frozen=True)
class SSHDefaults:
    """Settings applied to every SSH host that does not set them itself."""

    user: str | None = None
    port: int | None = None
    password: Secret | None = None
    key_file: str | None = None
    host_key_policy: str | None = None
    known_hosts: str | None = None
    ssh_config: str | None = None
    connect_timeout: float | None = None


_defaults = SSHDefaults()


def set_ssh_defaults(**kwargs: object) -> SSHDefaults:
    """Set process-wide SSH defaults (``user``, ``port``, ``password``, ``key_file``,
    ``host_key_policy``, ``known_hosts``, ``ssh_config``, ``connect_timeout``).

    ``None`` values leave a setting as it was.  Returns the new defaults.
    """
    global _defaults
    names = {f.name for f in fields(SSHDefaults)}
    unknown = set(kwargs) - names
    if unknown:
        raise TypeError(f"unknown SSH default(s): {', '.join(sorted(unknown))}")
    values = {k: v for k, v in kwargs.items() if v is not None}
    if "password" in values and not isinstance(values["password"], Secret):
        values["password"] = Secret(str(values["password"]))
    policy = values.get("host_key_policy")
    if policy is not None and policy not in HOST_KEY_POLICIES:
        raise ValueError(f"host key policy must be one of {', '.join(HOST_KEY_POLICIES)}")
    _defaults = replace(_defaults, **values)  # type: ignore[arg-type]
    return _defaults


def reset_ssh_defaults() -> None:
    """Back to built-in defaults (tests, or a new job in the same process)."""
    global _defaults
    _defaults = SSHDefaults()


def get_ssh_defaults() -> SSHDefaults:
    """The current defaults, with the environment's password and ssh config filled in."""
    d = _defaults
    if d.password is None and os.environ.get(PASSWORD_ENV):
        d = replace(d, password=Secret(os.environ[PASSWORD_ENV]))
    if d.ssh_config is None and os.environ.get(SSH_CONFIG_ENV):
        d = replace(d, ssh_config=os.environ[SSH_CONFIG_ENV])
    return d
