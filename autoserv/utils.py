"""Local helpers of the control-file namespace: ``run``, ``sh_escape``, ``get_tmp_dir``.

``run`` executes a command on the controller through the same run core as
``SSHHost.run`` (:mod:`autoserv.run_core`: same ``timeout`` / ``ignore_status``
/ ``args`` semantics, the same :class:`~autoserv.result.CmdResult`); this
module holds only the local transport (a subprocess in its own session).
Failures raise :class:`CmdError` (the local error class of Autotest).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from typing import IO, Any

from autoserv.deadline import Deadline
from autoserv.errors import CmdError
from autoserv.result import CmdResult
from autoserv.run_core import KILL_BUDGET, Execution, Failure, Runner, Stdin, quote_args, run_command
from autoserv.streams import TEE_TO_LOGS, StreamCollector

__all__ = ["run", "sh_escape", "sh_quote_word", "quote_args", "get_tmp_dir", "TEE_TO_LOGS"]

log = logging.getLogger("autoserv.local")


def sh_escape(command: str) -> str:
    """Escape a string for use inside double quotes in a shell (Autotest semantics).

    ``"echo \\"%s\\"" % sh_escape(s)`` is safe for any ``s``.  Prefer
    :func:`sh_quote_word` (single quotes) in new code.
    """
    command = command.replace("\\", "\\\\")
    command = command.replace("$", r"\$")
    command = command.replace('"', r"\"")
    command = command.replace("`", r"\`")
    return command


def sh_quote_word(text: str) -> str:
    """Quote ``text`` as one shell word (``shlex.quote``)."""
    return shlex.quote(str(text))


class _LocalExecution(Execution):
    """A command in its own session on the controller: two reader threads, one process group."""

    def __init__(self, proc: subprocess.Popen[bytes], out: StreamCollector, err: StreamCollector,
                 data: bytes | None) -> None:
        self.proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(proc.stdout, out), daemon=True),
            threading.Thread(target=self._pump, args=(proc.stderr, err), daemon=True),
        ]
        # an abort (SIGTERM/SIGINT raising in this thread) from here on still kills
        # the command's whole process group
        try:
            for t in self._threads:
                t.start()
            if data is not None:
                assert proc.stdin is not None
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(data)
                    proc.stdin.close()
        except BaseException:
            self.kill(Deadline(KILL_BUDGET))
            raise

    @staticmethod
    def _pump(pipe: IO[bytes], coll: StreamCollector) -> None:
        for chunk in iter(lambda: pipe.read1(65536), b""):  # type: ignore[attr-defined]
            coll.feed(chunk)

    def wait(self, deadline: Deadline) -> bool:
        # in slices of at most 0.5 s (as the SSH transport waits): an abort that the
        # controller raises in a parallel worker thread (autoserv.workers) gets through
        # between two slices, never inside one blocking waitpid()
        while True:
            try:
                self.proc.wait(timeout=deadline.remaining(0.5))
                return True
            except subprocess.TimeoutExpired:
                if deadline.expired():
                    return False

    def kill(self, budget: Deadline) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=budget.remaining())

    def finish(self, budget: Deadline) -> None:
        for t in self._threads:
            t.join(budget.remaining(5))
        code = self.proc.returncode
        self.exit_status = code
        self.exit_signal = -code if code is not None and code < 0 else None


class _Local(Runner):
    """The controller as a :class:`~autoserv.run_core.Runner` (``/bin/sh -c``)."""

    hostname = ""
    log = log

    def _running(self, command: str) -> None:
        self.log.debug("Running (local) %r", command)

    def _start(self, command: str, stdin: Stdin, out: StreamCollector, err: StreamCollector,
               connect_timeout: float | None) -> Execution:
        data = _stdin_bytes(stdin)
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        return _LocalExecution(proc, out, err, data)

    def _run_error(self, failure: Failure, result: CmdResult, execution: Execution,
                   timeout: float | None) -> Exception:
        if failure == "timeout":
            return CmdError(result.command, result, f"timed out after {timeout} s")
        return CmdError(result.command, result)


_LOCAL = _Local()


def _stdin_bytes(stdin: str | bytes | IO[Any] | None) -> bytes | None:
    if stdin is None:
        return None
    if isinstance(stdin, str):
        return stdin.encode()
    if isinstance(stdin, bytes):
        return stdin
    data = stdin.read()
    return data.encode() if isinstance(data, str) else data


def run(
    command: str,
    timeout: float | None = None,
    ignore_status: bool = False,
    stdout_tee: Any = TEE_TO_LOGS,
    stderr_tee: Any = TEE_TO_LOGS,
    verbose: bool = True,
    stdin: str | bytes | IO[Any] | None = None,
    args: Iterable[Any] = (),
) -> CmdResult:
    """Run ``command`` through ``/bin/sh`` on the controller.

    A timeout kills the command's whole process group and raises
    :class:`CmdError` (even with ``ignore_status``), keeping partial output.
    """
    return run_command(_LOCAL, command, timeout=timeout, ignore_status=ignore_status,
                       stdout_tee=stdout_tee, stderr_tee=stderr_tee, verbose=verbose,
                       stdin=stdin, args=args)


def get_tmp_dir(prefix: str = "autoserv-") -> str:
    """A new local temporary directory (the caller removes it)."""
    return tempfile.mkdtemp(prefix=prefix)
