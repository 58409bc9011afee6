"""What autoserv's commands share about their command lines.

* :class:`UsageParser`: an :class:`argparse.ArgumentParser` whose errors raise
  :class:`~autoserv.errors.AutoservUsageError` (the caller reports them in one line,
  exit 2) instead of printing and exiting;
* :func:`port`, :func:`positive_float`: flag value types;
* :func:`machine_entries`: the machine entries of ``-m`` values and an ``-M`` file,
  with where each stands (``autoserv`` parses them, ``autoserv check`` reports on them).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple, NoReturn, TypeVar

from autoserv import inputs
from autoserv.errors import AutoservUsageError

__all__ = ["UsageParser", "port", "positive_int", "positive_float", "MachineEntry", "machine_entries",
           "MLIST_DISPLAY"]

#: How entries from ``-m`` values name their "file" (line: the n-th ``-m``).
MLIST_DISPLAY = "-m"
_ENTRY = re.compile(r"[^\s,]+")
_N = TypeVar("_N", int, float)


class UsageParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise AutoservUsageError (reported in one line)."""

    def error(self, message: str) -> NoReturn:
        raise AutoservUsageError(message)


def _number(text: str, kind: Callable[[str], _N], what: str) -> _N:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def port(text: str) -> int:
    """A TCP port number (1-65535), for ``type=``."""
    value = _number(text, int, "a port number")
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {value}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (``--max-parallel``), for ``type=``."""
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number of seconds > 0 (at most :data:`autoserv.inputs.MAX_SECONDS`), for ``type=``."""
    _number(text, float, "a number")
    try:
        return inputs.check_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class MachineEntry(NamedTuple):
    """One machine entry and where it stands: ``display`` is :data:`MLIST_DISPLAY` or the
    ``-M`` file, ``line`` the n-th ``-m`` value or the file's line, ``column`` 1-based;
    ``source`` the whole ``-m`` value or file line it came from."""

    display: str
    line: int
    column: int
    text: str
    source: str = ""


def machine_entries(specs: Sequence[str], mlist: str | None = None) -> list[MachineEntry]:
    """Every entry of the ``-m`` values ``specs`` and of the ``-M`` file ``mlist``, in order.

    Entries are separated by commas and white space; in the file, ``#`` starts a comment.
    A file that cannot be read as a machine list (missing, not a regular file, too large,
    not UTF-8: :func:`autoserv.inputs.read_machine_file`) is an AutoservUsageError.
    """
    found = []
    for n, spec in enumerate(specs, 1):
        found += [MachineEntry(MLIST_DISPLAY, n, m.start() + 1, m.group(), spec)
                  for m in _ENTRY.finditer(spec)]
    if mlist is not None:
        for n, raw in inputs.read_machine_file(mlist):
            line = raw.split("#", 1)[0]
            found += [MachineEntry(mlist, n, m.start() + 1, m.group(), raw) for m in _ENTRY.finditer(line)]
    return found
