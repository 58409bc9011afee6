"""Helpers tests and control files use: commands, keyvals, tarballs, build steps, timings.

Commands run through ``/bin/bash -c`` (``/bin/sh`` when bash is missing), each in its
own process group (inside the caller's session) so a ``timeout`` kills everything it
started; ``args`` are appended shell-quoted.  Every call returns or carries a
:class:`~autotest.client.shared.result.CmdResult` (the same class autoserv uses).
"""

from __future__ import annotations

import logging
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import IO, Any

from autotest.client.shared import error
from autotest.client.shared.result import CmdResult

__all__ = [
    "CmdResult",
    "run",
    "system",
    "system_output",
    "sh_escape",
    "write_keyval",
    "read_keyval",
    "is_url",
    "get_file",
    "unmap_url",
    "extract_tarball_to_dir",
    "configure",
    "make",
    "to_seconds",
    "extract_all_time_results",
    "count_cpus",
]

log = logging.getLogger("autotest.utils")

#: ``stdout_tee``/``stderr_tee`` value: log each output line (the default).
TEE_TO_LOGS = object()
_SHELL = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"


def sh_escape(text: str) -> str:
    """``text`` quoted for a POSIX shell (one word)."""
    return shlex.quote(text)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _emit(tee: Any, stream_name: str, text: str) -> None:
    if tee is None or not text:
        return
    if tee is TEE_TO_LOGS:
        for line in text.splitlines():
            log.debug("[%s] %s", stream_name, line)
        return
    tee.write(text)
    tee.flush()


def run(
    command: str,
    timeout: float | None = None,
    ignore_status: bool = False,
    stdout_tee: IO[str] | Any | None = TEE_TO_LOGS,
    stderr_tee: IO[str] | Any | None = TEE_TO_LOGS,
    verbose: bool = True,
    stdin: str | bytes | None = None,
    stderr_is_expected: bool | None = None,
    args: Iterable[Any] = (),
) -> CmdResult:
    """Run ``command`` in a shell and return its :class:`CmdResult`.

    Raises :class:`error.CmdError` on a non-zero exit (unless ``ignore_status``) and
    :class:`error.CmdTimeoutError` when ``timeout`` expired (the command's whole process
    group is killed first; ``timed_out`` is set in the result).
    """
    if args:
        command = " ".join([command, *(shlex.quote(str(a)) for a in args)])
    if verbose:
        log.debug("Running '%s'", command)
    start = time.monotonic()
    proc = subprocess.Popen(
        [_SHELL, "-c", command],
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0,  # its own group (killed on timeout), still in the test's session
    )
    if stdin is not None and proc.stdin is not None:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        try:
            proc.stdin.write(data)
        except BrokenPipeError:
            pass
        proc.stdin.close()
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
    tees = {proc.stdout.fileno(): stdout_tee, proc.stderr.fileno(): stderr_tee}
    open_fds = set(chunks)
    timed_out = False
    while open_fds:
        wait = None
        if timeout is not None:
            wait = timeout - (time.monotonic() - start)
            if wait <= 0:
                timed_out = True
                _kill_group(proc)
                break
        ready, _, _ = select.select(list(open_fds), [], [], wait)
        for fd in ready:
            data = os.read(fd, 65536)
            if not data:
                open_fds.discard(fd)
                continue
            chunks[fd].append(data)
            _emit(tees[fd], names[fd], data.decode(errors="replace"))
    exit_status = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    result = CmdResult(
        command=command,
        exit_status=exit_status,
        stdout=b"".join(chunks[out_fd]).decode(errors="replace"),
        stderr=b"".join(chunks[err_fd]).decode(errors="replace"),
        duration=time.monotonic() - start,
        timed_out=timed_out,
    )
    if timed_out:
        raise error.CmdTimeoutError(command, result, f"timeout {timeout} s")
    if exit_status != 0 and not ignore_status:
        raise error.CmdError(command, result, "Command returned non-zero exit status")
    return result


def system(command: str, timeout: float | None = None, ignore_status: bool = False,
           args: Iterable[Any] = ()) -> int:
    """Run ``command``, its output passed to this process's stdout/stderr; return the exit status."""
    result = run(command, timeout=timeout, ignore_status=ignore_status,
                 stdout_tee=sys.stdout, stderr_tee=sys.stderr, args=args)
    assert result.exit_status is not None
    return result.exit_status


def system_output(command: str, timeout: float | None = None, ignore_status: bool = False,
                  retain_output: bool = False, args: Iterable[Any] = ()) -> str:
    """Run ``command`` and return its stdout without the final newline.

    ``retain_output`` also passes the output to this process's stdout/stderr.
    """
    tee_out: Any = sys.stdout if retain_output else TEE_TO_LOGS
    tee_err: Any = sys.stderr if retain_output else TEE_TO_LOGS
    result = run(command, timeout=timeout, ignore_status=ignore_status,
                 stdout_tee=tee_out, stderr_tee=tee_err, args=args)
    out = result.stdout
    return out[:-1] if out.endswith("\n") else out


# -- keyvals ---------------------------------------------------------------------------

_KEY = re.compile(r"^[-.\w]+$")


def write_keyval(path: str, dictionary: Mapping[str, Any], type_tag: str | None = None) -> None:
    """Append ``dictionary`` to the keyval file ``path`` (``path/keyval`` for a directory).

    Keys are written sorted, one ``key=value`` a line; with ``type_tag`` (``perf`` or
    ``attr``) every key must already end in ``{perf}``/``{attr}``.  A bad key raises
    :class:`ValueError` naming it.
    """
    if os.path.isdir(path):
        path = os.path.join(path, "keyval")
    if type_tag is None:
        key_re = _KEY
    elif type_tag in ("attr", "perf"):
        key_re = re.compile(rf"^[-.\w]+\{{{type_tag}\}}$")
    else:
        raise ValueError(f"invalid keyval type tag: {type_tag!r}")
    lines = []
    for key in sorted(dictionary):
        if not key_re.match(key):
            raise ValueError(f"invalid keyval key: {key!r}")
        value = str(dictionary[key])
        if "\n" in value:
            raise ValueError(f"keyval value of {key!r} contains a newline")
        lines.append(f"{key}={value}\n")
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(lines))


def read_keyval(path: str) -> dict[str, str]:
    """Read a keyval file (or ``path/keyval``) into a dict; later keys win, blank lines skipped."""
    if os.path.isdir(path):
        path = os.path.join(path, "keyval")
    values: dict[str, str] = {}
    if not os.path.exists(path):
        return values
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            key, sep, value = line.partition("=")
            if sep:
                values[key] = value
    return values


# -- fetching and unpacking ------------------------------------------------------------


def is_url(path: str) -> bool:
    """True for an ``http://``, ``https://`` or ``ftp://`` URL."""
    return urllib.parse.urlparse(path).scheme in ("http", "https", "ftp")


def get_file(src: str, dest: str) -> str:
    """Copy ``src`` (a URL or a local path) to ``dest``; return ``dest``."""
    if src == dest:
        return dest
    if is_url(src):
        with urllib.request.urlopen(src, timeout=300) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out)
    else:
        shutil.copyfile(src, dest)
    return dest


def unmap_url(srcdir: str, src: str, destdir: str = ".") -> str:
    """The local path of ``src``: a URL is downloaded into ``destdir``, a path is taken in ``srcdir``."""
    if is_url(src):
        name = os.path.basename(urllib.parse.urlparse(src).path) or "download"
        return get_file(src, os.path.join(destdir, name))
    return os.path.join(srcdir, src)


def extract_tarball_to_dir(tarball: str, dir: str) -> None:
    """Unpack ``tarball`` so that its contents end up in ``dir`` (replaced if it exists).

    A tarball holding one top-level directory has that directory renamed to ``dir``, as
    in Autotest; otherwise its members go straight into ``dir``.  Members that would land
    outside the target (absolute paths, ``..``) are refused.
    """
    dir = os.path.abspath(dir)
    parent = os.path.dirname(dir)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(dir):
        shutil.rmtree(dir)
    staging = tempfile.mkdtemp(prefix=".extract-", dir=parent)
    try:
        with tarfile.open(tarball) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                for member in tar.getmembers():
                    target = os.path.realpath(os.path.join(staging, member.name))
                    if not target.startswith(os.path.realpath(staging) + os.sep):
                        raise error.PackageError(f"{tarball}: member {member.name!r} leaves the target")
                tar.extractall(staging)
        entries = os.listdir(staging)
        if len(entries) == 1 and os.path.isdir(os.path.join(staging, entries[0])):
            os.rename(os.path.join(staging, entries[0]), dir)
        else:
            os.rename(staging, dir)
            staging = ""
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)


# -- building --------------------------------------------------------------------------


def configure(extra: str | None = None, configure: str = "./configure") -> int:
    """Run ``./configure [extra]`` in the current directory."""
    return system(f"{configure} {extra}" if extra else configure)


def make(extra: str = "", make: str = "make", timeout: float | None = None,
         ignore_status: bool = False) -> int:
    """Run ``make`` with ``$MAKEOPTS`` (default ``-j<cpus>``) and ``extra``."""
    opts = os.environ.get("MAKEOPTS", f"-j{count_cpus()}")
    return system(" ".join(p for p in (make, opts, extra) if p), timeout=timeout,
                  ignore_status=ignore_status)


# -- timings and machine facts ---------------------------------------------------------


def to_seconds(time_string: str) -> float:
    """``[[hh:]mm:]ss[.frac]`` as seconds (the format of ``/usr/bin/time``)."""
    seconds = 0.0
    for part in time_string.strip().split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


_TIME_RESULT = re.compile(r"([\d:.]+)user\s+([\d:.]+)system\s+([\d:.]+)elapsed")


def extract_all_time_results(results_string: str) -> list[tuple[float, float, float]]:
    """Every ``(user, system, elapsed)`` in GNU ``time`` output, as seconds."""
    return [
        (to_seconds(u), to_seconds(s), to_seconds(e))
        for u, s, e in _TIME_RESULT.findall(results_string)
    ]


def count_cpus() -> int:
    """The number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1
