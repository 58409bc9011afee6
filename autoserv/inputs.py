"""Checks of user input that must fail as one clear line (a usage error), never deeper down.

Pure helpers, each raising :class:`~autoserv.errors.AutoservUsageError` naming what and
where: text flags (no control characters), the ``-M`` file (a regular UTF-8 file of sane
size), the results directory (creatable and writable), host names (DNS label lengths),
remote commands (no NUL byte), and the process title that hides passwords given on the
command line from ``ps`` (:func:`masked_argv`, :func:`hide_secrets_from_ps`).
"""

from __future__ import annotations

import math
import os
import re
import stat
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from autoserv.errors import AutoservUsageError

__all__ = [
    "MAX_MACHINE_FILE",
    "MAX_SECONDS",
    "printable",
    "check_text",
    "check_seconds",
    "read_machine_file",
    "check_results_dir",
    "check_host_name",
    "check_command",
    "masked_argv",
    "hide_secrets_from_ps",
    "config_port",
    "config_seconds",
    "check_jump_chain",
]

#: The largest ``-M`` file read (bytes): a machine list, not a disk image.
MAX_MACHINE_FILE = 16 * 1024 * 1024
#: The largest timeout accepted (seconds): a year; beyond it sockets overflow.
MAX_SECONDS = 365 * 86400.0


def _bad_char(text: str) -> str | None:
    """The first control or line-separator character of ``text``, as an escape (``\\n``)."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return ascii(char)[1:-1]
    return None


def printable(text: str) -> str:
    """``text`` with each control or line-separator character written as its escape (``\\n``):
    one line, safe in messages, console prefixes and status.log fields."""
    if _bad_char(text) is None:
        return text
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
                   for c in text)


def check_text(what: str, value: str) -> str:
    """``value`` unchanged, or a usage error when it holds a control character (newline, TAB...)."""
    bad = _bad_char(value)
    if bad is not None:
        raise AutoservUsageError(f"{what} may not contain control characters (found {bad})")
    return value


def check_seconds(text: str) -> float:
    """A positive, finite number of seconds up to :data:`MAX_SECONDS`; ValueError otherwise."""
    value = float(text)
    if math.isnan(value) or value <= 0:
        raise ValueError(f"must be positive: {text!r}")
    if not math.isfinite(value) or value > MAX_SECONDS:
        raise ValueError(f"at most {MAX_SECONDS:.0f} s: {text!r}")
    return value


def read_machine_file(path: str, flag: str = "-M") -> list[tuple[int, str]]:
    """The ``(line number, line)`` pairs of a machine list file.

    It must be a regular file (not a FIFO or a device, which would hang or never end),
    at most :data:`MAX_MACHINE_FILE` bytes, and UTF-8 text.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise AutoservUsageError(f"{flag} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a directory
        os.close(fd)
        raise AutoservUsageError(f"{flag} {path}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_MACHINE_FILE + 1)
    if len(data) > MAX_MACHINE_FILE:
        raise AutoservUsageError(f"{flag} {path}: larger than {MAX_MACHINE_FILE // 2**20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise AutoservUsageError(f"{flag} {path}: line {line} is not UTF-8 text") from None
    return list(enumerate(text.split("\n"), 1))


def check_results_dir(path: str, flag: str = "-r") -> None:
    """Make the results directory ``path`` (and its parents) and check it can be written.

    An existing non-directory is a usage error like every other unusable ``-r``.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise AutoservUsageError(f"{flag} {path}: exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        where = exc.filename if isinstance(exc.filename, str) else path
        if os.path.dirname(os.path.abspath(where)) == os.path.abspath(path):  # the probe file
            where = path
        raise AutoservUsageError(
            f"{flag} {path}: cannot write the results directory ({where}: {exc.strerror})"
        ) from None


_DNS_LABEL = 63
_DNS_NAME = 253


def check_host_name(host: str) -> str | None:
    """Why ``host`` can be no DNS name (a label over 63 or a name over 253 characters), else None."""
    if ":" in host or re.fullmatch(r"[\d.]+", host):
        return None  # an IPv6 or IPv4 address
    name = host.rstrip(".")
    if len(name) > _DNS_NAME:
        return f"longer than {_DNS_NAME} characters"
    for label in name.split("."):
        if len(label) > _DNS_LABEL:
            return f"a part longer than {_DNS_LABEL} characters ({label[:20]}...)"
        if not label and name:
            return "an empty part ('..')"
    return None


def check_command(hostname: str, command: str, args: Iterable[object] = ()) -> None:
    """A usage error when a remote command (or one of its ``args``) holds a NUL byte.

    No shell command can hold one; sent, it breaks the shared SSH session.
    """
    for index, part in enumerate([command, *map(str, args)]):
        if "\0" in part:
            what = "the command" if index == 0 else f"argument {index} of the command"
            raise AutoservUsageError(
                f"{what} for {hostname} contains a NUL byte (at {part.index(chr(0))}): "
                "a shell command cannot hold one"
            )


# -- passwords out of ps ---------------------------------------------------------------------

#: Long flags whose value is a secret (any unambiguous prefix works with argparse).
_SECRET_FLAGS = ("--ssh-pass",)
_MIN_PREFIX = {"--ssh-pass": len("--ssh-pa")}
#: ``user:password@`` in any argument: everything from the user name to the last ``@``.
_CREDENTIALS = re.compile(r"[^\s,]*:.*@")


def _secret_flag(arg: str) -> str | None:
    name = arg.split("=", 1)[0]
    for flag in _SECRET_FLAGS:
        if len(name) >= _MIN_PREFIX[flag] and flag.startswith(name):
            return name
    return None


def masked_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with every password replaced by ``***``: the value of ``--ssh-pass`` (and its
    prefixes), and ``user:password@`` in any argument (a ``-m`` list, ``-mLIST``...)."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        flag = _secret_flag(arg) if arg.startswith("--") else None
        if flag is not None:
            if "=" in arg:
                out.append(f"{flag}=***")
            else:
                out.append(arg)
                hide_next = True
            continue
        if "@" not in arg:
            out.append(arg)
            continue
        prefix, value = "", arg  # keep the flag of --machines=LIST, -mLIST
        if arg.startswith("--") and "=" in arg:
            prefix, value = arg.split("=", 1)
            prefix += "="
        elif arg.startswith("-") and not arg.startswith("--") and "m" in arg:
            cut = arg.index("m") + 1
            prefix, value = arg[:cut], arg[cut:]
        out.append(prefix + _CREDENTIALS.sub("***@", value))
    return out


def hide_secrets_from_ps(argv: Sequence[str]) -> bool:
    """Rewrite this process's title (what ``ps`` and ``/proc/PID/cmdline`` show) to
    :func:`masked_argv` of ``argv``, when it holds a secret; forked workers inherit it.

    Returns True when the title was rewritten.  The password is visible to ``ps`` from the
    exec until this runs (a fraction of a second): the ``AUTOSERV_SSH_PASS`` environment
    variable avoids even that.
    """
    masked = masked_argv(argv)
    if masked == list(argv):
        return False
    import setproctitle

    setproctitle.setproctitle(" ".join(masked))
    return True


# -- ssh config values ---------------------------------------------------------------------


def config_port(value: str, config: str | None, host: str) -> int:
    """The ``Port`` of ``host`` in the ssh config file ``config``: a usage error naming both."""
    if not value.strip().isdigit() or not 0 < int(value) < 65536:
        raise AutoservUsageError(f"ssh config {config}: host {host}: Port {value!r} is not a port number")
    return int(value)


def config_seconds(value: str, option: str, config: str | None, host: str) -> float:
    """A time option (``ConnectTimeout``) of ``host`` in ``config``: a usage error naming both."""
    try:
        return check_seconds(value)
    except ValueError:
        raise AutoservUsageError(
            f"ssh config {config}: host {host}: {option} {value!r} is not a number of seconds"
        ) from None


#: The longest ProxyJump chain followed (OpenSSH has no limit, but a loop never ends).
MAX_JUMPS = 16


def check_jump_chain(host: str, jump: str | None, lookup: Callable[[str], Mapping[str, Any]],
                     config: str | None) -> None:
    """Follow ``host``'s ProxyJump chain through ``lookup`` (the ssh config's entries): a loop
    (``a -> b -> a``) or a chain longer than :data:`MAX_JUMPS` is a usage error."""
    chain = [host]
    while jump and jump.lower() != "none":
        first = jump.split(",")[0].strip()
        name = first.rsplit("@", 1)[-1]
        if name.startswith("["):
            name = name[1:].split("]", 1)[0]
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        if name in chain or len(chain) > MAX_JUMPS:
            what = "loop" if name in chain else f"chain longer than {MAX_JUMPS} hops"
            raise AutoservUsageError(
                f"ssh config {config}: ProxyJump {what}: {' -> '.join([*chain, name])}")
        chain.append(name)
        jump = lookup(name).get("proxyjump")
