"""The CLI side of reports: flags of a job, ``autoserv report`` and ``autoserv merge``.

autoserv.cli calls in here through four small hooks:

* :func:`add_flags` adds ``--junit/--json/--html FILE``, ``--shard I/N`` and
  ``--progress/--no-progress`` to the job's parser; :func:`check_options` checks them and
  applies the shard to the parsed machines;
* :func:`job_finished` writes the reports of a finished job (whatever way it ended);
* :func:`run_subcommand` runs ``autoserv report ...`` / ``autoserv merge ...``.

Nothing here prints: errors are :class:`~autoserv.errors.AutoservUsageError` (exit 2) or
:class:`ReportError` (exit 1), each one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
from collections.abc import Sequence
from typing import Any

from autoserv.cmdline import UsageParser
from autoserv.errors import AutoservError, AutoservUsageError

__all__ = [
    "SUBCOMMANDS",
    "ReportError",
    "add_flags",
    "check_options",
    "job_finished",
    "run_subcommand",
    "start_progress",
    "stop_progress",
]

log = logging.getLogger("autoserv.report")

SUBCOMMANDS = ("report", "merge")
SUBCOMMANDS_HELP = """
reports (every results dir gets junit.xml, results.json, report.html; docs/results-json.md):
  autoserv report RESULTS_DIR [--junit F] [--json F] [--html F]
                       write them for any results dir (also the original Autotest's)
  autoserv merge OUT DIR...   merge shard results dirs (--shard I/N) into OUT
"""


class ReportError(AutoservError):
    """A report could not be written or a results dir not read (exit 1)."""


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The report, shard and progress flags of a job (and the subcommands in the epilog)."""
    parser.epilog = (parser.epilog or "") + SUBCOMMANDS_HELP
    g = parser.add_argument_group("reports, progress and sharding")
    g.add_argument("--junit", metavar="FILE",
                   help="also write the JUnit XML here (always: <results>/junit.xml)")
    g.add_argument("--json", metavar="FILE",
                   help="also write results.json here (always: <results>/results.json)")
    g.add_argument("--html", metavar="FILE",
                   help="also write the HTML report here (always: <results>/report.html)")
    g.add_argument("--shard", metavar="I/N",
                   help="run only on the I-th of N stable slices of the machines (1 <= I <= N)")
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="live progress display (default: on a terminal, unless CI is set or -n)")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="plain lines and a one-line summary per machine")


def check_options(options: argparse.Namespace) -> None:
    """Check the report flags and apply ``--shard`` to the parsed machines."""
    from autoserv.report import shard

    wanted = [f"--{k}" for k in ("junit", "json", "html") if getattr(options, k, None)]
    if wanted and options.no_results:
        raise AutoservUsageError(f"{wanted[0]} needs a results directory: it cannot be used with -N")
    for kind in ("junit", "json", "html"):
        path = getattr(options, kind, None)
        if path is not None:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise AutoservUsageError(f"--{kind} {path}: no such directory: {parent}")
            setattr(options, kind, os.path.abspath(path))
    options.shard_spec = None
    if getattr(options, "shard", None):
        try:
            index, total = shard.parse_shard(options.shard)
        except ValueError as exc:
            raise AutoservUsageError(str(exc)) from None
        options.shard_spec = (index, total)
        options.parsed_machines = shard.select(options.parsed_machines, index, total)
        options.machine_list = [m.spec for m in options.parsed_machines]


def job_finished(job: Any, options: argparse.Namespace | None, exit_status: int) -> str | None:
    """Write the reports of ``job`` (a finished ServerJob); the error line, or None.

    Called for every job that got as far as its results dir, however it ended.  The job
    keyval gets ``job_args`` and ``job_exit_status`` first, so a later ``autoserv
    report`` of the same dir says the same.
    """
    from autoserv import abort, logging_setup
    from autoserv.job import write_keyval
    from autoserv.report import ReportPaths, write_reports

    if job.resultdir is None or not os.path.isdir(job.resultdir):
        return None
    extra = ReportPaths(
        junit=getattr(options, "junit", None),
        json=getattr(options, "json", None),
        html=getattr(options, "html", None),
    )
    data: dict[str, object] = {"job_exit_status": exit_status}
    if job.args:
        data["job_args"] = logging_setup.redact(shlex.join(job.args))
    spec = getattr(options, "shard_spec", None)
    if spec is not None:
        data["shard"] = f"{spec[0]}/{spec[1]}"
    with abort.deferred():
        try:
            write_keyval(job.resultdir, data)
            written = write_reports(job.resultdir, extra)
        except (OSError, ValueError) as exc:
            log.debug("Writing the reports failed", exc_info=True, extra={"files_only": True})
            return f"could not write the reports of {job.resultdir}: {exc}"
    log.info("Reports: %s", ", ".join(written), extra={"files_only": True})
    return None


def start_progress(job: Any, options: argparse.Namespace) -> Any:
    """Start the progress display of ``job`` (see autoserv.report.progress); its handle."""
    import sys

    from autoserv.report import progress

    try:
        isatty = os.isatty(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        isatty = False
    mode = progress.choose_mode(getattr(options, "progress", None), isatty, os.environ,
                                bool(getattr(options, "no_tee", False)))
    return progress.Progress(job.resultdir, mode).start()


def stop_progress(handle: Any) -> None:
    """Remove the display (live mode: print the summary table)."""
    if handle is not None:
        handle.stop()


def _report_parser() -> argparse.ArgumentParser:
    p = UsageParser(
        prog="autoserv report",
        description="Write junit.xml, results.json and report.html for a results dir "
        "(autoserv's, an interrupted one, or one of the original Autotest).",
    )
    p.add_argument("resultdir", metavar="RESULTS_DIR")
    p.add_argument("--junit", metavar="FILE", help="write the JUnit XML here")
    p.add_argument("--json", metavar="FILE", help="write results.json here")
    p.add_argument("--html", metavar="FILE", help="write the HTML report here")
    p.add_argument("--no-write-resultdir", action="store_true",
                   help="write only the files named, not the results dir's own reports")
    return p


def _merge_parser() -> argparse.ArgumentParser:
    p = UsageParser(
        prog="autoserv merge",
        description="Merge the results dirs of shards (--shard I/N) into one results dir "
        "OUT (status.logs, keyvals, .machines) and write its reports.",
    )
    p.add_argument("out", metavar="OUT", help="the merged results dir (new or empty)")
    p.add_argument("dirs", metavar="DIR", nargs="+", help="a shard's results dir")
    p.add_argument("--junit", metavar="FILE", help="also write the JUnit XML here")
    p.add_argument("--json", metavar="FILE", help="also write results.json here")
    p.add_argument("--html", metavar="FILE", help="also write the HTML report here")
    return p


def run_subcommand(argv: Sequence[str]) -> list[str]:
    """Run ``report ...`` or ``merge ...`` (``argv[0]`` is the subcommand); the paths written.

    Raises AutoservUsageError (bad usage, exit 2) or ReportError (exit 1); SystemExit(0)
    for ``--help``.
    """
    from autoserv.report import ReportPaths, merge, write_reports

    name, rest = argv[0], list(argv[1:])
    if name == "report":
        options = _report_parser().parse_args(rest)
        extra = ReportPaths(options.junit, options.json, options.html)
        if options.no_write_resultdir and not (options.junit or options.json or options.html):
            raise AutoservUsageError("--no-write-resultdir needs --junit, --json or --html")
        if not os.path.isdir(options.resultdir):
            raise ReportError(f"results directory {options.resultdir} does not exist")
        try:
            return write_reports(options.resultdir, extra, not options.no_write_resultdir)
        except (FileNotFoundError, ValueError) as exc:
            raise ReportError(str(exc)) from None
        except OSError as exc:
            raise ReportError(f"could not write a report: {exc}") from None
    if name == "merge":
        options = _merge_parser().parse_args(rest)
        try:
            merge.merge(options.out, options.dirs)
            return write_reports(options.out, ReportPaths(options.junit, options.json, options.html))
        except (merge.MergeError, ValueError, FileNotFoundError) as exc:
            raise ReportError(str(exc)) from None
        except OSError as exc:
            raise ReportError(f"merge failed: {exc}") from None
    raise AutoservUsageError(f"unknown subcommand {name!r}")
