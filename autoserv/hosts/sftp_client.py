"""The SFTP client of SSHHost: paramiko's SFTP on one session channel, every wait bounded.

paramiko's ``SFTPClient.from_transport`` waits forever for the subsystem
reply, and the client waits for every reply with no timeout, so a stalled
server (a stopped ``sftp-server``, a file system that hangs) hung the
transfer.  :class:`SFTPSession` starts the session (subsystem request,
version exchange) on the host's connect deadline and bounds every later wait
by ``stall_timeout``; the first wait that runs out ends the session
(:class:`~autoserv.hosts.paramiko_ext.StallGuard`) and the copy with one
:class:`~autoserv.errors.AutoservSSHTimeout` naming the host and the file.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
from collections.abc import Iterator

import paramiko

from autoserv.deadline import Deadline
from autoserv.errors import AutoservRunError, AutoservSSHTimeout
from autoserv.hosts.paramiko_ext import StallGuard, send_eof, send_subsystem

__all__ = ["SFTPSession", "close_sftp"]


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


class SFTPSession:
    """One SFTP session on the fresh session channel ``chan`` of ``hostname``.

    The session starts within ``connect`` (the host's connect deadline); each
    later wait for the server (a reply, window space) is bounded by
    ``stall_timeout`` seconds.  ``local`` is the local file of the copy under
    way (for a full local disk).  Use as a context manager; ``close`` is
    idempotent.
    """

    def __init__(self, chan: paramiko.Channel, hostname: str, connect: Deadline,
                 stall_timeout: float) -> None:
        self.hostname = hostname
        self.stall_timeout = stall_timeout
        self.local: str | None = None
        self._remote = ""
        self._guard = StallGuard(chan)
        self._sftp: paramiko.SFTPClient | None = None
        try:
            if not send_subsystem(chan, "sftp", connect.remaining()):
                raise TimeoutError
            chan.settimeout(max(connect.remaining(), 0.001))
            self._sftp = paramiko.SFTPClient(self._guard)  # type: ignore[arg-type]
        except paramiko.SSHException as exc:
            chan.close()
            raise AutoservRunError(
                f"{hostname} offers neither scp nor an SFTP subsystem: {exc}") from None
        except (OSError, EOFError):
            chan.close()
            raise AutoservSSHTimeout(
                f"{hostname}: the SFTP server did not start within {connect.seconds:g} s"
            ) from None
        chan.settimeout(stall_timeout)

    def __enter__(self) -> SFTPSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the session (waiting briefly for the server's exit status)."""
        sftp, self._sftp = self._sftp, None
        if sftp is not None:
            close_sftp(sftp)

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            raise AutoservRunError(f"the SFTP session to {self.hostname} is closed")
        return self._sftp

    @contextlib.contextmanager
    def _bounded(self, doing: str, partial_is_local: bool) -> Iterator[None]:
        """Turn a stalled server into one clear error (removing a local partial copy)."""
        try:
            yield
        except (OSError, EOFError, paramiko.SSHException):
            if not self._guard.stalled:
                raise
            if partial_is_local and self.local and os.path.isfile(self.local):
                with contextlib.suppress(OSError):
                    os.unlink(self.local)
            raise AutoservSSHTimeout(
                f"{doing} {self.hostname}: the SFTP server stalled on {self._remote} "
                f"(no answer within {self.stall_timeout:g} s)") from None

    def put_tree(self, local: str, remote: str) -> None:
        """Copy the local file or tree ``local`` to ``remote`` (modes kept)."""
        with self._bounded("send_file to", partial_is_local=False):
            self._put(local, remote)

    def _put(self, local: str, remote: str) -> None:
        self._remote, self.local = remote, local
        if os.path.isdir(local):
            try:
                self.sftp.mkdir(remote)
            except OSError:  # there already (or a stall, which is not to be hidden)
                if self._guard.stalled:
                    raise
            for name in os.listdir(local):
                self._put(os.path.join(local, name), posixpath.join(remote, name))
        else:
            self.sftp.put(local, remote)
            self.sftp.chmod(remote, stat.S_IMODE(os.stat(local).st_mode))

    def get_tree(self, remote: str, local: str) -> None:
        """Copy the remote file or tree ``remote`` to ``local`` (modes kept)."""
        with self._bounded("get_file from", partial_is_local=True):
            self._get(remote, local)

    def _get(self, remote: str, local: str) -> None:
        self._remote, self.local = remote, local
        st = self.sftp.stat(remote)
        if stat.S_ISDIR(st.st_mode or 0):
            os.makedirs(local, exist_ok=True)
            for name in self.sftp.listdir(remote):
                self._get(posixpath.join(remote, name), os.path.join(local, name))
        else:
            self.sftp.get(remote, local)
            os.chmod(local, stat.S_IMODE(st.st_mode or 0o644))
