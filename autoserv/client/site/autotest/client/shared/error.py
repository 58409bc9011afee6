"""The exceptions of the client runtime, named as in Autotest's ``common_lib.error``.

The test-outcome tree mirrors autoserv's (``autoserv/errors.py``): each class carries
``exit_status``, the status.log word a test raising it ends with::

    TestFail -> FAIL    TestError -> ERROR    TestNAError -> TEST_NA    TestWarn -> WARN

Any other exception escaping test code is wrapped in :class:`UnhandledTestFail` (FAIL);
failures of the runtime itself around a test (missing test, import error, bad
arguments) are :class:`TestError` (ERROR).
"""

from __future__ import annotations

import traceback
from typing import Any

__all__ = [
    "AutotestError",
    "JobError",
    "UnhandledJobError",
    "JobRebootNotSupported",
    "NotAvailableError",
    "TestBaseException",
    "TestError",
    "TestFail",
    "TestNAError",
    "TestWarn",
    "UnhandledTestError",
    "UnhandledTestFail",
    "CmdError",
    "CmdTimeoutError",
    "PackageError",
]


class AutotestError(Exception):
    """Root of the runtime's errors."""


class JobError(AutotestError):
    """A job-level failure: the control file cannot go on."""


class UnhandledJobError(JobError):
    """An exception escaped the control file (wraps it)."""


class JobRebootNotSupported(JobError):
    """``job.reboot()`` was called where the runtime cannot reboot (a test or parallel task)."""


class NotAvailableError(AutotestError):
    """Something the job requires is not on this host (e.g. ``job.require_gcc()``)."""


class TestBaseException(AutotestError):
    """Root of test outcomes; ``exit_status`` is the status.log word for it."""

    __test__ = False  # keep pytest from collecting these
    exit_status = "NEVER_RAISE_THIS"


class TestError(TestBaseException):
    """The test could not run correctly (status ERROR)."""

    exit_status = "ERROR"


class TestNAError(TestBaseException):
    """The test does not apply here (status TEST_NA)."""

    exit_status = "TEST_NA"


class TestFail(TestBaseException):
    """The test ran and failed (status FAIL)."""

    exit_status = "FAIL"


class TestWarn(TestBaseException):
    """The test passed with a warning (status WARN)."""

    exit_status = "WARN"


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


class CmdError(TestError):
    """A command run by ``utils.run``/``system`` failed; ``result_obj`` is its CmdResult."""

    def __init__(self, command: str, result_obj: Any = None, additional_text: str | None = None) -> None:
        super().__init__(command, result_obj, additional_text)
        self.command = command
        self.result_obj = result_obj
        self.additional_text = additional_text

    def __str__(self) -> str:
        head = f"Command <{self.command}> failed"
        result = self.result_obj
        if result is not None:
            if getattr(result, "timed_out", False):
                head = f"Command <{self.command}> timed out after {result.duration:.1f} s"
            else:
                head += f", rc={result.exit_status}"
        if self.additional_text:
            head += f", {self.additional_text}"
        if result is not None and result.stderr:
            head += "\n* stderr: " + result.stderr.rstrip("\n")[-2000:]
        return head


class CmdTimeoutError(CmdError):
    """A command ran past its timeout and was killed (with its process group)."""


class PackageError(TestError):
    """A test package or dependency could not be fetched or installed."""
