"""The server job: results directory, status.log, keyval, parallel workers, cleanup.

A :class:`ServerJob` is what a control file sees as ``job``.  :meth:`ServerJob.run` prepares
the results directory, sets up logging, copies and executes the control file, and whatever
happens (success, exception, SIGINT/SIGTERM) ends every open status group, closes every
host (killing remote commands and removing remote temp dirs) and writes ``job_finished``.
The CLI then calls :meth:`ServerJob.close` with the exit status.

Results directory::

    control.srv            the control file as run (CRs removed)
    keyval                 label, user, hostname, status_version, job_started, job_finished
    status.log             see autoserv.status
    debug/autoserv.LEVEL   DEBUG, INFO, WARNING, ERROR (each: that level and above)
    .machines              with more than one machine: their labels, one per line
    .autoserv_execute      with -p: line 1 the pid; at exit line 2 the exit status as
                           os.waitpid encodes it (``code << 8``), line 3 the failed tests
    journal                what the job started on its hosts (see autoserv.journal), read
                           by ``autoserv cleanup`` after the job was killed
    <machine>/             per parallel worker: status.log, keyval (hostname=), debug/
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import re
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autoserv import abort, journal, logging_setup, parallel, results_disk, scope, status
from autoserv import control as control_mod
from autoserv.client_tests import TestSettings
from autoserv.errors import JobError, TestBaseException

if TYPE_CHECKING:  # the hosts package (paramiko) is imported when a job runs, not before
    from autoserv.hosts.defaults import SSHDefaults
    from autoserv.hosts.machine import Machine

__all__ = ["ServerJob", "JobSettings", "STATUS_VERSION", "write_keyval", "read_keyval", "IN_USE_MARKERS"]

log = logging.getLogger("autoserv.job")
status_log = logging.getLogger("autoserv.status")

STATUS_VERSION = 1
#: A results dir holding one of these is in use (unless --use-existing-results).
IN_USE_MARKERS = ("control.srv", "status.log")
_KEY = re.compile(r"^[-.\w]+$")


def write_keyval(directory: str, data: Mapping[str, object]) -> None:
    """Append ``key=value`` lines to ``<directory>/keyval``."""
    lines = []
    for key, value in data.items():
        if not _KEY.match(key):
            raise ValueError(f"invalid keyval key: {key!r}")
        text = str(value)
        if "\n" in text:
            raise ValueError(f"keyval value of {key} contains a newline")
        lines.append(f"{key}={text}\n")
    results_disk.append(os.path.join(directory, "keyval"), "".join(lines))


def read_keyval(directory: str) -> dict[str, str]:
    """Read ``<directory>/keyval`` (or a keyval file path) into a dict; later lines win."""
    path = directory if os.path.isfile(directory) else os.path.join(directory, "keyval")
    data: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                data[key] = value
    return data


def _close_all_hosts() -> None:
    try:
        from autoserv.hosts import registry
    except ImportError:  # pragma: no cover - the hosts package is part of autoserv
        return
    registry.close_all()


def _activate_host_context(job: ServerJob) -> Any:
    """Give hosts this job's context: its SSH defaults, results dir and status.log hook.

    Returns the previous context, for :func:`_restore_host_context`.
    """
    from autoserv.hosts import context

    return context.activate(context.JobContext(ssh=job.ssh, resultdir=job.resultdir,
                                               record=job.record))


def _update_host_context(**changes: Any) -> None:
    from autoserv.hosts import context

    context.update(**changes)


def _restore_host_context(previous: Any) -> None:
    from autoserv.hosts import context

    context.restore(previous)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


@dataclass(frozen=True)
class JobSettings:
    """How the command line configures a job, beyond its control file, arguments, results
    dir and machines: one value, built once (by :func:`autoserv.cli.job_settings`)."""

    label: str = ""
    #: the job's user (None: ``$USER``)
    user: str | None = None
    tag: str = ""
    #: SSH defaults for every host of the job (``--ssh-*`` flags; None: the built-in ones)
    ssh: SSHDefaults | None = None
    #: at most this many parallel workers at once (None: all)
    max_parallel: int | None = None
    use_existing_results: bool = False
    control_filename: str = "control.srv"
    #: log to the console (``-n``/``--no-tee`` turns it off); DEBUG there with ``verbose``
    console: bool = True
    verbose: bool = False
    #: with ``-p``: the pidfile is ``.<pidfile_label>_execute`` in the results dir
    pidfile_label: str | None = None
    tests: TestSettings = field(default_factory=TestSettings)
    #: the lifecycle segments around the control file (an autoserv.lifecycle.Plan), if any
    lifecycle: Any = None


class _WorkerState:
    """What a worker reports back to the parent job (see :class:`parallel.WorkerHooks`)."""

    failures = 0


class ServerJob:
    """The job a control file runs in.

    ``resultdir`` None means no results directory at all (``-N``): nothing is written and
    the control file runs in the current directory.  ``machines`` are the machine entries
    as given (de-duplicated by the caller), as strings or parsed
    :class:`~autoserv.hosts.Machine` values; ``args`` the control file's arguments;
    ``settings`` the rest of what the command line says (default: no flags given).

    What a parallel worker changes (its results subdir, status.log, failures, console
    prefix) is its own: a forked worker has a copy of the job, a worker thread sets these
    :class:`~autoserv.scope.PerWorker` attributes for itself.
    """

    resultdir: scope.PerWorker[str | None] = scope.PerWorker()
    failures: scope.PerWorker[list[str]] = scope.PerWorker()
    failed_tests: scope.PerWorker[int] = scope.PerWorker()
    _failed_inside: scope.PerWorker[list[bool]] = scope.PerWorker()
    abort_reason: scope.PerWorker[str | None] = scope.PerWorker()
    _status: scope.PerWorker[status.StatusLogWriter] = scope.PerWorker()
    _prefix: scope.PerWorker[str] = scope.PerWorker()
    _pidfile: scope.PerWorker[str | None] = scope.PerWorker()
    _handlers: scope.PerWorker[abort.AbortHandlers | None] = scope.PerWorker()

    def __init__(
        self,
        control: str | None,
        args: Sequence[str] = (),
        resultdir: str | None = None,
        machines: Sequence[str | Machine] = (),
        settings: JobSettings | None = None,
    ) -> None:
        # control None: a lifecycle-only job (-v, -R, --collect-crashinfo), see autoserv.lifecycle
        self.control = os.path.abspath(control) if control is not None else None
        #: how the command line configures this job (one value, never changed)
        self.settings = settings if settings is not None else JobSettings()
        self.args = list(args)
        self.resultdir = os.path.abspath(resultdir) if resultdir is not None else None
        from autoserv.hosts.machine import Machine

        #: the machines parsed once: passwords (to redact) and labels come from here
        self.parsed_machines = [
            m if isinstance(m, Machine) else Machine.parse(m, check_host=False) for m in machines
        ]
        #: the entries as given (with passwords): what the control file's ``machines`` holds
        self.machines = [m.spec for m in self.parsed_machines]
        #: what control files know as ``job.label``, ``job.user``, ``job.tag``
        self.label, self.tag = self.settings.label, self.settings.tag
        self.user = self.settings.user if self.settings.user is not None else _default_user()
        #: One line per failure: failed status.log entries, failed workers.
        self.failures: list[str] = []
        #: status.log failure entries, this job's and its workers' (the pidfile's line 3)
        self.failed_tests = 0
        #: one flag per open status.log group: has a failure been recorded inside it?
        self._failed_inside: list[bool] = []
        self.abort_reason: str | None = None
        self._status = status.StatusLogWriter(None)
        self._prefix = ""
        self._pidfile = None
        self._handlers = None
        self._previous_hooks: parallel.WorkerHooks | None = None
        self._logging = False
        self._started = False

    @property
    def ssh(self) -> SSHDefaults:
        """The SSH defaults of this job's hosts (``--ssh-*``), in force while it runs."""
        from autoserv.hosts.defaults import SSHDefaults

        return self.settings.ssh if self.settings.ssh is not None else SSHDefaults()

    @property
    def max_parallel(self) -> int | None:
        """At most this many parallel workers at once (None: all); read by autoserv.parallel."""
        return self.settings.max_parallel

    @property
    def tests(self) -> TestSettings:
        """Autotest tests: --client-tests, --server-tests, --install-in-tmpdir, -c."""
        return self.settings.tests

    # -- what control files use ----------------------------------------------------------

    @property
    def hosts(self) -> list[Any]:
        """The hosts open in this process (closed when the job ends)."""
        from autoserv.hosts import Host, registry

        return [h for h in registry.open_hosts(scope.current()) if isinstance(h, Host)]

    @property
    def failed(self) -> bool:
        """True once anything failed: a failure entry or a failed parallel worker."""
        return bool(self.failures)

    def record(
        self,
        status_code: str,
        subdir: str | None,
        operation: str | None,
        status: str = "",
        optional_fields: Mapping[str, object] | None = None,
    ) -> None:
        """Append an entry to status.log (``START`` opens a group, ``END ...`` closes one)."""
        self._write(status_code, subdir, operation, status, optional_fields or {})

    def _write(self, status_code: str, subdir: str | None, operation: str | None, message: object,
               fields: Mapping[str, object], timestamp: float | None = None) -> None:
        """The one writer of status.log entries: redacted (secrets never reach the results),
        echoed to the status logger, failures counted."""
        redact = logging_setup.redact
        text = self._write_status(status_code, subdir, operation, redact(str(message)),
                                  {k: redact(str(v)) for k, v in fields.items()}, timestamp=timestamp)
        status_log.info("%s", text)
        self._count_failure(status_code, operation)

    def _count_failure(self, status_code: str, operation: str | None) -> None:
        """Count failed tests/operations once each: a failure entry, or an ``END`` failure
        whose group recorded none inside (a failed test's FAIL and END FAIL are one)."""
        if status_code == "START":
            self._failed_inside.append(False)
            return
        ended_failed_inside = False
        if status_code.startswith("END") and self._failed_inside:
            ended_failed_inside = self._failed_inside.pop()
        if _is_failure(status_code) and not ended_failed_inside:
            self.failures.append(f"{status_code} {operation or '----'}")
            self.failed_tests += 1
        if (_is_failure(status_code) or ended_failed_inside) and self._failed_inside:
            self._failed_inside[-1] = True

    def run_group(self, function: Callable[..., Any], *args: Any, **dargs: Any) -> Any:
        """Run ``function(*args, **dargs)`` inside a START/END group named after it.

        ``tag=`` names the group instead.  A :class:`~autoserv.errors.TestBaseException`
        ends the group with its status (``END FAIL``...) and returns None; any other
        exception ends it with ``END ABORT`` and is re-raised.
        """
        name = dargs.pop("tag", None) or getattr(function, "__name__", "group")
        self.record("START", None, name)
        try:
            result = function(*args, **dargs)
        except TestBaseException as exc:
            self.record(f"END {exc.exit_status}", None, name, str(exc))
            return None
        except Exception as exc:
            self.record("END ABORT", None, name, f"{_one_line(exc)}\n{traceback.format_exc()}")
            raise
        self.record("END GOOD", None, name)
        return result

    # -- Autotest tests (autoserv.autotest_remote, autoserv.server_test) -----------------

    def record_entry(self, entry: status.StatusEntry) -> None:
        """Re-record a parsed entry (a client's) nested under this job's open groups,
        keeping its timestamp and fields."""
        fields = {k: v for k, v in entry.fields.items() if k not in ("timestamp", "localtime")}
        ts = float(entry.timestamp) if entry.timestamp is not None else None
        self._write(entry.status_code, entry.subdir, entry.operation, entry.message, fields, ts)

    def _write_status(self, *entry: Any, **kw: Any) -> str:
        """Append to status.log; once the results dir cannot be written, only keep the nesting."""
        results_disk.check()
        try:
            return self._status.record(*entry, **kw)
        except OSError as exc:
            path, self._status.path = self._status.path, None
            results_disk.failed(path or "", exc)
            return self._status.record(*entry, **kw)

    def _write_results(self, what: str, write: Callable[[], Any]) -> None:
        """Run ``write`` (a write under the results dir); a failure aborts the job, once."""
        if results_disk.broken():
            results_disk.check()
            return
        try:
            write()
        except OSError as exc:
            results_disk.failed(what, exc)

    def run_test(self, url: str, *args: Any, **dargs: Any) -> bool:
        """Run server-side test ``url`` on the controller (see autoserv.server_test)."""
        from autoserv import server_test

        return server_test.run_test(self, url, *args, **dargs)

    @property
    def autodir(self) -> str:
        """The Autotest tree shipped with autoserv (``<autodir>/client/tests/...``)."""
        from autoserv import client

        return os.path.join(os.path.dirname(os.path.abspath(client.__file__)), "site",
                            "autotest")

    #: :func:`autoserv.parallel.parallel_simple` itself (per-arg results dirs of this job).
    parallel_simple = staticmethod(parallel.parallel_simple)

    # -- running -------------------------------------------------------------------------

    def _check_resultdir(self) -> None:
        path = self.resultdir
        if path is None:
            return
        if os.path.exists(path) and not os.path.isdir(path):
            raise JobError(f"results directory {path} exists and is not a directory")
        if os.path.isdir(path) and not self.settings.use_existing_results:
            for name in dict.fromkeys([*IN_USE_MARKERS, self.settings.control_filename]):
                if os.path.exists(os.path.join(path, name)):
                    raise JobError(
                        f"results directory {path} is already in use (it has {name}); "
                        "pass --use-existing-results to reuse it, or -r for another one"
                    )
        os.makedirs(path, exist_ok=True)

    def run(self) -> None:
        """Run the job; raises whatever the control file raised (or :class:`JobAbort`).

        When the results dir could not be written (a full disk: see
        :mod:`autoserv.results_disk`), the job is aborted for that reason whatever else
        happened.
        """
        try:
            self._run()
        except BaseException as exc:
            disk = results_disk.reason()
            if disk is not None and not (isinstance(exc, abort.JobAbort) and exc.reason == disk):
                raise abort.JobAbort(disk) from exc
            raise
        disk = results_disk.reason()
        if disk is not None:
            raise abort.JobAbort(disk)

    def _run(self) -> None:
        self._started = True
        self._check_resultdir()
        if self.resultdir is not None:
            results_disk.activate(self.resultdir)
            journal.open_journal(self.resultdir)  # what autoserv cleanup ends after a SIGKILL
        if self.ssh.password:
            logging_setup.add_secret(self.ssh.password.reveal())
        for machine in self.parsed_machines:
            if machine.password:
                logging_setup.add_secret(machine.password.reveal())
        debug_dir = os.path.join(self.resultdir, "debug") if self.resultdir else None
        logging_setup.setup(debug_dir, self.settings.console, self.settings.verbose)
        self._logging = True
        if self.resultdir is not None:
            self._status = status.StatusLogWriter(os.path.join(self.resultdir, "status.log"))
            if self.settings.pidfile_label:
                self._pidfile = os.path.join(self.resultdir,
                                             f".{self.settings.pidfile_label}_execute")
                with open(self._pidfile, "w") as f:
                    f.write(f"{os.getpid()}\n")
        self._handlers = abort.AbortHandlers().install()
        self._previous_hooks = parallel.set_hooks(self)
        previous_context = _activate_host_context(self)
        cwd = os.getcwd()
        error: BaseException | None = None
        try:
            log.info("Control file: %s", self.control or "none (a lifecycle-only job)")
            log.info("Machines: %s", ", ".join(m.label for m in self.parsed_machines) or "none")
            log.info("Results: %s", self.resultdir or "none (-N)")
            if self.resultdir is not None:
                resultdir = self.resultdir
                self._write_results(resultdir, lambda: write_keyval(
                    resultdir,
                    {
                        "label": self.label,
                        "user": self.user,
                        "hostname": ",".join(m.label for m in self.parsed_machines),
                        "status_version": STATUS_VERSION,
                        "job_started": int(time.time()),
                    },
                ))
                if len(self.parsed_machines) > 1:  # tko reads <machine>/status.log only then
                    labels = "".join(f"{m.label}\n" for m in self.parsed_machines)
                    machines_file = os.path.join(resultdir, ".machines")
                    self._write_results(machines_file, lambda: _write_text(machines_file, labels))
            run_control = self._prepare_control()
            if self.resultdir is not None:
                os.chdir(self.resultdir)
            if self.settings.lifecycle is not None:  # repair, verify, install, job, ..., cleanup
                from autoserv import lifecycle

                lifecycle.run_segments(self, self.settings.lifecycle, run_control)
            elif run_control is not None:
                run_control()
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                self._end_once(error, self._end)
            finally:
                os.chdir(cwd)
                parallel.set_hooks(self._previous_hooks)
                _restore_host_context(previous_context)
        if self._handlers.pending:
            raise abort.JobAbort(self._handlers.pending)

    def _prepare_control(self) -> Callable[[], None] | None:
        """Copy and compile the control file; the function that runs it (None: no control file)."""
        if self.control is None:
            return None
        text = control_mod.read_source(self.control)
        if self.resultdir is not None:
            resultdir = self.resultdir
            self._write_results(resultdir, lambda: control_mod.copy_to_results(
                text, resultdir, self.settings.control_filename))
        if self.tests.client_control:  # -c: a client control file, on every machine
            from autoserv import client_job

            control, namespace = client_job.server_side(self, text)
        else:
            control = control_mod.load(self.control, text)
            namespace = control_mod.build_namespace(self, control)

        def run_control() -> None:
            try:
                control_mod.execute(control, namespace)
            except SystemExit as exc:
                if exc.code not in (0, None):
                    raise
                log.info("The control file called sys.exit(%s)", exc.code)

        return run_control

    def _end_once(self, error: BaseException | None,
                  body: Callable[[BaseException | None], None]) -> None:
        """Run ``body(error)`` with aborts deferred, exactly once, even when an abort lands
        in the moment before the deferral begins or after it ends: that abort is then
        recorded (after ``body``'s own records) and raised."""
        began = finished = False
        try:
            with abort.deferred():
                began = True
                body(error)
                finished = True
        except abort.JobAbort as late:
            if began and not finished:
                raise  # ``body`` itself aborted (e.g. the results disk is full)
            with abort.deferred():
                handlers = abort.current()
                if handlers is not None and handlers.pending is None:
                    handlers.pending = late.reason
                if began:
                    self._record_pending_abort()
                else:
                    body(error)
            raise

    def _record_pending_abort(self) -> None:
        """A signal that arrived while the job was ending is an abort too: record it once
        (after the error, if any, so status.log tells both)."""
        handlers = abort.current()
        pending = handlers.pending if handlers is not None else None
        if pending and self.abort_reason is None:
            self.abort_reason = pending
            self._record_abort(pending)

    def _end(self, error: BaseException | None) -> None:
        """Close open groups, record the error or abort, close every host (aborts deferred
        by :meth:`_end_once`)."""
        self._record_end(error)
        _close_all_hosts()
        journal.close_journal(ended=True)
        self._record_pending_abort()  # SIGINT/SIGTERM while cleaning up
        if self.resultdir is not None:
            resultdir = self.resultdir
            self._write_results(resultdir, lambda: write_keyval(
                resultdir, {"job_finished": int(time.time())}))

    def _record_end(self, error: BaseException | None) -> None:
        if error is None:
            while self._status.open_groups:
                self.record("END NOSTATUS", None, self._status.open_groups[-1],
                            "group not ended by the control file")
            return
        if isinstance(error, abort.JobAbort):
            self.abort_reason = error.reason
            self._record_abort(error.reason)
            return
        message = _one_line(error)
        while self._status.open_groups:
            self.record("END ABORT", None, self._status.open_groups[-1], message)
        where = control_mod.control_frame(error, self.control) if self.control else None
        if where is not None:
            message += f"\n(raised at {self.control}:{where})"
        word = error.exit_status if isinstance(error, TestBaseException) else "ERROR"
        if not status.is_valid_status(word):
            word = "ERROR"
        self.record(word, None, None, message)

    def _record_abort(self, reason: str) -> None:
        while self._status.open_groups:
            self.record("END ABORT", None, self._status.open_groups[-1], f"aborted: {reason}")
        self.record("INFO", None, None, "Job aborted", {"job_abort_reason": reason})

    def close(self, exit_status: int) -> None:
        """After :meth:`run`: write the exit status to the pidfile, restore logging/signals."""
        if self._pidfile is not None:
            pidfile = self._pidfile

            def write_status() -> None:  # line 2 as os.waitpid encodes it (tko reads it)
                with open(pidfile, "a") as f:
                    f.write(f"{(exit_status & 0xFF) << 8}\n{self.failed_tests}\n")

            self._write_results(pidfile, write_status)
            self._pidfile = None
        if self._handlers is not None:
            self._handlers.restore()
            self._handlers = None
        if self._logging:
            logging_setup.shutdown()
            self._logging = False
        results_disk.deactivate()
        journal.close_journal()

    # -- parallel worker hooks -----------------------------------------------------------

    @contextlib.contextmanager
    def worker_context(self, label: str, subdir: str | None) -> Iterator[_WorkerState]:
        """Runs in a forked worker: its own results subdir, status.log, keyval, logs."""
        state = _WorkerState()
        self.failures = []
        self.failed_tests = 0
        self._failed_inside = []
        self.abort_reason = None
        self._pidfile = None  # the parent's
        self._prefix += f"{label} : "
        debug_dir = None
        if self.resultdir is not None:
            if subdir is not None:
                self.resultdir = os.path.join(self.resultdir, subdir)
                os.makedirs(self.resultdir, exist_ok=True)
            debug_dir = os.path.join(self.resultdir, "debug")
            self._status = status.StatusLogWriter(os.path.join(self.resultdir, "status.log"))
        else:
            self._status = status.StatusLogWriter(None)
        logging_setup.setup(debug_dir, self.settings.console, self.settings.verbose, self._prefix,
                            lazy_files=True)
        if self.resultdir is not None and subdir is not None:
            resultdir = self.resultdir
            self._write_results(resultdir, lambda: write_keyval(
                resultdir, {"hostname": label, "status_version": STATUS_VERSION}))
            os.chdir(self.resultdir)
        _update_host_context(resultdir=self.resultdir)  # e.g. guest console logs go here
        self._handlers = abort.current()
        error: BaseException | None = None
        try:
            yield state
        except BaseException as exc:
            error = exc
            if not isinstance(exc, abort.JobAbort):
                log.error("%s failed: %s", label, _one_line(exc))
            log.debug("%s failed", label, exc_info=True, extra={"files_only": True})
            raise
        finally:
            def end(error: BaseException | None) -> None:
                self._record_end(error)
                _close_all_hosts()
                self._record_pending_abort()
                state.failures = len(self.failures)

            self._end_once(error, end)

    def worker_finished(self, label: str, failures: int, error: BaseException | None) -> None:
        """Runs in the parent: count a worker that raised or recorded failures."""
        self.failed_tests += failures or (1 if error is not None else 0)
        if error is not None:
            self.failures.append(f"{label}: {_one_line(error)}")
            log.error("%s failed: %s", label, _one_line(error))
        elif failures:
            self.failures.append(f"{label}: {failures} failure(s) in its status.log")
            log.warning("%s recorded %d failure(s)", label, failures)


    def failure_logs(self) -> list[str]:
        """The status.log files of this job's results dir (top level first, then each machine's
        subdir) that hold a failure entry: where the job's one-line error points."""
        if self.resultdir is None:
            return []
        found = []
        top = os.path.join(self.resultdir, "status.log")
        subdirs = sorted(e.path for e in os.scandir(self.resultdir) if e.is_dir(follow_symlinks=False))
        for path in [top, *(os.path.join(d, "status.log") for d in subdirs)]:
            try:
                entries = status.parse_file(path)
            except (OSError, ValueError):
                continue
            if any(status.iter_failures(entries)):
                found.append(path)
        return found


def _is_failure(status_code: str) -> bool:
    return status.is_failure(status_code)


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _default_user() -> str:
    user = os.environ.get("USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
