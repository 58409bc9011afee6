"""The SSH transport of the run core: one command in an exec channel.

:func:`wrap_command` makes the remote shell print a per-command marker and
its pid on both streams before the command runs (:class:`MarkerFilter`
drops it and whatever the host's rc files printed before it, wherever it
falls in the chunks); :func:`send_command`
sends the exec request within the connect deadline; :class:`SSHExecution`
reads both streams, feeds stdin, and on a timeout, a Ctrl-C or any exception
kills the remote process group — the command and all its children — from a
second channel (:func:`kill_command`), instead of only abandoning the local
side.  An execution may also watch a :class:`HostWatch` (a guest's virtual
machine): when it reports the host gone, the wait ends at once (``gone``).
:class:`~autoserv.hosts.ssh_host.SSHHost` wires it into :mod:`autoserv.run_core`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import secrets
import select
import shlex
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Protocol

import paramiko

from autoserv import jobmark
from autoserv.deadline import Deadline
from autoserv.errors import AutoservRunError, AutoservSSHTimeout
from autoserv.hosts import paramiko_ext, paramiko_pump
from autoserv.hosts.keepalive import lost_reason
from autoserv.hosts.paramiko_ext import send_eof
from autoserv.localsys import GROUP_ALIVE_SH
from autoserv.run_core import Execution
from autoserv.streams import StreamCollector

if TYPE_CHECKING:
    from autoserv.hosts.ssh_host import SSHHost

__all__ = ["new_marker", "wrap_command", "wrap_exec", "skip_to_marker", "kill_command", "send_command",
           "MarkerFilter", "SSHExecution", "HostWatch"]

_MARK_PREFIX = "AUTOSERV_"
_KILL_GRACE = 2.0
#: What a login shell may print before the marker is kept in memory up to this size; past
#: it the marker is given up on (the output goes through whole, the pid stays unknown).
_HEAD_MAX = 1 << 20
#: Bytes of one stream read between two deadline checks.
_DRAIN_MAX = 1 << 20
#: Seconds a kill after a lost connection may take (reconnecting included).
_ORPHAN_KILL = 5.0


_RUN_VAR = "AUTOSERV_RUN"


def _token(marker: bytes) -> str:
    return marker.decode()[len(_MARK_PREFIX):].split("_", 1)[0]


def new_marker() -> bytes:
    """A marker no rc file can print by chance: unique per command."""
    return f"{_MARK_PREFIX}{secrets.token_hex(8)}_PID=".encode()


def wrap_command(command: str, marker: bytes, hostname: str | None = None, prelude: str = "") -> str:
    """The remote command line: print ``marker`` and the shell's pid on stdout and on stderr,
    then run ``command``.

    Whatever the host's rc files printed comes before the marker on each
    stream, and is dropped by a :class:`MarkerFilter`, which also learns the
    pid there.  The command is the last line of the shell's ``-c`` string, as
    plain ``ssh host cmd`` gives it: a syntax error in it is reported (exit 2)
    after the marker, and bash (5.1+) execs its last simple command in place of
    the shell, as it does for ``ssh host cmd``, instead of forking for it
    (``eval`` made bash fork: 1.87 -> 2.28 ms of the host's CPU per command).
    sshd makes that shell a session leader, so its pid names the process group of
    everything the command starts, exec'd or not.  ``AUTOSERV_RUN`` (the marker's token)
    in the command's environment lets a kill after a lost connection tell the
    command's processes from later ones that got its pid.  In a job, the command also
    carries the job's mark for ``hostname`` (:mod:`autoserv.jobmark`).  A ``prelude`` runs
    first, its stdout before the marker (so in the filter's ``noise``, never in the result),
    its stdin and stderr closed to it.
    """
    m = marker.decode()
    mark = jobmark.export_command(hostname) if hostname is not None else ""
    pre = f"{{ {prelude}\n}} </dev/null 2>/dev/null; " if prelude else ""
    return (f"{mark}{pre}{_RUN_VAR}={_token(marker)}; export {_RUN_VAR}; "
            f"printf '{m}%s\\n' $$; printf '{m}%s\\n' $$ >&2\n{command}")


def wrap_exec(command: str, marker: bytes) -> str:
    """``command`` exec'd after ``marker`` on stdout (for transfers whose stdout is a protocol)."""
    return f"printf '%s\\n' {shlex.quote(marker.decode())}; exec {command}"


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


def kill_command(pid: int, grace: float = _KILL_GRACE, marker: bytes | None = None) -> str:
    """Shell that ends process group ``pid``: TERM, then KILL whatever still runs after ``grace`` s.

    Liveness is read from ``/proc`` ignoring zombies (a container's init may
    never reap them, and ``kill -0`` succeeds on a zombie), with
    :data:`autoserv.localsys.GROUP_ALIVE_SH`.  With ``marker`` (after a lost
    connection, when the pid may have been reused since) the group is killed
    only if one of its processes carries the command's ``AUTOSERV_RUN``
    environment variable (see :func:`wrap_command`).
    """
    steps = max(1, int(grace / 0.1))
    p = int(pid)
    guard = ""
    if marker is not None:
        env = shlex.quote(f"{_RUN_VAR}={_token(marker)}")
        guard = (
            f"owned() {{ grep -qaF -- {env} /proc/{p}/environ 2>/dev/null && return 0; "
            f"for s in /proc/[0-9]*/stat; do {{ read -r l < \"$s\"; }} 2>/dev/null || continue; "
            f"l=${{l##*) }}; set -- $l; [ \"$3\" = {p} ] || continue; "
            f"grep -qaF -- {env} \"${{s%/stat}}/environ\" 2>/dev/null && return 0; done; "
            f"return 1; }}; owned || exit 0; "
        )
    return (
        f"{GROUP_ALIVE_SH}\n{guard}"
        f"kill -TERM -{p} 2>/dev/null || kill -TERM {p} 2>/dev/null; i=0; "
        f"while group_alive {p}; do i=$((i+1)); [ $i -gt {steps} ] && break; sleep 0.1; done; "
        f"kill -KILL -{p} 2>/dev/null; kill -KILL {p} 2>/dev/null; true"
    )


def send_command(chan: paramiko.Channel, command: str, connect: Deadline, where: str) -> None:
    """Send the exec request, waiting for the server's reply only as long as ``connect`` lasts."""
    with paramiko_pump.driving(chan.get_transport()):
        sent = paramiko_ext.send_exec(chan, command, connect.remaining())
    if not sent:
        chan.close()
        raise AutoservSSHTimeout(
            f"{where} did not answer a command request within {connect.seconds:g} s"
        )


class MarkerFilter:
    """One stream of a wrapped command: drops what came before ``marker`` (login shell
    noise), learns the pid that follows it, feeds the rest to ``sink``.

    The marker is found anywhere in the stream's head, in any chunking; a
    stream without one (the shell failed before printing it, or printed more
    than ``_HEAD_MAX``) is passed through whole by :meth:`flush`.
    """

    def __init__(self, sink: StreamCollector, marker: bytes) -> None:
        self.sink = sink
        self.marker = marker
        self.pid: int | None = None
        self.noise = b""
        self._head = b""
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> None:
        if self._done:
            self.sink.feed(data)
            return
        scan = max(0, len(self._head) - len(self.marker))
        self._head += data
        i = self._head.find(self.marker, scan)
        if i < 0:
            i = self._head.find(self.marker)  # a marker split before ``scan`` (never, but cheap)
        if i < 0:
            if len(self._head) > _HEAD_MAX:
                self.flush()
            return
        j = self._head.find(b"\n", i)
        if j < 0:
            if len(self._head) - i > len(self.marker) + 24:
                self.flush()
            return
        digits = self._head[i + len(self.marker): j]
        if digits.isdigit():
            self.pid = int(digits)
        self.noise = self._head[:i]
        rest = self._head[j + 1:]
        self._head = b""
        self._done = True
        if rest:
            self.sink.feed(rest)

    def flush(self) -> None:
        """Give up on the marker: pass everything held so far through."""
        self._done = True
        if self._head:
            self.sink.feed(self._head)
        self._head = b""


def skip_to_marker(chan: paramiko.Channel, marker: bytes, deadline: Deadline, where: str) -> None:
    """Read ``chan``'s stdout up to and including the line ``marker`` (see :func:`wrap_exec`).

    Byte by byte, so nothing of the protocol that follows is consumed.
    """
    t = chan.get_transport()
    with paramiko_pump.driving(t):
        _skip_to_marker(chan, t, marker, deadline, where)


def _skip_to_marker(chan: paramiko.Channel, t: paramiko.Transport | None, marker: bytes,
                    deadline: Deadline, where: str) -> None:
    seen = b""
    while not deadline.expired():
        if chan.recv_ready():
            b = chan.recv(1)
            if not b:
                break
            seen += b
            if seen.endswith(marker + b"\n"):
                return
            if len(seen) > _HEAD_MAX:
                break
        elif chan.closed or chan.eof_received:
            break
        else:
            paramiko_pump.pump_wait(t, deadline.remaining(0.5),
                                    functools.partial(wait_readable, [chan]))
    raise AutoservRunError(f"{where}: the remote command did not start "
                           f"(no start marker on its output)")


def wait_readable(objects: list[Any], timeout: float) -> None:
    """Wait until one of ``objects`` (each with a ``fileno()``) is readable, or ``timeout`` s.

    ``poll``, not ``select``: a controller running a 1000-machine fan-out in threads holds
    descriptors above 1023, which ``select`` refuses ("filedescriptor out of range").
    """
    poller = select.poll()
    for obj in objects:
        poller.register(obj.fileno(), select.POLLIN)
    poller.poll(math.ceil(max(0.0, timeout) * 1000))


class HostWatch(Protocol):
    """Something that knows when the host of a command is gone for good (e.g. a guest whose
    qemu ended): then the host's connection stalls rather than closes."""

    def fileno(self) -> int:
        """Readable when there is news (``select`` on it)."""
        ...

    def gone(self) -> bool:
        """The host is gone."""
        ...

    def watching(self) -> bool:
        """The watch still works (else a waiter stops selecting on it)."""
        ...


class SSHExecution(Execution):
    """A command in an exec channel: streams read from the channel, killed from a second one.

    With ``watch`` set, a host gone under the command ends the wait at once: ``lost`` and
    ``gone`` are set, and nothing tries to reach the host again to kill the command.
    """

    watch: HostWatch | None = None
    gone: bool = False
    #: Given what came before the marker on stdout (a prelude's output) when the command
    #: ends; returns what is left of it (what the login shell printed).
    on_head: Callable[[bytes], bytes] | None = None

    def __init__(
        self, host: SSHHost, chan: paramiko.Channel, out: StreamCollector, err: StreamCollector,
        marker: bytes,
    ) -> None:
        self.host = host
        self.chan = chan
        self.out = MarkerFilter(out, marker)
        self.err = MarkerFilter(err, marker)
        self.marker = marker
        self._feeder: threading.Thread | None = None
        self._finished = False
        self._killed = False

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
            except (OSError, EOFError, paramiko.SSHException) as exc:
                # (a command that reads stdin waits for the rest: say why in the host's log)
                self.host.log.debug("stdin not sent whole, or not ended: %s", exc)

        self._feeder = threading.Thread(target=feed, daemon=True, name="autoserv-stdin")
        self._feeder.start()

    def _drain(self) -> None:
        """Read what is there now, at most ``_DRAIN_MAX`` bytes per stream (the caller checks
        its deadline between calls, also while output keeps coming)."""
        chan = self.chan
        n = 0
        while n < _DRAIN_MAX and chan.recv_ready():
            data = chan.recv(65536)
            n += len(data)
            self.out.feed(data)
        n = 0
        while n < _DRAIN_MAX and chan.recv_stderr_ready():
            data = chan.recv_stderr(65536)
            n += len(data)
            self.err.feed(data)

    def _drain_all(self) -> None:
        """Read everything buffered (after EOF or close, when no more can come)."""
        chan = self.chan
        while chan.recv_ready() or chan.recv_stderr_ready():
            self._drain()

    def wait(self, deadline: Deadline) -> bool:
        if self.lost:
            return True
        chan = self.chan
        transport = chan.get_transport()
        try:
            with paramiko_pump.driving(transport):
                return self._wait(deadline, chan, transport)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.host.log.debug("connection error while running a command: %s", exc)
            self.lost = True
            return True

    def _wait(self, deadline: Deadline, chan: paramiko.Channel,
              transport: paramiko.Transport | None) -> bool:
        watch = self.watch
        while True:
            if watch is not None:
                if watch.gone():
                    self._drain()
                    self.gone = self.lost = True
                    return True
                if not watch.watching():
                    watch = None  # (its connection dropped): wait for the command alone
            self._drain()
            if chan.eof_received and chan.exit_status_ready():
                self._drain_all()  # what raced in with EOF
                return True
            if chan.closed or transport is None or not transport.is_active():
                self._drain_all()
                # a channel closed by a dying connection has no exit status
                self.lost = _exit_status(chan) is None
                return True
            if deadline.expired():
                return False
            wait = deadline.remaining(0.5)
            if chan.eof_received:
                chan.status_event.wait(wait)
            else:
                waiting: list[Any] = [chan] if watch is None else [chan, watch]
                # (reading the connection ourselves, look at the watch every 50 ms)
                paramiko_pump.pump_wait(transport, wait if watch is None else min(wait, 0.05),
                                        functools.partial(wait_readable, waiting))

    @property
    def pid(self) -> int | None:
        """The remote shell's pid (its process group), once a marker line came."""
        return self.out.pid if self.out.pid is not None else self.err.pid

    def await_pid(self, timeout: float) -> int | None:
        """Read both streams (teeing them as usual) until the pid is known or ``timeout`` passes."""
        deadline = Deadline(timeout)
        chan = self.chan
        t = chan.get_transport()
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException), \
                paramiko_pump.driving(t):
            while self.pid is None and not (self.out.done and self.err.done):
                self._drain()
                if self.pid is not None or deadline.expired() or chan.closed:
                    break
                paramiko_pump.pump_wait(t, deadline.remaining(0.05),
                                        functools.partial(wait_readable, [chan]))
        return self.pid

    def _kill_group(self, pid: int, budget: Deadline, guarded: bool = False) -> None:
        """Run :func:`kill_command` for ``pid`` in a new channel (reconnecting if the
        connection dropped), all within ``budget``."""
        host = self.host
        t = host.transport(Deadline(budget.remaining()))
        with paramiko_pump.driving(t):
            self._kill_group_on(t, pid, budget, guarded)
        host.log.debug("killed remote process group %d on %s", pid, host.hostname)

    def _kill_group_on(self, t: paramiko.Transport, pid: int, budget: Deadline,
                       guarded: bool) -> None:
        host = self.host
        killer = t.open_session(timeout=budget.remaining())
        try:
            script = kill_command(pid, grace=min(_KILL_GRACE, budget.remaining() / 2),
                                  marker=self.marker if guarded else None)
            if not paramiko_ext.send_exec(killer, script, budget.remaining()):
                raise AutoservSSHTimeout("no answer to the kill request")
            send_eof(killer)
            while not killer.status_event.wait(budget.remaining(0.2)):
                if budget.expired() or not t.is_active():  # (keepalives may declare it lost)
                    host.log.warning("could not confirm the remote command %d ended", pid)
                    break
        finally:
            killer.close()

    def kill(self, budget: Deadline) -> None:
        """End the remote command's process group from a second channel within ``budget``."""
        host, chan = self.host, self.chan
        pid = self.await_pid(budget.remaining(2.0))
        try:
            if pid is not None and not self._orphaned(pid):
                self._kill_group(pid, budget)
                self._killed = True
            with paramiko_pump.driving(chan.get_transport()):
                chan.status_event.wait(budget.remaining(1.0))
        except Exception as exc:
            if pid is None or not self._orphaned(pid):
                host.log.warning("could not kill remote command (pid %s) on %s: %s",
                                 pid, host.hostname, exc)
        finally:
            with contextlib.suppress(Exception):
                chan.close()

    def _orphaned(self, pid: int) -> bool:
        """If keepalives declared the host lost, leave ``pid`` to the host's next command
        (no kill attempts on a dead connection) and say so."""
        if self._killed or not lost_reason(self.chan.get_transport()):
            return False
        self._killed = True
        self.host.orphans.append((pid, self.marker))
        self.host.log.warning("%s is lost: its command (pid %d) is ended when it is reached "
                              "again", self.host.hostname, pid)
        return True

    def _kill_orphan(self, budget: Deadline) -> None:
        """After a lost connection: reconnect and end the command if it still runs (a host
        that is still reachable keeps it running otherwise), or, for a host that stopped
        answering, leave that to the host's next command.  Guarded against a reused pid."""
        pid = self.pid
        if pid is None or self._killed:
            return
        if self._orphaned(pid):
            return  # the host stopped answering keepalives: it is not reachable now
        self._killed = True
        try:
            self._kill_group(pid, Deadline(budget.remaining(_ORPHAN_KILL)), guarded=True)
            self.host.log.info("connection lost: reconnected to %s and ended the command (pid %d)",
                               self.host.hostname, pid)
        except Exception as exc:
            self.host.log.debug("connection lost: could not reconnect to end pid %d: %s", pid, exc)
            self.host.orphans.append((pid, self.marker))  # the next command, or close(), ends it

    def finish(self, budget: Deadline) -> None:
        if self._finished:
            return
        self._finished = True
        if self.lost and not self.gone:
            self._kill_orphan(budget)
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            if self.chan.closed or self.chan.eof_received:
                self._drain_all()
            else:
                self._drain()
        if self.on_head is not None:
            try:
                self.out.noise = self.on_head(self.out.noise)  # its own output is no noise
            except Exception as exc:  # the hook's failure is never the command's
                self.host.log.debug("first-command hook failed: %s", exc)
        for stream in (self.out, self.err):
            if stream.noise:
                self.host.log.debug("login shell printed before the command: %r",
                                    stream.noise[:200].decode(errors="replace"))
            stream.flush()
        if self._feeder is not None:
            self._feeder.join(budget.remaining(1.0))
        self.exit_status = _exit_status(self.chan)
        self.exit_signal = paramiko_ext.exit_signal_number(paramiko_ext.exit_signal(self.chan))
        with contextlib.suppress(Exception):
            self.chan.close()
