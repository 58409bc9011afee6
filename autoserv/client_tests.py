"""Where Autotest tests come from, and which of them a control file needs.

Client tests are looked up, first match wins, in:

1. every ``--client-tests DIR`` (in the order given), then ``$AUTOSERV_CLIENT_TESTS``
   (directories separated by ``:``);
2. ``client/tests`` and ``tests`` next to the control file;
3. the tests built into the client runtime (``sleeptest``, ``failtest``...), which are
   installed with the runtime and never sent again.

A test is a directory ``<name>/`` holding ``<name>.py`` (Autotest layout).  Server-side
tests come from every ``--server-tests DIR`` and then ``server/tests`` next to the control
file.  :class:`TestSettings` carries the command-line choices to the job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "TestSettings",
    "CLIENT_TESTS_ENV",
    "client_search_path",
    "server_search_path",
    "find_test",
    "referenced_names",
    "tests_to_send",
]

#: Extra client test directories (``:``-separated), after ``--client-tests``.
CLIENT_TESTS_ENV = "AUTOSERV_CLIENT_TESTS"

_LITERAL = re.compile(r"""['"]([A-Za-z_][\w.\-]*)['"]""")


@dataclass
class TestSettings:
    """What the command line says about tests (defaults: nothing extra)."""

    __test__ = False  # not a pytest class

    client_tests: list[str] = field(default_factory=list)
    server_tests: list[str] = field(default_factory=list)
    install_in_tmpdir: bool = False
    #: ``-c``: the control file is a client-side one, run on every machine.
    client_control: bool = False


def client_search_path(
    settings: TestSettings | None, near: Iterable[str] = (), env: str | None = None
) -> list[str]:
    """The client test directories in lookup order (built-ins not included).

    ``near`` are control file paths whose ``client/tests`` and ``tests`` neighbours count;
    ``env`` is the value of ``$AUTOSERV_CLIENT_TESTS`` (None: read the environment).
    """
    dirs = list(settings.client_tests) if settings else []
    if env is None:
        env = os.environ.get(CLIENT_TESTS_ENV, "")
    dirs += [d for d in env.split(os.pathsep) if d]
    for path in near:
        base = os.path.dirname(os.path.abspath(path))
        dirs += [os.path.join(base, "client", "tests"), os.path.join(base, "tests")]
    return _unique(os.path.abspath(d) for d in dirs)


def server_search_path(settings: TestSettings | None, near: Iterable[str] = ()) -> list[str]:
    """The server test directories in lookup order."""
    dirs = list(settings.server_tests) if settings else []
    for path in near:
        dirs.append(os.path.join(os.path.dirname(os.path.abspath(path)), "server", "tests"))
    return _unique(os.path.abspath(d) for d in dirs)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def find_test(name: str, search_path: Sequence[str]) -> str | None:
    """The directory of test ``name`` (``<dir>/<name>/<name>.py``) in ``search_path``, or None."""
    if not re.fullmatch(r"[A-Za-z_][\w.\-]*", name) or name in (".", ".."):
        return None
    for base in search_path:
        candidate = os.path.join(base, name)
        if os.path.isfile(os.path.join(candidate, f"{name}.py")):
            return candidate
    return None


def referenced_names(control_text: str) -> list[str]:
    """Every string literal of ``control_text`` that could name a test, in order, once each."""
    return _unique(m.group(1) for m in _LITERAL.finditer(control_text))


def tests_to_send(control_text: str, search_path: Sequence[str]) -> dict[str, str]:
    """``{name: local dir}`` of the tests of ``search_path`` that ``control_text`` names.

    A literal that names no test there is left to the client (a built-in, or
    ``ERROR "<name>: test does not exist"``).
    """
    found: dict[str, str] = {}
    for name in referenced_names(control_text):
        path = find_test(name, search_path)
        if path is not None:
            found[name] = path
    return found
