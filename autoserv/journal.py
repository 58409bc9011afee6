"""The job journal: what a job started on its hosts, so that ``autoserv cleanup`` can end it.

A job that is killed outright (SIGKILL, the OOM killer, a power cut of the controller) gets
no chance to kill its remote commands or remove its remote temp dirs.  So while it runs,
the code that starts such things records them here first, in ``<results>/journal``; after
the fact, ``autoserv cleanup RESULTS`` (:mod:`autoserv.orphans`) reads it and ends them.

Format: UTF-8 text, one JSON object per line, appended with a single ``write`` (so the
job's forked workers can share the file) and fsync'd before the thing it names is used.
Every line has ``v`` (format version, 1), ``t`` (Unix time), ``pid`` (the writing process)
and ``kind``:

``job``
    the first line: ``job_pid`` and ``job_start`` (its start time in clock ticks after
    boot, from ``/proc/<pid>/stat``: tells a live job from a reused pid).
``command``
    a remote command was started: ``host`` (below), ``connection`` (the SSH connection as
    the server's ``SSH_CONNECTION`` names it: ``client-ip client-port server-ip
    server-port``, or null when tunnelled), ``channel`` and ``command`` (its first 120
    characters, secrets masked).
``tmpdir``
    a remote temp dir was made: ``host`` and ``path``.
``guest``
    a qemu guest was started: ``host`` (its KVM host), ``state_dir`` (autoserv's directory
    there), ``ip``, ``mac``, ``tap`` (null with user-mode networking), ``qemu_pid``,
    ``owner`` (the lease's owner tag, :func:`autoserv.virt.leases.owner_tag`: unique to the
    process that started it) and ``directory`` (the guest's files).
``ended``
    the job itself ended item ``item`` (a ``guest`` deleted).
``end``
    the job ended and closed its hosts itself: its commands are over.
``cleaned``
    ``autoserv cleanup`` dealt with item ``item`` (the ``id`` of a ``command``,
    ``tmpdir`` or ``guest`` line; for commands, the connection key ``host alias|connection``).

``host`` holds how to reach the host again: ``alias`` (the name as the job gave it),
``hostname``, ``port``, ``user``, ``key_files``, ``ssh_config``, ``known_hosts``,
``host_key_policy``, ``connect_timeout`` and ``password`` (true when a password was used —
never the password itself: cleanup takes it from ``--ssh-pass`` or the environment again).
Each ``command``/``tmpdir``/``guest`` line has an ``id`` unique in the journal.

Hooks: :func:`record` is called by the hosts layer where it starts a command and where it
makes a temp dir, and by :mod:`autoserv.kvm` where it starts a guest (:func:`ended` where it
deletes it); they do nothing when no journal is open (a library user, ``-N``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

__all__ = ["JOURNAL_NAME", "VERSION", "open_journal", "close_journal", "record", "ended", "read",
           "append", "host_fields", "process_start", "active"]

JOURNAL_NAME = "journal"
VERSION = 1

_fd: int | None = None
_path: str | None = None
_lock = threading.Lock()


class _GroupCommit:
    """Lines written in order, made durable by as few ``fsync`` calls as the writers allow.

    Why: each worker thread of a fan-out journals its command before starting it; with one
    ``fsync`` per line under the write lock, 1000 machines queued behind 1000 ``fsync``
    calls one after another.  Here a line is written under the lock, then its writer waits
    until an ``fsync`` begun after the write has returned: one ``fsync`` covers every line
    written before it began, so writers that arrive while one runs share the next.
    """

    def __init__(self) -> None:
        self._sync_lock = threading.Lock()
        self.written = 0  # lines written (under the module's _lock)
        self._synced = 0  # lines known durable

    def sync(self, fd: int, line: int) -> None:
        """Return once line number ``line`` (as counted by ``written``) is durable."""
        with self._sync_lock:
            if self._synced >= line:
                return  # an fsync that began after our write covered it
            with _lock:
                covered = self.written
            os.fsync(fd)
            self._synced = covered


_commit = _GroupCommit()


def _reset_in_child() -> None:
    """A forked worker starts with free locks (another thread of the parent may hold one)."""
    global _lock, _commit
    _lock = threading.Lock()
    _commit = _GroupCommit()


os.register_at_fork(after_in_child=_reset_in_child)


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks after boot (None: no such process)."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def active() -> bool:
    """A journal is open in this process."""
    return _fd is not None


def open_journal(resultdir: str) -> str:
    """Start the journal of the job running in this process (its first line: ``job``)."""
    global _fd, _path
    close_journal()
    path = os.path.join(resultdir, JOURNAL_NAME)
    _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    _path = path
    _write({"kind": "job", "job_pid": os.getpid(), "job_start": process_start(os.getpid())})
    return path


def close_journal(ended: bool = False) -> None:
    """Stop journaling; ``ended``: the job closed its hosts itself (an ``end`` line)."""
    global _fd, _path
    if _fd is None:
        return
    if ended:
        _write({"kind": "end"})
    fd, _fd, _path = _fd, None, None
    with contextlib.suppress(OSError):
        os.close(fd)


def _line(entry: dict[str, Any]) -> bytes:
    data = {"v": VERSION, "t": round(time.time(), 3), "pid": os.getpid(), **entry}
    return (json.dumps(data, separators=(",", ":"), default=str) + "\n").encode("utf-8")


def _write(entry: dict[str, Any]) -> None:
    fd = _fd
    if fd is None:
        return
    data = _line(entry)
    try:
        with _lock:
            os.write(fd, data)
            _commit.written += 1
            line = _commit.written
        _commit.sync(fd, line)
    except OSError:
        pass  # a full results disk is reported by autoserv.results_disk, not here


def append(path: str, entry: dict[str, Any]) -> None:
    """Append ``entry`` to the journal file ``path`` (as ``autoserv cleanup`` does)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        os.write(fd, _line(entry))
        os.fsync(fd)
    finally:
        os.close(fd)


def host_fields(host: Any) -> dict[str, Any]:
    """How to reach ``host`` (an SSHHost) again, without secrets."""
    params = getattr(host, "params", None)
    if params is None:
        return {"alias": getattr(host, "hostname", str(host))}
    via = getattr(params, "via", None)
    return {
        "alias": params.alias,
        "hostname": params.hostname,
        "port": params.port,
        "user": params.user,
        "key_files": list(params.key_files),
        "ssh_config": params.ssh_config,
        "known_hosts": params.known_hosts,
        "host_key_policy": params.host_key_policy,
        "connect_timeout": params.connect_timeout,
        "password": params.password is not None,
        "via": getattr(via, "hostname", None) if via is not None else None,
    }


def _connection(channel: Any) -> str | None:
    """``client-ip client-port server-ip server-port`` of the channel's TCP connection."""
    transport = channel.get_transport() if channel is not None else None
    sock = getattr(transport, "sock", None)
    if not isinstance(sock, socket.socket):
        return None  # tunnelled (a guest through its KVM host, ProxyJump): not a TCP socket
    try:
        local, peer = sock.getsockname(), sock.getpeername()
    except OSError:
        return None
    return f"{local[0]} {local[1]} {peer[0]} {peer[1]}"


def record(kind: str, host: Any, **fields: Any) -> str | None:
    """Journal that ``kind`` (``command``, ``tmpdir``, ``guest``) was started on ``host``;
    returns the entry's ``id`` (None when nothing was journaled).

    The hosts layer calls this where it starts a remote command (``channel=``,
    ``command=``) and where it makes a remote temp dir (``path=``); the KVM layer where it
    starts a guest.  Nothing happens when no journal is open; it never raises.
    """
    if _fd is None:
        return None
    try:
        entry: dict[str, Any] = {"kind": kind, "id": uuid.uuid4().hex[:12],
                                 "host": host_fields(host)}
        channel = fields.pop("channel", None)
        if kind == "command":
            from autoserv import logging_setup

            entry["connection"] = _connection(channel)
            entry["channel"] = channel.get_id() if channel is not None else None
            entry["command"] = logging_setup.redact(str(fields.pop("command", "")))[:120]
        entry.update(fields)
        _write(entry)
        return str(entry["id"])
    except Exception:  # a journal must never break the job
        return None


def ended(item: str | None) -> None:
    """Journal that the job itself ended ``item`` (an id :func:`record` returned); never raises."""
    if item is not None:
        _write({"kind": "ended", "item": item})


def read(path: str) -> Iterator[dict[str, Any]]:
    """The entries of journal file ``path``; a torn last line (a crash mid-write) is skipped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("v") == VERSION:
                yield entry
