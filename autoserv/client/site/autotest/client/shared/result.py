"""CmdResult: the one result type for local and remote command runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CmdResult:
    """What a command did.

    ``exit_status`` is the command's exit code; negative means killed by that
    signal (``-9``), and ``timed_out`` marks a run that autoserv ended because
    its timeout expired.  ``hostname`` is empty for local runs.
    """

    command: str = ""
    exit_status: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    hostname: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out

    def __repr__(self) -> str:  # short, for logs
        where = f"@{self.hostname}" if self.hostname else ""
        return (
            f"CmdResult{where}(command={self.command!r}, exit_status={self.exit_status}, "
            f"duration={self.duration:.3f}, timed_out={self.timed_out})"
        )
