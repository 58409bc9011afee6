"""``autoserv check``: find what can be found in a control file without a lab.

For each control file, read and translated exactly as the runner does
(:mod:`autoserv.control`, :mod:`autoserv.legacy`), :func:`check_file` reports syntax
errors, undefined names (pyflakes, with the control-file namespace as builtins and a
``did you mean``), calls that the namespace's functions cannot take, attributes that no
host has, and tests that exist nowhere; :func:`machine_findings` checks ``-m``/``-M``
machines and their ssh config entries.  Nothing connects anywhere and nothing of the
control file runs.  The command itself is :mod:`autoserv.check.command`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from autoserv.check.findings import ERROR, WARNING, Finding, exit_status, format_json, format_text
from autoserv.check.machines import machine_findings, ssh_config_path
from autoserv.check.namespaces import (
    BUILTIN_TESTS,
    CLIENT,
    CLIENT_NAMES,
    SERVER,
    KnownTests,
    client_namespace,
    known_tests,
    server_namespace,
)
from autoserv.check.semantics import semantic_findings
from autoserv.check.source import parse, pyflakes_findings

__all__ = [
    "ERROR",
    "WARNING",
    "SERVER",
    "CLIENT",
    "BUILTIN_TESTS",
    "CLIENT_NAMES",
    "Finding",
    "KnownTests",
    "check_file",
    "machine_findings",
    "ssh_config_path",
    "known_tests",
    "exit_status",
    "format_text",
    "format_json",
]


def check_file(
    path: str,
    side: str = SERVER,
    *,
    machines: Sequence[str] = (),
    client_tests: Iterable[str] = (),
    server_tests: Iterable[str] = (),
    display: str | None = None,
) -> list[Finding]:
    """The findings for the control file at ``path``, in line order.

    ``side`` is :data:`SERVER` (the runner's namespace) or :data:`CLIENT` (a client
    control file's); ``machines`` become the namespace's ``machines``; test names are
    looked up as :func:`~autoserv.check.namespaces.known_tests` says.  ``display`` is the
    file name findings show (default ``path``).
    """
    if side not in (SERVER, CLIENT):
        raise ValueError(f"side must be {SERVER!r} or {CLIENT!r}, not {side!r}")
    parsed = parse(path, display)
    if isinstance(parsed, Finding):
        return [parsed]
    if side == SERVER:
        namespace = server_namespace(parsed.control, machines)
    else:
        namespace = client_namespace(parsed.control)
    findings = pyflakes_findings(parsed, namespace)
    tests = known_tests(parsed.control.path, client_tests, server_tests)
    findings += semantic_findings(parsed.tree, parsed.display, namespace, side == SERVER, tests)
    return sorted(set(findings), key=lambda f: (f.line, f.column, f.message))
