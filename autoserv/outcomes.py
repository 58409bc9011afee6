"""Test outcomes: the exceptions a test raises to end with a status other than GOOD.

Named as in Autotest's ``common_lib.error``; each class carries ``exit_status``, the
status.log word a test raising it ends with::

    TestFail -> FAIL    TestError -> ERROR    TestNAError -> TEST_NA    TestWarn -> WARN

:class:`CmdError` (a command failed, an ERROR) carries the command's CmdResult and
:func:`describe_result` renders one.  The root :class:`AutotestError` stands apart from
autoserv's :class:`~autoserv.errors.AutoservError` (as in Autotest).

This module is stdlib-only: :mod:`autoserv.errors` re-exports it for the server, and
:mod:`autoserv.client` ships this very file to hosts as ``autotest/client/shared/outcomes.py``,
where the client runtime's ``error`` module re-exports it.  So ``except error.TestFail``
catches the same classes in a control file, a server-side test and a client test.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # relative: the sibling module on the server and on a host alike
    from .result import CmdResult

#: The exceptions: what :mod:`autoserv.errors` and the client's ``error`` module re-export.
__all__ = [
    "AutotestError",
    "TestBaseException",
    "TestError",
    "TestFail",
    "TestNAError",
    "TestWarn",
    "CmdError",
]

_TAIL_LINES = 20


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    parts = text.rstrip("\n").splitlines()
    if len(parts) > lines:
        parts = [f"[... {len(parts) - lines} earlier lines ...]"] + parts[-lines:]
    return "\n".join("    " + p for p in parts)


def describe_result(result: CmdResult) -> str:
    """Multi-line description of a command result: command, status, duration, output tails."""
    where = f" on {result.hostname}" if result.hostname else ""
    lines = [f"Command{where}: {result.command}"]
    if result.timed_out:
        lines.append(f"Timed out after {result.duration:.2f} s (exit status {result.exit_status})")
    else:
        lines.append(f"Exit status: {result.exit_status}")
        lines.append(f"Duration: {result.duration:.3f} s")
    if result.stdout:
        lines.append("stdout:")
        lines.append(_tail(result.stdout))
    if result.stderr:
        lines.append("stderr:")
        lines.append(_tail(result.stderr))
    return "\n".join(lines)


class DataclassError(Exception):
    """Base of an exception declared as ``@dataclasses.dataclass(eq=False, repr=False)``: its
    fields (the constructor's arguments, as attributes) are its ``args`` too, so it prints,
    compares and pickles (back from a parallel worker) as any exception does."""

    def __post_init__(self) -> None:
        fields = dataclasses.fields(self)  # type: ignore[arg-type]  # on the dataclass subclass
        Exception.__init__(self, *(getattr(self, f.name) for f in fields))


class AutotestError(Exception):
    """Root of the test outcomes (and of the client runtime's own errors)."""


class TestBaseException(AutotestError):
    """Root of test outcomes; ``exit_status`` is the status.log word for it."""

    __test__ = False  # keep pytest from collecting these as test classes
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


@dataclasses.dataclass(eq=False, repr=False)
class CmdError(DataclassError, TestError):
    """A command failed (status ERROR); ``result_obj`` is its CmdResult, as in Autotest."""

    command: str
    result_obj: CmdResult | None = None
    additional_text: str | None = None

    def __str__(self) -> str:
        head = f"Command <{self.command}> failed"
        if self.result_obj is not None:
            if self.result_obj.timed_out:
                head = f"Command <{self.command}> timed out"
            else:
                head += f", rc={self.result_obj.exit_status}"
        if self.additional_text:
            head += f", {self.additional_text}"
        if self.result_obj is not None:
            head += "\n" + describe_result(self.result_obj)
        return head
