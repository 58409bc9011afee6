"""SSHHost: a remote host reached over SSH (paramiko), files moved with scp/SFTP.

Commands run in an exec channel on the host's one shared transport (see
:mod:`autoserv.hosts.ssh_connection`).  Each command is wrapped so that the
remote shell first reports its pid on stderr (the line is removed from the
output); a timeout, a Ctrl-C or any exception while the command runs then
kills the remote process group — the command and all its children — from a
second channel, instead of only abandoning the local side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import posixpath
import select
import shlex
import stat
import tarfile
import threading
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

import paramiko
import scp

from autoserv import jobmark
from autoserv.deadline import Deadline
from autoserv.errors import AutoservError, AutoservRunError, AutoservSSHTimeout
from autoserv.hosts import transfer
from autoserv.hosts.base import RemoteHost
from autoserv.hosts.machine import parse_machine
from autoserv.hosts.ssh_connection import POOL, ConnectParams, resolve, send_eof, ssh_banner
from autoserv.result import CmdResult
from autoserv.secret import Secret
from autoserv.streams import TEE_TO_LOGS, StreamCollector
from autoserv.utils import quote_args

_PID_MARK = b"AUTOSERV_PID="
_KILL_GRACE = 2.0


def wrap_command(command: str, hostname: str | None = None) -> str:
    """The remote command line: report the shell's pid on stderr, then run ``command``.

    ``eval`` keeps the command in the login shell (as plain ``ssh host cmd``
    does) at no extra process; sshd makes that shell a session leader, so
    its pid names the process group of everything the command starts.  In a
    job, the command carries the job's mark for ``hostname`` (autoserv.jobmark).
    """
    mark = jobmark.export_command(hostname) if hostname is not None else ""
    return f"{mark}printf 'AUTOSERV_PID=%s\\n' $$ >&2; eval {shlex.quote(command)}"


def _exit_status(chan: paramiko.Channel) -> int | None:
    """The command's exit status, ``-signum`` if a signal killed it, None if unknown.

    paramiko leaves ``-1`` when the server sent neither (the connection
    died); an ``exit-signal`` is recorded by ``ssh_connection._channel_request``.
    """
    if not chan.exit_status_ready():
        return None
    if chan.exit_status == -1 and getattr(chan, "autoserv_exit_signal", None) is None:
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


def close_sftp(sftp: paramiko.SFTPClient, timeout: float = 5.0) -> None:
    """Close an SFTP session after the server reports its exit status.

    Dropbear fails about half of the next channel opens on a connection whose
    previous channel was closed before its exit status was read.
    """
    chan = sftp.get_channel()
    try:
        if chan is not None and not chan.closed:
            send_eof(chan)
            chan.status_event.wait(timeout)
    except (OSError, EOFError, paramiko.SSHException):
        pass
    finally:
        sftp.close()


class _StderrFilter:
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


class SSHHost(RemoteHost):
    """A host reached over SSH.

    ``hostname`` may be a name from ``~/.ssh/config`` (its HostName, User,
    Port, IdentityFile, ProxyJump, UserKnownHostsFile, StrictHostKeyChecking
    apply) or a ``user:password@host:port`` string.  Arguments left ``None``
    take the process defaults (:func:`autoserv.hosts.set_ssh_defaults`), then
    the ssh config, then ``root``, port 22, policy ``accept-new``.

    The connection opens lazily on first use and is shared by every run and
    transfer in this process; it is reopened if it drops.  With ``via`` (another
    SSHHost) the connection is tunnelled through that host's connection to
    ``via_target`` (default: ``hostname``/``port`` as ``via`` sees them).
    """

    def __init__(
        self,
        hostname: str,
        user: str | None = None,
        port: int | None = None,
        password: str | Secret | None = None,
        *,
        key_file: str | None = None,
        host_key_policy: str | None = None,
        known_hosts: str | None = None,
        ssh_config: str | None = None,
        connect_timeout: float | None = None,
        pinned_host_keys: Iterable[str] = (),
        keepalive: int = 15,
        via: SSHHost | None = None,
        via_target: tuple[str, int] | None = None,
    ) -> None:
        if "@" in hostname or hostname.count(":") == 1 or hostname.startswith("["):
            hostname, m_user, m_pass, m_port = parse_machine(hostname)
            user = user or m_user
            password = password or m_pass
            port = port or m_port
        self.params: ConnectParams = resolve(
            hostname, user=user, port=port, password=password, key_file=key_file,
            host_key_policy=host_key_policy, known_hosts=known_hosts, ssh_config=ssh_config,
            connect_timeout=connect_timeout, pinned_host_keys=tuple(pinned_host_keys),
            keepalive=keepalive,
        )
        if via is not None:  # tunnelled through another host's connection (e.g. a guest's
            # forwarded SSH port on its KVM host)
            self.params = dataclasses.replace(self.params, via=via, via_target=via_target)
        super().__init__(hostname)
        self.user = self.params.user
        self.port = self.params.port
        self._active_pids: set[int] = set()
        self._has_scp: bool | None = None
        POOL.acquire(self.params)

    @property
    def password(self) -> Secret | None:
        return self.params.password

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.user}@{self.params.hostname}:{self.port}>"

    # -- connection ----------------------------------------------------------
    def transport(self, connect_timeout: float | None = None) -> paramiko.Transport:
        """The live transport (connecting if needed)."""
        if self._closed:
            raise AutoservError(f"{self.hostname}: host is closed")
        return POOL.get(self.params, connect_timeout)

    def _open_session(self, connect_timeout: float | None) -> paramiko.Channel:
        for attempt in (1, 2):
            t = self.transport(connect_timeout)
            try:
                return t.open_session(timeout=connect_timeout or self.params.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if attempt == 2 or t.is_active():
                    raise AutoservSSHTimeout(
                        f"cannot open a channel to {self.params.where}: {exc}"
                    ) from None
                POOL.drop(self.params)  # dropped under us: reconnect once
        raise AssertionError("unreachable")

    def _close_connection(self) -> None:
        POOL.release(self.params)

    def _answers(self, timeout: float) -> bool:
        """The SSH port sends a banner within ``timeout`` (or we are connected already).

        A NAT or qemu user-network port forward accepts TCP long before the
        server behind it listens, and a full probe would then wait out its
        whole timeout for a banner that never comes.
        """
        if self.params.proxy_jump or self.params.via is not None or POOL.live(self.params):
            return True
        return ssh_banner(self.params.hostname, self.params.port, timeout)

    def disconnect(self) -> None:
        """Drop the shared connection now (e.g. before a reboot); the next use reconnects."""
        POOL.drop(self.params)

    # -- run -----------------------------------------------------------------
    def run(
        self,
        command: str,
        timeout: float | None = 3600,
        ignore_status: bool = False,
        stdout_tee: IO[str] | Any | None = TEE_TO_LOGS,
        stderr_tee: IO[str] | Any | None = TEE_TO_LOGS,
        connect_timeout: float | None = None,
        stdin: str | bytes | IO[Any] | None = None,
        verbose: bool = True,
        args: Iterable[Any] = (),
    ) -> CmdResult:
        """Run ``command`` on the host; each of ``args`` is appended shell-quoted.

        Output streams live to the host's logger (or to the given file
        objects) and is returned whole.  A non-zero exit raises
        :class:`AutoservRunError` unless ``ignore_status``; a timeout ends the
        remote command and its children and raises even with ``ignore_status``.
        """
        command = quote_args(command, args)
        if verbose:
            self.log.debug("[%s] running: %s", self.hostname, command)
        start = time.monotonic()
        deadline = Deadline(timeout)
        chan = self._open_session(connect_timeout)
        out = StreamCollector(stdout_tee, self.log, prefix="[stdout] ")
        err_sink = StreamCollector(stderr_tee, self.log, prefix="[stderr] ")
        err = _StderrFilter(err_sink)
        timed_out = False
        lost = False
        feeder: threading.Thread | None = None
        try:
            self._exec(chan, wrap_command(command, self.hostname), connect_timeout)
            feeder = self._start_stdin(chan, stdin)
            timed_out, lost = self._pump(chan, out, err, deadline)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.log.debug("connection error during %r: %s", command, exc)
            lost = True
        except BaseException:
            self._kill_remote(err.await_pid(chan, 2.0), chan)
            raise
        finally:
            if feeder is not None:
                feeder.join(1)
        if timed_out:
            self._kill_remote(err.await_pid(chan, 2.0), chan)
        exit_status = _exit_status(chan)
        with contextlib.suppress(Exception):
            chan.close()
        result = CmdResult(
            command=command, exit_status=exit_status, stdout=out.finish(),
            stderr=err_sink.finish(), duration=time.monotonic() - start,
            hostname=self.hostname, timed_out=timed_out,
        )
        if timed_out:
            raise AutoservRunError(f"command timed out after {timeout} s on {self.hostname}", result)
        if lost:
            raise AutoservRunError(
                f"connection to {self.hostname} ({self.params.where}) lost while running command",
                result,
            )
        if result.exit_status != 0 and not ignore_status:
            signalled = getattr(chan, "autoserv_exit_signal", None)
            if signalled is not None:
                raise AutoservRunError(f"command killed by signal {signalled} on {self.hostname}",
                                       result)
            raise AutoservRunError(f"command failed on {self.hostname}", result)
        return result

    def _exec(self, chan: paramiko.Channel, command: str, timeout: float | None) -> None:
        """``exec_command`` with a bound on the wait for the server's reply.

        paramiko's own ``exec_command`` waits forever; this sends the same
        request (RFC 4254 "exec", want-reply) and waits at most ``timeout``.
        A watchdog thread per command would cost ~0.5 ms on the hot path.
        """
        limit = timeout or self.params.connect_timeout
        m = paramiko.Message()
        m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
        m.add_int(chan.remote_chanid)
        m.add_string("exec")
        m.add_boolean(True)
        m.add_string(command)
        chan._event_pending()  # type: ignore[attr-defined]
        chan.transport._send_user_message(m)  # type: ignore[union-attr]
        if not chan.event.wait(limit):
            chan.close()
            raise AutoservSSHTimeout(
                f"{self.params.where} did not answer a command request within {limit:g} s"
            )
        if not chan.event_ready:
            raise chan.transport.get_exception() or paramiko.SSHException("Channel closed.")  # type: ignore[union-attr]

    @staticmethod
    def _start_stdin(chan: paramiko.Channel, stdin: Any) -> threading.Thread | None:
        if stdin is None:
            send_eof(chan)
            return None
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

        thread = threading.Thread(target=feed, daemon=True, name="autoserv-stdin")
        thread.start()
        return thread

    def _pump(
        self, chan: paramiko.Channel, out: StreamCollector, err: _StderrFilter, deadline: Deadline
    ) -> tuple[bool, bool]:
        """Read both streams until EOF and exit status; returns (timed_out, lost)."""
        transport = chan.get_transport()
        while True:
            while chan.recv_ready():
                out.feed(chan.recv(65536))
            while chan.recv_stderr_ready():
                err.feed(chan.recv_stderr(65536))
            if chan.eof_received and chan.exit_status_ready():
                # drain what raced in with EOF
                while chan.recv_ready():
                    out.feed(chan.recv(65536))
                while chan.recv_stderr_ready():
                    err.feed(chan.recv_stderr(65536))
                return False, False
            if chan.closed or transport is None or not transport.is_active():
                while chan.recv_ready():
                    out.feed(chan.recv(65536))
                while chan.recv_stderr_ready():
                    err.feed(chan.recv_stderr(65536))
                # a channel closed by a dying connection has no exit status
                return False, _exit_status(chan) is None
            if deadline.expired():
                return True, False
            wait = deadline.remaining(0.5)
            if chan.eof_received:
                chan.status_event.wait(wait)
            else:
                select.select([chan], [], [], wait)

    def _kill_remote(self, pid: int | None, chan: paramiko.Channel) -> None:
        """End the remote command's process group; never raises."""
        try:
            if pid is not None:
                t = POOL.get(self.params, 10)
                killer = t.open_session(timeout=10)
                killer.exec_command(kill_command(pid))
                send_eof(killer)
                if not killer.status_event.wait(_KILL_GRACE + 5):
                    self.log.warning("could not confirm the remote command %d ended", pid)
                killer.close()
                self.log.debug("killed remote process group %d on %s", pid, self.hostname)
            chan.status_event.wait(1.0)
        except Exception as exc:
            self.log.warning("could not kill remote command (pid %s) on %s: %s",
                             pid, self.hostname, exc)
        finally:
            with contextlib.suppress(Exception):
                chan.close()

    # -- files -----------------------------------------------------------------
    def _remote_has_scp(self) -> bool:
        if self._has_scp is None:
            res = self.run('p=$(command -v scp) && [ -x "$p" ]', ignore_status=True, verbose=False,
                           stdout_tee=None, stderr_tee=None, timeout=30)
            self._has_scp = res.exit_status == 0
            if not self._has_scp:
                self.log.debug("%s has no scp: transfers use SFTP", self.hostname)
        return self._has_scp

    def _remote_probe(self, paths: list[str]) -> dict[str, str]:
        """``{path: 'd'|'f'|'l'|'-'}`` for each remote path (one round trip)."""
        if not paths:
            return {}
        script = ('for p in "$@"; do if [ -d "$p" ]; then t=d; elif [ -L "$p" ]; then t=l; '
                  'elif [ -e "$p" ]; then t=f; else t=-; fi; printf "%s\\0" "$t"; done')
        res = self.run(f"sh -c {shlex.quote(script)} sh", args=paths, verbose=False,
                       stdout_tee=None, stderr_tee=None)
        kinds = res.stdout.split("\0")[: len(paths)]
        return dict(zip(paths, kinds, strict=False))

    def send_file(
        self,
        source: str | list[str],
        dest: str,
        delete_dest: bool = False,
        preserve_symlinks: bool = False,
    ) -> None:
        """Copy local ``source`` (path or list) to remote ``dest`` with rsync semantics.

        A directory is copied recursively as ``dest/<name>``; with a trailing
        ``/`` its contents go into ``dest``.  Several sources need ``dest`` to
        be a directory (created if missing).  ``delete_dest`` removes what is
        in the way first so ``dest`` mirrors the source.  Symlinks are
        followed unless ``preserve_symlinks``.
        """
        sources = [source] if isinstance(source, str | os.PathLike) else list(source)
        sources = [os.fspath(s) for s in sources]
        for s in sources:
            if not os.path.lexists(s.rstrip("/") or "/"):
                raise AutoservError(f"send_file: local source {s!r} does not exist")
        kinds = self._remote_probe([dest])
        plan = transfer.plan_send(
            sources, dest, dest_is_dir=kinds.get(dest) == "d",
            local_isdir=os.path.isdir, local_listdir=os.listdir,
        )
        prep = []
        if delete_dest and plan.deletes:
            prep.append(quote_args("rm -rf", plan.deletes))
        if plan.mkdirs:
            prep.append(quote_args("mkdir -p", plan.mkdirs))
        if prep:
            self.run(" && ".join(prep), verbose=False)
        self.log.debug("send_file %s -> %s:%s", sources, self.hostname, dest)
        if preserve_symlinks:
            self._send_tar(plan)
        elif self._remote_has_scp():
            self._send_scp(plan)
        else:
            self._send_sftp(plan)

    def _send_scp(self, plan: transfer.Plan) -> None:
        client = scp.SCPClient(self.transport(), buff_size=1 << 20, socket_timeout=120)
        try:
            for into_dir, items in plan.by_target_dir().items():
                client.put(items, remote_path=into_dir, recursive=True, preserve_times=True)
            for local, remote in plan.renames:
                client.put(local, remote_path=remote, recursive=os.path.isdir(local),
                           preserve_times=True)
        except scp.SCPException as exc:
            raise AutoservRunError(f"scp to {self.hostname} failed: {exc}") from None
        finally:
            client.close()

    @contextlib.contextmanager
    def _sftp(self) -> Iterator[paramiko.SFTPClient]:
        try:
            sftp = paramiko.SFTPClient.from_transport(self.transport())
        except paramiko.SSHException as exc:
            raise AutoservRunError(
                f"{self.hostname} offers neither scp nor an SFTP subsystem: {exc}"
            ) from None
        assert sftp is not None
        try:
            yield sftp
        finally:
            close_sftp(sftp)

    def _send_sftp(self, plan: transfer.Plan) -> None:
        with self._sftp() as sftp:
            for local, remote in plan.pairs():
                self._sftp_put_tree(sftp, local, remote)

    def _sftp_put_tree(self, sftp: paramiko.SFTPClient, local: str, remote: str) -> None:
        if os.path.isdir(local):
            with contextlib.suppress(OSError):
                sftp.mkdir(remote)
            for name in os.listdir(local):
                self._sftp_put_tree(sftp, os.path.join(local, name), posixpath.join(remote, name))
        else:
            sftp.put(local, remote)
            sftp.chmod(remote, stat.S_IMODE(os.stat(local).st_mode))

    def _send_tar(self, plan: transfer.Plan) -> None:
        for local, remote in plan.pairs():
            parent, name = posixpath.split(remote.rstrip("/"))
            self._tar_to_remote(local, parent or "/", name)

    def _tar_to_remote(self, local: str, remote_parent: str, name: str) -> None:
        chan = self._open_session(30)
        chan.exec_command(quote_args("tar -xf - -C", [remote_parent]))
        with chan.makefile("wb") as stream, tarfile.open(fileobj=stream, mode="w|") as tar:
            tar.add(local, arcname=name)
        send_eof(chan)
        status = chan.recv_exit_status()
        errtext = chan.recv_stderr(65536).decode(errors="replace")
        chan.close()
        if status != 0:
            raise AutoservRunError(f"tar to {self.hostname}:{remote_parent} failed: {errtext}")

    def get_file(
        self,
        source: str | list[str],
        dest: str,
        delete_dest: bool = False,
        preserve_perm: bool = True,
        preserve_symlinks: bool = False,
    ) -> None:
        """Copy remote ``source`` (path or list) to local ``dest`` with rsync semantics.

        The mirror of :meth:`send_file`.  ``preserve_perm=False`` gives the
        copies default permissions instead of the remote ones.
        """
        sources = [source] if isinstance(source, str) else list(source)
        kinds = self._remote_probe([s.rstrip("/") or "/" for s in sources])
        for s in sources:
            if kinds.get(s.rstrip("/") or "/") == "-":
                raise AutoservRunError(f"get_file: {self.hostname}:{s} does not exist")
        listings: dict[str, list[str]] = {}
        for s in sources:
            if s.endswith("/") and kinds.get(s.rstrip("/") or "/") == "d":
                listings[s] = self._remote_listdir(s)
        plan = transfer.plan_send(
            sources, dest, dest_is_dir=os.path.isdir(dest),
            local_isdir=lambda p: kinds.get(p.rstrip("/") or "/") == "d",
            local_listdir=lambda p: listings[p if p.endswith("/") else p + "/"],
            join=posixpath.join, dest_join=os.path.join,
        )
        if delete_dest:
            for d in plan.deletes:
                transfer.remove_local(d)
        for d in plan.mkdirs:
            os.makedirs(d, exist_ok=True)
        self.log.debug("get_file %s:%s -> %s", self.hostname, sources, dest)
        if preserve_symlinks:
            for remote, local in plan.pairs():
                self._tar_from_remote(remote, local)
        elif self._remote_has_scp():
            self._get_scp(plan, preserve_perm)
        else:
            with self._sftp() as sftp:
                for remote, local in plan.pairs():
                    self._sftp_get_tree(sftp, remote, local)
        if not preserve_perm:
            for _, local in plan.pairs():
                transfer.reset_local_perms(local)

    def _get_scp(self, plan: transfer.Plan, preserve_perm: bool) -> None:
        """One ``scp -f`` per local target directory (not one per file: ~7 ms each)."""
        client = scp.SCPClient(self.transport(), buff_size=1 << 20, socket_timeout=120)
        try:
            for into_dir, items in plan.by_target_dir().items():
                client.get(items, into_dir, recursive=True, preserve_times=preserve_perm)
            for remote, local in plan.renames:
                client.get(remote, local, recursive=True, preserve_times=preserve_perm)
        except scp.SCPException as exc:
            raise AutoservRunError(f"scp from {self.hostname} failed: {exc}") from None
        finally:
            client.close()

    def _remote_listdir(self, path: str) -> list[str]:
        script = ('cd "$1" && for f in * .[!.]* ..?*; do '
                  '{ [ -e "$f" ] || [ -L "$f" ]; } && printf "%s\\0" "$f"; done; true')
        res = self.run(f"sh -c {shlex.quote(script)} sh", args=[path], verbose=False,
                       stdout_tee=None, stderr_tee=None)
        return [n for n in res.stdout.split("\0") if n]

    def _sftp_get_tree(self, sftp: paramiko.SFTPClient, remote: str, local: str) -> None:
        st = sftp.stat(remote)
        if stat.S_ISDIR(st.st_mode or 0):
            os.makedirs(local, exist_ok=True)
            for name in sftp.listdir(remote):
                self._sftp_get_tree(sftp, posixpath.join(remote, name), os.path.join(local, name))
        else:
            sftp.get(remote, local)
            os.chmod(local, stat.S_IMODE(st.st_mode or 0o644))

    def _tar_from_remote(self, remote: str, local: str) -> None:
        parent, name = posixpath.split(remote.rstrip("/"))
        local_parent, local_name = os.path.split(local.rstrip("/"))
        chan = self._open_session(30)
        chan.exec_command(quote_args("tar -cf - -C", [parent or "/", name]))
        with chan.makefile("rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                parts = member.name.split("/", 1)
                member.name = posixpath.join(local_name, *parts[1:])
                tar.extract(member, local_parent or ".", filter="tar")
        status = chan.recv_exit_status()
        chan.close()
        if status != 0:
            raise AutoservRunError(f"tar from {self.hostname}:{remote} failed (status {status})")
