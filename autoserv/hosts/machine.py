"""Machine strings ``[user[:password]@]host[:port]`` (IPv6 in brackets), parsed once.

:meth:`Machine.parse` is the one parser: the CLI validates ``-m``/``-M``
entries with it, the job takes its passwords (to redact them) and labels from
the result, and :class:`~autoserv.hosts.SSHHost` accepts the value itself.
:func:`parse_machine` (the tuple form control files know) and
:func:`mask_machine` are built on it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from autoserv import inputs
from autoserv.errors import AutoservUsageError
from autoserv.secret import Secret

__all__ = ["Machine", "parse_machine", "mask_machine", "machine_label"]

_HOST_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _split_credentials(text: str) -> tuple[str | None, str | None, str]:
    """``user:pw@rest`` -> ``(user, pw, rest)``; the last ``@`` ends the credentials."""
    if "@" not in text:
        return None, None, text
    cred, rest = text.rsplit("@", 1)
    user, sep, password = cred.partition(":")
    return user, (password if sep else None), rest


@dataclass(frozen=True)
class Machine:
    """One parsed machine entry.

    ``password`` is a :class:`~autoserv.secret.Secret` (``***`` in reprs);
    ``label`` is the entry as given without its password (``user@host:port``),
    safe for logs, status.log, subdirectory names and console prefixes;
    ``spec`` is the entry as given (with the password: what a control file's
    ``machines`` holds), kept out of the repr.
    """

    host: str
    user: str | None = None
    password: Secret | None = None
    port: int | None = None
    label: str = ""
    spec: str = field(default="", repr=False, compare=False)

    @classmethod
    def parse(cls, text: str, *, check_host: bool = True) -> Machine:
        """Parse ``[user[:password]@]host[:port]``; ``[::1]:2222`` and bare IPv6 work.

        An empty user or host, a bad port or (with ``check_host``) a host name
        with characters no host can have raises :class:`AutoservUsageError`
        naming the entry with its password masked.  ``check_host=False``
        accepts any host text (an ``~/.ssh/config`` alias).
        """
        original = text
        user, password, rest = _split_credentials(text.strip())
        if user is not None and not user:
            raise AutoservUsageError(f"invalid machine {mask_machine(original)!r}: empty user name")
        host, port = rest, None
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                raise AutoservUsageError(f"invalid machine {mask_machine(original)!r}: unclosed '['")
            host, tail = rest[1:end], rest[end + 1 :]
            if tail:
                if not tail.startswith(":"):
                    raise AutoservUsageError(f"invalid machine {mask_machine(original)!r}")
                port = _port(tail[1:], original)
        elif rest.count(":") == 1:
            host, port_text = rest.split(":")
            port = _port(port_text, original)
        if not host:
            raise AutoservUsageError(f"invalid machine {mask_machine(original)!r}: empty host name")
        if check_host and ":" not in host and not _HOST_RE.match(host):
            raise AutoservUsageError(
                f"invalid machine {mask_machine(original)!r}: bad host name {host!r}"
            )
        if check_host and ":" in host and not _is_ipv6(host):  # h1:22:23, [::g]
            raise AutoservUsageError(
                f"invalid machine {mask_machine(original)!r}: {host!r} is not an IPv6 address"
            )
        why = inputs.check_host_name(host) if check_host else None
        if why is not None:  # a DNS name has parts of at most 63 characters
            raise AutoservUsageError(f"invalid machine {mask_machine(original)!r}: host name {why}")
        label = f"{user}@{rest}" if user is not None else rest
        return cls(
            host=host, user=user, password=Secret(password) if password else None, port=port,
            label=label, spec=original,
        )

    def __str__(self) -> str:
        return self.label


def _is_ipv6(host: str) -> bool:
    """True when ``host`` is an IPv6 address (a zone as in ``fe80::1%eth0`` allowed)."""
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _port(text: str, original: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise AutoservUsageError(f"invalid machine {mask_machine(original)!r}: bad port {text!r}")
    return int(text)


def parse_machine(
    machine: str, user: str | None = None, password: str | None = None, port: int | None = None
) -> tuple[str, str | None, str | None, int | None]:
    """Split ``user:pass@host:port`` into ``(hostname, user, password, port)``.

    The tuple form of :meth:`Machine.parse` (control files use it); parts
    missing from ``machine`` take the given defaults.
    """
    m = Machine.parse(machine)
    return (
        m.host,
        m.user if m.user is not None else user,
        m.password.reveal() if m.password is not None else password,
        m.port if m.port is not None else port,
    )


def mask_machine(machine: str) -> str:
    """A machine string safe to log: its password replaced by ``***`` (never raises)."""
    user, password, rest = _split_credentials(machine)
    return f"{user}:***@{rest}" if password is not None else machine


def machine_label(text: str) -> str:
    """The label of any text that may be a machine string: ``user:pw@host`` -> ``user@host``.

    Never raises: text that is no valid machine keeps everything but a password.
    """
    user, password, rest = _split_credentials(text)
    return f"{user}@{rest}" if password is not None else text
