"""The one run core for local and remote commands (Invoke's ``Runner`` shape).

:func:`run_command` owns what every run does the same way: quoting ``args``,
the "running" log line, output collection and tee (two
:class:`~autoserv.streams.StreamCollector`), the timeout deadline, killing on
timeout or on any exception (an abort, a raising tee), building the
:class:`~autoserv.result.CmdResult` and deciding which failure to raise.

A transport implements :class:`Runner`: ``_start`` starts the command and
returns an :class:`Execution` (which reads the streams, reports the exit and
kills), ``_run_error`` turns a failure into the transport's exception class.
``autoserv.utils`` holds the local transport (a subprocess),
``autoserv.hosts.ssh_host`` the SSH one (an exec channel).
"""

from __future__ import annotations

import logging
import numbers
import shlex
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import IO, Any, Literal

from autoserv.deadline import Deadline
from autoserv.errors import AutoservUsageError
from autoserv.result import CmdResult
from autoserv.streams import TEE_TO_LOGS, StreamCollector

__all__ = ["Execution", "Runner", "Failure", "Stdin", "run_command", "quote_args", "KILL_BUDGET",
           "LOG_OUTPUT_CAP"]

#: Seconds the kill after a timeout or an exception may take in all (finding the
#: command, TERM, a grace, KILL, reading the final status); never more.
KILL_BUDGET = 10.0

#: Characters of one stream of one command that the logs keep; the result keeps all of it.
LOG_OUTPUT_CAP = 1 << 20

#: What a run may read as its standard input.
Stdin = str | bytes | IO[Any] | None

#: Why a run failed: it timed out, the transport was lost, a signal killed the
#: command, or it exited non-zero.
Failure = Literal["timeout", "lost", "signal", "exit"]


def quote_args(command: str, args: Iterable[Any] = ()) -> str:
    """Append each of ``args`` to ``command``, shell-quoted as one word each."""
    quoted = [shlex.quote(str(a)) for a in args]
    return " ".join([command, *quoted]) if quoted else command


class _CappedLog(logging.Logger):
    """Forwards one stream's lines to ``target`` until ``cap`` characters were logged, then
    says once that the rest is not logged (a command's endless output must not fill the logs)."""

    def __init__(self, target: logging.Logger, stream: str, cap: int = LOG_OUTPUT_CAP) -> None:
        super().__init__(target.name)
        self._target = target
        self._stream = stream
        self._left = cap
        self._cap = cap

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self._left < 0:
            return
        self._left -= sum(len(a) for a in args if isinstance(a, str)) + 1
        if self._left >= 0:
            self._target.log(level, msg, *args, **kwargs)
        else:
            self._target.log(level, "[%s] ... more output not logged (over %d characters; "
                             "the result keeps all of it)", self._stream, self._cap)


class Execution(ABC):
    """One started command, as its transport runs it.

    ``exit_status`` is the exit code, ``-signum`` when a signal killed it, or
    None when unknown; ``exit_signal`` the signal number or None; ``lost`` is
    set when the transport went away under the command.
    """

    exit_status: int | None = None
    exit_signal: int | None = None
    lost: bool = False

    @abstractmethod
    def wait(self, deadline: Deadline) -> bool:
        """Feed both streams to their collectors until the command ends (True) or
        ``deadline`` passes (False).  A lost transport ends the wait (True, ``lost`` set)."""

    @abstractmethod
    def kill(self, budget: Deadline) -> None:
        """End the command and everything it started within ``budget``; never raises."""

    @abstractmethod
    def finish(self, budget: Deadline) -> None:
        """Collect the exit status, stop readers and feeders, release the transport's
        resources within ``budget``; idempotent, never raises."""


class Runner(ABC):
    """Where commands run: a transport's ``_start`` and ``_run_error``; :func:`run_command`
    does the rest."""

    #: empty for the controller; the host's name otherwise (in results and messages)
    hostname: str = ""
    log: logging.Logger

    @abstractmethod
    def _start(self, command: str, stdin: Stdin, out: StreamCollector, err: StreamCollector,
               connect_timeout: float | None) -> Execution:
        """Start ``command`` (already quoted) feeding ``stdin``; raise if it cannot start."""

    @abstractmethod
    def _run_error(
        self, failure: Failure, result: CmdResult, execution: Execution, timeout: float | None
    ) -> Exception:
        """The exception for a failed run (it carries ``result``)."""

    def _running(self, command: str) -> None:
        """Log that ``command`` starts (only with ``verbose``)."""
        self.log.debug("[%s] running: %s", self.hostname, command)


def run_command(
    runner: Runner,
    command: str,
    *,
    timeout: float | None,
    ignore_status: bool = False,
    stdout_tee: IO[str] | Any | None = TEE_TO_LOGS,
    stderr_tee: IO[str] | Any | None = TEE_TO_LOGS,
    connect_timeout: float | None = None,
    stdin: Stdin = None,
    verbose: bool = True,
    args: Iterable[Any] = (),
) -> CmdResult:
    """Run ``command`` (plus ``args``, each shell-quoted) through ``runner``.

    Output streams live to the runner's logger (or the given file objects) and
    is returned whole.  A non-zero exit raises unless ``ignore_status``; a
    timeout kills the command and everything it started and raises even with
    ``ignore_status``, keeping the partial output; so does a lost transport.
    Any exception while the command runs (an abort, a failing tee) kills it too.
    """
    if isinstance(timeout, numbers.Real) and not timeout >= 0:  # -1: a race with the command
        raise AutoservUsageError(f"timeout must be a number of seconds >= 0 or None, not {timeout!r}")
    command = quote_args(command, args)
    if verbose:
        runner._running(command)
    start = time.monotonic()
    deadline = Deadline(timeout)
    out = StreamCollector(stdout_tee, _CappedLog(runner.log, "stdout"), logging.DEBUG, "[stdout] ")
    err = StreamCollector(stderr_tee, _CappedLog(runner.log, "stderr"), logging.DEBUG, "[stderr] ")
    execution = runner._start(command, stdin, out, err, connect_timeout)
    budget: Deadline | None = None  # one kill budget, from the moment the kill starts
    try:
        ended = execution.wait(deadline)
        if not ended:
            budget = Deadline(KILL_BUDGET)
            execution.kill(budget)
    except BaseException:
        budget = Deadline(KILL_BUDGET)
        execution.kill(budget)
        execution.finish(budget)
        raise
    execution.finish(budget or Deadline(KILL_BUDGET))
    result = CmdResult(
        command=command,
        exit_status=execution.exit_status,
        stdout=out.finish(),
        stderr=err.finish(),
        duration=time.monotonic() - start,
        hostname=runner.hostname,
        timed_out=not ended,
        exit_signal=execution.exit_signal,
    )
    failure: Failure | None = None
    if not ended:
        failure = "timeout"
    elif execution.lost:
        failure = "lost"
    elif result.exit_status != 0 and not ignore_status:
        failure = "signal" if result.exit_signal is not None else "exit"
    if failure is not None:
        raise runner._run_error(failure, result, execution, timeout)
    return result
