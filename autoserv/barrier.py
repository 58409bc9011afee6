"""``barrier``: a rendezvous of participants on one controller (Autotest's server barrier).

A control file writes, in each parallel worker::

    b = barrier(machine, "start", timeout=600)
    b.rendezvous(*machines)          # returns once every machine got here

Every participant names itself (``hostid``) and the whole group; the group's *master*
(the first of the sorted ids for :meth:`barrier.rendezvous`, the given one for
:meth:`barrier.rendezvous_servers`) listens, the others connect to it and wait for its
verdict.  The master releases everyone once all have arrived; when the timeout expires
it tells everyone who never arrived, and each raises :class:`BarrierError` naming them.

Transport: a Linux *abstract* Unix socket named after the user id, the ``port`` and the
``tag`` (``\\0autoserv-barrier/<uid>/<port>/<hash of tag>``).  It is local to this
controller (its network namespace), works between the forked workers of one job and
between separate autoserv processes, leaves no file behind when a process dies, and the
master accepts only peers of its own user (``SO_PEERCRED``; root is always accepted).
Different tags on one port never collide.

Aborting a job releases everyone: a participant's SIGTERM raises
:class:`~autoserv.abort.JobAbort` out of its wait and closes its socket; the master then
tells the others that this participant left, and they raise :class:`BarrierError`.  A
participant whose master disappears raises at once too.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import selectors
import socket
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from autoserv.deadline import Deadline, backoff
from autoserv.errors import BarrierAbortError, BarrierError

__all__ = ["barrier", "BarrierError", "BarrierAbortError", "DEFAULT_PORT", "socket_name"]

log = logging.getLogger("autoserv.barrier")

DEFAULT_PORT = 11920
_MAX_LINE = 1 << 16
#: Seconds a participant waits past its own timeout for the master's verdict.
VERDICT_GRACE = 2.0


def socket_name(port: int, tag: str, uid: int | None = None) -> bytes:
    """The abstract socket address of barrier ``tag`` on ``port`` (pure)."""
    uid = os.getuid() if uid is None else uid
    digest = hashlib.sha256(tag.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return f"\0autoserv-barrier/{uid}/{port}/{digest}".encode()


def _names(ids: Iterable[Any]) -> list[str]:
    return [str(i) for i in ids]


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    try:
        sock.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # that peer is gone; it will notice on its own


class _LineReader:
    """Newline-delimited JSON messages from one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def read(self) -> list[dict[str, Any]] | None:
        """The complete messages now available; None at end of file."""
        try:
            chunk = self.sock.recv(4096)
        except BlockingIOError:
            return []
        except OSError:
            return None
        if not chunk:
            return None
        self.buffer += chunk
        if len(self.buffer) > _MAX_LINE:
            return None
        messages = []
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            try:
                value = json.loads(line)
            except ValueError:
                return None
            if isinstance(value, dict):
                messages.append(value)
        return messages


class barrier:  # Autotest's name, lower case
    """One participant ``hostid`` of the barrier ``tag``.

    ``timeout`` (seconds, None: wait for ever) bounds each rendezvous; ``port`` picks the
    rendezvous point together with ``tag`` (participants must agree on both).
    """

    def __init__(self, hostid: Any, tag: str, timeout: float | None = None,
                 port: int | None = DEFAULT_PORT) -> None:
        if timeout is not None and timeout <= 0:
            raise BarrierError(f"barrier {tag!r}: timeout must be positive, not {timeout!r}")
        self.hostid = str(hostid)
        self.tag = str(tag)
        self.timeout = timeout
        self.port = DEFAULT_PORT if port is None else int(port)

    def __repr__(self) -> str:
        return f"<barrier {self.tag!r} {self.hostid} port={self.port}>"

    # -- the API of control files --------------------------------------------------------

    def rendezvous(self, *hostids: Any, abort: bool = False) -> None:
        """Wait until every one of ``hostids`` (this one included) has arrived.

        The master is the first of the sorted ids.  ``abort=True`` makes every
        participant raise :class:`BarrierAbortError` once all have arrived.
        """
        members = sorted(set(_names(hostids)))
        if not members:
            raise BarrierError(f"barrier {self.tag!r}: rendezvous needs the participants' ids")
        self._meet(members[0], members, abort)

    def rendezvous_servers(self, master: Any, *hostids: Any, abort: bool = False) -> None:
        """Wait until ``master`` and every one of ``hostids`` has arrived (master given)."""
        members = sorted(set([str(master), *_names(hostids)]))
        self._meet(str(master), members, abort)

    # -- implementation ------------------------------------------------------------------

    def _what(self) -> str:
        return f"barrier {self.tag!r} ({self.hostid})"

    def _meet(self, master: str, members: Sequence[str], abort: bool) -> None:
        if self.hostid not in members:
            raise BarrierError(
                f"{self._what()}: {self.hostid} is not one of the participants {', '.join(members)}"
            )
        deadline = Deadline(self.timeout)
        log.info("%s: waiting for %s (master %s)", self._what(), ", ".join(members), master)
        if len(members) == 1:
            self._verdict({"result": "abort" if abort else "go", "by": self.hostid}, master)
            return
        if self.hostid == master:
            self._serve(members, abort, deadline)
        else:
            self._join(master, members, abort, deadline)

    def _verdict(self, message: dict[str, Any], master: str) -> None:
        result = message.get("result")
        if result == "go":
            log.info("%s: everyone arrived", self._what())
            return
        if result == "abort":
            raise BarrierAbortError(f"{self._what()}: aborted by {message.get('by', master)}")
        raise BarrierError(f"{self._what()}: {message.get('message', 'failed')}")

    def _timeout_text(self, missing: Sequence[str]) -> str:
        return f"timed out after {self.timeout} s: never arrived: {', '.join(missing)}"

    def _serve(self, members: Sequence[str], abort: bool, deadline: Deadline) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        peers: dict[str, socket.socket] = {}
        pending: dict[socket.socket, _LineReader] = {}
        selector = selectors.DefaultSelector()
        try:
            try:
                listener.bind(socket_name(self.port, self.tag))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise BarrierError(
                        f"{self._what()}: another master already waits on port {self.port} "
                        "with this tag (two participants with one id, or another job)"
                    ) from None
                raise
            listener.listen(64)
            listener.setblocking(False)
            selector.register(listener, selectors.EVENT_READ, None)
            aborted_by = self.hostid if abort else None
            while True:
                missing = [m for m in members if m != self.hostid and m not in peers]
                if not missing:
                    break
                if deadline.expired():
                    text = self._timeout_text(missing)
                    for sock in peers.values():
                        _send(sock, {"result": "error", "message": text})
                    raise BarrierError(f"{self._what()}: {text}")
                wait = None if deadline.end is None else deadline.remaining()
                for key, _ in selector.select(wait):
                    if key.data is None:
                        self._accept(listener, selector, pending)
                        continue
                    reader = key.data
                    sock = reader.sock
                    messages = reader.read()
                    left = next((h for h, s in peers.items() if s is sock), None)
                    if messages is None:
                        selector.unregister(sock)
                        pending.pop(sock, None)
                        sock.close()
                        if left is not None:
                            text = f"{left} left before everyone arrived"
                            for other in peers.values():
                                if other is not sock:
                                    _send(other, {"result": "error", "message": text})
                            raise BarrierError(f"{self._what()}: {text}")
                        continue
                    for message in messages:
                        error = self._admit(message, members, peers, sock)
                        if error is not None:
                            _send(sock, {"result": "error", "message": error})
                            selector.unregister(sock)
                            pending.pop(sock, None)
                            sock.close()
                            break
                        pending.pop(sock, None)
                        if message.get("abort"):
                            aborted_by = aborted_by or str(message.get("hostid"))
                        waiting = [m for m in members if m != self.hostid and m not in peers]
                        for other in peers.values():
                            _send(other, {"waiting": waiting})
            verdict: dict[str, Any] = (
                {"result": "abort", "by": aborted_by} if aborted_by else {"result": "go"}
            )
            for sock in peers.values():
                _send(sock, verdict)
            self._verdict(verdict, self.hostid)
        finally:
            selector.close()
            for sock in [*peers.values(), *pending]:
                sock.close()
            listener.close()

    @staticmethod
    def _accept(listener: socket.socket, selector: selectors.BaseSelector,
                pending: dict[socket.socket, _LineReader]) -> None:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid not in (0, os.getuid()):
            log.warning("barrier: refused a participant of user id %d", uid)
            sock.close()
            return
        sock.setblocking(False)
        pending[sock] = _LineReader(sock)
        selector.register(sock, selectors.EVENT_READ, pending[sock])

    def _admit(self, message: dict[str, Any], members: Sequence[str],
               peers: dict[str, socket.socket], sock: socket.socket) -> str | None:
        """Add the participant ``message`` introduces; an error text if it does not fit."""
        hostid = str(message.get("hostid"))
        theirs = sorted(_names(message.get("members") or []))
        if message.get("tag") != self.tag:
            return f"{hostid} uses tag {message.get('tag')!r}, the master {self.tag!r}"
        if theirs != list(members):
            return (f"{hostid} expects participants {', '.join(theirs)}, "
                    f"the master {self.hostid} expects {', '.join(members)}")
        if hostid in peers or hostid == self.hostid:
            return f"{hostid} arrived twice (two participants with one id?)"
        peers[hostid] = sock
        log.debug("%s: %s arrived", self._what(), hostid)
        return None

    def _join(self, master: str, members: Sequence[str], abort: bool, deadline: Deadline) -> None:
        sock = self._connect(master, deadline)
        try:
            _send(sock, {"hostid": self.hostid, "tag": self.tag, "members": list(members),
                         "abort": abort})
            reader = _LineReader(sock)
            waiting: list[str] = [m for m in members if m not in (self.hostid, master)]
            # The master's clock decides; it started at about the time ours did, so give its
            # verdict (which names who is missing) a moment before timing out on our own.
            verdict_by = Deadline(None if deadline.end is None
                                  else deadline.remaining() + VERDICT_GRACE)
            with selectors.DefaultSelector() as selector:
                selector.register(sock, selectors.EVENT_READ)
                while True:
                    wait = None if verdict_by.end is None else verdict_by.remaining()
                    if wait is not None and wait <= 0:
                        raise BarrierError(f"{self._what()}: {self._timeout_text(waiting)}")
                    if not selector.select(wait):
                        continue
                    messages = reader.read()
                    if messages is None:
                        raise BarrierError(
                            f"{self._what()}: the master {master} went away before everyone arrived"
                        )
                    for message in messages:
                        if "result" in message:
                            self._verdict(message, master)
                            return
                        waiting = _names(message.get("waiting", waiting))
        finally:
            sock.close()

    def _connect(self, master: str, deadline: Deadline) -> socket.socket:
        delays = backoff(0.02, 1.5, 0.25)
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(socket_name(self.port, self.tag))
                sock.setblocking(False)
                return sock
            except (ConnectionRefusedError, FileNotFoundError):
                sock.close()
            except BaseException:
                sock.close()
                raise
            if deadline.expired():
                raise BarrierError(
                    f"{self._what()}: timed out after {self.timeout} s: "
                    f"never arrived: {master} (the master)"
                )
            deadline.sleep(next(delays))
