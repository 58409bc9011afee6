"""Entry point of the client runtime on a host.

Usage (from the autodir, which holds this tree)::

    cd <autodir> && PYTHONPATH=<autodir> python3 -m autotest.client.runner CONTROL \\
        --results DIR [--tests DIR]... [--continue] [--tag TAG] [--args ARG...]

CONTROL is a client control file, Python 3 or Python 2 (translated line for line).
Tests are looked up in each ``--tests`` DIR, then in the built-in ``autotest/client/tests``.
The runner stays in the foreground; after its arguments are checked, its stdout and
stderr (and those of every test and command) go to ``DIR/debug/client.log``.

Files in DIR (each line written with one append, so a follower never sees half a line):

``status.log``
    Autotest status lines, exactly autoserv's grammar (its ``status.py`` is shipped).  A
    fresh run (no ``--continue``) empties status.log, debug/client.log and control.state,
    then writes ``START\\t----\\t----`` at indentation 0; each test adds, one level deeper,
    ``START\\t<subdir>\\t<test>``, ``<STATUS>\\t<subdir>\\t<test>\\t...\\t<reason>`` and
    ``END <STATUS>\\t<subdir>\\t<test>``.  The run ends with ``END GOOD\\t----\\t----`` at
    indentation 0 when the control file ran to its end (tests may have failed), or
    ``END FAIL\\t----\\t----\\t...\\t<file>:<line>: <Exception>: <message>`` when it raised
    (``END ERROR`` and ``<file>:<line>: SyntaxError: ...`` when it does not compile), or
    ``END ABORT ... killed by SIGTERM`` (inner groups closed the same way first).
``debug/client.log``, ``<test>[.<tag>]/`` (``keyval``, ``results/keyval``, ``debug/``)
    see :mod:`autotest.client.shared.test`.
``control.state``
    JSON, see :mod:`autotest.client.job`.

Exit status: 0 the control file ran to its end; 1 it raised (or did not compile);
2 usage error (one line on stderr, nothing written); 3 it stopped for a reboot;
128+N killed by signal N (SIGTERM/SIGINT: the processes of every running test are
SIGKILLed first and the open groups end with ``END ABORT ... client killed by SIGTERM``).

Killing a client: each test runs in its own session (not in the runner's process
group).  SIGTERM to the runner (alone or with its group) is the clean way: it kills the
tests, records END ABORT and exits.  If the runner dies any other way (SIGKILL
included), the kernel sends each test's process SIGTERM (``PR_SET_PDEATHSIG``), and the
test's process SIGKILLs the rest of its session and exits; so a group kill of the runner
never leaves a test running.

Reboot protocol (``job.reboot()``)::

    \\tSTART\\t----\\treboot\\t...          # at the job's current depth (1 at top level)
    \\t\\tGOOD\\t----\\treboot.start\\t...   # control.state now has "reboot": {...}
    -> sync; (sleep 1; reboot) </dev/null >/dev/null 2>&1 &  ; exit 3

The server then records ``GOOD reboot.verify`` (one level inside ``START reboot``) and
``END GOOD reboot`` itself; the client never writes them.  ``--continue`` reloads
control.state, drops the ``reboot`` group from its saved nesting (the server closed it),
writes **no** new ``START ---- ----`` (the continued run stays inside the outermost
group the first run opened, at indentation 1), executes the control file's top-level
code again (as Autotest does: functions must exist for the steps), runs the queued steps
and closes the outermost group with ``END GOOD\\t----\\t----`` at indentation 0.  A
``--continue`` whose state has no requested reboot is an unexpected reboot: every group
still open inside the outermost one is closed with ``END FAIL ... unexpected reboot``,
then ``\\tFAIL\\t----\\treboot\\t...\\tunexpected reboot`` is recorded and the job goes on with
its next queued step.  The only ``START\\t----\\t----`` a continuation writes is for a job whose
first run died before writing its own (control.state's ``groups`` is empty): then it opens
the outermost group first, so every client run still ends with ``END ...\\t----\\t----`` at
indentation 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
from types import FrameType
from typing import Any, NoReturn

from autotest.client import job as job_module
from autotest.client.shared import legacy, loader, status

__all__ = ["main", "EXIT_OK", "EXIT_CONTROL_FAILED", "EXIT_USAGE", "EXIT_REBOOT"]

EXIT_OK = 0
EXIT_CONTROL_FAILED = 1
EXIT_USAGE = 2
EXIT_REBOOT = 3

_PREAMBLE = "from autotest.client.shared.error import *\nfrom autotest.client.utils import *\n"
log = logging.getLogger("autotest.runner")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


class _Terminated(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _parser() -> _Parser:
    p = _Parser(prog="python3 -m autotest.client.runner", add_help=True,
                description="Run an Autotest client control file (autoserv's client runtime).")
    p.add_argument("control", help="the client control file")
    p.add_argument("--results", required=True, metavar="DIR", help="results directory")
    p.add_argument("--tests", action="append", default=[], metavar="DIR",
                   help="a directory of tests (<name>/<name>.py), searched before the built-in ones")
    p.add_argument("--continue", dest="cont", action="store_true",
                   help="continue the job saved in DIR/control.state (after a reboot)")
    p.add_argument("--tag", default=None, help="the job's tag (kept in control.state)")
    p.add_argument("--args", nargs=argparse.REMAINDER, default=[], metavar="ARG",
                   help="arguments for the control file (its `args`); must come last")
    return p


def _autodir() -> str:
    # <autodir>/autotest/client/runner.py
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _check(argv: list[str] | None) -> tuple[argparse.Namespace, job_module.JobState]:
    opts = _parser().parse_args(argv)
    if not os.path.isfile(opts.control):
        raise _UsageError(f"control file {opts.control!r} does not exist")
    for directory in opts.tests:
        if not os.path.isdir(directory):
            raise _UsageError(f"--tests {directory!r} is not a directory")
    resultdir = os.path.abspath(opts.results)
    if os.path.exists(resultdir) and not os.path.isdir(resultdir):
        raise _UsageError(f"--results {opts.results!r} is not a directory")
    state_path = os.path.join(resultdir, "control.state")
    if opts.cont:
        try:
            state = job_module.JobState.load(state_path)
        except ValueError as exc:
            raise _UsageError(str(exc)) from None
        if state.data.get("finished"):
            raise _UsageError(f"{state_path}: the job already finished; nothing to continue")
    else:
        state = job_module.JobState.new(state_path, os.path.abspath(opts.control), opts.tag, opts.args)
    return opts, state


def _redirect_output(logfile: str) -> int:
    """Send fds 1 and 2 to ``logfile``; return a duplicate of the original stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    original = os.dup(2)
    fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5.5s| %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)
    return original


def _reason(exc: BaseException, path: str) -> str:
    if isinstance(exc, loader.SourceSyntaxError):
        return str(exc)
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == path:
            line = lineno
    where = f"{path}:{line}: " if line else ""
    return f"{where}{type(exc).__name__}: {exc}"


def _close_groups(job: job_module.ClientJob, inner: str, outer: str, reason: str,
                  inner_reason: str | None = None) -> None:
    groups = job.open_groups
    while len(groups) > 1:
        subdir, operation = groups[-1]
        job.record(f"END {inner}", subdir, operation, reason if inner_reason is None else inner_reason)
        groups = job.open_groups
    if groups:
        job.record(f"END {outer}", None, None, reason)


def _run(opts: argparse.Namespace, state: job_module.JobState, stderr_fd: int) -> int:
    resultdir = os.path.dirname(state.path)
    writer = status.StatusLogWriter(os.path.join(resultdir, "status.log"))
    control = os.path.abspath(opts.control)
    job = job_module.ClientJob(control, resultdir, _autodir(),
                               [os.path.abspath(d) for d in opts.tests], state, writer)

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Terminated(signum)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    log.info("client runtime: control %s, results %s, tests %s, continue=%s, tag=%s",
             control, resultdir, job.test_dirs, opts.cont, opts.tag)
    try:
        if opts.cont:
            job.continue_after_reboot()
        else:
            state.save()
            job.record("START", None, None)
        code, translated = loader.compile_source(loader.read_source(control), control)
        if translated:
            log.info("%s is Python 2: translated to Python 3 (line numbers kept)", control)
        namespace: dict[str, Any] = {"__name__": "__main__", "__file__": control}
        exec(_PREAMBLE, namespace)  # the names Autotest control files expect
        namespace.update(legacy.PY2_BUILTINS)  # in every control file, translated or not
        namespace.update(job=job, args=list(job.args))
        try:
            exec(code, namespace)  # running the user's control file is the job
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise
        job.run_steps(namespace, opts.cont)
    except job_module.JobReboot:
        log.info("Rebooting: exit %d; continue with --continue", EXIT_REBOOT)
        return EXIT_REBOOT
    except _Terminated as exc:
        job.kill_children()
        name = signal.Signals(exc.signum).name
        _close_groups(job, "ABORT", "ABORT", f"client killed by {name}")
        state.data["finished"] = True
        state.save()
        return 128 + exc.signum
    except BaseException as exc:
        reason = _reason(exc, control)
        log.error("control file failed: %s", reason, exc_info=not isinstance(exc, loader.SourceSyntaxError))
        word = "ERROR" if isinstance(exc, loader.SourceSyntaxError) else "FAIL"
        _close_groups(job, "ABORT", word, reason)
        state.data["finished"] = True
        state.save()
        os.write(stderr_fd, f"client job failed: {reason}\n".encode(errors="replace"))
        return EXIT_CONTROL_FAILED
    _close_groups(job, "ABORT", "GOOD", "", "group still open when the control file ended")
    state.data["finished"] = True
    state.save()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the client job; return the exit status (see the module docstring)."""
    try:
        opts, state = _check(argv)
    except _UsageError as exc:
        sys.stderr.write(f"autotest.client.runner: error: {exc}\n")
        return EXIT_USAGE
    resultdir = os.path.dirname(state.path)
    debugdir = os.path.join(resultdir, "debug")
    os.makedirs(debugdir, exist_ok=True)
    if not opts.cont:
        for name in ("status.log", "control.state", os.path.join("debug", "client.log")):
            with open(os.path.join(resultdir, name), "w"):
                pass
    stderr_fd = _redirect_output(os.path.join(debugdir, "client.log"))
    try:
        return _run(opts, state, stderr_fd)
    finally:
        logging.shutdown()
        os.close(stderr_fd)


if __name__ == "__main__":
    sys.exit(main())
