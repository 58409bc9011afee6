"""The scp client of SSHHost: the ``scp`` library over channels that skip login noise.

The remote ``scp -t``/``scp -f`` speaks its protocol on stdout, so anything
the host's rc files print there first breaks it.  :class:`SCPClient` execs
``scp`` after a per-command marker (:func:`~autoserv.hosts.ssh_exec.wrap_exec`)
and reads up to the marker before the protocol starts.
"""

from __future__ import annotations

import os
from typing import Any

import paramiko
import scp

from autoserv.deadline import Deadline
from autoserv.hosts.paramiko_ext import send_eof
from autoserv.hosts.ssh_exec import new_marker, skip_to_marker, wrap_exec

__all__ = ["SCPClient", "safe_scp_path"]


def safe_scp_path(path: str) -> str:
    """A path the remote ``scp`` cannot take for an option: ``./`` before a leading ``-``."""
    return "./" + path if path.startswith("-") else path


class _MarkedChannel:
    """A session channel whose ``exec_command`` skips what the login shell printed."""

    def __init__(self, chan: paramiko.Channel, timeout: float, where: str) -> None:
        self._chan = chan
        self._timeout = timeout
        self._where = where

    def exec_command(self, command: bytes | str) -> None:
        text = command.decode() if isinstance(command, bytes) else command
        marker = new_marker()
        self._chan.exec_command(wrap_exec(text, marker))
        skip_to_marker(self._chan, marker, Deadline(self._timeout), self._where)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chan, name)


class _MarkedTransport:
    """What the scp library sees as its transport: sessions are :class:`_MarkedChannel`."""

    def __init__(self, transport: paramiko.Transport, timeout: float, where: str) -> None:
        self._t = transport
        self._timeout = timeout
        self._where = where

    def open_session(self) -> _MarkedChannel:
        return _MarkedChannel(self._t.open_session(timeout=self._timeout), self._timeout,
                              self._where)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


class SCPClient(scp.SCPClient):  # type: ignore[misc]
    """``scp.SCPClient`` whose remote ``scp`` starts after a marker, every wait bounded by
    ``socket_timeout``; ``current`` is the file being copied (local path on a get, the
    local source on a put), for error messages and removing a partial copy."""

    def __init__(self, transport: paramiko.Transport, where: str, socket_timeout: float = 120.0,
                 buff_size: int = 1 << 20) -> None:
        super().__init__(_MarkedTransport(transport, socket_timeout, where), buff_size=buff_size,
                         socket_timeout=socket_timeout, progress=self._track)
        self.current: str | None = None
        self._close_timeout = socket_timeout

    def _track(self, name: bytes | str, size: int, sent: int) -> None:
        if sent == 0 or self.current is None:
            self.current = os.fsdecode(name)

    def close(self, timeout: float | None = None) -> None:
        """Close the channel, waiting at most ``timeout`` (default ``socket_timeout``) for
        the remote exit status.

        ``scp.SCPClient.close`` waits forever, which hangs when the remote
        ``scp`` is blocked writing to us after a local failure (a full disk):
        after a failure, pass a short ``timeout``.
        """
        chan: Any = getattr(self, "channel", None)
        self.channel = None
        if chan is None:
            return
        try:
            send_eof(chan)
            chan.status_event.wait(self._close_timeout if timeout is None else timeout)
        except (EOFError, OSError, paramiko.SSHException):
            pass
        finally:
            chan.close()
