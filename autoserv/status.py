"""status.log lines in the exact Autotest format: rendering and parsing (pure code).

A status.log holds one entry per event.  An entry is one line of TAB-separated fields::

    <TABs>STATUS<TAB>SUBDIR<TAB>OPERATION<TAB>timestamp=..<TAB>localtime=..[<TAB>key=val...]<TAB>message

* the leading TABs are the nesting depth: one per ``START`` still open;
* ``STATUS`` is ``START``, ``INFO``, or ``[END ]GOOD|WARN|FAIL|ERROR|ABORT|TEST_NA|ALERT|NOSTATUS``;
* an empty ``SUBDIR`` or ``OPERATION`` is written ``----``;
* ``timestamp=<epoch seconds>`` and ``localtime=<%b %d %H:%M:%S>`` come first, then any optional
  ``key=value`` fields in the order given;
* the message is always the last field (possibly empty, which leaves a trailing TAB, as Autotest
  does); TABs inside it become 8 spaces; each further line of a multi-line message is written
  on its own line, indented like the entry and prefixed with two spaces;
* the other characters :meth:`str.splitlines` breaks lines at (``\x0b \x0c \x1c-\x1e \x85
  \u2028 \u2029``) are written as that escape text (``\x0c``) in every field, so no reader can
  see an extra line; :func:`parse` breaks lines at ``\n`` only (a ``\r`` before it is dropped).

:func:`render` builds the text of one entry, :class:`StatusLogWriter` keeps the nesting,
:func:`parse` reads a whole log back into :class:`StatusEntry` objects.  :func:`append_bytes`
(and its two halves) is how status.log is appended to, here and on hosts, and how keyval and
the debug files are on the server (through :mod:`autoserv.results_disk`): this module is
shipped to hosts, so it imports nothing of autoserv.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

__all__ = [
    "STATUS_WORDS",
    "FAILURE_WORDS",
    "NONE_VALUE",
    "StatusEntry",
    "StatusLogWriter",
    "append_bytes",
    "open_for_append",
    "write_all",
    "is_valid_status",
    "is_failure",
    "format_localtime",
    "render",
    "parse_line",
    "split_lines",
    "parse",
    "parse_file",
    "iter_failures",
]

#: The final statuses an entry may carry (bare, or after ``END ``).
STATUS_WORDS = ("GOOD", "WARN", "FAIL", "ERROR", "ABORT", "TEST_NA", "ALERT", "NOSTATUS")
#: Statuses that mean something went wrong.
FAILURE_WORDS = frozenset({"FAIL", "ERROR", "ABORT", "ALERT"})
#: How an empty subdir / operation is written.
NONE_VALUE = "----"
#: Prefix (after the indentation) of the continuation lines of a multi-line message.
CONTINUATION = "  "

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_BAD_CHARS = re.compile(r"[\t\n\r]")
#: Line boundaries of str.splitlines() other than \n and \r: escaped wherever they appear.
_OTHER_BREAKS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_FIELD_KEY = re.compile(r"^\w+$")
_FIELD = re.compile(r"^(\w+)=(.*)$", re.S)


def is_valid_status(status_code: str) -> bool:
    """True for ``START``, ``INFO``, a status word, or ``END`` + status word."""
    if status_code in ("START", "INFO") or status_code in STATUS_WORDS:
        return True
    return status_code.startswith("END ") and status_code[4:] in STATUS_WORDS


def is_failure(status_code: str) -> bool:
    """True if the status (bare or ``END``) reports a failure: FAIL, ERROR, ABORT, ALERT."""
    word = status_code[4:] if status_code.startswith("END ") else status_code
    return word in FAILURE_WORDS


def format_localtime(timestamp: float) -> str:
    """``%b %d %H:%M:%S`` in local time, with English month names whatever the locale."""
    t = time.localtime(timestamp)
    return f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def _escape_breaks(text: str) -> str:
    """``text`` with every line boundary but \n/\r written as its escape (``\x0c``)."""
    return _OTHER_BREAKS.sub(lambda m: ascii(m.group())[1:-1], text)


def _check_plain(what: str, value: str) -> str:
    if _BAD_CHARS.search(value):
        raise ValueError(f"status.log {what} may not contain TAB or newline: {value!r}")
    return _escape_breaks(value)


def split_lines(text: str) -> list[str]:
    """The lines of a status.log's text: broken at ``\n`` only, a trailing ``\r`` dropped.

    (:meth:`str.splitlines` also breaks at ``\x0c``, ``\u2028``...: a field holding one
    would read as two lines.)
    """
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def render(
    status_code: str,
    subdir: str | None = None,
    operation: str | None = None,
    message: str = "",
    optional_fields: Mapping[str, object] | None = None,
    indent: int = 0,
    timestamp: float | None = None,
) -> str:
    """Render one entry as text (no trailing newline; several lines if the message has several).

    Raises :class:`ValueError` for an unknown status, or a TAB/newline in the subdir,
    the operation or a field.
    """
    if not is_valid_status(status_code):
        raise ValueError(f"invalid status code: {status_code!r}")
    if indent < 0:
        raise ValueError(f"negative indentation: {indent}")
    subdir = subdir or NONE_VALUE
    operation = operation or NONE_VALUE
    subdir = _check_plain("subdir", subdir)
    operation = _check_plain("operation", operation)
    if timestamp is None:
        timestamp = time.time()
    fields: dict[str, str] = {
        "timestamp": str(int(timestamp)),
        "localtime": format_localtime(timestamp),
    }
    for key, value in (optional_fields or {}).items():
        if not _FIELD_KEY.match(key):
            raise ValueError(f"invalid status.log field name: {key!r}")
        fields[key] = _check_plain(f"field {key}", str(value))
    lines = str(message).replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")
    lines = [_escape_breaks(line.replace("\t", " " * 8)) for line in lines]
    prefix = "\t" * indent
    first = "\t".join(
        [status_code, subdir, operation, *(f"{k}={v}" for k, v in fields.items()), lines[0]]
    )
    rendered = [prefix + first]
    rendered += [prefix + CONTINUATION + line for line in lines[1:]]
    return "\n".join(rendered)


@dataclass
class StatusEntry:
    """One parsed status.log entry."""

    status_code: str
    subdir: str | None
    operation: str | None
    message: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    indent: int = 0
    line_number: int = 0  # 1-based line of the entry's first line in the log

    @property
    def is_start(self) -> bool:
        return self.status_code == "START"

    @property
    def is_end(self) -> bool:
        return self.status_code.startswith("END ")

    @property
    def status(self) -> str:
        """The status word without ``END `` (``GOOD``, ``FAIL``, ``START``, ``INFO``...)."""
        return self.status_code[4:] if self.is_end else self.status_code

    @property
    def timestamp(self) -> int | None:
        value = self.fields.get("timestamp")
        return int(value) if value is not None and value.isdigit() else None

    def render(self) -> str:
        """Render the entry back to text (its timestamp kept)."""
        extra = {k: v for k, v in self.fields.items() if k not in ("timestamp", "localtime")}
        text = render(
            self.status_code,
            self.subdir,
            self.operation,
            self.message,
            extra,
            self.indent,
            timestamp=float(self.timestamp) if self.timestamp is not None else None,
        )
        return text


def _none(value: str) -> str | None:
    return None if value == NONE_VALUE else value


def parse_line(line: str, line_number: int = 0) -> StatusEntry | None:
    """Parse the first line of an entry; None if ``line`` is not an entry line.

    Continuation lines (two spaces after the indentation) and blank lines give None.
    """
    line = line.rstrip("\r\n")
    stripped = line.lstrip("\t")
    indent = len(line) - len(stripped)
    if not stripped or stripped.startswith(CONTINUATION):
        return None
    parts = stripped.split("\t")
    if len(parts) < 3 or not is_valid_status(parts[0]):
        return None
    status_code, subdir, operation = parts[:3]
    rest = parts[3:]
    fields: dict[str, str] = {}
    message = ""
    if rest and all(_FIELD.match(p) for p in rest[:-1]):
        # Our writer (and Autotest's) always ends an entry with the message field,
        # so everything between OPERATION and the last part is a key=value field.
        for part in rest[:-1]:
            key, value = part.split("=", 1)
            fields[key] = value
        message = rest[-1]
    else:
        # A foreign line: Autotest's own parser rule, key=value parts then the message.
        index = 0
        while index < len(rest) and _FIELD.match(rest[index]):
            key, value = rest[index].split("=", 1)
            fields[key] = value
            index += 1
        message = "\t".join(rest[index:])
    return StatusEntry(
        status_code=status_code,
        subdir=_none(subdir),
        operation=_none(operation),
        message=message,
        fields=fields,
        indent=indent,
        line_number=line_number,
    )


def parse(text: str | Iterable[str]) -> list[StatusEntry]:
    """Parse a whole status.log (text or lines) into entries, joining multi-line messages.

    Raises :class:`ValueError` naming the line for a line that is neither an entry nor
    a continuation.
    """
    lines: Iterable[str] = split_lines(text) if isinstance(text, str) else text
    entries: list[StatusEntry] = []
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        entry = parse_line(line, number)
        if entry is not None:
            entries.append(entry)
            continue
        stripped = line.lstrip("\t")
        if stripped.startswith(CONTINUATION) and entries:
            entries[-1].message += "\n" + stripped[len(CONTINUATION) :]
            continue
        raise ValueError(f"status.log line {number} is not a status entry: {line!r}")
    return entries


def parse_file(path: str) -> list[StatusEntry]:
    """Parse the status.log at ``path``."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse(f.read())


def open_for_append(path: str) -> int:
    """A descriptor of the file at ``path`` (created if missing) whose writes append."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (in one ``write`` unless the kernel takes less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def append_bytes(path: str, data: bytes) -> None:
    """Append ``data`` to the file at ``path`` (created if missing) with one ``write`` on a
    descriptor opened with ``O_APPEND`` for it: three system calls, where a Python file
    object makes eight (see :func:`autoserv.results_disk.append`)."""
    fd = open_for_append(path)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


class StatusLogWriter:
    """Writes entries to a status.log file, keeping the nesting of START/END groups.

    ``path`` None keeps the nesting without writing anything (``-N``).  Each entry is
    appended with a single ``write`` on a file opened in append mode (:func:`append_bytes`),
    so that processes sharing one file never interleave inside an entry.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.open_groups: list[str] = []  # operation names of the STARTs still open
        if path is not None:
            append_bytes(path, b"")  # the log exists from the start, even while empty

    @property
    def indent(self) -> int:
        return len(self.open_groups)

    def record(self, status_code: str, subdir: str | None = None, operation: str | None = None,
               message: str = "", optional_fields: Mapping[str, object] | None = None,
               timestamp: float | None = None) -> str:
        """Render and append an entry; return the rendered text."""
        if status_code.startswith("END ") and not self.open_groups:
            raise ValueError(f"{status_code} with no open START group")
        indent = self.indent - 1 if status_code.startswith("END ") else self.indent
        text = render(
            status_code, subdir, operation, message, optional_fields, indent, timestamp
        )
        if self.path is not None:
            append_bytes(self.path, (text + "\n").encode("utf-8"))
        if status_code == "START":
            self.open_groups.append(operation or NONE_VALUE)
        elif status_code.startswith("END "):
            self.open_groups.pop()
        return text


def iter_failures(entries: Iterable[StatusEntry]) -> Iterator[StatusEntry]:
    """The entries whose status reports a failure."""
    return (e for e in entries if is_failure(e.status_code))
