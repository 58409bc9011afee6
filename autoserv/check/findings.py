"""What ``autoserv check`` reports: :class:`Finding`, its two output formats, the exit rule."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

__all__ = ["ERROR", "WARNING", "Finding", "format_text", "format_json", "exit_status", "summary"]

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True, order=True)
class Finding:
    """One problem found in a file: where (1-based line and column), how bad, what.

    ``code`` names the kind of check (``syntax``, ``undefined-name``, ``call``,
    ``attribute``, ``unknown-test``, ``pyflakes``, ``machine``, ``ssh-config``), for
    editors and CI that filter on it.
    """

    file: str
    line: int
    column: int
    severity: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"


def format_text(findings: Iterable[Finding]) -> str:
    """One line per finding, ``file:line:col: error|warning: message``."""
    return "".join(f"{f}\n" for f in findings)


def format_json(findings: Iterable[Finding]) -> str:
    """A JSON list of objects with the keys file, line, column, severity, code, message."""
    return json.dumps([asdict(f) for f in findings], indent=2) + "\n"


def exit_status(findings: Sequence[Finding], strict: bool = False) -> int:
    """0 when there is no error (warnings alone pass unless ``strict``), else 1."""
    if any(f.severity == ERROR for f in findings):
        return 1
    if strict and findings:
        return 1
    return 0


def summary(findings: Sequence[Finding], files: int) -> str:
    """``2 errors, 1 warning in 3 files`` (or ``no findings in 1 file``)."""
    errors = sum(f.severity == ERROR for f in findings)
    warnings = len(findings) - errors
    where = f"in {files} file" + ("s" if files != 1 else "")
    if not findings:
        return f"no findings {where}"
    parts = []
    if errors:
        parts.append(f"{errors} error" + ("s" if errors != 1 else ""))
    if warnings:
        parts.append(f"{warnings} warning" + ("s" if warnings != 1 else ""))
    return f"{', '.join(parts)} {where}"
