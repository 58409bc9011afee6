"""Chores on *this* machine: run a local tool, ``/proc`` liveness, a free port, the SSH banner probe.

Shared by the lab (:mod:`autoserv.lab`), ``bench/`` and ``tests/``, and free
for the runner core to use: it imports nothing of autoserv but the error tree.

* :func:`find_tool` / :func:`run_tool`: a local program (no shell), with one
  clear error naming the tool (and the Debian package that provides it);
* :func:`proc_stat`, :func:`start_time`, :func:`pid_alive`,
  :func:`descendants`: process liveness read from ``/proc`` at no cost (no
  fork).  A zombie is *not* alive (``kill -0`` succeeds on one, and a
  container's init may never reap it); matching the start time as well
  guards against a reused pid;
* :data:`ALIVE_SH`, :data:`GROUP_ALIVE_SH`: the same liveness test as POSIX
  shell functions (one pid; any process of a group), for a remote host's ``/proc``;
* :func:`free_port`: a free TCP port on loopback;
* :func:`ssh_banner`: whether a port accepts TCP and sends ``SSH-``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterable, Sequence
from typing import Any

from autoserv.errors import AutoservError

__all__ = [
    "ALIVE_SH",
    "GROUP_ALIVE_SH",
    "ENV_PIDS_SH",
    "descendants",
    "find_tool",
    "free_port",
    "pid_alive",
    "proc_stat",
    "run_tool",
    "ssh_banner",
    "start_time",
]

_TOOL_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


def find_tool(
    name: str,
    package: str,
    candidates: Iterable[str] = (),
    error: type[AutoservError] = AutoservError,
    context: str = "",
) -> str:
    """Absolute path of the local program ``name``.

    Looks at ``candidates`` first (default: ``name`` in the sbin and bin
    directories, which a non-root ``$PATH`` may lack), then on ``$PATH``.
    Missing: ``error("<context>NAME not found (looked in ...): install the
    Debian package PACKAGE (apt-get install PACKAGE)")``.
    """
    paths = tuple(candidates) or tuple(os.path.join(d, name) for d in _TOOL_DIRS)
    for path in paths:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return found
    raise error(
        f"{context}{name} not found (looked in {', '.join(paths)} and $PATH): "
        f"install the Debian package {package} (apt-get install {package})"
    )


def run_tool(
    argv: Sequence[str],
    *,
    input: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    error: type[AutoservError] = AutoservError,
    context: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell, stdin closed unless ``input`` is given), capturing text output.

    A program that cannot be started or exits non-zero raises ``error`` with
    one line: ``<context><command> failed with exit status N: <last lines of
    stderr (else stdout)>``, or ``<context>cannot run <tool>: <reason>``.
    """
    kw: dict[str, Any] = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    try:
        proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, check=False, **kw)
    except OSError as exc:
        raise error(f"{context}cannot run {argv[0]}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise error(f"{context}{shlex.join(argv)} failed with exit status {proc.returncode}: {tail}")
    return proc


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); [] if gone."""
    if pid <= 0:
        return []
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def start_time(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot (0 if it does not exist)."""
    fields = proc_stat(pid)
    return int(fields[19]) if len(fields) > 19 else 0


def pid_alive(pid: int, start: int = 0) -> bool:
    """``pid`` runs and is not a zombie; with ``start`` (from :func:`start_time`) it must also
    be the process that started then, not a later one that got the same pid."""
    fields = proc_stat(pid)
    if len(fields) <= 19 or fields[0] == "Z":
        return False
    return not start or int(fields[19]) == start


def descendants(pid: int) -> list[int]:
    """Every descendant pid of ``pid`` (children before their children), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = proc_stat(int(entry))
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


ALIVE_SH = r"""alive() {
    case "$1" in ''|*[!0-9]*) return 1 ;; esac
    { read -r st < "/proc/$1/stat"; } 2>/dev/null || return 1
    st=${st##*) }; st=${st%% *}
    [ "$st" != Z ] || return 1
    [ -z "$2" ] || tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}"""
"""POSIX shell function ``alive PID [TEXT]``: true when PID runs, is not a zombie and (with
TEXT) its command line contains TEXT (which guards against a reused pid on a remote host)."""

GROUP_ALIVE_SH = r"""group_alive() {
    case "$1" in ''|*[!0-9]*) return 1 ;; esac
    for s in /proc/[0-9]*/stat; do
        { read -r l < "$s"; } 2>/dev/null || continue
        l=${l##*) }; set -- "$1" $l
        [ "$2" != Z ] && [ "$4" = "$1" ] && return 0
    done
    return 1
}"""
"""POSIX shell function ``group_alive PGID``: true while a process of group PGID runs (zombies
do not count), e.g. to wait for a killed remote command and its children to be gone."""


ENV_PIDS_SH = r"""env_pids() {
    _want=$1
    if printf 'a\0' | grep -qz a 2>/dev/null; then
        _files=$(grep -lszxF -- "$_want" /proc/[0-9]*/environ)
    else
        _files=
        for _e in /proc/[0-9]*/environ; do
            tr '\0' '\n' < "$_e" 2>/dev/null | grep -qxF -- "$_want" && _files="$_files $_e"
        done
    fi
    for _e in $_files; do
        _p=${_e#/proc/}; _p=${_p%/environ}
        [ "$_p" = "$$" ] && continue
        { read -r l < "/proc/$_p/stat"; } 2>/dev/null || continue
        l=${l##*) }; set -- $l
        [ "$1" = Z ] && continue
        echo "$_p $3 $4"
    done
}"""
"""POSIX shell function ``env_pids VAR=value``: ``pid pgid sid`` of every live process (not a
zombie, not the calling shell) whose environment holds exactly that line, one per line; how
cleanup finds what a job left on a host (its mark, or the SSH connection it ran under)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (bound to port 0, then released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ssh_banner(host: str, port: int, timeout: float, connect_timeout: float | None = None) -> bool:
    """True when ``host:port`` accepts TCP (within ``connect_timeout``, default ``timeout``)
    and then sends ``SSH-`` within ``timeout`` s.  Never raises for network errors."""
    try:
        with socket.create_connection((host, port), timeout=connect_timeout or timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False
