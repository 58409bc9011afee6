"""Reading a control file as the runner does, and pyflakes' findings on it.

:func:`parse` goes through :func:`autoserv.control.load` (Python 3 first, then the
Python 2 translation of :mod:`autoserv.legacy`, which keeps every line where it was),
so a syntax error is the runner's own, at the user's real line.  :func:`pyflakes_findings`
runs pyflakes on the (translated) tree with the namespace's names as builtins, and adds a
``did you mean`` to each undefined name.
"""

from __future__ import annotations

import ast
import builtins
import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from pyflakes import checker as pyflakes_checker

from autoserv import control
from autoserv.check.findings import ERROR, WARNING, Finding
from autoserv.errors import AutoservUsageError

__all__ = ["Parsed", "parse", "pyflakes_findings", "bound_names", "suggest"]

#: pyflakes messages that are errors: the name does not exist when the line runs.
_ERRORS = {"UndefinedName", "UndefinedLocal", "UndefinedExport"}
#: pyflakes messages about style, not about a control file that would fail: not reported.
_QUIET = {
    "UnusedImport", "UnusedVariable", "UnusedAnnotation", "UnusedIndirectAssignment",
    "RedefinedWhileUnused", "ImportShadowedByLoopVar", "FStringMissingPlaceholders",
    "TStringMissingPlaceholders",
}


@dataclass
class Parsed:
    """A control file that compiles: the runner's :class:`ControlFile` and its AST."""

    display: str  # the file name as the user gave it (used in findings)
    control: control.ControlFile
    tree: ast.Module


def parse(path: str, display: str | None = None) -> Parsed | Finding:
    """The control file at ``path`` parsed as the runner would, or its syntax error.

    A file that cannot be read raises :class:`~autoserv.errors.AutoservUsageError`.
    """
    display = display or path
    try:
        cf = control.load(path)
    except OSError as exc:
        raise AutoservUsageError(f"cannot read {display}: {exc.strerror or exc}") from None
    except control.ControlFileSyntaxError as exc:
        message = f"syntax error: {exc.msg}"
        if exc.note:
            message += f" ({exc.note})"
        return Finding(display, exc.lineno or 1, exc.offset or 1, ERROR, "syntax", message)
    tree = ast.parse(cf.source, cf.path)  # compiled already: cannot fail
    return Parsed(display, cf, tree)


def bound_names(tree: ast.AST) -> set[str]:
    """Every name the file binds anywhere (assignments, defs, imports, parameters...)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.Global | ast.Nonlocal):
            names.update(node.names)
    return names


def suggest(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ``""``."""
    pool = [c for c in candidates if c != word and (word.startswith("_") or not c.startswith("_"))]
    match = difflib.get_close_matches(word, pool, n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def pyflakes_findings(parsed: Parsed, namespace: Iterable[str]) -> list[Finding]:
    """pyflakes on the file with ``namespace`` as builtins: undefined names are errors."""
    names = set(namespace)
    flakes = pyflakes_checker.Checker(parsed.tree, filename=parsed.control.path, builtins=names)
    candidates: set[str] | None = None
    findings = []
    for msg in flakes.messages:
        kind = type(msg).__name__
        if kind in _QUIET:
            continue
        text = msg.message % msg.message_args
        if kind == "UndefinedName":
            if candidates is None:
                candidates = names | set(dir(builtins)) | bound_names(parsed.tree)
            text += suggest(msg.message_args[0], candidates)
        severity = ERROR if kind in _ERRORS else WARNING
        code = "undefined-name" if kind in _ERRORS else "pyflakes"
        findings.append(Finding(parsed.display, msg.lineno, msg.col + 1, severity, code, text))
    return findings
