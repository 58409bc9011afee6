"""The lab's hook file: what only the lab knows (power switches, installers, extra checks).

A hook file is plain Python (``--hooks FILE`` or ``AUTOSERV_HOOKS``) defining any of::

    def verify(host): ...                 # raise to fail verify (any exception)
    def repair(host): ...                 # the last repair step; verify runs after it
    def install(host): ...                # -i / -I, host.machine_install()
    def hardreset(host): ...              # host.hardreset(): e.g. a PDU's command line
    def collect_crashinfo(host, dest): ...  # more files for <results>/<machine>/crashinfo

Other names in the file are the file's own business.  Hooks run in the machine's worker
(its results directory is the working directory), with the job's host object.  The file is
loaded once, when the job starts; a file that does not load is a usage error (exit 2).
"""

from __future__ import annotations

import os
import runpy
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autoserv.errors import AutoservUsageError

__all__ = ["HOOK_NAMES", "ENV", "Hooks", "load", "from_option", "set_current", "current"]

#: The hooks a lab may define.
HOOK_NAMES = ("verify", "repair", "install", "hardreset", "collect_crashinfo")
ENV = "AUTOSERV_HOOKS"


@dataclass(frozen=True)
class Hooks:
    """The hooks of one file (``path`` None: none configured)."""

    path: str | None = None
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def get(self, name: str) -> Callable[..., Any] | None:
        """The hook ``name``, or None if the file does not define it."""
        if name not in HOOK_NAMES:
            raise ValueError(f"unknown hook {name!r}")
        return self.functions.get(name)


def load(path: str) -> Hooks:
    """Load the hook file at ``path``; :class:`AutoservUsageError` (one line) if it cannot be."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise AutoservUsageError(f"--hooks: no such file: {path}")
    try:
        namespace = runpy.run_path(path, run_name="autoserv_hooks")
    except SyntaxError as exc:
        raise AutoservUsageError(
            f"--hooks {path}:{exc.lineno}: SyntaxError: {exc.msg}") from None
    except Exception as exc:
        line = next((n for f, n in traceback.walk_tb(exc.__traceback__)
                     if f.f_code.co_filename == path), None)
        where = f"{path}:{line}" if line else path
        text = str(exc).strip().splitlines()
        raise AutoservUsageError(
            f"--hooks {where}: {type(exc).__name__}: {text[0] if text else ''}") from None
    functions: dict[str, Callable[..., Any]] = {}
    for name in HOOK_NAMES:
        if name in namespace:
            value = namespace[name]
            if not callable(value):
                raise AutoservUsageError(f"--hooks {path}: {name} is not a function")
            functions[name] = value
    return Hooks(path, functions)


def from_option(path: str | None) -> Hooks:
    """The hooks of ``--hooks`` (or ``AUTOSERV_HOOKS`` when not given); empty without either."""
    path = path or os.environ.get(ENV) or None
    return load(path) if path else Hooks()


_current = Hooks()


def set_current(hooks: Hooks) -> Hooks:
    """Make ``hooks`` the ones ``host.verify()``, ``host.hardreset()``... use; returns the old."""
    global _current
    previous, _current = _current, hooks
    return previous


def current() -> Hooks:
    """The hooks of the running job (empty outside a job or without a hook file)."""
    return _current
