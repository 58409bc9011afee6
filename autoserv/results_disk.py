"""A results directory that can no longer be written (a full disk, a quota, an I/O error),
and :func:`append`, how status.log and keyval lines are written to it.

The first write of the results that fails — a debug log file, status.log, a keyval —
calls :func:`failed`.  That fixes the job's one-line reason, e.g.::

    cannot write the results directory /r (status.log): No space left on device, 0 B free

stops every later write of log files (no logging traceback per record), and aborts the job
through the abort handlers (:func:`autoserv.abort.request`): remote commands are killed,
hosts closed, and autoserv exits 1 with ``autoserv: job aborted: <reason>`` as its only
line on stderr.

The state is shared by the job and its forked parallel workers (a shared anonymous memory
page): whichever process fails first sets the reason, and every other process aborts at its
next write.  :func:`activate` is called by the job before any worker starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import threading

from autoserv import abort
from autoserv.status import append_bytes, open_for_append, write_all

__all__ = ["activate", "deactivate", "failed", "reason", "broken", "format_size", "append",
           "append_bytes", "open_for_append", "write_all"]

_SIZE = 4096
_state: tuple[str, mmap.mmap, int] | None = None  # results dir, shared page, dir fd (lock)
_requested = False  # this process has asked for its abort already
_lock = threading.Lock()


def activate(resultdir: str) -> None:
    """Watch ``resultdir`` for this job (and the workers it forks); idempotent per dir."""
    global _state, _requested
    if _state is not None and _state[0] == resultdir:
        return
    deactivate()
    page = mmap.mmap(-1, _SIZE, flags=mmap.MAP_SHARED)
    fd = os.open(resultdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    _state = (resultdir, page, fd)
    _requested = False


def deactivate() -> None:
    """Forget the results dir (the job is over)."""
    global _state, _requested
    if _state is not None:
        _, page, fd = _state
        _state = None
        with contextlib.suppress(OSError, ValueError):
            page.close()
        with contextlib.suppress(OSError):
            os.close(fd)
    _requested = False


def append(path: str, text: str) -> None:
    """Append ``text`` (UTF-8) to the file at ``path``, created if missing, in one ``write``.

    The file is opened with ``O_APPEND`` for each call, so processes and threads appending
    to one file never interleave inside a call's text, and nothing stays open between
    entries.  Three system calls, where a Python file object makes eight (``fstat``,
    ``lseek`` and ``ioctl`` to set itself up): in a fan-out in threads, whose status.log and
    keyval lines this writes, each one hands the GIL over: the job layer of a 1000-machine
    ``parallel_simple`` with no SSH took 1.63 s of CPU instead of 1.91 (5 A/B pairs).
    Raises :class:`OSError` as the write fails (a full disk: ``ENOSPC``); ``text`` that
    cannot be encoded raises before the file is touched.  The primitives live in
    :mod:`autoserv.status`, which hosts get too and which may import nothing of autoserv.
    """
    append_bytes(path, text.encode("utf-8"))


def format_size(n: int) -> str:
    """``0 B``, ``12.0 KiB``, ``3.5 MiB``..."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _free(path: str) -> str:
    try:
        st = os.statvfs(path)
    except OSError:
        return "free space unknown"
    return f"{format_size(st.f_bavail * st.f_frsize)} free"


def reason() -> str | None:
    """Why the results dir cannot be written (set by the first failure in any process)."""
    if _state is None:
        return None
    page = _state[1]
    with contextlib.suppress(ValueError):
        raw = page[:_SIZE].split(b"\0", 1)[0]
        return raw.decode("utf-8", "replace") or None
    return None


def broken() -> bool:
    """The results dir has failed to be written (here or in another process of the job).

    Asked before every write of a log record, so it reads one byte of the shared page (a
    reason is never empty), not the page.
    """
    state = _state
    if state is None:
        return False
    with contextlib.suppress(ValueError):  # (closed under us: the job is over)
        return state[1][0] != 0
    return False


def failed(path: str, exc: BaseException) -> None:
    """A write under the results dir failed with ``exc``: fix the reason, abort the job.

    Safe to call from any thread and any number of times; only the first failure of the
    job names the reason, and each process asks for its abort once.
    """
    global _requested
    if _state is None:
        return
    resultdir, page, fd = _state
    with _lock:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        try:
            if page[0] == 0:
                what = os.path.relpath(path, resultdir) if path else ""
                where = f" ({what})" if what and what != "." and not what.startswith("..") else ""
                text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                line = (f"cannot write the results directory {resultdir}{where}: {text}, "
                        f"{_free(resultdir)}")
                data = line.replace("\n", " ").encode("utf-8", "replace")[: _SIZE - 1]
                page[: len(data)] = data
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        if _requested:
            return
        _requested = True
    text_reason = reason()
    if text_reason is not None:
        abort.request(text_reason)


def check() -> None:
    """Called before a write: if another process found the results dir broken, abort here too."""
    if not _requested and broken():
        failed("", OSError("results directory broken"))
