"""Run a function for many arguments at once: ``parallel_simple``, ``parallel``, ``subcommand``.

Two worker models (``AUTOSERV_WORKERS``): ``fork`` (the default, described here) and
``threads`` (:mod:`autoserv.workers`: a thread per argument in this process, ~5x less
controller CPU per machine; its docstring has the figures and what it does not isolate).
The job may cap how many run at once (``--max-parallel``: the hooks' ``max_parallel``);
the rest start as others end, within the same overall ``timeout``.

The ``fork`` model: one forked process per argument, like the original Autoserv.

* Isolation.  A control file's function changes process-wide state: the working directory
  (each worker runs in its own ``<results>/<arg>/``), logging (its own ``debug/`` files and
  console prefix), ``sys.stdout``, signal handlers, module globals.  Threads would share all
  of it; processes do not, and a worker that crashes, leaks or corrupts memory takes nobody
  else down.  Each worker opens its own SSH connections (never sharing a paramiko transport
  across processes); the hosts layer makes a forked child forget its parent's connections.
* Real termination.  A thread cannot be stopped from outside; a process can.  When the
  overall ``timeout`` expires, or the job is aborted, each straggler gets SIGTERM and runs
  its own abort path (the remote command is killed, its hosts closed, ``END ABORT`` written
  to its status.log); after :data:`TERMINATE_GRACE` seconds SIGKILL ends it for good.
* Scale.  ``fork`` is copy-on-write, so a worker costs little more than its SSH connection;
  the parent waits on one pipe per worker with a single selector (no thread per worker),
  which keeps hundreds of machines well within the limits of one controller.

Results travel back pickled through the pipe.  An exception that does not survive pickling
is replaced by an :class:`~autoserv.errors.AutoservSubcommandError` carrying its text.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import queue
import re
import selectors
import signal
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from autoserv import abort, inputs, logging_setup, orphans, workers
from autoserv.deadline import Deadline
from autoserv.errors import AutoservError, AutoservSubcommandError

__all__ = [
    "parallel_simple",
    "parallel",
    "subcommand",
    "SubcommandsFailed",
    "WorkerHooks",
    "set_hooks",
    "watch",
    "arg_label",
    "TERMINATE_GRACE",
]

log = logging.getLogger("autoserv.parallel")

#: Seconds a terminated worker gets to clean up (kill remote commands, close hosts)
#: before it is killed with SIGKILL.
TERMINATE_GRACE = 30.0


class SubcommandsFailed(AutoservError):
    """One or more parallel workers failed; ``failures`` maps each label to its exception."""

    def __init__(self, failures: Sequence[tuple[str, BaseException]]) -> None:
        self.failures = dict(failures)
        parts = [f"{label}: {_describe(exc)}" for label, exc in failures]
        super().__init__("One or more subcommands failed: " + "; ".join(parts))

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (list(self.failures.items()),))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class WorkerHooks(Protocol):
    """What the job plugs in: the context of a worker, and hearing how it ended."""

    def worker_context(self, label: str, subdir: str | None) -> AbstractContextManager[Any]:
        """Entered in the worker process around the function (results subdir, logging).

        The object it yields may have a ``failures`` attribute (failed status.log entries),
        read when the function has returned.
        """
        ...

    def worker_finished(self, label: str, failures: int, error: BaseException | None) -> None:
        """Called in the parent for each worker once it has ended."""
        ...

    # Optional: ``max_parallel`` (int or None), the most workers running at once.


def _max_parallel() -> int | None:
    limit = getattr(_hooks, "max_parallel", None)
    return int(limit) if limit else None


_hooks: WorkerHooks | None = None
_own_result_fd: int | None = None  # in a worker: the pipe to its parent
_result_fds: set[int] = set()  # read ends of this process's running workers


#: Called in the parent as each worker starts ("start") and as its report is read ("done"):
#: the live progress display (autoserv.report.progress).  Workers start with none.
_watchers: list[Callable[[str, subcommand], None]] = []


def watch(callback: Callable[[str, subcommand], None] | None) -> None:
    """Set (or with None remove) the one watcher of worker starts and ends in this process."""
    _watchers[:] = [callback] if callback is not None else []


def _notify(event: str, sub: subcommand) -> None:
    for callback in list(_watchers):
        try:
            callback(event, sub)
        except Exception:  # a display must never break the job
            log.debug("Progress watcher failed on %s %s", event, sub.label, exc_info=True)


def set_hooks(hooks: WorkerHooks | None) -> WorkerHooks | None:
    """Install the job's worker hooks; returns the previous ones."""
    global _hooks
    previous, _hooks = _hooks, hooks
    return previous


def arg_label(arg: Any) -> str:
    """How an argument is named in labels, subdirs and console prefixes.

    A host gives its hostname, a parsed :class:`~autoserv.hosts.Machine` its
    label; a machine string loses its password (``user:pw@host`` → ``user@host``).
    """
    from autoserv.hosts.machine import Machine, machine_label

    if isinstance(arg, Machine):
        return inputs.printable(arg.label)
    name = getattr(arg, "hostname", None)
    if isinstance(name, str) and name:
        return inputs.printable(name)
    return inputs.printable(machine_label(str(arg)))


def subdir_name(label: str) -> str:
    """The results subdir of a worker whose argument's label is ``label``: one line, no
    ``/``, never ``.`` or ``..`` (the one rule: autoserv.report reads results dirs with it)."""
    base = re.sub(r"[\\/\x00-\x1f\x7f]", "_", inputs.printable(label))
    return "_" + base if base in ("", ".", "..") else base


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` made unique in order: a repeated name gets ``.2``, ``.3``... (skipping any
    suffixed name that is already in the list)."""
    taken = set(names)
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = count = seen.get(name, 0) + 1
        if count > 1:
            n = count
            while f"{name}.{n}" in taken:
                n += 1
            name = f"{name}.{n}"
            taken.add(name)
        unique.append(name)
    return unique


def _subdir_names(labels: Sequence[str]) -> list[str]:
    return unique_names([subdir_name(label) for label in labels])


class _Timeout(BaseException):
    """Internal: the timeout of an in-process (single argument) call expired."""


class subcommand:  # Autotest's name, lower case
    """One function call in a forked worker (Autotest's ``subcommand``).

    ``subdir`` names the worker's results subdirectory (``None``: it shares the parent's).
    After :func:`parallel` (or :meth:`fork_waitfor`), :attr:`result` holds the return value,
    or :attr:`exception` what it raised.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        subdir: str | None = None,
        *,
        label: str | None = None,
    ) -> None:
        self.func = func
        self.args = tuple(args)
        self.subdir = subdir
        if label is None:
            label = subdir or (arg_label(self.args[0]) if self.args else func.__name__)
        self.label = inputs.printable(label)  # one line in messages and prefixes
        self.pid: int | None = None
        self.result: Any = None
        self.exception: BaseException | None = None
        self.traceback = ""
        self.exit_status: int | None = None  # as from os.waitstatus_to_exitcode
        self.timed_out = False
        self.failures = 0
        self.done = False
        self.timeout: float | None = None
        self._deadline: Deadline | None = None
        self._fd: int | None = None
        self._data = bytearray()

    def __repr__(self) -> str:
        return f"<subcommand {self.label} pid={self.pid} done={self.done}>"

    # -- parent side ---------------------------------------------------------------------

    def fork_start(self) -> None:
        """Start the worker process."""
        logging_setup.flush()
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child (covered by the job tests)
            os.close(read_fd)
            self._child(write_fd)
        os.close(write_fd)
        self.pid = pid
        self._fd = read_fd
        _result_fds.add(read_fd)
        log.debug("Started worker %s (pid %d)", self.label, pid)
        _notify("start", self)

    def fork_waitfor(self, timeout: float | None = None) -> int | None:
        """Wait for this worker (terminating it after ``timeout`` s); return its exit status."""
        if not self.done:
            stragglers = _collect([self], Deadline(timeout))
            if stragglers:
                self.timed_out = True
                _terminate(stragglers)
        return self.exit_status

    def _signal(self, signum: int) -> None:
        if self.pid is not None and not self.done:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def _read(self) -> bool:
        """Read what the worker sent; False at end of file."""
        assert self._fd is not None
        try:
            chunk = os.read(self._fd, 1 << 16)
        except BlockingIOError:
            return True
        if chunk:
            self._data += chunk
            return True
        return False

    def _finish(self) -> None:
        """The pipe is at EOF (or abandoned): reap the worker and decode its report."""
        if self._fd is not None:
            os.close(self._fd)
            _result_fds.discard(self._fd)
            self._fd = None
        assert self.pid is not None
        _, status = os.waitpid(self.pid, 0)
        self.exit_status = os.waitstatus_to_exitcode(status)
        self.done = True
        payload: dict[str, Any] | None = None
        if self._data:
            try:
                payload = pickle.loads(bytes(self._data))
            except Exception as exc:  # a truncated or unreadable report
                log.debug("Report of worker %s unreadable: %s", self.label, exc)
        self._data.clear()
        if payload is None:
            how = (
                f"killed by {signal.Signals(-self.exit_status).name}"
                if self.exit_status < 0
                else f"exited with status {self.exit_status}"
            )
            self.exception = AutoservSubcommandError(
                self.label, self.exit_status, f"worker {how} without reporting a result"
            )
        elif payload["ok"]:
            self.result = payload["value"]
        else:
            self.exception = payload["error"]
            self.traceback = payload.get("traceback", "")
        if payload is not None:
            self.failures = int(payload.get("failures", 0))
        if self.timed_out:
            self.exception = AutoservSubcommandError(
                self.label,
                self.exit_status,
                f"timed out after {self.timeout} s and was terminated",
            )
        elif isinstance(self.exception, abort.JobAbort):
            self.exception = AutoservSubcommandError(
                self.label, self.exit_status, f"aborted: {self.exception.reason}"
            )
        log.debug("Worker %s (pid %d) ended: %s", self.label, self.pid, self.exit_status)
        _notify("done", self)

    # -- child side ----------------------------------------------------------------------

    def _abort_reason(self, signum: int) -> str:
        if self._deadline is not None and self._deadline.expired():
            return f"parallel timeout of {self.timeout} s expired"
        return abort.signal_reason(signum)

    def _child(self, write_fd: int) -> None:  # pragma: no cover - runs in the child
        global _own_result_fd
        code = 1
        try:
            orphans.die_with_parent()  # issue 11 item 9: SIGTERM when autoserv dies (orphans.py)
            for fd in [*_result_fds, *([_own_result_fd] if _own_result_fd is not None else [])]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            _result_fds.clear()
            _watchers.clear()  # the parent's display is not this worker's
            _own_result_fd = write_fd
            handlers = abort.AbortHandlers(self._abort_reason).install()
            state: Any = None
            payload: dict[str, Any]
            try:
                context = (
                    _hooks.worker_context(self.label, self.subdir)
                    if _hooks is not None
                    else contextlib.nullcontext()
                )
                with context as state:
                    value = self.func(*self.args)
                with handlers.deferred():
                    payload = {"ok": True, "value": _portable_value(value, self.label)}
                code = 0
            except BaseException as exc:
                with handlers.deferred():
                    payload = {
                        "ok": False,
                        "error": _portable_exception(exc, self.label),
                        "traceback": "".join(traceback.format_exception(exc)),
                    }
            with handlers.deferred():
                payload["failures"] = int(getattr(state, "failures", 0) or 0)
                _write_all(write_fd, pickle.dumps(payload))
        except BaseException:
            code = 1
        finally:
            with contextlib.suppress(BaseException):
                logging_setup.flush()
            os._exit(code)


def _portable_value(value: Any, label: str) -> Any:
    try:
        pickle.loads(pickle.dumps(value))
        return value
    except Exception as exc:
        log.warning("Result of %s cannot be sent back (%s); sending its repr()", label, exc)
        return repr(value)


def _portable_exception(exc: BaseException, label: str) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return AutoservSubcommandError(label, 1, _describe(exc))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _collect(
    subs: Sequence[subcommand], deadline: Deadline | None, first: bool = False
) -> list[subcommand]:
    """Read the workers' reports until all have ended (``first``: one) or ``deadline``.

    Returns those still running.
    """
    selector = selectors.DefaultSelector()
    try:
        for sub in subs:
            if not sub.done and sub._fd is not None:
                selector.register(sub._fd, selectors.EVENT_READ, sub)
        ended = False
        while selector.get_map():
            wait = None
            if deadline is not None and deadline.end is not None:
                wait = deadline.remaining()
                if wait <= 0:
                    break
            for key, _ in selector.select(wait):
                sub = key.data
                if not sub._read():
                    selector.unregister(key.fd)
                    sub._finish()
                    ended = True
            if first and ended:
                break
    finally:
        selector.close()
    return [sub for sub in subs if not sub.done]


def _terminate(subs: Sequence[subcommand], grace: float | None = None) -> None:
    """SIGTERM the workers, give them ``grace`` seconds to clean up, then SIGKILL."""
    running = [sub for sub in subs if not sub.done]
    if not running:
        return
    grace = TERMINATE_GRACE if grace is None else grace
    with abort.deferred():
        log.warning("Terminating %d worker(s): %s", len(running), ", ".join(s.label for s in running))
        for sub in running:
            sub._signal(signal.SIGTERM)
        stragglers = _collect(running, Deadline(grace))
        for sub in stragglers:
            log.error("Worker %s did not end within %s s of SIGTERM: killing it", sub.label, grace)
            sub._signal(signal.SIGKILL)
        for sub in _collect(stragglers, Deadline(grace)):
            sub._finish()  # dead, but a descendant still holds its pipe


def parallel(
    tasklist: Sequence[subcommand], timeout: float | None = None, return_results: bool = False
) -> list[Any] | None:
    """Run every subcommand at once; wait for all (at most ``timeout`` seconds overall).

    Stragglers are terminated when the timeout expires.  If any worker failed, raise
    :class:`SubcommandsFailed` naming each, unless ``return_results``: then return, in
    order, each worker's return value or exception.
    """
    deadline = Deadline(timeout)
    for task in tasklist:
        task.timeout = timeout
        task._deadline = deadline
    if workers.model() == "threads":
        _run_threads(tasklist, timeout, deadline, _max_parallel())
    else:
        _run_forks(tasklist, timeout, deadline, _max_parallel())
    for task in tasklist:
        if task.exception is not None and task.traceback:
            log.debug("Worker %s failed:\n%s", task.label, task.traceback.rstrip())
        if _hooks is not None:
            _hooks.worker_finished(task.label, task.failures, task.exception)
    if return_results:
        return [t.exception if t.exception is not None else t.result for t in tasklist]
    failed = [(t.label, t.exception) for t in tasklist if t.exception is not None]
    if failed:
        raise SubcommandsFailed(failed)
    return None


def _not_started(tasks: Sequence[subcommand], timeout: float | None) -> None:
    """The tasks still waiting for a free slot when the overall timeout expired."""
    for task in tasks:
        task.done = task.timed_out = True
        task.exception = AutoservSubcommandError(
            task.label, -1, f"timed out after {timeout} s before it could start (--max-parallel)"
        )
        log.error("%s did not start before the timeout of %s s", task.label, timeout)


def _run_forks(
    tasklist: Sequence[subcommand], timeout: float | None, deadline: Deadline, limit: int | None
) -> None:
    """The fork model: a process per task, at most ``limit`` at once."""
    started: list[subcommand] = []
    waiting = list(tasklist)
    # Move everything allocated so far out of the collector's reach: a worker's
    # garbage collection would otherwise walk (and so copy-on-write) the whole
    # inherited heap, the largest per-worker cost at scale.
    gc.freeze()
    try:
        while waiting:
            running = [t for t in started if not t.done]
            if limit is not None and len(running) >= limit:
                _collect(running, deadline, first=True)
                if deadline.expired():
                    _not_started(waiting, timeout)
                    waiting = []
                continue
            task = waiting.pop(0)
            task.fork_start()
            started.append(task)
        stragglers = _collect(started, deadline)
        if stragglers:
            log.error(
                "Timeout of %s s expired; still running: %s",
                timeout,
                ", ".join(s.label for s in stragglers),
            )
            for sub in stragglers:
                sub.timed_out = True
            _terminate(stragglers)
    except BaseException:
        _terminate(started)
        raise


def _run_threads(
    tasklist: Sequence[subcommand], timeout: float | None, deadline: Deadline, limit: int | None
) -> None:
    """The thread model (:mod:`autoserv.workers`): a thread per task, at most ``limit`` at once."""
    done: queue.SimpleQueue[subcommand] = queue.SimpleQueue()
    waiting = list(tasklist)
    running: dict[int, workers.ThreadWorker] = {}
    workers.raise_nofile(min(len(tasklist), limit or len(tasklist)))

    def collect(wait: float | None) -> bool:
        try:
            sub = done.get(timeout=wait)
        except queue.Empty:
            return False
        worker = running.pop(id(sub), None)
        if worker is None:  # abandoned earlier, ended since: already reported
            return True
        worker.thread.join()
        _finish_thread(sub)
        return True

    # fewer collector passes over N live connections, fewer GIL hand-overs between 2N threads
    with workers.fewer_gc_passes(), workers.longer_switch_interval():
        try:
            while waiting or running:
                while waiting and (limit is None or len(running) < limit) and not deadline.expired():
                    task = waiting.pop(0)
                    worker = workers.ThreadWorker(task, _hooks, done)
                    running[id(task)] = worker
                    worker.start()
                    log.debug("Started worker thread %s", task.label)
                    _notify("start", task)
                if deadline.expired():
                    break
                # short waits: the main thread must stay responsive to SIGINT/SIGTERM
                collect(min(deadline.remaining(0.5), 0.5))
            if running or waiting:
                log.error(
                    "Timeout of %s s expired; still running: %s",
                    timeout,
                    ", ".join(w.sub.label for w in running.values()),
                )
                _not_started(waiting, timeout)
                for worker in running.values():
                    worker.sub.timed_out = True
                _terminate_threads(running, collect, f"parallel timeout of {timeout} s expired")
        except abort.JobAbort as exc:
            _terminate_threads(running, collect, exc.reason)
            raise
        except BaseException:
            _terminate_threads(running, collect, "the controller failed")
            raise


def _terminate_threads(
    running: dict[int, workers.ThreadWorker], collect: Callable[[float | None], bool], reason: str
) -> None:
    """Abort the running worker threads; close their hosts if they do not end; abandon them."""
    if not running:
        return
    with abort.deferred():
        log.warning("Aborting %d worker(s): %s", len(running),
                    ", ".join(w.sub.label for w in running.values()))
        for worker in list(running.values()):
            worker.abort(reason)
        for step in ("close", "abandon"):
            grace = Deadline(TERMINATE_GRACE)
            while running and not grace.expired():
                collect(min(grace.remaining(0.5), 0.5))
            for worker in list(running.values()):
                if step == "close":
                    log.error("Worker %s did not end within %s s of its abort: closing its hosts",
                              worker.sub.label, TERMINATE_GRACE)
                    worker.close_hosts()
                else:
                    log.error("Worker %s is stuck; abandoning it", worker.sub.label)
                    del running[id(worker.sub)]
                    sub = worker.sub
                    sub.exception = AutoservSubcommandError(
                        sub.label, -1, f"did not end within {2 * TERMINATE_GRACE} s of its abort "
                        f"({reason}); abandoned"
                    )
                    sub.exit_status = -1
                    _finish_thread(sub)


def _finish_thread(sub: subcommand) -> None:
    """A worker thread has ended (or was abandoned): turn its outcome into the report."""
    sub.done = True
    # the same values as a forked worker sends back: what cannot be pickled is described
    if sub.exception is None:
        sub.result = _portable_value(sub.result, sub.label)
    elif not isinstance(sub.exception, abort.JobAbort):
        sub.exception = _portable_exception(sub.exception, sub.label)
    if sub.timed_out:
        sub.exception = AutoservSubcommandError(
            sub.label, sub.exit_status if sub.exit_status is not None else -1,
            f"timed out after {sub.timeout} s and was terminated",
        )
    elif isinstance(sub.exception, abort.JobAbort):
        sub.exception = AutoservSubcommandError(
            sub.label, sub.exit_status or 1, f"aborted: {sub.exception.reason}"
        )
    log.debug("Worker thread %s ended: %s", sub.label, sub.exit_status)
    _notify("done", sub)


@contextlib.contextmanager
def _alarm(timeout: float | None, label: str) -> Any:
    """Raise :class:`_Timeout` in the main thread after ``timeout`` seconds."""
    if timeout is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, max(timeout, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def parallel_simple(
    function: Callable[[Any], Any],
    arglist: Sequence[Any],
    log: bool = True,
    timeout: float | None = None,
    return_results: bool = False,
) -> list[Any] | None:
    """Call ``function(arg)`` for each of ``arglist`` in parallel workers.

    One argument runs in this process, its exceptions unchanged (``timeout`` then raises
    :class:`~autoserv.errors.AutoservSubcommandError` when it expires).  Several run in
    forked workers; with ``log`` each gets its own results subdirectory named after the
    argument.  Failures are raised together as :class:`SubcommandsFailed` (an
    :class:`~autoserv.errors.AutoservError`), or with ``return_results`` returned: a list
    with, for each argument in order, the return value or the exception.
    """
    arglist = list(arglist)
    if not arglist:
        logging.getLogger("autoserv.parallel").warning(
            "parallel_simple was called with an empty arglist"
        )
        return [] if return_results else None
    if len(arglist) == 1:
        arg = arglist[0]
        try:
            with _alarm(timeout, arg_label(arg)):
                value = function(arg)
        except _Timeout:
            exc = AutoservSubcommandError(arg_label(arg), -1, f"timed out after {timeout} s")
            if return_results:
                return [exc]
            raise exc from None
        except Exception as exc:
            if return_results:
                return [exc]
            raise
        return [value] if return_results else None
    labels = [arg_label(arg) for arg in arglist]
    subdirs = _subdir_names(labels) if log else [None] * len(labels)
    tasks = [
        subcommand(function, (arg,), subdir, label=label)
        for arg, label, subdir in zip(arglist, labels, subdirs, strict=True)
    ]
    return parallel(tasks, timeout, return_results)
