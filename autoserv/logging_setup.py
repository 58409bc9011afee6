"""Logging of a job: the console, ``debug/autoserv.{DEBUG,INFO,WARNING,ERROR}``, and stdout.

Only the runner configures logging; library code (hosts, kvm) just logs to its loggers.

* Each ``debug/autoserv.<LEVEL>`` file holds the records of that level and above.
* The console (standard output) shows INFO and above, DEBUG with ``--verbose``, nothing
  with ``-n``.  A parallel worker prefixes each console line with ``<arg> : ``.
* ``print`` in a control file goes through logging too (``sys.stdout``/``sys.stderr`` are
  replaced by line-buffered streams logging to ``autoserv.stdout``/``autoserv.stderr``), so
  it lands in the debug files, carries the worker prefix, and ``-n`` silences it.
* Secrets registered with :func:`add_secret` (the SSH password) are replaced by ``***`` in
  everything written, including tracebacks.
* A debug file that cannot be written (a full results disk) is reported once through
  :mod:`autoserv.results_disk` (which aborts the job); the files then stay silent, instead
  of logging printing a traceback for every record.

The state is per process: :func:`setup` replaces what a previous call installed (a forked
worker calls it again for its own results subdirectory), :func:`shutdown` removes it all.
A parallel worker *thread* (:mod:`autoserv.scope`) that calls :func:`setup` gets handlers of
its own instead: one router on the root logger hands each record logged in that thread to
them (and keeps it out of the job's), and ``print`` lines are assembled per thread;
:func:`close_worker` removes them when the worker ends.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
from typing import IO, Any

from autoserv import results_disk, scope

__all__ = ["setup", "shutdown", "add_secret", "redact", "console_stream", "flush", "LEVELS",
           "close_worker"]

#: The debug files written under ``<results>/debug/``.
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MASK = "***"
FILE_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-5.5s|%(name)s| %(message)s"
FILE_DATEFMT = "%m/%d %H:%M:%S"
CONSOLE_FORMAT = "%(asctime)s %(levelname)-5.5s| %(message)s"
CONSOLE_DATEFMT = "%H:%M:%S"

_secrets: set[str] = set()
_handlers: list[logging.Handler] = []
_saved_streams: tuple[Any, Any] | None = None
_console: IO[str] | None = None
_root_level: int | None = None
_SCOPE_KEY = "logging"  # a worker thread's handlers


def add_secret(secret: str | None) -> None:
    """Never write ``secret`` anywhere: it becomes ``***`` in every log record."""
    if secret:
        _secrets.add(secret)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class _Formatter(logging.Formatter):
    """Formats, redacts secrets, and prefixes every line (the worker's ``<arg> : ``)."""

    def __init__(self, fmt: str, datefmt: str, prefix: str = "") -> None:
        super().__init__(fmt, datefmt)
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record))
        if self.prefix:
            text = "\n".join(self.prefix + line for line in text.split("\n"))
        return text


def _not_files_only(record: logging.LogRecord) -> bool:
    """Console filter: records logged with ``extra={"files_only": True}`` stay in the files."""
    return not getattr(record, "files_only", False)


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The console: when it cannot be written (a closed pipe), it goes quiet for good.

    The default ``handleError`` would print to ``sys.stderr``, which is logged to this
    very handler again: a loop.
    """

    broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # logging names it so
        self.broken = True


class _DebugFiles(logging.Handler):
    """The debug files of one ``debug/`` directory: ``autoserv.<LEVEL>`` holds the records
    of that level and above.

    One handler for the four files: a record is formatted once and written to each file
    it belongs in (four handlers formatted an INFO record twice and a WARNING three
    times).  With ``lazy``, a file is created when its first record comes, so a machine's
    ``debug/`` holds no empty ``autoserv.WARNING`` or ``autoserv.ERROR``: every file
    created is an inode the filesystem must find, and a fan-out creates them for every
    machine.  The files are plain descriptors: a record is encoded once and written to each
    with one ``write`` (the files are read while the job runs), and opening one takes one
    system call where a Python file object takes six.  The first failed write goes to
    :func:`results_disk.failed`; the handler is quiet after it.
    """

    broken = False

    def __init__(self, debug_dir: str, lazy: bool) -> None:
        super().__init__(logging.DEBUG)
        #: (level, path), lowest level first
        self._paths = [(getattr(logging, name), os.path.join(debug_dir, f"autoserv.{name}"))
                       for name in LEVELS]
        self._files: dict[int, int] = {}  # level -> descriptor
        self._closed = False
        if not lazy:
            for level, path in self._paths:
                self._open(level, path)

    def _open(self, level: int, path: str) -> int:
        fd = self._files[level] = results_disk.open_for_append(path)
        return fd

    def emit(self, record: logging.LogRecord) -> None:
        if self.broken or results_disk.broken():
            self.broken = True
            results_disk.check()  # another process of the job found the disk full: abort
            return
        try:
            data = (self.format(record) + "\n").encode("utf-8")
        except Exception:  # cannot be formatted, or a lone surrogate UTF-8 cannot take
            self.handleError(record)
            return
        path = ""
        try:
            for level, path in self._paths:
                if record.levelno < level:
                    break
                fd = self._files.get(level)
                if fd is not None:
                    results_disk.write_all(fd, data)
                elif self._closed:  # a record that raced with close: written, nothing kept open
                    results_disk.append_bytes(path, data)
                else:
                    results_disk.write_all(self._open(level, path), data)
        except OSError as exc:
            self.broken = True
            results_disk.failed(path, exc)

    def flush(self) -> None:
        """Nothing to do: each record is written when it comes."""

    def close(self) -> None:
        self.acquire()  # emit runs under the handler's lock (logging's ``handle``)
        try:
            self._closed = True
            for fd in self._files.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._files.clear()
        finally:
            self.release()
            super().close()


class _LogStream(io.TextIOBase):
    """A text stream that logs each complete line it is given (for ``print``).

    What is written while a line is being logged (logging's own error reports) goes to
    the real stream instead, never back into logging.
    """

    def __init__(self, logger: logging.Logger, level: int, real: IO[str]) -> None:
        super().__init__()
        self._logger = logger
        self._level = level
        self._real = real
        self._local = threading.local()  # the line being assembled, per thread
        self._busy = threading.local()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def write(self, text: str) -> int:
        if getattr(self._busy, "on", False):
            try:
                self._real.write(text)
            except (OSError, ValueError):
                pass
            return len(text)
        self._busy.on = True
        try:
            data = getattr(self._local, "pending", "") + text
            *lines, self._local.pending = data.split("\n")
            for line in lines:
                self._logger.log(self._level, "%s", line)
        finally:
            self._busy.on = False
        return len(text)

    def finish(self) -> None:
        """Log a last line (written by this thread) that has no newline yet."""
        pending = getattr(self._local, "pending", "")
        if pending:
            self._local.pending = ""
            self._logger.log(self._level, "%s", pending)

    def isatty(self) -> bool:
        return False


def console_stream() -> IO[str]:
    """The real standard error of the process (not the logging replacement)."""
    if _saved_streams is not None:
        return _saved_streams[1]  # type: ignore[no-any-return]
    return sys.stderr


def _in_no_worker(record: logging.LogRecord) -> bool:
    """Filter of the job's handlers: a record of a worker thread with handlers is not theirs."""
    return scope.lookup(_SCOPE_KEY) is None


class _WorkerRouter(logging.Handler):
    """On the root logger: hands a record to the handlers of the worker thread logging it."""

    def emit(self, record: logging.LogRecord) -> None:
        handlers: list[logging.Handler] | None = scope.lookup(_SCOPE_KEY)
        for handler in handlers or ():
            if record.levelno >= handler.level:
                handler.handle(record)


_router = _WorkerRouter()


def _make_handlers(debug_dir: str | None, console: bool, verbose: bool,
                   prefix: str, stream: IO[str] | None, lazy: bool = False) -> list[logging.Handler]:
    made: list[logging.Handler] = []
    if debug_dir is not None:
        os.makedirs(debug_dir, exist_ok=True)
        handler: logging.Handler = _DebugFiles(debug_dir, lazy)
        handler.setFormatter(_Formatter(FILE_FORMAT, FILE_DATEFMT))
        made.append(handler)
    if console:
        handler = _ConsoleHandler(stream)
        handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        handler.setFormatter(_Formatter(CONSOLE_FORMAT, CONSOLE_DATEFMT, prefix))
        handler.addFilter(_not_files_only)
        made.append(handler)
    return made


def _setup_worker(worker: scope.Scope, debug_dir: str | None, console: bool, verbose: bool,
                  prefix: str, lazy: bool) -> None:
    close_worker()
    stream = _console if _console is not None else sys.stdout
    worker.slots[_SCOPE_KEY] = _make_handlers(debug_dir, console, verbose, prefix, stream, lazy)
    root = logging.getLogger()
    if _router not in root.handlers:
        root.addHandler(_router)


def close_worker() -> None:
    """In a worker thread: log its partial ``print`` line, close the handlers it set up."""
    worker = scope.current()
    if worker is None or _SCOPE_KEY not in worker.slots:
        return
    _flush_streams()
    handlers: list[logging.Handler] = worker.slots.pop(_SCOPE_KEY)
    for handler in handlers:
        try:
            handler.flush()
            handler.close()
        except (OSError, ValueError):
            pass


def setup(
    debug_dir: str | None,
    console: bool = True,
    verbose: bool = False,
    prefix: str = "",
    lazy_files: bool = False,
) -> None:
    """Install the job's logging (replacing what an earlier call installed).

    ``debug_dir`` None writes no files (``-N``).  ``prefix`` is put before every console line.
    ``lazy_files`` creates each debug file at its first record (a machine's ``debug/``),
    instead of all four at once (the job's).
    In a parallel worker thread this sets up that worker's logging only.
    """
    global _saved_streams, _console, _root_level
    worker = scope.current()
    if worker is not None:
        _setup_worker(worker, debug_dir, console, verbose, prefix, lazy_files)
        return
    _remove_handlers()
    if _saved_streams is None:
        _saved_streams = (sys.stdout, sys.stderr)
        _console = sys.stdout
    root = logging.getLogger()
    if _root_level is None:
        _root_level = root.level
    root.setLevel(logging.DEBUG)
    # paramiko's DEBUG is a packet trace: keep it out of the job's files
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    assert _console is not None
    _handlers.extend(_make_handlers(debug_dir, console, verbose, prefix, _console, lazy_files))
    for handler in _handlers:
        handler.addFilter(_in_no_worker)
        root.addHandler(handler)
    _flush_streams()
    real_out, real_err = _saved_streams
    sys.stdout = _LogStream(logging.getLogger("autoserv.stdout"), logging.INFO, real_out)
    sys.stderr = _LogStream(logging.getLogger("autoserv.stderr"), logging.WARNING, real_err)


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, _LogStream):
            stream.finish()


def flush() -> None:
    """Write out partial ``print`` lines and flush every handler (before a fork or exit)."""
    _flush_streams()
    worker_handlers: list[logging.Handler] = scope.lookup(_SCOPE_KEY) or []
    for handler in [*_handlers, *worker_handlers]:
        handler.flush()
    if _saved_streams is not None:
        for stream in _saved_streams:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass


def _remove_handlers() -> None:
    root = logging.getLogger()
    root.removeHandler(_router)
    for handler in _handlers:
        root.removeHandler(handler)
        try:
            handler.flush()
            if isinstance(handler, _DebugFiles):
                handler.close()
        except (OSError, ValueError):
            pass
    _handlers.clear()


def shutdown() -> None:
    """Remove everything :func:`setup` installed and give back the real stdout/stderr."""
    global _saved_streams, _console, _root_level
    _flush_streams()
    _remove_handlers()
    if _saved_streams is not None:
        sys.stdout, sys.stderr = _saved_streams
        _saved_streams = None
        _console = None
    if _root_level is not None:
        logging.getLogger().setLevel(_root_level)
        _root_level = None
    _secrets.clear()
