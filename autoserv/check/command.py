"""The ``autoserv check`` command, and the ``autoserv --check`` step before a run.

``autoserv check [options] FILE...`` prints one line per finding on standard output
(``file:line:col: error|warning: message``, or a JSON list with ``--format json``) and a
summary on standard error.  Exit status, as a linter's:

* 0: no errors (warnings alone pass, unless ``--strict``);
* 1: at least one error (or, with ``--strict``, any finding);
* 2: usage error (bad flag, missing file, unreadable ``-M`` file).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

from autoserv.check import CLIENT, SERVER, check_file, machine_findings, ssh_config_path
from autoserv.check.findings import ERROR, Finding, exit_status, format_json, format_text, summary
from autoserv.check.namespaces import CLIENT_TESTS_ENV
from autoserv.cmdline import UsageParser
from autoserv.errors import AutoservUsageError, JobError

__all__ = ["main", "build_parser", "preflight", "CheckFailed"]

EPILOG = f"""\
checks:
  syntax (the runner's Python 2 translation included, real line numbers); undefined names
  (pyflakes, against the server or client namespace) with a suggestion; calls of namespace
  functions with arguments they cannot take; attributes no host class has; run_test of a
  test found in no test directory; -m/-M machines and their ssh config entries.
  Nothing is run and nothing connects anywhere.

tests are looked up in:
  --client-tests DIRs, ${CLIENT_TESTS_ENV}, client/tests and tests next to the control
  file, --server-tests DIRs, server/tests next to it, and the built-in tests.

exit status:
  0  no errors (warnings alone pass, unless --strict)
  1  errors found (with --strict: any finding)
  2  usage error
"""


class CheckFailed(JobError):
    """``autoserv --check`` found errors: the job is not started."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``autoserv check``."""
    p = UsageParser(
        prog="autoserv check",
        usage="autoserv check [options] FILE...",
        description="Check control files without running them or connecting anywhere.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="control files to check")
    p.add_argument("-c", "--client", action="store_true",
                   help="the files are client-side control files")
    p.add_argument("-s", "--server", action="store_true",
                   help="the files are server-side control files (the default)")
    p.add_argument("-m", "--machines", action="append", default=[], metavar="LIST",
                   help="machines to check (as for a run; repeatable)")
    p.add_argument("-M", "--mlist", metavar="FILE", help="file listing machines to check")
    p.add_argument("--ssh-config", metavar="FILE",
                   help="ssh_config for the machines (default $AUTOSERV_SSH_CONFIG, ~/.ssh/config)")
    p.add_argument("--client-tests", action="append", default=[], metavar="DIR",
                   help="a directory of client tests (repeatable)")
    p.add_argument("--server-tests", action="append", default=[], metavar="DIR",
                   help="a directory of server-side tests (repeatable)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text: file:line:col: severity: message (default); json: a list of "
                        "objects with file, line, column, severity, code, message")
    p.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    return p


def _findings(
    files: Sequence[str], side: str, machines: Sequence[str], mlist: str | None,
    ssh_config: str | None, client_tests: Sequence[str], server_tests: Sequence[str],
) -> list[Finding]:
    entries = [e for spec in machines for e in spec.replace(",", " ").split()]
    findings: list[Finding] = []
    for path in files:
        findings += check_file(path, side, machines=entries, client_tests=client_tests,
                               server_tests=server_tests)
    if machines or mlist:
        findings += machine_findings(machines, mlist, ssh_config)
    return findings


@contextlib.contextmanager
def _without_invoke() -> Iterator[None]:
    """Keep paramiko from importing ``invoke`` while the check runs (a third of its import).

    paramiko imports invoke only to run the ``Match exec`` lines of ssh configs, which a
    check never evaluates (:mod:`autoserv.check.machines`).  Done only when neither is
    loaded yet, i.e. in the ``autoserv check`` process itself; afterwards ``import invoke``
    works again (paramiko, imported meanwhile, then has no ``Match exec`` support: that
    process only checks).
    """
    block = "paramiko" not in sys.modules and "invoke" not in sys.modules
    if block:
        sys.modules["invoke"] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        yield
    finally:
        if block and sys.modules.get("invoke", 0) is None:
            del sys.modules["invoke"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``autoserv check`` with ``argv`` (the arguments after ``check``)."""
    with _without_invoke():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    try:
        options = build_parser().parse_args(argv)
        if options.client and options.server:
            raise AutoservUsageError("-c (client-side) and -s (server-side) are mutually exclusive")
        for path in options.files:
            if not os.path.isfile(path):
                what = "is not a file" if os.path.exists(path) else "does not exist"
                raise AutoservUsageError(f"control file {path} {what}")
        findings = _findings(
            options.files, CLIENT if options.client else SERVER, options.machines,
            options.mlist, ssh_config_path(options.ssh_config), options.client_tests,
            options.server_tests,
        )
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except AutoservUsageError as exc:
        sys.stderr.write(f"autoserv check: error: {exc} (see autoserv check --help)\n")
        return 2
    if options.format == "json":
        sys.stdout.write(format_json(findings))
    else:
        sys.stdout.write(format_text(findings))
        sys.stderr.write(f"autoserv check: {summary(findings, len(options.files))}\n")
    sys.stdout.flush()
    return exit_status(findings, options.strict)


def preflight(options: argparse.Namespace) -> None:
    """``autoserv --check``: check the run's control file and machines before the job.

    Findings go to standard error; errors raise :class:`CheckFailed` (exit 1), warnings
    let the job start.  ``options`` are the runner's parsed options.
    """
    findings = _findings(
        [options.control_file], CLIENT if getattr(options, "client", False) else SERVER,
        options.machines, options.mlist, ssh_config_path(options.ssh_config),
        getattr(options, "client_tests", None) or (), getattr(options, "server_tests", None) or (),
    )
    sys.stderr.write(format_text(findings))
    errors = sum(f.severity == ERROR for f in findings)
    if errors:
        raise CheckFailed(
            f"check of {options.control_file}: {summary(findings, 1)}; the job was not started"
        )
