"""Compile control files and test modules, translating Python 2 source line for line.

Python 3 source is compiled as is; source that does not compile is translated with
:mod:`autotest.client.shared.legacy` (autoserv's translator, shipped as a copy) and
compiled again under the real file name, so tracebacks and syntax errors name the
user's file and real line numbers.  :func:`install_test_finder` makes ``import x`` from
a test's directory use the same rule for the test's own helper modules.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import tokenize
from collections.abc import Sequence
from types import CodeType, ModuleType

from autotest.client.shared import legacy

__all__ = ["SourceSyntaxError", "read_source", "compile_source", "load_module", "install_test_finder"]


class SourceSyntaxError(Exception):
    """Source that is neither Python 3 nor translatable Python 2; ``str()`` is one line."""

    def __init__(self, filename: str, lineno: int | None, msg: str, note: str = "") -> None:
        super().__init__(filename, lineno, msg, note)
        self.filename = filename
        self.lineno = lineno
        self.msg = msg
        self.note = note

    def __str__(self) -> str:
        where = f"{self.filename}:{self.lineno}" if self.lineno else self.filename
        text = f"{where}: SyntaxError: {self.msg}"
        return f"{text} ({self.note})" if self.note else text


def read_source(path: str) -> str:
    """The text of ``path`` (PEP 263 encoding), CR and CRLF turned into LF."""
    with open(path, "rb") as f:
        data = f.read().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    try:
        encoding, _ = tokenize.detect_encoding(iter(data.splitlines(keepends=True)).__next__)
    except SyntaxError:
        encoding = "utf-8"
    return data.decode(encoding, errors="replace")


def compile_source(text: str, path: str) -> tuple[CodeType, bool]:
    """Compile ``text`` as the file ``path``; return ``(code, translated_from_python2)``."""
    try:
        return compile(text, path, "exec", dont_inherit=True), False
    except SyntaxError as exc:
        py3_error = exc
    except ValueError as exc:  # NUL bytes
        raise SourceSyntaxError(path, None, str(exc)) from None
    try:
        translation = legacy.translate(text, path)
    except SyntaxError:
        translation = None
    if translation is None or not translation.changed:
        raise SourceSyntaxError(path, py3_error.lineno, py3_error.msg or str(py3_error)) from None
    try:
        return compile(translation.source, path, "exec", dont_inherit=True), True
    except SyntaxError as exc:
        raise SourceSyntaxError(
            path, exc.lineno, exc.msg or str(exc),
            "not Python 3, and still invalid after Python 2 translation",
        ) from None


class _Loader(importlib.abc.Loader):
    """Executes one source file, translated from Python 2 when needed (no bytecode cache)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        code, translated = compile_source(read_source(self.path), self.path)
        if translated:
            for name, value in legacy.PY2_BUILTINS.items():
                module.__dict__.setdefault(name, value)
        exec(code, module.__dict__)  # importing the test's own module


def load_module(name: str, path: str) -> ModuleType:
    """Import the file ``path`` as module ``name`` (registered in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(name, path, loader=_Loader(path))
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


class _TestDirFinder(importlib.abc.MetaPathFinder):
    """Finds modules and packages in the given directories, loading them with :class:`_Loader`."""

    def __init__(self, dirs: Sequence[str]) -> None:
        self.dirs = [os.path.abspath(d) for d in dirs]

    def _ours(self, path: str) -> bool:
        return any(path == d or path.startswith(d + os.sep) for d in self.dirs)

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        search = self.dirs if path is None else [p for p in path if self._ours(os.path.abspath(p))]
        last = fullname.rpartition(".")[2]
        for directory in search:
            package = os.path.join(directory, last, "__init__.py")
            if os.path.isfile(package):
                return importlib.util.spec_from_file_location(
                    fullname, package, loader=_Loader(package),
                    submodule_search_locations=[os.path.join(directory, last)],
                )
            single = os.path.join(directory, last + ".py")
            if os.path.isfile(single):
                return importlib.util.spec_from_file_location(fullname, single, loader=_Loader(single))
        return None


def install_test_finder(dirs: Sequence[str]) -> None:
    """Let ``import x`` find ``x.py`` (or package ``x``) in ``dirs``, Python 2 or 3, first."""
    sys.meta_path.insert(0, _TestDirFinder(dirs))
