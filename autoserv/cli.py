"""The ``autoserv`` command: parse the flags, build a :class:`~autoserv.job.ServerJob`, run it.

This is the only module that prints, and the one place that turns exceptions into exit
codes (:func:`exit_code_for`):

* 0: the job completed and nothing failed;
* 1: the control file raised, a machine failed, the job was aborted, or the results
  directory is already in use;
* 2: usage errors (bad or unsupported flag, missing control file, invalid machine).

Every error is reported as one line on standard error; the full traceback goes to the
debug log, and to the console only with ``--verbose``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from autoserv import __version__, abort, client_tests, control, inputs, lifecycle_cli, results_disk, workers
from autoserv.cmdline import MLIST_DISPLAY, UsageParser, machine_entries, port, positive_float, positive_int
from autoserv.errors import AutoservError, AutoservUsageError, JobError
from autoserv.job import JobSettings, ServerJob
from autoserv.report import command as report_command

if TYPE_CHECKING:
    from autoserv.hosts.machine import Machine

__all__ = ["main", "build_parser", "parse_args", "parse_machine_list", "exit_code_for"]

log = logging.getLogger("autoserv.cli")

PASS_ENV = "AUTOSERV_SSH_PASS"
CONFIG_ENV = "AUTOSERV_SSH_CONFIG"

DESCRIPTION = """\
Run a server-side control file (Python) against remote machines over SSH.

The control file runs with the results directory as its working directory, in a
namespace holding job, machines, args, hosts, parallel_simple, ... (docs/runner.md)."""

EPILOG = """\
machines:
  -m takes entries separated by commas and/or spaces, -M a file with one entry per
  line ('#' starts a comment); both may be given.  An entry is [user[:password]@]host[:port]
  (IPv6 addresses in brackets).  Duplicate entries are dropped, keeping the first, and
  the order given is kept (the original Autoserv sorted them).

exit status:
  0  the job completed and nothing failed
  1  the control file raised, a machine failed, the job was aborted (SIGINT/SIGTERM/SIGHUP),
     or the results directory is already in use
  2  usage error

passwords:
  a password in -m or --ssh-pass is hidden from ps (the process title of autoserv and
  its workers is rewritten at start-up, a fraction of a second after it starts);
  AUTOSERV_SSH_PASS never shows.  A password with ',', ' ' or '#' cannot be given in
  -m/-M (those separate entries): use --ssh-pass or AUTOSERV_SSH_PASS.

environment:
  AUTOSERV_SSH_PASS    SSH password (instead of --ssh-pass on the command line)
  AUTOSERV_SSH_CONFIG  ssh_config file (instead of --ssh-config)
"""

#: Flags of the original Autoserv that this one does not implement: each is an error.
UNSUPPORTED = {
    ("-b", "--reboot"): "rebooting after the job",
    ("--parse-job",): "parsing results into a database",
    ("--ssh-options",): "extra ssh options (use --ssh-config)",
    ("--ssh-verbosity",): "ssh verbosity",
    ("-T", "--test-retry"): "test retries",
}


class _NotSupported(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs["nargs"] = 0
        kwargs["default"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        raise AutoservUsageError(f"{option_string} ({self.help}) is not supported")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``autoserv``."""
    p = UsageParser(
        prog="autoserv",
        usage="autoserv [options] <control-file> [args...]\n       autoserv check [options] FILE...",
        description=DESCRIPTION,
        epilog=EPILOG + "\n" + lifecycle_cli.HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("control_file", metavar="control-file", nargs="?",
                   help="the control file to run (none with -v, -R, --collect-crashinfo)")
    p.add_argument("args", nargs="*", help="arguments for the control file (its 'args')")
    p.add_argument("--version", action="version", version=f"autoserv {__version__}")
    p.add_argument("--check", action="store_true",
                   help="check the control file and machines first (autoserv check); "
                        "do not start on an error")

    g = p.add_argument_group("machines and arguments")
    g.add_argument("-m", "--machines", action="append", default=[], metavar="LIST",
                   help="machines, separated by commas and/or spaces (repeatable)")
    g.add_argument("-M", "--mlist", metavar="FILE", help="file listing machines, one per line")
    g.add_argument("--max-parallel", metavar="N", type=positive_int, default=None,
                   help="run at most N machines' parallel_simple workers at once "
                        "(default: all; the worker model is chosen by $AUTOSERV_WORKERS, "
                        "fork or threads)")
    g.add_argument("-a", "--args", dest="extra_args", action="append", default=[], metavar="STR",
                   help="arguments for the control file, split on whitespace and appended")
    g.add_argument("-c", "--client", action="store_true",
                   help="the control file is a client-side one: run it on every machine")
    g.add_argument("-s", "--server", action="store_true",
                   help="the control file is a server-side one (the default)")

    g = p.add_argument_group("results")
    g.add_argument("-r", "--results", metavar="DIR",
                   help="results directory (default: results.<YYYY-mm-dd-HH.MM.SS> here)")
    g.add_argument("-N", "--no-results", action="store_true",
                   help="write no results directory at all")
    g.add_argument("--use-existing-results", action="store_true",
                   help="allow a results directory that already has control.srv or status.log")
    g.add_argument("--control-filename", default=None, metavar="NAME",
                   help="name of the copy of the control file in the results dir "
                        "(control.srv; control with -c)")
    g.add_argument("-l", "--label", default="", help="job label (written to keyval)")
    g.add_argument("-u", "--user", help="job user (written to keyval; default $USER)")
    g.add_argument("-P", "--execution-tag", dest="tag", default="", metavar="TAG",
                   help="job execution tag")
    g.add_argument("-p", "--write-pidfile", action="store_true",
                   help="write <results>/.autoserv_execute: the pid, then the exit status")
    g.add_argument("--pidfile-label", default="autoserv", metavar="LABEL",
                   help="pidfile name: .<LABEL>_execute (default autoserv)")

    g = p.add_argument_group("Autotest tests")
    g.add_argument("--client-tests", action="append", default=[], metavar="DIR",
                   help=f"client tests directory, searched first (repeatable; also "
                        f"${client_tests.CLIENT_TESTS_ENV})")
    g.add_argument("--server-tests", action="append", default=[], metavar="DIR",
                   help="server-side tests directory for job.run_test (repeatable)")
    g.add_argument("--install-in-tmpdir", action="store_true",
                   help="install the client in a fresh temporary directory on each host "
                        "(removed at the end of the job)")

    g = p.add_argument_group("output")
    g.add_argument("-n", "--no-tee", action="store_true",
                   help="no console output (the debug files are still written)")
    g.add_argument("--verbose", action="store_true",
                   help="DEBUG messages and tracebacks on the console")

    g = p.add_argument_group("ssh (defaults for every host)")
    g.add_argument("--ssh-user", metavar="USER", help="login user (default root)")
    g.add_argument("--ssh-port", metavar="PORT", type=port, help="port (default 22)")
    g.add_argument("--ssh-pass", metavar="PASSWORD",
                   help=f"password (better: the {PASS_ENV} environment variable)")
    g.add_argument("--ssh-key", metavar="FILE", help="private key file")
    g.add_argument("--ssh-config", metavar="FILE",
                   help=f"ssh_config file (or {CONFIG_ENV}; default ~/.ssh/config)")
    g.add_argument("--known-hosts", metavar="FILE",
                   help="known_hosts file (default ~/.ssh/known_hosts)")
    g.add_argument("--host-key-policy", choices=("strict", "accept-new", "off"),
                   help="unknown host keys: refuse, record (default), or ignore")
    g.add_argument("--connect-timeout", metavar="SECONDS", type=positive_float,
                   help="connection timeout (default 30)")

    report_command.add_flags(p)  # hook: reports, progress, sharding (autoserv/report)
    lifecycle_cli.add_flags(p)  # issue 10: -v, -R, -i, -I, -C, --hooks, ...

    g = p.add_argument_group("not supported (flags of the original Autoserv)")
    for flags, what in UNSUPPORTED.items():
        g.add_argument(*flags, action=_NotSupported, help=what)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; raises AutoservUsageError (exit 2)."""
    argv = lifecycle_cli.cleanup_equals(sys.argv[1:] if argv is None else list(argv))
    options = build_parser().parse_intermixed_args(argv)
    if options.client and options.server:
        raise AutoservUsageError("-c (client-side) and -s (server-side) are mutually exclusive")
    workers.model()  # a bad $AUTOSERV_WORKERS is a usage error, before anything runs
    if options.control_filename is None:
        options.control_filename = "control" if options.client else "control.srv"
    if options.no_results and options.results:
        raise AutoservUsageError("-N (no results directory) and -r are mutually exclusive")
    if options.no_results and options.write_pidfile:
        raise AutoservUsageError("-p needs a results directory: it cannot be used with -N")
    if not re.fullmatch(r"[-\w.]+", options.control_filename) or options.control_filename in (
        "status.log", "keyval", "debug", ".", ".."
    ):
        raise AutoservUsageError(f"invalid --control-filename: {options.control_filename!r}")
    for flag, name in (("-l", "label"), ("-u", "user"), ("-P", "tag")):
        if getattr(options, name) is not None:
            inputs.check_text(f"{flag} ({name})", getattr(options, name))
    if options.results is not None:
        if not options.results:
            raise AutoservUsageError("-r: the results directory name is empty")
        inputs.check_text("-r (results directory)", options.results)
    if not re.fullmatch(r"[-\w.]+", options.pidfile_label):
        raise AutoservUsageError(f"invalid --pidfile-label: {options.pidfile_label!r}")
    if options.ssh_pass is None:
        options.ssh_pass = os.environ.get(PASS_ENV) or None
    if options.ssh_config is None:
        options.ssh_config = os.environ.get(CONFIG_ENV) or None
    for name in ("ssh_key", "ssh_config", "known_hosts"):
        path = getattr(options, name)
        if path is not None:
            path = os.path.abspath(os.path.expanduser(path))
            setattr(options, name, path)
    for name in ("ssh_key", "ssh_config"):
        path = getattr(options, name)
        if path is not None and not os.path.isfile(path) and not (
                name == "ssh_config" and path == os.devnull):  # OpenSSH's -F /dev/null: no config
            flag = "--" + name.replace("_", "-")
            raise AutoservUsageError(f"{flag}: no such file: {path}")
    for extra in options.extra_args:
        options.args.extend(extra.split())
    lifecycle_cli.check(options)  # sets options.plan
    if options.control_file is not None and not os.path.isfile(options.control_file):
        what = "is not a file" if os.path.exists(options.control_file) else "does not exist"
        raise AutoservUsageError(f"control file {inputs.printable(options.control_file)} {what}")
    options.parsed_machines = parse_machines(options.machines, options.mlist)
    options.machine_list = [m.spec for m in options.parsed_machines]
    if options.client and not options.machine_list:
        raise AutoservUsageError("-c needs machines to run the client control file on (-m/-M)")
    for name in ("client_tests", "server_tests"):
        paths = [os.path.abspath(os.path.expanduser(d)) for d in getattr(options, name)]
        for path in paths:
            if not os.path.isdir(path):
                flag = "--" + name.replace("_", "-")
                raise AutoservUsageError(f"{flag}: no such directory: {path}")
        setattr(options, name, paths)
    report_command.check_options(options)  # hook: report flags, --shard
    if not options.plan.runs_control and not options.machine_list:
        raise AutoservUsageError("-v, -R and --collect-crashinfo need machines (-m or -M)")
    return options


def parse_machine_list(specs: Sequence[str], mlist: str | None = None) -> list[str]:
    """The machines of ``-m`` values and an ``-M`` file: validated, de-duplicated, in order."""
    return [m.spec for m in parse_machines(specs, mlist)]


def parse_machines(specs: Sequence[str], mlist: str | None = None) -> list[Machine]:
    """:func:`parse_machine_list`, each entry parsed once into a :class:`~autoserv.hosts.Machine`."""
    from autoserv.hosts.machine import Machine

    # entry -> where it came from; a bad entry whose source holds a user:password@ is not
    # echoed: a password with ',', ' ' or '#' is split there, and its fragments are entries
    entries: dict[str, tuple[str, bool]] = {}
    for e in machine_entries(specs, mlist):
        where = "-m" if e.display == MLIST_DISPLAY else f"-M {mlist} line {e.line}"
        entries.setdefault(e.text, (where, _may_hold_password(e.source)))
    machines = []
    for entry, (where, secret) in entries.items():
        try:
            machines.append(Machine.parse(entry))
        except AutoservUsageError as exc:
            if not secret:
                raise AutoservUsageError(f"{where}: {_first_line(exc)}") from None
            raise AutoservUsageError(
                f"{where}: invalid machine entry (not shown: it may hold a password); a password "
                f"with ',', ' ' or '#' cannot be given there: use --ssh-pass or {PASS_ENV}"
            ) from None
    return machines


def _may_hold_password(text: str) -> bool:
    """True when ``text`` (an -m value, an -M line) has a ``user:...@`` part."""
    return re.search(r":.*@", text) is not None


def _default_resultdir() -> str:
    base = time.strftime("results.%Y-%m-%d-%H.%M.%S")
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}.{n}"
    return path


#: JobSettings fields that are the flags of the same name, as parsed.
_JOB_FLAGS = ("label", "user", "tag", "max_parallel", "use_existing_results", "control_filename",
              "verbose")
#: SSHDefaults fields and the --ssh-* flags that give them.
_SSH_FLAGS = {
    "user": "ssh_user", "port": "ssh_port", "password": "ssh_pass", "key_file": "ssh_key",
    "host_key_policy": "host_key_policy", "known_hosts": "known_hosts",
    "ssh_config": "ssh_config", "connect_timeout": "connect_timeout",
}


def job_settings(options: argparse.Namespace) -> JobSettings:
    """The job's settings from parsed ``options`` (built once, passed to the job)."""
    from autoserv.hosts.defaults import SSHDefaults

    return JobSettings(
        **{name: getattr(options, name) for name in _JOB_FLAGS},
        ssh=SSHDefaults().updated(**{f: getattr(options, flag) for f, flag in _SSH_FLAGS.items()}),
        console=not options.no_tee,
        pidfile_label=options.pidfile_label if options.write_pidfile else None,
        tests=client_tests.TestSettings(
            client_tests=options.client_tests,
            server_tests=options.server_tests,
            install_in_tmpdir=options.install_in_tmpdir,
            client_control=options.client,
        ),
        lifecycle=options.plan,
    )


def make_job(options: argparse.Namespace) -> ServerJob:
    """Build the job described by parsed ``options``."""
    if options.no_results:
        resultdir = None
    else:
        resultdir = options.results or _default_resultdir()
        inputs.check_results_dir(resultdir, "-r" if options.results else "results directory")
    return ServerJob(options.control_file, options.args, resultdir, options.parsed_machines,
                     job_settings(options))


def _raised_by_control(exc: BaseException, job: ServerJob | None) -> bool:
    """True when ``exc`` was raised while the control file ran (its frame is in the traceback)."""
    return job is not None and job.control is not None and control.control_frame(exc, job.control) is not None


def exit_code_for(exc: BaseException | None, job: ServerJob | None = None) -> int:
    """The exit status for a job that ended with ``exc`` (None: completed).

    A usage error raised inside the control file (``create_host("bad host!")``) is the
    control file's error: exit 1, not 2.
    """
    if exc is None:
        return 0
    if isinstance(exc, AutoservUsageError) and not _raised_by_control(exc, job):
        return 2
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return 0
    return 1


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message; one ending in ``:`` gets the next line (its reason)."""
    lines = [line.strip() for line in str(exc).strip().split("\n") if line.strip()]
    if not lines:
        return ""
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[1]}"
    return lines[0]


def describe_error(exc: BaseException, job: ServerJob | None) -> str:
    """The one line that reports ``exc`` on standard error (without the program name)."""
    if isinstance(exc, AutoservUsageError) and not _raised_by_control(exc, job):
        return f"error: {_first_line(exc)} (see autoserv --help)"
    if isinstance(exc, abort.JobAbort):
        return str(exc)
    if isinstance(exc, control.ControlFileSyntaxError | JobError):
        return _first_line(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = f"{type(exc).__name__}: {_first_line(exc)}" if _first_line(exc) else type(exc).__name__
    if isinstance(exc, SystemExit):
        text = f"control file called sys.exit({exc.code!r})"
    if job is not None and job.control is not None:
        line = control.control_frame(exc, job.control)
        if line is not None:
            return f"{job.control}:{line}: {text}"
    if isinstance(exc, AutoservError):
        return text
    return f"internal error: {text}"


def _redact(text: str, options: argparse.Namespace | None) -> str:
    secrets = []
    if options is not None:
        if options.ssh_pass:
            secrets.append(options.ssh_pass)
        for machine in getattr(options, "parsed_machines", []):
            if machine.password:
                secrets.append(machine.password.reveal())
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``autoserv`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    if argv is None:  # the real command: passwords on its command line leave ps at once
        inputs.hide_secrets_from_ps(sys.orig_argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["cleanup"]:  # `autoserv cleanup RESULTS_DIR` (autoserv/orphans.py)
        from autoserv import orphans

        return _run_subcommand(argv, lambda args: orphans.main(args[1:]))
    if argv[:1] == ["check"]:  # the `autoserv check` command (a control file named check: ./check)
        from autoserv.check import command as check_command

        return check_command.main(argv[1:])
    if argv[:1] and argv[0] in report_command.SUBCOMMANDS:
        return _run_subcommand(argv, _report)  # hook: autoserv report / autoserv merge
    options: argparse.Namespace | None = None
    job: ServerJob | None = None
    error: BaseException | None = None
    message: str | None = None
    try:
        try:
            options = parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else 0
        if options.check:
            from autoserv.check import command as check_command

            check_command.preflight(options)  # findings on stderr; raises on an error
        job = make_job(options)
        progress = report_command.start_progress(job, options)  # hook: live progress display
        try:
            job.run()
        finally:
            report_command.stop_progress(progress)
        if job.failed:
            logs = job.failure_logs()
            where = (", ".join(logs[:3]) if logs else os.path.join(job.resultdir, "status.log")
                     ) if job.resultdir else "the log"
            message = f"job failed: {'; '.join(job.failures[:3])}"
            if len(job.failures) > 3:
                message += f"; and {len(job.failures) - 3} more"
            message += f" (see {where})"
    except BaseException as exc:
        error = exc
        message = describe_error(exc, job)
    code = exit_code_for(error, job) if error is not None or message is None else 1
    if message is not None:
        message = _redact(message, options)
    if job is not None and job._logging:
        if error is not None and code != 0:
            log.error("%s", message, extra={"files_only": True})
            log.debug(
                "Traceback:\n%s",
                "".join(traceback.format_exception(error)).rstrip(),
                extra={"files_only": True},
            )
        log.info("autoserv exiting with status %d", code, extra={"files_only": True})
        report_error = report_command.job_finished(job, options, code)  # hook: write the reports
        if report_error is not None and not results_disk.broken():  # said once already
            sys.stderr.write(f"autoserv: {report_error}\n")
    if job is not None:
        job.close(code)
    if error is not None and code != 0 and options is not None and options.verbose:
        if code != 2:
            sys.stderr.write(_redact("".join(traceback.format_exception(error)), options))
    if message is not None and code != 0:
        sys.stderr.write(f"autoserv: {message}\n")
        sys.stderr.flush()
    _quiet_broken_stdout()
    return code


def _run_subcommand(argv: Sequence[str], run: Callable[[Sequence[str]], int]) -> int:
    """``autoserv report|merge|cleanup ...``: errors in one line (exit 2 for usage, else 1)."""
    try:
        return run(argv)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except AutoservUsageError as exc:
        sys.stderr.write(f"autoserv {argv[0]}: error: {_first_line(exc)} (see autoserv {argv[0]} --help)\n")
        return 2
    except AutoservError as exc:
        sys.stderr.write(f"autoserv {argv[0]}: {_first_line(exc)}\n")
        return 1


def _report(argv: Sequence[str]) -> int:
    """``autoserv report ...`` / ``autoserv merge ...``: print the paths written."""
    for path in report_command.run_subcommand(argv):
        print(path)
    _quiet_broken_stdout()
    return 0


def _quiet_broken_stdout() -> None:
    """If our stdout reader went away, do not let Python's final flush fail loudly."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
