"""The exceptions of the client runtime, named as in Autotest's ``common_lib.error``.

The test-outcome tree is autoserv's own: :mod:`autotest.client.shared.outcomes` is
``autoserv/outcomes.py`` shipped as-is (see ``autoserv/client/__init__.py``), re-exported
here.  Each class carries ``exit_status``, the status.log word a test raising it ends with::

    TestFail -> FAIL    TestError -> ERROR    TestNAError -> TEST_NA    TestWarn -> WARN

Any other exception escaping test code is wrapped in :class:`UnhandledTestFail` (FAIL);
failures of the runtime itself around a test (missing test, import error, bad
arguments) are :class:`TestError` (ERROR).
"""

from __future__ import annotations

import traceback

from autotest.client.shared import outcomes
from autotest.client.shared.outcomes import *  # noqa: F403 - the test outcomes, autoserv's own
from autotest.client.shared.outcomes import AutotestError, CmdError, TestError, TestFail

__all__ = [
    "JobError",
    "UnhandledJobError",
    "JobRebootNotSupported",
    "BarrierError",
    "BarrierAbortError",
    "NotAvailableError",
    "UnhandledTestError",
    "UnhandledTestFail",
    "CmdTimeoutError",
    "PackageError",
]
__all__ += outcomes.__all__  # AutotestError, TestBaseException ... CmdError


class JobError(AutotestError):
    """A job-level failure: the control file cannot go on."""


class UnhandledJobError(JobError):
    """An exception escaped the control file (wraps it)."""


class JobRebootNotSupported(JobError):
    """``job.reboot()`` was called where the runtime cannot reboot (a test or parallel task)."""


class BarrierError(JobError):
    """A ``job.barrier`` rendezvous failed: timed out (naming who never arrived), or a
    participant left."""


class BarrierAbortError(BarrierError):
    """A participant of a barrier asked everyone to abort (``rendezvous(..., abort=True)``)."""


class NotAvailableError(AutotestError):
    """Something the job requires is not on this host (e.g. ``job.require_gcc()``)."""


def _unhandled_message(exc: BaseException) -> str:
    text = f"Unhandled {type(exc).__name__}: {exc}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip("\n")
    return f"{text}\n{tb}"


class UnhandledTestError(TestError):
    """A non-test exception escaped the runtime around a test (ERROR)."""

    def __init__(self, unhandled_exception: BaseException) -> None:
        super().__init__(_unhandled_message(unhandled_exception))


class UnhandledTestFail(TestFail):
    """A non-test exception escaped test code (FAIL), as in Autotest."""

    def __init__(self, unhandled_exception: BaseException) -> None:
        super().__init__(_unhandled_message(unhandled_exception))


class CmdTimeoutError(CmdError):
    """A command ran past its timeout and was killed (with its process group)."""


class PackageError(TestError):
    """A test package or dependency could not be fetched or installed."""
