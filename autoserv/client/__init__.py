"""The Autotest client runtime autoserv ships to hosts (the files, not the code autoserv runs).

:data:`SITE_DIR` (``autoserv/client/site/``) holds a tree whose contents are copied
as-is to ``<autodir>/`` on a host: the packages ``autotest`` (``autotest.client``,
``autotest.client.shared``, the built-in tests in ``autotest/client/tests/``) and
``autotest_lib`` (the older import names).  Only the Python 3 standard library is needed
on the host.  Run it there with::

    cd <autodir> && PYTHONPATH=<autodir> python3 -m autotest.client.runner CONTROL --results DIR ...

The runner's docstring (``site/autotest/client/runner.py``) documents the files it writes,
its exit statuses and the reboot/continue protocol.

Six modules of autoserv itself are shipped as
``autotest/client/shared/{status,legacy,result,outcomes,deadline,barrier_protocol}.py``
(:data:`SHARED_MODULES`): :mod:`autoserv.status`, :mod:`autoserv.legacy`,
:mod:`autoserv.result`, :mod:`autoserv.outcomes`, :mod:`autoserv.deadline` and
:mod:`autoserv.barrier_protocol` are stdlib-only, so the host gets the very same status.log
grammar, Python 2 translator, CmdResult, test-outcome exceptions and barrier protocol, with no
copy to keep in step.

:func:`site_files` lists what to send and :data:`RUNTIME_VERSION` changes whenever any of
those files changes, so a server installs the runtime once per host and version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["SITE_DIR", "SHARED_MODULES", "RUNTIME_VERSION", "site_files", "runtime_version"]

#: The tree whose contents go to ``<autodir>/`` on a host.
SITE_DIR = Path(__file__).resolve().parent / "site"
_AUTOSERV_DIR = Path(__file__).resolve().parent.parent
#: autoserv's own stdlib-only modules shipped inside the tree: path on the host -> module file.
SHARED_MODULES = {
    "autotest/client/shared/status.py": "status.py",
    "autotest/client/shared/legacy.py": "legacy.py",
    "autotest/client/shared/result.py": "result.py",
    "autotest/client/shared/outcomes.py": "outcomes.py",
    "autotest/client/shared/deadline.py": "deadline.py",
    "autotest/client/shared/barrier_protocol.py": "barrier_protocol.py",
}
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def site_files() -> list[tuple[str, Path]]:
    """Every file of the runtime as ``(path relative to the autodir, local path)``, sorted."""
    files = []
    for path in sorted(SITE_DIR.rglob("*")):
        rel = path.relative_to(SITE_DIR)
        if (path.is_dir() or _SKIP_DIRS.intersection(rel.parts) or path.name.endswith(_SKIP_SUFFIXES)
                or rel.as_posix() in SHARED_MODULES):
            continue
        files.append((rel.as_posix(), path))
    files.extend((rel, _AUTOSERV_DIR / name) for rel, name in SHARED_MODULES.items())
    return sorted(files)


def runtime_version() -> str:
    """A hash (16 hex digits) of the names and contents of :func:`site_files`."""
    digest = hashlib.sha256()
    for rel, path in site_files():
        digest.update(rel.encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


#: Changes whenever a file of the runtime changes (computed at import).
RUNTIME_VERSION = runtime_version()
