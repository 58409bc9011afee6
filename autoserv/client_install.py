"""Installing the Autotest client runtime (``autoserv.client``) on a host.

One probe per host finds ``python3`` and the autodir: an autodir already holding the
runtime (a ``.runtime_version`` file) and writable, else the first of
:data:`AUTODIR_CANDIDATES` that can be created and written; with ``--install-in-tmpdir``
a fresh ``mktemp -d`` (removed when the host is closed at the end of the job).  The
runtime then goes over the host's own connection as one gzipped tar on the standard
input of ``tar -x`` -- only when ``<autodir>/.runtime_version`` differs from
:data:`autoserv.client.RUNTIME_VERSION` -- and the test directories a run needs follow
the same way before each run.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autoserv.errors import AutoservInstallError
from autoserv.utils import quote_args

__all__ = [
    "AUTODIR_CANDIDATES",
    "VERSION_FILE",
    "Installation",
    "probe_command",
    "parse_probe",
    "install_command",
    "make_tarball",
    "runtime_files",
    "runtime_version",
    "install",
    "send_tests",
]

log = logging.getLogger("autoserv.autotest")

#: Where the client goes when the host has no autodir yet (the original's order).
AUTODIR_CANDIDATES = ("/usr/local/autotest", "/home/autotest")
#: In the autodir: the runtime version installed there.
VERSION_FILE = ".runtime_version"
#: In the autodir: where the test directories of a run are sent (one per results name).
TESTS_DIR = "tests"


@dataclass
class Installation:
    """What is known about a host's client installation."""

    autodir: str
    version: str  # the runtime version installed there ('' if none)


# Hosts already probed/installed in this process: host -> Installation.
_installed: weakref.WeakKeyDictionary[Any, Installation] = weakref.WeakKeyDictionary()


def runtime_files() -> list[tuple[str, str]]:
    """``(relative path on the host, local path)`` of every runtime file."""
    from autoserv import client

    return [(rel, os.fspath(path)) for rel, path in client.site_files()]


def runtime_version() -> str:
    from autoserv import client

    return str(client.RUNTIME_VERSION)


def probe_command(candidates: Sequence[str]) -> str:
    """Shell that reports python3 and the autodir to use (see :func:`parse_probe`).

    Output: ``NOPYTHON``; or ``PYTHON <path>`` then ``DIR <autodir>`` and the installed
    version on the next line (may be empty), or ``NODIR``.
    """
    find = (
        'for d in "$@"; do if [ -f "$d/' + VERSION_FILE + '" ] && [ -w "$d" ]; then '
        'echo "DIR $d"; cat "$d/' + VERSION_FILE + '"; echo; exit 0; fi; done; '
        'for d in "$@"; do if mkdir -p -- "$d" 2>/dev/null && [ -w "$d" ]; then '
        'echo "DIR $d"; echo; exit 0; fi; done; echo NODIR'
    )
    script = 'p=$(command -v python3) || { echo NOPYTHON; exit 0; }; echo "PYTHON $p"; ' + find
    return quote_args("sh -c", [script, "sh", *candidates])


def parse_probe(hostname: str, output: str) -> Installation:
    """The :class:`Installation` a probe reports; raises :class:`AutoservInstallError`."""
    lines = output.splitlines()
    if not lines or lines[0].strip() == "NOPYTHON":
        raise AutoservInstallError(
            f"{hostname}: python3 not found on the host (the Autotest client runtime needs "
            "python3 in the login PATH)"
        )
    for i, line in enumerate(lines):
        if line.startswith("DIR "):
            version = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return Installation(line[4:], version)
        if line.strip() == "NODIR":
            break
    raise AutoservInstallError(
        f"{hostname}: no writable autodir (tried {', '.join(AUTODIR_CANDIDATES)})"
    )


def install_command(autodir: str, version: str | None = None, clean: Sequence[str] = ()) -> str:
    """Shell that unpacks a gzipped tar from stdin into ``autodir``.

    ``clean`` (paths relative to ``autodir``) are removed first; ``version`` is written to
    the version file afterwards.
    """
    steps = [quote_args("mkdir -p --", [autodir])]
    if clean:
        steps.append(quote_args("rm -rf --", [f"{autodir}/{c}" for c in clean]))
    steps.append(quote_args("tar -xzf - -C", [autodir]))
    if version is not None:
        steps.append(f"printf '%s\\n' {quote_args('', [version]).strip()} > "
                     + quote_args("", [f"{autodir}/{VERSION_FILE}"]).strip())
    return " && ".join(steps)


def make_tarball(files: Iterable[tuple[str, str]]) -> bytes:
    """A gzipped tar of ``(archive name, local path)`` pairs (directories recursively)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for arcname, path in files:
            tar.add(path, arcname=arcname, filter=_clean_member)
    return buf.getvalue()


def _clean_member(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = os.path.basename(info.name)
    if name == "__pycache__" or name.endswith((".pyc", ".pyo")):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def install(host: Any, autodir: str | None = None, tmpdir: bool = False) -> Installation:
    """Make sure ``host`` has the current runtime; return where it is (cached per host)."""
    known = _installed.get(host)
    if known is not None and (autodir is None or autodir == known.autodir):
        if known.version == runtime_version():
            return known
    if autodir is None and tmpdir:
        autodir = host.get_tmp_dir()  # removed when the host is closed (at the job's end)
    candidates: Sequence[str] = (autodir,) if autodir else AUTODIR_CANDIDATES
    res = host.run(probe_command(candidates), timeout=60, verbose=False, stdout_tee=None,
                   stderr_tee=None)
    inst = parse_probe(host.hostname, res.stdout)
    version = runtime_version()
    if inst.version != version:
        log.info("%s: installing the client runtime %s in %s", host.hostname, version,
                 inst.autodir)
        data = make_tarball(runtime_files())
        host.run(install_command(inst.autodir, version, clean=("autotest", "autotest_lib")),
                 stdin=data, timeout=300, verbose=False)
        inst.version = version
    else:
        log.debug("%s: client runtime %s already in %s", host.hostname, version, inst.autodir)
    _installed[host] = inst
    return inst


def send_tests(host: Any, autodir: str, name: str, tests: Mapping[str, str]) -> str:
    """Replace ``<autodir>/tests/<name>/`` with the given test dirs; return its path."""
    remote = f"{autodir}/{TESTS_DIR}/{name}"
    data = make_tarball((f"{TESTS_DIR}/{name}/{test}", path) for test, path in tests.items())
    host.run(install_command(autodir, clean=(f"{TESTS_DIR}/{name}",)), stdin=data,
             timeout=300, verbose=False)
    return remote
