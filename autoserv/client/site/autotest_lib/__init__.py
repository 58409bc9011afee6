"""``autotest_lib``: the older import names of Autotest, aliases of :mod:`autotest`.

``autotest_lib.client.bin.X`` is ``autotest.client.X``, ``autotest_lib.client.common_lib.X``
is ``autotest.client.shared.X``, and any other ``autotest_lib.Y`` is ``autotest.Y``: the
alias and the real name are the same module object (one ``error.TestFail`` class).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

_PREFIXES = (
    ("autotest_lib.client.bin", "autotest.client"),
    ("autotest_lib.client.common_lib", "autotest.client.shared"),
    ("autotest_lib", "autotest"),
)


def real_name(alias: str) -> str | None:
    """The :mod:`autotest` module an ``autotest_lib`` name stands for (None: not an alias)."""
    for prefix, target in _PREFIXES:
        if alias == prefix or alias.startswith(prefix + "."):
            return target + alias[len(prefix):]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target
        self._spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec  # the import system set the alias's spec: restore the real one


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname == __name__:
            return None
        real = real_name(fullname)
        if real is None:
            return None
        real_spec = importlib.util.find_spec(real)
        if real_spec is None:
            return None
        is_package = real_spec.submodule_search_locations is not None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(real), is_package=is_package)


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())
