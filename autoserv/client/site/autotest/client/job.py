"""The client ``job`` object of control files, and its saved state (``control.state``).

Status lines go to ``<resultdir>/status.log`` through
:class:`autotest.client.shared.status.StatusLogWriter` (autoserv's own writer, shipped as a
copy), so the grammar is exactly autoserv's; each line is also logged to
``debug/client.log``.

Every test (and every ``job.parallel`` task) runs in a forked child process that leads
its own session: a crash only ends that child, and ``timeout=`` (or SIGTERM to the
runner) SIGKILLs every process of that session, including the commands its
``utils.run`` calls started (they get their own process group inside the session).
The child sends its outcome (status word and message) back through a pipe as one
JSON object.

``control.state`` is JSON, rewritten atomically (temporary file + rename) on every change::

    {"format": 1, "control": "<path>", "tag": <str|null>, "args": [...],
     "state": {<set_state name>: <JSON value>},
     "steps": [[<function name>, [args], {dargs}], ...],      # queued, not run yet
     "steps_done": [[<function name>, [args], {dargs}], ...],  # started, in order
     "groups": [[<subdir|null>, <operation|null>], ...],       # START groups still open
     "reboot": null | {"tag": <str|null>, "boot_id": "<id>", "time": <epoch>},
     "reboots": <int>, "finished": <bool>}
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from autotest.client.shared import barrier as barrier_module
from autotest.client.shared import error, status, utils
from autotest.client.shared.test import find_test, runtest

__all__ = ["JobReboot", "JobState", "ClientJob", "read_boot_id", "session_members"]

log = logging.getLogger("autotest.job")

STATE_FORMAT = 1
_NO_DEFAULT = object()


class JobReboot(BaseException):
    """Raised by ``job.reboot()`` after the reboot is scheduled: the runner exits 3.

    A ``BaseException`` so that a control file's ``except Exception:`` cannot swallow it.
    """


def read_boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``), or ``""``."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def session_members(sid: int) -> list[int]:
    """Pids of the live (not zombie) processes in session ``sid``, from ``/proc``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        # after "pid (comm)": state ppid pgrp session ...
        if len(fields) > 3 and fields[0] != "Z" and fields[3] == str(sid):
            members.append(int(entry))
    return members


def _set_parent_death_signal(signum: int) -> None:
    """``prctl(PR_SET_PDEATHSIG, signum)`` (Linux; nothing elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signum), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _kill_session(session: int, spare: int | None = None) -> list[int]:
    """SIGKILL every process of ``session`` but ``spare`` until none is left (about 1 s at
    most); return the pids that survived."""
    for _ in range(50):
        members = [p for p in session_members(session) if p != spare]
        if not members:
            return []
        for member in members:
            try:
                os.kill(member, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.02)
    return [p for p in session_members(session) if p != spare]


def _end_own_session(signum: int, frame: object) -> None:
    """SIGTERM in a test's process: SIGKILL the rest of its session, then exit."""
    _kill_session(os.getpid(), spare=os.getpid())
    os._exit(128 + signum)


def _json_check(what: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what}: not a JSON value ({exc}); control.state can only save JSON") from None


class JobState:
    """The JSON document in ``control.state``; :meth:`save` after every change."""

    def __init__(self, path: str, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def new(cls, path: str, control: str, tag: str | None, args: list[str]) -> JobState:
        return cls(path, {
            "format": STATE_FORMAT, "control": control, "tag": tag, "args": list(args),
            "state": {}, "steps": [], "steps_done": [], "groups": [], "reboot": None,
            "reboots": 0, "finished": False,
        })

    @classmethod
    def load(cls, path: str) -> JobState:
        """Read ``path``; :class:`ValueError` (one line) if it is missing or not a state file."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise ValueError(f"{path}: no saved job state to continue from") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: unreadable job state: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: not a client job state file (format {STATE_FORMAT})")
        return cls(path, data)

    def save(self) -> None:
        tmp = f"{self.path}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.data, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, self.path)

    def reload_user_state(self) -> None:
        """Take the ``set_state`` values a finished child process saved."""
        try:
            with open(self.path, encoding="utf-8") as f:
                self.data["state"] = json.load(f).get("state", {})
        except (OSError, ValueError):
            pass


class _Profilers:
    """``job.profilers``: accepted, but the client runtime collects no profiles."""

    def __init__(self, job: ClientJob) -> None:
        self._job = job
        self.list: list[str] = []

    def add(self, profiler: str, *args: Any, **dargs: Any) -> None:
        self._job.record("INFO", None, "profilers.add",
                         f"profiler {profiler} is not collected: the client runtime runs no profilers")

    def delete(self, profiler: str) -> None:
        log.info("profilers.delete(%r): no profilers are run", profiler)

    def only(self) -> bool:
        return False

    def present(self) -> bool:
        return False


class ClientJob:
    """The ``job`` of a client control file."""

    def __init__(self, control: str, resultdir: str, autodir: str, test_dirs: list[str],
                 state: JobState, writer: status.StatusLogWriter) -> None:
        self.control = control
        self.resultdir = resultdir
        self.autodir = autodir
        self.clientdir = os.path.join(autodir, "autotest", "client")
        self.bindir = self.clientdir
        self.testdir = os.path.join(self.clientdir, "tests")
        self.tmpdir = os.path.join(autodir, "tmp")
        os.makedirs(self.tmpdir, exist_ok=True)
        self.test_dirs = [*test_dirs, self.testdir]
        self.tag = state.data.get("tag")
        self.args = list(state.data.get("args", []))
        self.run_test_cleanup = True
        self.default_profile_only = False
        self.profilers = _Profilers(self)
        self._state = state
        self._writer = writer
        self._writer.open_groups = [op or status.NONE_VALUE for _, op in state.data["groups"]]
        self._in_child = False
        self._child_groups: set[int] = set()

    # -- status ------------------------------------------------------------------------

    @property
    def open_groups(self) -> list[tuple[str | None, str | None]]:
        return [(s, o) for s, o in self._state.data["groups"]]

    def record(self, status_code: str, subdir: str | None, operation: str | None,
               status_message: str = "", optional_fields: Mapping[str, object] | None = None) -> None:
        """Append one entry to status.log (and client.log), keeping the START/END nesting."""
        text = self._writer.record(status_code, subdir, operation, status_message, optional_fields)
        for line in text.split("\n"):
            log.info("%s", line)
        groups = self._state.data["groups"]
        if status_code == "START":
            groups.append([subdir, operation])
        elif status_code.startswith("END "):
            groups.pop()
        else:
            return
        if not self._in_child:  # a child's nesting is its own; the runner's state file is not
            self._state.save()

    # -- state and steps -----------------------------------------------------------------

    def get_state(self, name: str, default: Any = _NO_DEFAULT) -> Any:
        """A value saved with :meth:`set_state` (``default``, else KeyError, if none)."""
        values = self._state.data["state"]
        if name in values:
            return values[name]
        if default is _NO_DEFAULT:
            raise KeyError(name)
        return default

    def set_state(self, name: str, value: Any) -> None:
        """Save ``value`` (a JSON value) under ``name``; it survives reboots."""
        _json_check(f"job.set_state({name!r})", value)
        self._state.data["state"][name] = value
        self._state.save()

    @staticmethod
    def _step(fn: Any, args: tuple[Any, ...], dargs: Mapping[str, Any]) -> list[Any]:
        if isinstance(fn, list):  # legacy form: job.next_step([fn, arg1, ...])
            if args or dargs:
                raise TypeError("job.next_step([fn, ...]) takes no further arguments")
            fn, args = fn[0], tuple(fn[1:])
        name = fn if isinstance(fn, str) else getattr(fn, "__name__", None)
        if not isinstance(name, str) or not callable(fn) and not isinstance(fn, str):
            raise TypeError("next steps must be functions or the names of functions")
        step = [name, list(args), dict(dargs)]
        _json_check(f"job.next_step({name})", step)
        return step

    def next_step(self, fn: Any, *args: Any, **dargs: Any) -> None:
        """Queue ``fn(*args, **dargs)`` (a top-level function of the control file) to run next."""
        self._state.data["steps"].append(self._step(fn, args, dargs))
        self._state.save()

    next_step_append = next_step

    def next_step_prepend(self, fn: Any, *args: Any, **dargs: Any) -> None:
        """Queue a step before every other queued step."""
        self._state.data["steps"].insert(0, self._step(fn, args, dargs))
        self._state.save()

    def run_steps(self, namespace: Mapping[str, Any], continuing: bool) -> None:
        """Run the queued steps (``step_init`` first on a fresh job that defines it)."""
        steps = self._state.data["steps"]
        if not continuing and not steps and callable(namespace.get("step_init")):
            self.next_step(namespace["step_init"])
        while steps:
            name, args, dargs = steps.pop(0)
            self._state.data["steps_done"].append([name, args, dargs])
            self._state.save()
            fn = namespace.get(name)
            if not callable(fn):
                raise error.JobError(f"step {name!r} is not a function defined at the top level of the "
                                     "control file")
            log.info("Running step %s", name)
            fn(*args, **dargs)

    # -- tests -------------------------------------------------------------------------

    def run_test(self, url: str, *args: Any, **dargs: Any) -> bool:
        """Run a test; True when it ended GOOD (failures are only recorded, never raised)."""
        return self.run_test_detail(url, *args, **dargs) == "GOOD"

    def run_test_detail(self, url: str, *args: Any, **dargs: Any) -> str:
        """Run a test; return the status it ended with (GOOD, FAIL, ERROR, TEST_NA, WARN, ABORT)."""
        tag = dargs.pop("tag", None)
        subdir_tag = dargs.pop("subdir_tag", None)
        timeout = dargs.pop("timeout", None)
        if os.path.isdir(url):
            name = os.path.basename(os.path.abspath(url))
            bindir: str | None = os.path.abspath(url)
            if not os.path.isfile(os.path.join(url, f"{name}.py")):
                bindir = None
        else:
            name = os.path.basename(url)
            for suffix in (".tar.bz2", ".tar.gz", ".tgz", ".tar"):
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
            bindir = find_test(name, self.test_dirs)
        testname = f"{name}.{tag}" if tag else name
        subdir = f"{testname}.{subdir_tag}" if subdir_tag else testname
        outputdir = os.path.join(self.resultdir, subdir)
        if os.path.exists(outputdir):
            raise error.TestError(f"{subdir}: results directory already exists (give each run of a test "
                                  "its own tag=)")
        os.makedirs(outputdir)
        self.record("START", subdir, testname)
        if bindir is None:
            status_word, message = "ERROR", f"{name}: test does not exist"
        else:
            status_word, message = self._run_in_child(name, bindir, outputdir, args, dargs, timeout)
        self.record(status_word, subdir, testname, message)
        self.record(f"END {status_word}", subdir, testname)
        return status_word

    def _fork(self) -> int:
        """Fork a child that leads its own session (and process group); return its pid."""
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._in_child = True
            self._child_groups = set()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.setsid()
            # If the runner dies, even by SIGKILL, the kernel sends this child SIGTERM and
            # the child ends its whole session: nothing a test started outlives the runner.
            signal.signal(signal.SIGTERM, _end_own_session)
            _set_parent_death_signal(signal.SIGTERM)
            if os.getppid() != parent:  # the runner died before the line above
                _end_own_session(signal.SIGTERM, None)
        else:
            self._child_groups.add(pid)
        return pid

    def _kill_child(self, pid: int) -> None:
        """SIGKILL the child and every process of its session (what the test started).

        Commands of ``utils.run`` get their own process group but stay in the session,
        so they go too; only a process that made itself a new session escapes.
        """
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        survivors = _kill_session(pid)
        if survivors:
            log.warning("processes of session %d survived SIGKILL: %s", pid, survivors)

    def _reap(self, pid: int) -> int:
        _, wait_status = os.waitpid(pid, 0)
        self._child_groups.discard(pid)
        self._state.reload_user_state()
        return wait_status

    def _run_in_child(self, name: str, bindir: str, outputdir: str, args: tuple[Any, ...],
                      dargs: Mapping[str, Any], timeout: float | None) -> tuple[str, str]:
        read_fd, write_fd = os.pipe()
        pid = self._fork()
        if pid == 0:  # the test's process
            os.close(read_fd)
            outcome = {"status": "GOOD", "message": "completed successfully"}
            try:
                runtest(self, name, bindir, outputdir, args, dargs)
            except error.TestBaseException as exc:
                log.exception("%s: %s %s", name, exc.exit_status, exc)
                outcome = {"status": exc.exit_status, "message": str(exc)}
            except BaseException as exc:  # the test must never take the job down
                log.exception("%s: unexpected error", name)
                outcome = {"status": "ERROR", "message": str(error.UnhandledTestError(exc))}
            try:
                os.write(write_fd, json.dumps(outcome).encode())
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
        os.close(write_fd)
        data = b""
        started = time.monotonic()
        timed_out = False
        try:
            while True:
                wait = None if timeout is None else float(timeout) - (time.monotonic() - started)
                if wait is not None and wait <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select([read_fd], [], [], wait)
                if ready:
                    chunk = os.read(read_fd, 65536)
                    if not chunk:
                        break
                    data += chunk
            if timed_out:
                self._kill_child(pid)
            wait_status = self._reap(pid)
        except BaseException:
            self._kill_child(pid)
            self._reap(pid)
            raise
        finally:
            os.close(read_fd)
        if timed_out:
            return "ABORT", f"timed out after {timeout} s: killed the test and its processes"
        try:
            outcome = json.loads(data.decode())
            return str(outcome["status"]), str(outcome["message"])
        except (ValueError, KeyError, TypeError):
            pass
        if os.WIFSIGNALED(wait_status):
            return "ERROR", f"test process killed by signal {os.WTERMSIG(wait_status)}"
        return "ERROR", f"test process exited with status {os.waitstatus_to_exitcode(wait_status)} " \
                        "without a result"

    def kill_children(self) -> None:
        """Kill every process of every running test or parallel task (on SIGTERM)."""
        for pid in list(self._child_groups):
            self._kill_child(pid)

    # -- grouping and parallelism --------------------------------------------------------

    def run_group(self, function: Callable[..., Any], *args: Any, **dargs: Any) -> Any:
        """Run ``function`` inside a ``START``/``END`` group named after it (or ``tag=``)."""
        name = dargs.pop("tag", None) or function.__name__
        self.record("START", None, name)
        try:
            result = function(*args, **dargs)
        except error.TestBaseException as exc:
            self.record(exc.exit_status, None, name, str(exc))
            self.record(f"END {exc.exit_status}", None, name)
            raise
        except Exception as exc:
            self.record("END ABORT", None, name, f"{type(exc).__name__}: {exc}")
            raise
        self.record("END GOOD", None, name)
        return result

    def parallel(self, *tasklists: Iterable[Any]) -> None:
        """Run each ``[function, arg, ...]`` in its own forked process; JobError if any failed.

        A task's status lines are collected in ``<resultdir>/.parallel.<n>.status`` and
        appended to status.log as one block when the task ends (tasks in the order given),
        so concurrent tasks never interleave their START/END groups; its log lines reach
        debug/client.log live.
        """
        pids = []
        blocks = []
        try:
            for index, task in enumerate(tasklists):
                fn, *task_args = list(task)
                block = os.path.join(self.resultdir, f".parallel.{os.getpid()}.{index}.status")
                open(block, "w").close()
                blocks.append(block)
                pid = self._fork()
                if pid == 0:
                    self._writer.path = block
                    code = 0
                    try:
                        fn(*task_args)
                    except BaseException:
                        log.exception("parallel task %s failed", getattr(fn, "__name__", fn))
                        code = 1
                    logging.shutdown()
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
                pids.append(pid)
            failed = 0
            for pid, block in zip(pids, blocks, strict=True):
                failed += self._reap(pid) != 0
                self._append_block(block)
        except BaseException:
            for pid in pids:
                if pid in self._child_groups:
                    self._kill_child(pid)
                    self._reap(pid)
            for block in blocks:
                self._append_block(block)
            raise
        if failed:
            raise error.JobError(f"{failed} of {len(pids)} task(s) failed in job.parallel")

    def _append_block(self, block: str) -> None:
        try:
            with open(block, encoding="utf-8") as f:
                text = f.read()
            os.unlink(block)
        except FileNotFoundError:
            return
        if text and self._writer.path is not None:
            with open(self._writer.path, "a", encoding="utf-8") as f:
                f.write(text)

    # -- reboot ------------------------------------------------------------------------

    def reboot(self, tag: str | None = None) -> None:
        """Record ``START reboot`` / ``GOOD reboot.start``, start ``(sleep 1; reboot) &``, end this run.

        The runner then exits 3; ``--continue`` after the reboot runs the next queued step.
        """
        if self._in_child:
            raise error.JobRebootNotSupported("job.reboot() is not supported inside a test or a "
                                              "job.parallel task in the client runtime")
        self.record("START", None, "reboot")
        self._state.data["reboot"] = {"tag": tag, "boot_id": read_boot_id(), "time": int(time.time())}
        self._state.data["reboots"] = int(self._state.data.get("reboots", 0)) + 1
        self._state.save()
        self.record("GOOD", None, "reboot.start")
        utils.run("sync", ignore_status=True, timeout=120)
        subprocess.run(["/bin/sh", "-c", "(sleep 1; reboot) </dev/null >/dev/null 2>&1 &"],
                       start_new_session=True, check=False)
        raise JobReboot(tag)

    def continue_after_reboot(self) -> None:
        """On ``--continue``: account for the reboot (expected or not) in the saved nesting."""
        groups = self._state.data["groups"]
        if self._state.data.get("reboot") is not None:
            # The server recorded GOOD reboot.verify and END GOOD reboot: the group is closed.
            if groups and groups[-1][1] == "reboot":
                groups.pop()
                self._writer.open_groups.pop()
            self._state.data["reboot"] = None
            self._state.save()
            log.info("Continuing after the requested reboot")
            return
        log.warning("Continuing after an unexpected reboot")
        if not groups:  # the first run died before it opened the job's outermost group
            self.record("START", None, None)
        while len(groups) > 1:
            subdir, operation = groups[-1]
            self.record("END FAIL", subdir, operation, "unexpected reboot")
        self.record("FAIL", None, "reboot", "unexpected reboot")

    # -- facts and accepted no-ops -----------------------------------------------------

    def cpu_count(self) -> int:
        return utils.count_cpus()

    def require_gcc(self) -> None:
        """NotAvailableError unless ``gcc`` is on PATH."""
        import shutil

        if shutil.which("gcc") is None:
            raise error.NotAvailableError("gcc is required by this job and is not available on the system")

    def add_repository(self, repo_urls: Any) -> None:
        self.record("INFO", None, "add_repository",
                    f"add_repository({repo_urls!r}) ignored: tests come from autoserv")

    def barrier(self, hostid: Any, tag: str, timeout: float | None = None,
                port: int | None = barrier_module.DEFAULT_PORT) -> barrier_module.barrier:
        """A participant of the barrier ``tag`` between hosts (``autotest.client.shared.barrier``):
        ``.rendezvous(*hostids)`` / ``.rendezvous_servers(master, *hostids)`` wait for the others."""
        return barrier_module.barrier(hostid, tag, timeout, port)

    def kernel(self, *args: Any, **dargs: Any) -> None:
        raise error.JobError("job.kernel() (building and booting kernels) is not supported in the "
                             "client runtime")
