"""Local helpers of the control-file namespace: ``run``, ``sh_escape``, ``get_tmp_dir``.

``run`` executes a command on the controller with the same ``timeout`` /
``ignore_status`` / ``args`` semantics as ``SSHHost.run`` and returns the same
:class:`~autoserv.result.CmdResult`.  Failures raise :class:`CmdError` (the
local error class of Autotest).
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
import time
from collections.abc import Iterable
from typing import IO, Any

from autoserv.errors import CmdError
from autoserv.result import CmdResult
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


def quote_args(command: str, args: Iterable[Any] = ()) -> str:
    """Append each of ``args`` to ``command``, shell-quoted as one word each."""
    quoted = [shlex.quote(str(a)) for a in args]
    return " ".join([command, *quoted]) if quoted else command


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
    command = quote_args(command, args)
    if verbose:
        log.debug("Running (local) %r", command)
    data = _stdin_bytes(stdin)
    start = time.monotonic()
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    out = StreamCollector(stdout_tee, log, logging.DEBUG, "[stdout] ")
    err = StreamCollector(stderr_tee, log, logging.DEBUG, "[stderr] ")

    def pump(pipe: IO[bytes], coll: StreamCollector) -> None:
        for chunk in iter(lambda: pipe.read1(65536), b""):  # type: ignore[attr-defined]
            coll.feed(chunk)

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    assert proc.stdout is not None and proc.stderr is not None
    threads = [
        threading.Thread(target=pump, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, err), daemon=True),
    ]
    timed_out = False
    # everything after the start is inside the try: an abort (SIGTERM/SIGINT raising in
    # this thread) at any point still kills the command's whole process group
    try:
        for t in threads:
            t.start()
        if data is not None:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(data)
                proc.stdin.close()
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill()
    except BaseException:
        kill()
        raise
    for t in threads:
        t.join(5)
    result = CmdResult(
        command=command,
        exit_status=proc.returncode,
        stdout=out.finish(),
        stderr=err.finish(),
        duration=time.monotonic() - start,
        timed_out=timed_out,
    )
    if timed_out:
        raise CmdError(command, result, f"timed out after {timeout} s")
    if result.exit_status != 0 and not ignore_status:
        raise CmdError(command, result)
    return result


def get_tmp_dir(prefix: str = "autoserv-") -> str:
    """A new local temporary directory (the caller removes it)."""
    return tempfile.mkdtemp(prefix=prefix)
