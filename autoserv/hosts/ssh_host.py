"""SSHHost: a remote host reached over SSH (paramiko), files moved with scp/SFTP.

Commands run through the shared run core (:mod:`autoserv.run_core`) in an
exec channel on the host's one shared transport
(:mod:`autoserv.hosts.ssh_connection`); :mod:`autoserv.hosts.ssh_exec` is
that transport's side (the pid wrapper, reading, killing the remote process
group).  This module wires it in and moves files (scp, SFTP, tar).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import posixpath
import shlex
import tarfile
from typing import Unpack

import paramiko
import scp

from autoserv import journal
from autoserv.deadline import Deadline
from autoserv.errors import AutoservError, AutoservRunError, AutoservRunTimeoutError, AutoservSSHTimeout
from autoserv.hosts import context, paramiko_ext, paramiko_pump, transfer
from autoserv.hosts.base import RemoteHost
from autoserv.hosts.keepalive import lost_reason
from autoserv.hosts.machine import Machine
from autoserv.hosts.scp_client import SCPClient, safe_scp_path
from autoserv.hosts.sftp_client import SFTPSession
from autoserv.hosts.ssh_connection import (
    POOL,
    ConnectOptions,
    ConnectParams,
    resolve,
    send_eof,
)
from autoserv.hosts.ssh_exec import (
    SSHExecution,
    kill_command,
    new_marker,
    send_command,
    skip_to_marker,
    wrap_command,
    wrap_exec,
)
from autoserv.localsys import ssh_banner
from autoserv.result import CmdResult
from autoserv.run_core import KILL_BUDGET, Execution, Failure, Stdin
from autoserv.secret import Secret
from autoserv.streams import StreamCollector
from autoserv.utils import quote_args

#: Seconds ``close()`` gives the connection that ends commands lost connections left running.
ORPHAN_CLOSE_CONNECT = 10.0


def _bounded_exit_status(chan: paramiko.Channel, timeout: float) -> int:
    """The exit status of a transfer's command, waiting at most ``timeout`` s."""
    if not chan.status_event.wait(timeout):
        chan.close()
        raise AutoservSSHTimeout(f"no exit status from the remote tar within {timeout:g} s")
    return int(chan.exit_status)


def _scp_can_name(plan: transfer.Plan, local_trees: bool) -> bool:
    """False when a file name of ``plan`` holds a newline: the scp protocol cannot carry one
    (the ``scp`` package sends it as ``\\^J``, a silently different name), so such copies
    go by SFTP.  ``local_trees``: the names inside local source directories count too."""
    names = [path for pair in plan.pairs() for path in pair]
    if local_trees:
        for local, _ in plan.pairs():
            for _root, dirs, files in os.walk(local):
                names += dirs + files
    return not any("\n" in name for name in names)


class SSHHost(RemoteHost):
    """A host reached over SSH.

    ``hostname`` may be a name from ``~/.ssh/config`` (its HostName, User,
    Port, IdentityFile, ProxyJump, UserKnownHostsFile, StrictHostKeyChecking
    apply), a ``user:password@host:port`` string or a parsed
    :class:`~autoserv.hosts.Machine`; the arguments override what it says.
    Arguments left ``None`` take the job's SSH defaults
    (:mod:`autoserv.hosts.context`), then the ssh config, then ``root``,
    port 22, policy ``accept-new``.  ``run`` is the shared run core
    (:mod:`autoserv.run_core`); this class is its SSH transport.

    The connection opens lazily on first use and is shared by every run and
    transfer in this process; it is reopened if it drops.  With ``via`` (another
    SSHHost) the connection is tunnelled through that host's connection to
    ``via_target`` (default: ``hostname``/``port`` as ``via`` sees them).

    File transfers (scp, SFTP, tar) end with an error when the other side
    makes no progress (no data, no reply, no window space, no final status)
    for ``transfer_timeout`` seconds; setting up a transfer draws on the
    connect timeout.
    """

    #: Seconds a transfer may go without progress (a read, a write, a reply, the final status).
    transfer_timeout: float = 120.0

    def __init__(
        self,
        hostname: str | Machine,
        user: str | None = None,
        port: int | None = None,
        password: str | Secret | None = None,
        *,
        via: SSHHost | None = None,
        via_target: tuple[str, int] | None = None,
        **options: Unpack[ConnectOptions],
    ) -> None:
        machine = (hostname if isinstance(hostname, Machine)
                   else Machine.parse(hostname, check_host=False))
        self.machine = machine
        self.params: ConnectParams = resolve(
            machine.host, user=user or machine.user, port=port or machine.port,
            password=password or machine.password, **options)
        if via is not None:  # tunnelled through another host's connection (e.g. a guest's
            # forwarded SSH port on its KVM host)
            self.params = dataclasses.replace(self.params, via=via, via_target=via_target)
        super().__init__(machine.host)
        self.user = self.params.user
        self.port = self.params.port
        self._has_scp: bool | None = None
        #: (pid, marker) of commands left running when the host stopped answering; the
        #: next command that reaches the host ends them first
        self.orphans: list[tuple[int, bytes]] = []
        self._first_command = True  # the job context's first_command hook is still to run
        POOL.acquire(self.params)

    @property
    def password(self) -> Secret | None:
        return self.params.password

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.user}@{self.params.hostname}:{self.port}>"

    # -- connection ----------------------------------------------------------
    def transport(self, connect_timeout: float | Deadline | None = None) -> paramiko.Transport:
        """The live transport (connecting within ``connect_timeout``, default the host's, if needed)."""
        if self._closed:
            raise AutoservError(f"{self.hostname}: host is closed")
        return POOL.get(self.params, connect_timeout)

    def _open_session(self, connect_timeout: float | Deadline | None) -> paramiko.Channel:
        """A new session channel; connecting and opening draw on one connect deadline."""
        connect = self.params.deadline(connect_timeout)
        for attempt in (1, 2):
            t = self.transport(connect)
            try:
                with paramiko_pump.driving(t):
                    return t.open_session(timeout=connect.remaining())
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if attempt == 2 or t.is_active():
                    raise AutoservSSHTimeout(
                        f"cannot open a channel to {self.params.where}: {exc}"
                    ) from None
                POOL.drop(self.params)  # dropped under us: reconnect once
        raise AssertionError("unreachable")

    def close(self) -> None:
        """:meth:`Host.close`, first ending the commands lost connections left (``orphans``)."""
        if self.orphans and not (self.closed or self._closing):
            try:
                self._kill_orphans(ORPHAN_CLOSE_CONNECT)
            except AutoservError as exc:
                self.log.warning("could not end the commands left on %s by a lost connection "
                                 "(pids %s): %s", self.hostname,
                                 ", ".join(str(pid) for pid, _ in self.orphans), exc)
        super().close()

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

    # -- run (the SSH transport of autoserv.run_core) --------------------------------
    def _start(self, command: str, stdin: Stdin, out: StreamCollector, err: StreamCollector,
               connect_timeout: float | None) -> Execution:
        """Open a channel and send the wrapped command, all within one connect deadline."""
        if self.orphans:
            self._kill_orphans(connect_timeout)
        connect = self.params.deadline(connect_timeout)
        chan = self._open_session(connect)
        prelude, on_head = "", None
        if self._first_command:
            self._first_command = False
            hook = context.current().first_command
            got = hook(self) if hook is not None else None
            if got is not None:
                prelude, on_head = got
        marker = new_marker()
        execution = SSHExecution(self, chan, out, err, marker)
        execution.on_head = on_head
        journal.record("command", self, channel=chan, command=command)  # for autoserv cleanup
        try:
            send_command(chan, wrap_command(command, marker, self.hostname, prelude), connect,
                         self.params.where)
            execution.feed_stdin(stdin)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.log.debug("connection error during %r: %s", command, exc)
            execution.lost = True
        except BaseException:
            budget = Deadline(KILL_BUDGET)
            execution.kill(budget)
            execution.finish(budget)
            raise
        return execution

    def _kill_orphans(self, connect_timeout: float | None) -> None:
        """End the commands a lost connection left running (see ``orphans``), once reachable."""
        orphans, self.orphans = self.orphans, []
        for pid, marker in orphans:
            try:
                self.run(kill_command(pid, marker=marker), timeout=30,
                         connect_timeout=connect_timeout, verbose=False, stdout_tee=None,
                         stderr_tee=None, ignore_status=True)
                self.log.info("ended pid %d, left running on %s when its connection was lost",
                              pid, self.hostname)
            except AutoservError:
                self.orphans.append((pid, marker))  # still unreachable: try again next time
                raise

    def _run_error(
        self, failure: Failure, result: CmdResult, execution: Execution, timeout: float | None
    ) -> Exception:
        if failure == "timeout":
            return AutoservRunTimeoutError(
                f"command timed out after {timeout} s on {self.hostname}", result)
        if failure == "lost":
            assert isinstance(execution, SSHExecution)
            why = lost_reason(execution.chan.get_transport())
            return AutoservRunError(
                f"connection to {self.hostname} ({self.params.where}) lost while running command"
                + (f": {why}" if why else ""), result)
        assert isinstance(execution, SSHExecution)
        signalled = paramiko_ext.exit_signal(execution.chan)
        if signalled is not None:
            return AutoservRunError(f"command killed by signal {signalled} on {self.hostname}", result)
        return AutoservRunError(f"command failed on {self.hostname}", result)

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

    def send_file(self, source: str | list[str], dest: str, delete_dest: bool = False,
                  preserve_symlinks: bool = False) -> None:
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
            prep.append(quote_args("rm -rf --", plan.deletes))
        if plan.mkdirs:
            prep.append(quote_args("mkdir -p --", plan.mkdirs))
        if prep:
            self.run(" && ".join(prep), verbose=False)
        self.log.debug("send_file %s -> %s:%s", sources, self.hostname, dest)
        try:
            if preserve_symlinks:
                self._send_tar(plan)
            elif self._remote_has_scp() and _scp_can_name(plan, local_trees=True):
                self._send_scp(plan)
            else:
                with self._sftp() as sftp:
                    for local, remote in plan.pairs():
                        sftp.put_tree(local, remote)
        except (AutoservRunError, OSError) as exc:
            full = self._remote_disk_full(plan, dest, exc)
            if full is None:
                raise
            raise full from None

    def _remote_disk_full(self, plan: transfer.Plan, dest: str, exc: Exception
                          ) -> AutoservRunError | None:
        """The error for a send that filled the remote disk (removing the partial files:
        copies shorter than their source), or None if that is not what happened.

        scp says "No space left on device"; SFTP only "Failure" or a size
        mismatch, tar "Wrote only N of M bytes": those count as a full disk when
        a copy is short and less is free than it lacks.
        """
        text = str(exc)
        said = "No space left" in text or "quota exceeded" in text.lower()
        maybe = any(t in text for t in ("Failure", "size mismatch", "Wrote only"))
        if not said and not maybe:
            return None
        files = [(loc, rem) for loc, rem in plan.pairs() if os.path.isfile(loc)]
        script = ('d=$1; shift; df -Pk -- "$d" | awk \'NR==2{print $4}\'; '
                  'for p; do if [ -f "$p" ]; then stat -c %s -- "$p"; else echo -; fi; done')
        try:
            res = self.run(f"sh -c {shlex.quote(script)} sh",
                           args=[posixpath.dirname(dest.rstrip("/")) if not plan.into else dest,
                                 *[r for _, r in files]],
                           verbose=False, stdout_tee=None, stderr_tee=None, timeout=30)
        except AutoservError:
            return None
        lines = res.stdout.split()
        free = int(lines[0]) * 1024 if lines and lines[0].isdigit() else -1
        partial = [(loc, rem) for (loc, rem), size in zip(files, lines[1:], strict=False)
                   if size.isdigit() and int(size) < os.path.getsize(loc)]
        if not partial or (not said and free >= os.path.getsize(partial[0][0])
                           - int(lines[1 + files.index(partial[0])])):
            return None
        self.run("rm -f --", args=[r for _, r in partial], ignore_status=True, verbose=False,
                 timeout=30)
        return AutoservRunError(
            f"send_file to {self.hostname}: "
            + transfer.disk_full_message("remote", partial[0][1], free))

    def _send_scp(self, plan: transfer.Plan) -> None:
        client = SCPClient(self.transport(), self.params.where, self.transfer_timeout)
        try:
            for into_dir, items in plan.by_target_dir().items():
                client.put(items, remote_path=safe_scp_path(into_dir), recursive=True,
                           preserve_times=True)
            for local, remote in plan.renames:
                client.put(local, remote_path=safe_scp_path(remote), recursive=os.path.isdir(local),
                           preserve_times=True)
        except scp.SCPException as exc:
            raise AutoservRunError(f"scp to {self.hostname} failed: {exc}") from None
        finally:
            client.close()

    def _sftp(self) -> SFTPSession:
        """A new SFTP session, started within the host's connect timeout."""
        connect = self.params.deadline()
        return SFTPSession(self._open_session(connect), self.hostname, connect,
                           self.transfer_timeout)

    def _send_tar(self, plan: transfer.Plan) -> None:
        for local, remote in plan.pairs():
            parent, name = posixpath.split(remote.rstrip("/"))
            self._tar_to_remote(local, parent or ("/" if remote.startswith("/") else "."), name)

    def _tar_to_remote(self, local: str, remote_parent: str, name: str) -> None:
        chan = self._open_session(30)
        chan.settimeout(self.transfer_timeout)
        if not paramiko_ext.send_exec(chan, quote_args("tar -xf - -C", [remote_parent]), 30):
            chan.close()
            raise AutoservSSHTimeout(f"{self.params.where} did not start tar within 30 s")
        with chan.makefile("wb") as stream, tarfile.open(fileobj=stream, mode="w|") as tar:
            tar.add(local, arcname=name)
        send_eof(chan)
        status = _bounded_exit_status(chan, self.transfer_timeout)
        errtext = chan.recv_stderr(65536).decode(errors="replace")
        chan.close()
        if status != 0:
            raise AutoservRunError(f"tar to {self.hostname}:{remote_parent} failed: {errtext}")

    def get_file(self, source: str | list[str], dest: str, delete_dest: bool = False,
                 preserve_perm: bool = True, preserve_symlinks: bool = False) -> None:
        """Copy remote ``source`` (path or list) to local ``dest`` with rsync semantics.

        The mirror of :meth:`send_file`.  ``preserve_perm=False`` gives the
        copies default permissions instead of the remote ones.
        """
        sources = [source] if isinstance(source, str) else list(source)
        kinds = self._remote_probe([s.rstrip("/") or "/" for s in sources])
        for s in sources:
            if kinds.get(s.rstrip("/") or "/") == "-":
                raise AutoservRunError(f"get_file: {self.hostname}:{s!r} does not exist")
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
        elif self._remote_has_scp() and _scp_can_name(plan, local_trees=False):
            self._get_scp(plan, preserve_perm)
        else:
            with self._sftp() as sftp:
                try:
                    for remote, local in plan.pairs():
                        sftp.get_tree(remote, local)
                except OSError as exc:
                    if exc.errno not in transfer.DISK_FULL:
                        raise
                    raise self._local_disk_full(sftp.local, plan.pairs()[0][1]) from None
        if not preserve_perm:
            for _, local in plan.pairs():
                transfer.reset_local_perms(local)

    def _local_disk_full(self, path: str | None, dest: str) -> AutoservRunError:
        """The error for a get that filled the local disk; removes the partial file."""
        path = path or dest
        if os.path.isfile(path):
            with contextlib.suppress(OSError):
                os.unlink(path)
        return AutoservRunError(
            f"get_file from {self.hostname}: "
            + transfer.disk_full_message("local", path, transfer.local_free(path)))

    def _get_scp(self, plan: transfer.Plan, preserve_perm: bool) -> None:
        """One ``scp -f`` per local target directory (not one per file: ~7 ms each)."""
        client = SCPClient(self.transport(), self.params.where, self.transfer_timeout)
        failed = True
        try:
            for into_dir, items in plan.by_target_dir().items():
                client.get([safe_scp_path(i) for i in items], into_dir, recursive=True,
                           preserve_times=preserve_perm)
            for remote, local in plan.renames:
                client.get(safe_scp_path(remote), local, recursive=True,
                           preserve_times=preserve_perm)
            failed = False
        except scp.SCPException as exc:
            raise AutoservRunError(f"scp from {self.hostname} failed: {exc}") from None
        except OSError as exc:
            if exc.errno not in transfer.DISK_FULL:
                raise
            raise self._local_disk_full(client.current, plan.pairs()[0][1]) from None
        finally:
            client.close(timeout=1.0 if failed else None)

    def _remote_listdir(self, path: str) -> list[str]:
        script = ('case $1 in -*) set -- "./$1" ;; esac; cd "$1" && for f in * .[!.]* ..?*; do '
                  '{ [ -e "$f" ] || [ -L "$f" ]; } && printf "%s\\0" "$f"; done; true')
        res = self.run(f"sh -c {shlex.quote(script)} sh", args=[path], verbose=False,
                       stdout_tee=None, stderr_tee=None)
        return [n for n in res.stdout.split("\0") if n]

    def _tar_from_remote(self, remote: str, local: str) -> None:
        parent, name = posixpath.split(remote.rstrip("/"))
        local_parent, local_name = os.path.split(local.rstrip("/"))
        chan = self._open_session(30)
        marker = new_marker()
        parent = parent or ("/" if remote.startswith("/") else ".")
        chan.settimeout(self.transfer_timeout)
        if not paramiko_ext.send_exec(
                chan, wrap_exec(quote_args("tar -cf - -C", [parent, "--", name]), marker), 30):
            chan.close()
            raise AutoservSSHTimeout(f"{self.params.where} did not start tar within 30 s")
        skip_to_marker(chan, marker, Deadline(30), self.params.where)
        with chan.makefile("rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                parts = member.name.split("/", 1)
                member.name = posixpath.join(local_name, *parts[1:])
                try:
                    tar.extract(member, local_parent or ".", filter="tar")
                except OSError as exc:
                    if exc.errno not in transfer.DISK_FULL:
                        raise
                    chan.close()
                    raise self._local_disk_full(
                        os.path.join(local_parent or ".", member.name), local) from None
        status = _bounded_exit_status(chan, self.transfer_timeout)
        chan.close()
        if status != 0:
            raise AutoservRunError(f"tar from {self.hostname}:{remote} failed (status {status})")
