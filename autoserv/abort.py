"""SIGINT/SIGTERM/SIGHUP handling: turn a signal into :class:`JobAbort` in the main thread.

SIGHUP (the terminal or the ssh session autoserv runs in went away) aborts exactly like
SIGTERM; started under ``nohup`` (SIGHUP ignored), autoserv keeps ignoring it.

:class:`JobAbort` derives from :class:`BaseException`, not :class:`Exception`, so a control
file's ``except Exception:`` cannot swallow an abort.  Any code it unwinds through gets to
clean up (``host.run`` kills the remote command when an exception leaves it), and the job
then closes every host and writes ``END ABORT`` / ``job_abort_reason`` to status.log.

While the job cleans up (:meth:`AbortHandlers.deferred`), a signal is only remembered, so
that cleanup is never interrupted halfway; SIGKILL remains the way to stop autoserv at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from autoserv import scope

__all__ = ["JobAbort", "AbortHandlers", "ABORT_SIGNALS", "current", "deferred", "request"]

log = logging.getLogger("autoserv.abort")

#: The signals that abort a job.
ABORT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Ignored at start-up (``&`` in a script, ``nohup``), these stay ignored.
_KEEP_IGNORED = (signal.SIGINT, signal.SIGHUP)


class JobAbort(BaseException):
    """The job is being aborted; ``reason`` says why (e.g. ``received SIGTERM``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"job aborted: {self.reason}"


def signal_reason(signum: int) -> str:
    """``received SIGTERM`` for ``signal.SIGTERM``."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return f"received {name}"


class AbortHandlers:
    """Installs SIGINT/SIGTERM/SIGHUP handlers raising :class:`JobAbort`; restores the old ones.

    ``reason`` maps the signal number to the abort reason (a parallel worker uses it to say
    that its timeout expired).  Only the main thread can install signal handlers; elsewhere
    :meth:`install` does nothing.
    """

    def __init__(self, reason: Callable[[int], str] = signal_reason) -> None:
        self._reason = reason
        self._previous: dict[int, object] = {}
        self._deferring = False
        self.aborting = False
        self.pending: str | None = None  # a reason received while deferred
        self.requested: str | None = None  # the reason given to :func:`request`
        self._outer: AbortHandlers | None = None

    def install(self) -> AbortHandlers:
        global _current
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in ABORT_SIGNALS:
            if signum in _KEEP_IGNORED and signal.getsignal(signum) == signal.SIG_IGN:
                continue  # started in the background (SIGINT) or under nohup (SIGHUP): keep it so
            self._previous[signum] = signal.signal(signum, self._handle)
        self._outer = _current
        _current = self
        return self

    def restore(self) -> None:
        global _current
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        if self._previous and _current is self:
            _current = self._outer
        self._previous.clear()

    def __enter__(self) -> AbortHandlers:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        reason = self.requested or self._reason(signum)
        if self.aborting or self._deferring:
            if self.pending is None and not self.aborting:
                self.pending = reason
            log.warning("%s while %s; finishing cleanup first", reason,
                        "aborting" if self.aborting else "cleaning up")
            return
        self.aborting = True
        log.error("Aborting: %s", reason)
        raise JobAbort(reason)

    def request(self, reason: str) -> bool:
        """An abort from outside a signal (a worker thread's controller).

        True if it is to be raised now (the caller raises it in the worker); False if the
        worker is already aborting, or is cleaning up (then it is remembered in
        :attr:`pending`, as a signal would be).
        """
        if self.aborting or self._deferring:
            if self.pending is None and not self.aborting:
                self.pending = reason
            return False
        self.aborting = True
        return True

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within the block, signals are remembered in :attr:`pending` instead of raising."""
        old = self._deferring
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = old


_current: AbortHandlers | None = None


def current() -> AbortHandlers | None:
    """The handlers installed last in this process (None if none).

    In a parallel worker thread: that worker's own (see :mod:`autoserv.workers`), which the
    controller, not a signal, triggers.
    """
    worker: AbortHandlers | None = scope.lookup("abort")
    return _current if worker is None else worker


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Defer aborts with the current handlers, if any (see :meth:`AbortHandlers.deferred`)."""
    handlers = current()
    if handlers is None:
        yield
        return
    with handlers.deferred():
        yield


def request(reason: str) -> None:
    """Abort this process's job for ``reason``, from any thread, as a signal would.

    The main thread gets :class:`JobAbort` (or, while cleanup is deferred, the reason is
    kept as pending) exactly as for SIGTERM, whose handler delivers it.  Without installed
    handlers (no job running) this does nothing.
    """
    handlers = _current
    if handlers is None or signal.SIGTERM not in handlers._previous:
        return
    handlers.requested = reason
    os.kill(os.getpid(), signal.SIGTERM)
