"""The job context hosts see: SSH defaults, the results directory, the status hook.

A :class:`JobContext` is one immutable value.  :meth:`ServerJob.run
<autoserv.job.ServerJob.run>` activates its own for the length of the job
(:func:`activate` / :func:`restore`, or :func:`job_context` as a ``with``
block) and restores the previous one at the end, so nothing of a job
outlives it.  Hosts read :func:`current`: SSH hosts their defaults and the hook
run before their first command, ``reboot`` the hook that writes status.log lines,
guests the results directory for their console logs.  A forked ``parallel_simple``
worker inherits its parent's context; a worker *thread* keeps the context it
changes in its own :mod:`autoserv.scope` (so the guest console logs of each
machine go to its subdir).
Outside a job the context is empty (built-in defaults, no results, no status hook).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from autoserv import scope
from autoserv.hosts.defaults import SSHDefaults

__all__ = ["JobContext", "StatusHook", "current", "activate", "restore", "update", "job_context"]

#: Called as ``hook(status_code, subdir, operation, status="", optional_fields=None)``
#: to write status.log lines (the job's ``record``).
StatusHook = Callable[..., None]


@dataclass(frozen=True)
class JobContext:
    """What hosts take from the job running in this process."""

    ssh: SSHDefaults = field(default_factory=SSHDefaults)
    resultdir: str | None = None
    record: StatusHook | None = None
    #: Called with an SSH host before the first command that host object runs; may return
    #: ``(prelude, on_head)``: shell run first in that command's own session (its output
    #: before the command's, never in its result) and a callable given all that came before
    #: the command's output when the command ends, which returns the part the prelude did
    #: not print (crash collection marks the system logs' positions so, at no extra round
    #: trip); must not raise.
    first_command: Callable[[Any], tuple[str, Callable[[bytes], bytes]] | None] | None = None


_current = JobContext()  # the one piece of job state in the hosts package
_SCOPE_KEY = "hosts.context"


def current() -> JobContext:
    """The context in force now (a worker thread's own, if it set one)."""
    ctx: JobContext | None = scope.lookup(_SCOPE_KEY)
    return _current if ctx is None else ctx


def activate(ctx: JobContext) -> JobContext:
    """Make ``ctx`` the current context; returns the previous one (for :func:`restore`)."""
    global _current
    previous = current()
    worker = scope.current()
    if worker is not None:
        worker.slots[_SCOPE_KEY] = ctx
    else:
        _current = ctx
    return previous


def restore(previous: JobContext) -> None:
    """Put back the context :func:`activate` returned."""
    activate(previous)


def update(**changes: Any) -> JobContext:
    """Replace fields of the current context (``ssh=``, ``resultdir=``, ``record=``)."""
    ctx = dataclasses.replace(current(), **changes)
    activate(ctx)
    return ctx


@contextmanager
def job_context(
    ssh: SSHDefaults | None = None, resultdir: str | None = None, record: StatusHook | None = None
) -> Iterator[JobContext]:
    """A ``with`` block running under a context of its own (the previous one restored after)."""
    ctx = JobContext(ssh=ssh or SSHDefaults(), resultdir=resultdir, record=record)
    previous = activate(ctx)
    try:
        yield ctx
    finally:
        restore(previous)
