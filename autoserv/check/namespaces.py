"""The names a control file may use, and where its tests may come from.

The server-side namespace is the runner's own: :func:`server_namespace` calls
:func:`autoserv.control.build_namespace` with a job that is never run, so every name
(and every real object, whose signatures and attributes the check reads) is exactly
what a control file gets, including names that other modules add later.

The client-side namespace is what a client control file runs with on a host (the
client runtime's ``job``, its error classes and utils): :data:`CLIENT_NAMES`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from autoserv import control, errors, legacy

__all__ = [
    "SERVER",
    "CLIENT",
    "CLIENT_NAMES",
    "BUILTIN_TESTS",
    "CLIENT_TESTS_ENV",
    "server_namespace",
    "client_namespace",
    "KnownTests",
    "known_tests",
]

SERVER = "server"
CLIENT = "client"

# --- the client-side control-file namespace: the ONE list to keep in step with the client
# runtime (issue 9: autoserv/client/).  A client control file runs with the client `job`
# (run_test, run_test_detail, record, run_group, parallel, reboot, next_step, set_state,
# get_state, resultdir, autodir, tmpdir, bindir, ...), `args`, and what Autotest's job
# preamble star-imports: the error classes (autotest.client.shared.error) and the utils
# functions (autotest.client.utils) with the modules utils itself imports.  Names here
# are only known to exist: the check reads no signatures of client objects.
CLIENT_NAMES: frozenset[str] = frozenset(
    {"job", "args", "__name__", "__file__"}
    | set(errors.__all__)
    | {
        "system", "system_output", "system_output_parallel", "system_parallel", "run",
        "run_parallel", "extract_tarball_to_dir", "extract_tarball", "unmap_url",
        "configure", "make", "extract_all_time_results", "count_cpus", "get_file",
        "get_cpu_arch", "get_os_vendor", "read_file", "write_one_line", "read_one_line",
        "sh_escape", "CmdResult",
        # modules that Autotest's utils imports and so star-exports
        "os", "sys", "re", "time", "shutil", "logging", "glob", "signal", "tempfile",
        "subprocess", "socket", "string", "errno", "pickle", "textwrap",
    }
)
# ---

#: Tests that autoserv itself provides (client tests; issue 9 ships them under
#: autoserv/client/site/autotest/client/tests/, which is searched too when it exists).
BUILTIN_TESTS: tuple[str, ...] = ("sleeptest", "failtest")

#: Environment variable listing client test directories (``os.pathsep``-separated).
CLIENT_TESTS_ENV = "AUTOSERV_CLIENT_TESTS"

_BUILTIN_TEST_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "client", "site", "autotest", "client", "tests",
)


def server_namespace(cf: control.ControlFile | None, machines: Sequence[str] = ()) -> dict[str, Any]:
    """The real globals a server-side control file gets (its job is built, never run)."""
    from autoserv.job import ServerJob

    job = ServerJob(cf.path if cf is not None else "<check>", [], None, list(machines))
    return control.build_namespace(job, cf)


def client_namespace(cf: control.ControlFile | None) -> dict[str, Any]:
    """The names of the client-side namespace (values unknown: ``None``)."""
    names: dict[str, Any] = dict.fromkeys(CLIENT_NAMES)
    names.update(dict.fromkeys(legacy.PY2_BUILTINS))  # in every control file, as the runner does
    return names


@dataclass(frozen=True)
class KnownTests:
    """Directories whose ``<name>/`` subdirectories are tests, plus the built-in names."""

    dirs: tuple[str, ...]
    builtin: tuple[str, ...] = BUILTIN_TESTS

    def has(self, name: str) -> bool:
        """True when ``name`` is built in or a directory of that name is in one of ``dirs``."""
        return name in self.builtin or any(os.path.isdir(os.path.join(d, name)) for d in self.dirs)

    def describe(self) -> str:
        """The searched places, for a message."""
        return ", ".join([*self.dirs, "the built-in tests"]) if self.dirs else "the built-in tests"


def known_tests(
    control_path: str,
    client_tests: Iterable[str] = (),
    server_tests: Iterable[str] = (),
    environ: dict[str, str] | None = None,
) -> KnownTests:
    """Where tests of the control file at ``control_path`` are looked up, in order.

    ``--client-tests`` directories, then ``$AUTOSERV_CLIENT_TESTS``, then ``client/tests``
    and ``tests`` next to the control file, then ``--server-tests`` directories and
    ``server/tests`` next to the control file, then autoserv's own tests.  Only existing
    directories are kept.
    """
    env = os.environ if environ is None else environ
    here = os.path.dirname(os.path.abspath(control_path))
    candidates = [*client_tests]
    candidates += [d for d in env.get(CLIENT_TESTS_ENV, "").split(os.pathsep) if d]
    candidates += [os.path.join(here, "client", "tests"), os.path.join(here, "tests")]
    candidates += [*server_tests, os.path.join(here, "server", "tests")]
    candidates.append(_BUILTIN_TEST_DIR)
    found = [os.path.abspath(os.path.expanduser(d)) for d in candidates]
    return KnownTests(tuple(d for d in dict.fromkeys(found) if os.path.isdir(d)))
