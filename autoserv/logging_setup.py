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
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from typing import IO, Any

from autoserv import results_disk

__all__ = ["setup", "shutdown", "add_secret", "redact", "console_stream", "flush", "LEVELS"]

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


class _ResultsFileHandler(logging.FileHandler):
    """A debug file: the first failed write goes to :func:`results_disk.failed`, then quiet."""

    broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.broken or results_disk.broken():
            self.broken = True
            results_disk.check()  # another process of the job found the disk full: abort
            return
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # logging names it so
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            self.broken = True
            results_disk.failed(self.baseFilename, exc)
            return
        super().handleError(record)


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
        self._pending = ""
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
            data = self._pending + text
            *lines, self._pending = data.split("\n")
            for line in lines:
                self._logger.log(self._level, "%s", line)
        finally:
            self._busy.on = False
        return len(text)

    def finish(self) -> None:
        """Log a last line that has no newline yet."""
        if self._pending:
            pending, self._pending = self._pending, ""
            self._logger.log(self._level, "%s", pending)

    def isatty(self) -> bool:
        return False


def console_stream() -> IO[str]:
    """The real standard error of the process (not the logging replacement)."""
    if _saved_streams is not None:
        return _saved_streams[1]  # type: ignore[no-any-return]
    return sys.stderr


def setup(
    debug_dir: str | None,
    console: bool = True,
    verbose: bool = False,
    prefix: str = "",
) -> None:
    """Install the job's logging (replacing what an earlier call installed).

    ``debug_dir`` None writes no files (``-N``).  ``prefix`` is put before every console line.
    """
    global _saved_streams, _console, _root_level
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
    if debug_dir is not None:
        os.makedirs(debug_dir, exist_ok=True)
        for name in LEVELS:
            handler: logging.Handler = _ResultsFileHandler(
                os.path.join(debug_dir, f"autoserv.{name}"), encoding="utf-8"
            )
            handler.setLevel(getattr(logging, name))
            handler.setFormatter(_Formatter(FILE_FORMAT, FILE_DATEFMT))
            _handlers.append(handler)
    if console:
        assert _console is not None
        handler = _ConsoleHandler(_console)
        handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        handler.setFormatter(_Formatter(CONSOLE_FORMAT, CONSOLE_DATEFMT, prefix))
        handler.addFilter(_not_files_only)
        _handlers.append(handler)
    for handler in _handlers:
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
    for handler in _handlers:
        handler.flush()
    if _saved_streams is not None:
        for stream in _saved_streams:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass


def _remove_handlers() -> None:
    root = logging.getLogger()
    for handler in _handlers:
        root.removeHandler(handler)
        try:
            handler.flush()
            if isinstance(handler, logging.FileHandler):
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
