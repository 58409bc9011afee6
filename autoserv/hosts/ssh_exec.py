"""The SSH transport of the run core: one command in an exec channel.

:func:`wrap_command` makes the remote shell report its pid on stderr first
(:class:`StderrFilter` removes the line from the output); :func:`send_command`
sends the exec request within the connect deadline; :class:`SSHExecution`
reads both streams, feeds stdin, and on a timeout, a Ctrl-C or any exception
kills the remote process group — the command and all its children — from a
second channel (:func:`kill_command`), instead of only abandoning the local
side.  :class:`~autoserv.hosts.ssh_host.SSHHost` wires it into
:mod:`autoserv.run_core`.
"""

from __future__ import annotations

import contextlib
import select
import shlex
import threading
from typing import IO, TYPE_CHECKING, Any

import paramiko

from autoserv import jobmark
from autoserv.deadline import Deadline
from autoserv.errors import AutoservSSHTimeout
from autoserv.hosts import paramiko_ext
from autoserv.hosts.paramiko_ext import send_eof
from autoserv.run_core import Execution
from autoserv.streams import StreamCollector

if TYPE_CHECKING:
    from autoserv.hosts.ssh_host import SSHHost

__all__ = ["wrap_command", "kill_command", "send_command", "StderrFilter", "SSHExecution"]

_PID_MARK = b"AUTOSERV_PID="
_KILL_GRACE = 2.0


def wrap_command(command: str, hostname: str | None = None) -> str:
    """The remote command line: report the shell's pid on stderr, then run ``command``.

    ``eval`` keeps the command in the login shell (as plain ``ssh host cmd``
    does) at no extra process; sshd makes that shell a session leader, so
    its pid names the process group of everything the command starts.  In a
    job, the command carries the job's mark for ``hostname`` (:mod:`autoserv.jobmark`).
    """
    mark = jobmark.export_command(hostname) if hostname is not None else ""
    return f"{mark}printf 'AUTOSERV_PID=%s\\n' $$ >&2; eval {shlex.quote(command)}"


def _exit_status(chan: paramiko.Channel) -> int | None:
    """The command's exit status, ``-signum`` if a signal killed it, None if unknown.

    paramiko leaves ``-1`` when the server sent neither (the connection
    died); an ``exit-signal`` is recorded by :mod:`autoserv.hosts.paramiko_ext`.
    """
    if not chan.exit_status_ready():
        return None
    if chan.exit_status == -1 and paramiko_ext.exit_signal(chan) is None:
        return None
    return int(chan.exit_status)


def kill_command(pid: int, grace: float = _KILL_GRACE) -> str:
    """Shell that ends process group ``pid``: TERM, then KILL whatever still runs after ``grace`` s.

    Liveness is read from ``/proc`` ignoring zombies (a container's init may
    never reap them, and ``kill -0`` succeeds on a zombie).
    """
    steps = max(1, int(grace / 0.1))
    p = int(pid)
    return (
        f"alive() {{ for s in /proc/[0-9]*/stat; do {{ read -r l < \"$s\"; }} 2>/dev/null || continue; "
        f"l=${{l##*) }}; set -- $l; [ \"$1\" != Z ] && [ \"$3\" = {p} ] && return 0; done; "
        f"return 1; }}; "
        f"kill -TERM -{p} 2>/dev/null || kill -TERM {p} 2>/dev/null; i=0; "
        f"while alive; do i=$((i+1)); [ $i -gt {steps} ] && break; sleep 0.1; done; "
        f"kill -KILL -{p} 2>/dev/null; kill -KILL {p} 2>/dev/null; true"
    )




def send_command(chan: paramiko.Channel, command: str, connect: Deadline, where: str) -> None:
    """Send the exec request, waiting for the server's reply only as long as ``connect`` lasts."""
    if not paramiko_ext.send_exec(chan, command, connect.remaining()):
        chan.close()
        raise AutoservSSHTimeout(
            f"{where} did not answer a command request within {connect.seconds:g} s"
        )


class StderrFilter:
    """Removes the pid line the wrapper prints first on stderr."""

    def __init__(self, sink: StreamCollector) -> None:
        self.sink = sink
        self.pid: int | None = None
        self._head = b""
        self._done = False

    def feed(self, data: bytes) -> None:
        if self._done:
            self.sink.feed(data)
            return
        self._head += data
        if b"\n" not in self._head:
            if len(self._head) > 64 or not _PID_MARK.startswith(self._head[: len(_PID_MARK)]):
                self._flush()
            return
        line, rest = self._head.split(b"\n", 1)
        if line.startswith(_PID_MARK) and line[len(_PID_MARK):].isdigit():
            self.pid = int(line[len(_PID_MARK):])
            self._head = rest
        self._flush()

    def await_pid(self, chan: paramiko.Channel, timeout: float) -> int | None:
        """Read stderr (without teeing it) until the pid line arrives or ``timeout`` passes."""
        deadline = Deadline(timeout)
        while self.pid is None and not self._done and not deadline.expired():
            if chan.recv_stderr_ready():
                self._head += chan.recv_stderr(4096)
                if b"\n" in self._head:
                    line = self._head.split(b"\n", 1)[0]
                    if line.startswith(_PID_MARK) and line[len(_PID_MARK):].isdigit():
                        self.pid = int(line[len(_PID_MARK):])
                    self._done = True
            elif chan.closed:
                break
            else:
                select.select([chan], [], [], deadline.remaining(0.05))
        return self.pid

    def _flush(self) -> None:
        self._done = True
        if self._head:
            self.sink.feed(self._head)
        self._head = b""


class SSHExecution(Execution):
    """A command in an exec channel: streams read from the channel, killed from a second one."""

    def __init__(
        self, host: SSHHost, chan: paramiko.Channel, out: StreamCollector, err: StderrFilter
    ) -> None:
        self.host = host
        self.chan = chan
        self.out = out
        self.err = err
        self._feeder: threading.Thread | None = None
        self._finished = False

    def feed_stdin(self, stdin: str | bytes | IO[Any] | None) -> None:
        """Send ``stdin`` (from a thread for file objects), then EOF."""
        chan = self.chan
        if stdin is None:
            send_eof(chan)
            return
        if isinstance(stdin, str):
            stdin = stdin.encode()

        def feed() -> None:
            try:
                if isinstance(stdin, bytes):
                    chan.sendall(stdin)
                else:
                    for chunk in iter(lambda: stdin.read(65536), b"" if "b" in getattr(
                            stdin, "mode", "b") else ""):
                        chan.sendall(chunk.encode() if isinstance(chunk, str) else chunk)
                send_eof(chan)
            except (OSError, EOFError, paramiko.SSHException):
                pass

        self._feeder = threading.Thread(target=feed, daemon=True, name="autoserv-stdin")
        self._feeder.start()

    def _drain(self) -> None:
        chan = self.chan
        while chan.recv_ready():
            self.out.feed(chan.recv(65536))
        while chan.recv_stderr_ready():
            self.err.feed(chan.recv_stderr(65536))

    def wait(self, deadline: Deadline) -> bool:
        if self.lost:
            return True
        chan = self.chan
        transport = chan.get_transport()
        try:
            while True:
                self._drain()
                if chan.eof_received and chan.exit_status_ready():
                    self._drain()  # what raced in with EOF
                    return True
                if chan.closed or transport is None or not transport.is_active():
                    self._drain()
                    # a channel closed by a dying connection has no exit status
                    self.lost = _exit_status(chan) is None
                    return True
                if deadline.expired():
                    return False
                wait = deadline.remaining(0.5)
                if chan.eof_received:
                    chan.status_event.wait(wait)
                else:
                    select.select([chan], [], [], wait)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.host.log.debug("connection error while running a command: %s", exc)
            self.lost = True
            return True

    def kill(self, budget: Deadline) -> None:
        """End the remote command's process group from a second channel within ``budget``."""
        host, chan = self.host, self.chan
        pid = self.err.await_pid(chan, budget.remaining(2.0))
        try:
            if pid is not None:
                t = host.transport(Deadline(budget.remaining()))
                killer = t.open_session(timeout=budget.remaining())
                killer.exec_command(kill_command(pid, grace=min(_KILL_GRACE, budget.remaining() / 2)))
                send_eof(killer)
                if not killer.status_event.wait(budget.remaining()):
                    host.log.warning("could not confirm the remote command %d ended", pid)
                killer.close()
                host.log.debug("killed remote process group %d on %s", pid, host.hostname)
            chan.status_event.wait(budget.remaining(1.0))
        except Exception as exc:
            host.log.warning("could not kill remote command (pid %s) on %s: %s",
                             pid, host.hostname, exc)
        finally:
            with contextlib.suppress(Exception):
                chan.close()

    def finish(self, budget: Deadline) -> None:
        if self._finished:
            return
        self._finished = True
        if self._feeder is not None:
            self._feeder.join(budget.remaining(1.0))
        self.exit_status = _exit_status(self.chan)
        self.exit_signal = paramiko_ext.exit_signal_number(paramiko_ext.exit_signal(self.chan))
        with contextlib.suppress(Exception):
            self.chan.close()
