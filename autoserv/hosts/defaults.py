"""SSH defaults: the settings every SSH host uses unless told otherwise (a pure value).

Precedence for each setting of an :class:`~autoserv.hosts.SSHHost`: the
argument given to the host, then these defaults (the job's, from the command
line, or the environment), then ``~/.ssh/config`` (or ``--ssh-config``),
then the built-in value.  A password may come from ``AUTOSERV_SSH_PASS`` so
it never has to appear on a command line.  Which defaults are in force is
part of the job context (:mod:`autoserv.hosts.context`).
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

    def updated(self, **kwargs: object) -> SSHDefaults:
        """These defaults with ``kwargs`` set (``None`` values leave a setting as it was).

        An unknown name raises :class:`TypeError`, an unknown host key policy
        :class:`ValueError`; a password is wrapped in a :class:`Secret`.
        """
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
        return replace(self, **values)  # type: ignore[arg-type]

    def with_environment(self) -> SSHDefaults:
        """These defaults with the environment's password and ssh config filled in."""
        d = self
        if d.password is None and os.environ.get(PASSWORD_ENV):
            d = replace(d, password=Secret(os.environ[PASSWORD_ENV]))
        if d.ssh_config is None and os.environ.get(SSH_CONFIG_ENV):
            d = replace(d, ssh_config=os.environ[SSH_CONFIG_ENV])
        return d


def set_ssh_defaults(**kwargs: object) -> SSHDefaults:
    """Set the SSH defaults of the current context (``user``, ``port``, ``password``,
    ``key_file``, ``host_key_policy``, ``known_hosts``, ``ssh_config``, ``connect_timeout``).

    ``None`` values leave a setting as it was.  Returns the new defaults.  A
    job sets its own (:meth:`autoserv.job.ServerJob.run`); this is for library use.
    """
    from autoserv.hosts import context

    ssh = context.current().ssh.updated(**kwargs)
    context.update(ssh=ssh)
    return ssh


def reset_ssh_defaults() -> None:
    """Back to built-in defaults in the current context."""
    from autoserv.hosts import context

    context.update(ssh=SSHDefaults())


def get_ssh_defaults() -> SSHDefaults:
    """The defaults in force, with the environment's password and ssh config filled in."""
    from autoserv.hosts import context

    return context.current().ssh.with_environment()
