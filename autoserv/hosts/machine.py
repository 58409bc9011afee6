"""Parsing machine strings: ``[user[:password]@]host[:port]`` (IPv6 in brackets)."""

from __future__ import annotations

import re

from autoserv.errors import AutoservUsageError

_HOST_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def parse_machine(
    machine: str, user: str | None = None, password: str | None = None, port: int | None = None
) -> tuple[str, str | None, str | None, int | None]:
    """Split ``user:pass@host:port`` into ``(hostname, user, password, port)``.

    Parts missing from ``machine`` take the given defaults.  ``[::1]:2222``
    and bare IPv6 addresses work.  An empty host, a bad port or a host name
    with characters no host can have raises :class:`AutoservUsageError`.
    """
    original = machine
    machine = machine.strip()
    if "@" in machine:
        cred, machine = machine.rsplit("@", 1)
        if ":" in cred:
            user, password = cred.split(":", 1)
        else:
            user = cred
        if not user:
            raise AutoservUsageError(f"invalid machine {_safe(original)!r}: empty user name")
    host = machine
    if machine.startswith("["):
        end = machine.find("]")
        if end < 0:
            raise AutoservUsageError(f"invalid machine {_safe(original)!r}: unclosed '['")
        host, rest = machine[1:end], machine[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise AutoservUsageError(f"invalid machine {_safe(original)!r}")
            port = _port(rest[1:], original)
    elif machine.count(":") == 1:
        host, port_text = machine.split(":")
        port = _port(port_text, original)
    if not host:
        raise AutoservUsageError(f"invalid machine {_safe(original)!r}: empty host name")
    if ":" not in host and not _HOST_RE.match(host):
        raise AutoservUsageError(f"invalid machine {_safe(original)!r}: bad host name {host!r}")
    return host, user, password, port


def _port(text: str, original: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise AutoservUsageError(f"invalid machine {_safe(original)!r}: bad port {text!r}")
    return int(text)


def _safe(machine: str) -> str:
    """The machine string with any password masked, for error messages."""
    if "@" in machine:
        cred, rest = machine.rsplit("@", 1)
        if ":" in cred:
            return f"{cred.split(':', 1)[0]}:***@{rest}"
    return machine


def mask_machine(machine: str) -> str:
    """Public alias: a machine string safe to log (password replaced by ``***``)."""
    return _safe(machine)
