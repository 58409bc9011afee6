"""The one exception tree of autoserv.

Everything autoserv raises derives from :class:`AutoservError` (host, transport,
virtualization and runner failures) or from :class:`TestBaseException` (the
outcome of a test: FAIL, ERROR, TEST_NA, WARN), mirroring Autotest's
``common_lib.error`` so legacy control files can catch the classes they know.
Errors that come from running a command carry the :class:`~autoserv.result.CmdResult`.

The test outcomes (and :class:`CmdError`, :func:`describe_result`) are defined in
:mod:`autoserv.outcomes`, the stdlib-only module the client runtime ships to hosts, and
re-exported here: one class each, on the server and on a host.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from autoserv import outcomes
from autoserv.outcomes import *  # noqa: F403 - the test outcomes are part of this tree
from autoserv.outcomes import DataclassError, describe_result

if TYPE_CHECKING:
    from autoserv.result import CmdResult

__all__ = [
    "AutoservError",
    "AutoservSSHTimeout",
    "AutoservRunError",
    "AutoservRunTimeoutError",
    "AutoservSshPermissionDeniedError",
    "AutoservHostKeyError",
    "AutoservVirtError",
    "AutoservGuestDiedError",
    "AutoservUnsupportedError",
    "AutoservHostError",
    "AutoservRebootError",
    "AutoservShutdownError",
    "AutoservSubcommandError",
    "AutoservInstallError",
    "AutoservNotSupportedError",
    "AutoservUsageError",
    "AutoservAbort",
    "BarrierError",
    "BarrierAbortError",
    "JobError",
    "AutotestRunError",
    "AutotestTimeoutError",
    "AutotestAbort",
]
__all__ += outcomes.__all__  # AutotestError, TestBaseException ... CmdError


class AutoservError(Exception):
    """Root of every error autoserv raises about hosts, transports and the job."""


class AutoservSSHTimeout(AutoservError):
    """A host could not be reached: refused, unreachable, unknown name, or timed out."""


@dataclasses.dataclass(eq=False, repr=False)
class AutoservRunError(DataclassError, AutoservError):
    """A command failed (non-zero exit) or timed out; ``result_obj`` holds its CmdResult."""

    description: str
    result_obj: CmdResult | None = None

    @property
    def timed_out(self) -> bool:
        return bool(self.result_obj is not None and self.result_obj.timed_out)

    def __str__(self) -> str:
        if self.result_obj is None:
            return self.description
        return f"{self.description}\n{describe_result(self.result_obj)}"


class AutoservRunTimeoutError(AutoservRunError):
    """A command ran out of its timeout and was killed; ``result_obj`` keeps its partial output."""


class AutoservSshPermissionDeniedError(AutoservRunError):
    """Authentication failed: wrong key, wrong password, or no usable credential."""


class AutoservHostKeyError(AutoservError):
    """The host's key is unknown (strict policy) or differs from the recorded one."""


class AutoservVirtError(AutoservError):
    """Virtualization failure: KVM modules, qemu start-up, address pool, guests."""


class AutoservGuestDiedError(AutoservRunError, AutoservVirtError):
    """A guest's virtual machine ended (its qemu died or was killed) under a command: the
    message names the guest and its KVM host; ``result_obj`` keeps the partial output."""


class AutoservUnsupportedError(AutoservError):
    """The host does not support the requested operation."""


class AutoservNotSupportedError(AutoservError):
    """A feature of the original Autoserv that this runner does not implement (yet)."""


class AutoservHostError(AutoservError):
    """A host is in a bad state (e.g. a guest died)."""


class AutoservRebootError(AutoservError):
    """A reboot did not complete (host did not go down or come back)."""


class AutoservShutdownError(AutoservRebootError):
    """A host did not shut down."""


@dataclasses.dataclass(eq=False, repr=False)
class AutoservSubcommandError(DataclassError, AutoservError):
    """A parallel subcommand failed."""

    func: str
    exit_code: int
    message: str = ""

    def __str__(self) -> str:
        text = f"Subcommand {self.func} failed with exit code {self.exit_code}"
        return f"{text}: {self.message}" if self.message else text


class AutoservInstallError(AutoservError):
    """Installing something (e.g. KVM) on a host failed."""


class AutoservUsageError(AutoservError):
    """The runner was invoked wrongly (bad flag, bad machine list)."""


class AutoservAbort(AutoservError):
    """Something gave up on purpose (for library users).

    The runner itself stops a job on SIGINT/SIGTERM with
    :class:`autoserv.abort.JobAbort`, a ``BaseException`` that a control file's
    ``except Exception:`` cannot swallow.
    """


class BarrierError(AutoservError):
    """A barrier rendezvous failed: timed out (naming who never arrived), or a participant left."""


class BarrierAbortError(BarrierError):
    """A participant of a barrier asked everyone to abort (``rendezvous(..., abort=True)``)."""


class JobError(AutoservError):
    """A job-level failure (e.g. the results directory is already in use)."""


class AutotestRunError(AutoservError):
    """An Autotest client run did not complete (it died, was lost, or its control raised)."""


class AutotestTimeoutError(AutotestRunError):
    """An Autotest client run outlived its ``timeout``."""


class AutotestAbort(AutotestRunError):
    """An Autotest client run was aborted."""
