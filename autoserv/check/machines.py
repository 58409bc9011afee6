"""Checking ``-m``/``-M`` machines without a network: each parses, its ssh config resolves.

Each entry goes through :func:`autoserv.hosts.parse_machine` (the runner's parser).  Its
host name is then looked up in the ssh config the runner would use (``--ssh-config``,
``$AUTOSERV_SSH_CONFIG``, ``~/.ssh/config``) with paramiko's :class:`~paramiko.SSHConfig`,
and the entry is checked for what would fail later: a ``Port`` or ``ConnectTimeout`` that
is not a number, a ``ProxyJump`` that does not parse, that loops back (the runner would
recurse), or that names an alias the config does not define and that is neither a
domain name, an address nor in ``/etc/hosts`` (a warning), an ``IdentityFile`` that does
not exist (a warning: the runner skips it).

Nothing is resolved or connected: see :func:`offline_ssh_config`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import socket
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from autoserv.check.findings import ERROR, WARNING, Finding
from autoserv.cmdline import MLIST_DISPLAY, machine_entries
from autoserv.errors import AutoservUsageError

if TYPE_CHECKING:
    import paramiko

__all__ = ["machine_findings", "ssh_config_path", "offline_ssh_config", "MLIST_DISPLAY"]

_CONFIG_ENV = "AUTOSERV_SSH_CONFIG"


class _OfflineSocket:
    """What :mod:`paramiko.config` sees as ``socket`` during the check: no name service.

    paramiko's config lookup asks ``socket.getfqdn()`` (a DNS query) while expanding the
    tokens of ``IdentityFile``, ``ControlPath``..., and ``getaddrinfo``/``gethostbyname``
    for ``AddressFamily`` and ``CanonicalizeHostname``.  The stand-in answers the local
    host name from ``uname`` and resolves nothing (as a failed lookup, which paramiko
    handles), so a check never touches the network.  It relies on paramiko.config using
    its module global ``socket`` (tests/test_check.py fails if that changes).
    """

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)  # constants, exception classes

    @staticmethod
    def gethostname() -> str:
        return os.uname().nodename

    def getfqdn(self, name: str = "") -> str:
        return name or os.uname().nodename

    def _unresolved(self, *args: Any, **kwargs: Any) -> Any:
        raise self._real.gaierror(socket.EAI_NONAME, "not resolved by autoserv check")

    getaddrinfo = _unresolved
    gethostbyname = _unresolved
    gethostbyaddr = _unresolved


@contextlib.contextmanager
def offline_ssh_config() -> Iterator[None]:
    """Within this block, paramiko's ssh config lookups resolve no names (not thread-safe)."""
    import paramiko.config

    module = paramiko.config
    real = module.socket  # type: ignore[attr-defined]
    module.socket = _OfflineSocket(real)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        module.socket = real  # type: ignore[attr-defined]


def ssh_config_path(explicit: str | None, environ: dict[str, str] | None = None) -> str | None:
    """The ssh config the runner would read: ``explicit``, ``$AUTOSERV_SSH_CONFIG``,
    ``~/.ssh/config``; None if the default does not exist.  A given file that does not
    exist is a usage error."""
    env = os.environ if environ is None else environ
    path = explicit or env.get(_CONFIG_ENV) or None
    if path is not None:
        path = os.path.abspath(os.path.expanduser(path))
        if not os.path.isfile(path):
            flag = "--ssh-config" if explicit else f"${_CONFIG_ENV}"
            raise AutoservUsageError(f"{flag}: no such file: {path}")
        return path
    default = os.path.expanduser("~/.ssh/config")
    return default if os.path.isfile(default) else None


class _Config:
    """An ssh config file: paramiko's parse, plus where each directive is (for findings)."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        self.lines: list[tuple[int, str, str]] = []
        for n, line in enumerate(text.splitlines(), 1):
            words = line.strip().replace("=", " ", 1).split(None, 1)
            if words and not words[0].startswith("#"):
                value = words[1].strip().strip('"') if len(words) > 1 else ""
                self.lines.append((n, words[0].lower(), value))
        self.error: str | None = None
        self.cfg: paramiko.SSHConfig | None = None
        import paramiko  # only when there are machines to check (client files need no paramiko)

        try:
            self.cfg = paramiko.SSHConfig.from_text(text)
        except Exception as exc:  # paramiko's ConfigParseError and friends
            self.error = str(exc) or type(exc).__name__
        self.runs_commands = any(key == "match" and "exec" in value.lower().split()
                                 for _, key, value in self.lines)
        # the Host patterns (paramiko's get_hostnames() fails on configs with Match blocks)
        self.patterns = [p for _, key, value in self.lines if key == "host"
                         for p in value.split() if p != "*"]

    def line_of(self, key: str, value: str | None = None) -> int:
        for n, k, v in self.lines:
            if k == key and (value is None or value in (v, os.path.expanduser(v))):
                return n
        return self.line_of(key) if value is not None else 1

    def lookup(self, host: str) -> dict[str, Any]:
        assert self.cfg is not None
        from autoserv.hosts import paramiko_ext  # paramiko is loaded: self.cfg is its config

        with offline_ssh_config():
            return dict(paramiko_ext.config_lookup(self.cfg, host))

    def defines(self, alias: str) -> bool:
        return any(fnmatch.fnmatch(alias, p) for p in self.patterns if not p.startswith("!"))


def _etc_hosts() -> set[str]:
    names: set[str] = set()
    try:
        with open("/etc/hosts", encoding="utf-8", errors="replace") as f:
            for line in f:
                names.update(line.split("#", 1)[0].split()[1:])
    except OSError:
        pass
    return names


def _is_address_or_domain(name: str) -> bool:
    import ipaddress  # only needed here (importing it costs ~20 ms)

    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return "." in name or name == "localhost"


def _entry_findings(conf: _Config, machine: str, host: str) -> list[Finding]:
    from autoserv.hosts import mask_machine, parse_machine

    findings: list[Finding] = []

    def add(severity: str, key: str, value: str | None, message: str) -> None:
        findings.append(Finding(conf.path, conf.line_of(key, value), 1, severity, "ssh-config",
                                f"{mask_machine(machine)}: {message}"))

    entry = conf.lookup(host)
    port = entry.get("port")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        add(ERROR, "port", port, f"Port {port!r} is not a port number")
    timeout = entry.get("connecttimeout")
    if timeout is not None:
        try:
            float(timeout)
        except ValueError:
            add(ERROR, "connecttimeout", timeout, f"ConnectTimeout {timeout!r} is not a number")
    for key_file in entry.get("identityfile", []):
        if not os.path.exists(os.path.expanduser(key_file)):
            add(WARNING, "identityfile", key_file, f"IdentityFile {key_file} does not exist")
    # the ProxyJump chain: each hop parses, is known, and the chain ends
    chain = [host]
    jump = entry.get("proxyjump", "none")
    hosts_file: set[str] | None = None
    while jump.lower() != "none":
        first = jump.split(",")[0].strip()
        try:
            jhost = parse_machine(first)[0]
        except AutoservUsageError as exc:
            add(ERROR, "proxyjump", jump, f"ProxyJump {first!r}: {exc}")
            break
        if jhost in chain:
            add(ERROR, "proxyjump", jump,
                f"ProxyJump loop: {' -> '.join([*chain, jhost])}")
            break
        chain.append(jhost)
        if not conf.defines(jhost) and not _is_address_or_domain(jhost):
            if hosts_file is None:
                hosts_file = _etc_hosts()
            if jhost not in hosts_file:
                add(WARNING, "proxyjump", jump,
                    f"ProxyJump {jhost!r} is not a Host of {conf.path}, nor an address, a domain "
                    f"name or in /etc/hosts")
        jump = conf.lookup(jhost).get("proxyjump", "none")
    return findings


def machine_findings(
    specs: Sequence[str], mlist: str | None = None, ssh_config: str | None = None
) -> list[Finding]:
    """Findings for the machines of ``-m`` values ``specs`` and the ``-M`` file ``mlist``,
    with ``ssh_config`` (a path, or None: no config) for their entries."""
    from autoserv.hosts import parse_machine  # imported here: client checks need no hosts

    findings: list[Finding] = []
    conf = _Config(ssh_config) if ssh_config else None
    if conf is not None and conf.error:
        findings.append(Finding(conf.path, 1, 1, ERROR, "ssh-config", f"cannot parse: {conf.error}"))
        conf = None
    if conf is not None and conf.runs_commands:
        findings.append(Finding(conf.path, conf.line_of("match"), 1, WARNING, "ssh-config",
                                "Match exec runs commands: entries are not checked"))
        conf = None
    checked: set[str] = set()
    for display, line, col, entry, _ in machine_entries(specs, mlist):
        try:
            host = parse_machine(entry)[0]
        except AutoservUsageError as exc:
            findings.append(Finding(display, line, col, ERROR, "machine", str(exc)))
            continue
        if conf is not None and host not in checked:
            checked.add(host)
            findings += _entry_findings(conf, entry, host)
    return findings
