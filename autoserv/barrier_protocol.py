"""The rendezvous protocol of ``barrier``, apart from its transport (stdlib-only; shipped).

Every participant names itself (``hostid``) and the whole group; the group's *master* (the
first of the sorted ids for :meth:`Rendezvous.rendezvous`, the given one for
:meth:`Rendezvous.rendezvous_servers`) listens, the others connect to it and wait for its
verdict.  The master releases everyone once all have arrived; when the timeout expires it
tells everyone who never arrived, and each raises the barrier error naming them.

Messages are newline-delimited JSON objects on a stream socket:

* participant → master, once: ``{"hostid", "tag", "members", "abort"}``, and
  ``{"leaving": why}`` when it stops waiting for another reason than an error of its own
  (its job is aborted);
* master → participant: ``{"waiting": [ids]}`` after each arrival (the first one also says
  "you are admitted"), ``{"retry": true}`` when the hello is for another barrier (a
  different tag on the same rendezvous point: connect again later), and one verdict,
  ``{"result": "go"}``, ``{"result": "abort", "by": id}`` or ``{"result": "error",
  "message": text}``.

A participant that leaves (its socket closes) before everyone arrived fails the barrier
for all: the master tells the others who left (and why, if it said), and a participant
whose master disappears raises at once; a master whose job is aborted tells everyone so.
A connection the master closes before admitting it (a master that just finished the
previous barrier on the same point) is simply made again.

:class:`Rendezvous` is the protocol; a subclass provides the transport (``_listen``,
``_dial``, ``_admit_peer``) and the exception classes (``error``, ``abort_error``).
autoserv's :class:`autoserv.barrier.barrier` meets over an abstract Unix socket on the
controller; the client runtime ships this very file as
``autotest/client/shared/barrier_protocol.py`` and meets over TCP between hosts.
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from .deadline import Deadline, backoff

__all__ = ["Rendezvous", "DEFAULT_PORT", "VERDICT_GRACE"]

DEFAULT_PORT = 11920
_MAX_LINE = 1 << 16
#: Seconds a participant waits past its own timeout for the master's verdict.
VERDICT_GRACE = 2.0
#: The longest single wait: a thread worker's abort (an exception raised in the thread)
#: is only seen between waits, so no wait may block for longer.
_SLICE = 0.5


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


class _NotYet(Exception):
    """The master closed our connection before admitting us: connect again."""


class Rendezvous:
    """One participant ``hostid`` of the barrier ``tag`` (the transport is the subclass's).

    ``timeout`` (seconds, None: wait for ever) bounds each rendezvous; ``port`` picks the
    rendezvous point together with ``tag`` (participants must agree on both).
    """

    #: The exception a failed rendezvous raises, and the one for ``abort=True``.
    error: ClassVar[type[Exception]]
    abort_error: ClassVar[type[Exception]]
    log: ClassVar[logging.Logger] = logging.getLogger("barrier")

    def __init__(self, hostid: Any, tag: str, timeout: float | None = None,
                 port: int | None = DEFAULT_PORT) -> None:
        if timeout is not None and timeout <= 0:
            raise self.error(f"barrier {tag!r}: timeout must be positive, not {timeout!r}")
        self.hostid = str(hostid)
        self.tag = str(tag)
        self.timeout = timeout
        self.port = DEFAULT_PORT if port is None else int(port)

    def __repr__(self) -> str:
        return f"<barrier {self.tag!r} {self.hostid} port={self.port}>"

    # -- the transport (a subclass's) --------------------------------------------------

    def _listen(self, deadline: Deadline) -> socket.socket:
        """A listening socket for this barrier (the master's); raise ``error`` if impossible."""
        raise NotImplementedError

    def _dial(self, master: str, deadline: Deadline) -> socket.socket | None:
        """One attempt to connect to ``master``: the socket, or None if it is not there yet."""
        raise NotImplementedError

    def _admit_peer(self, sock: socket.socket) -> bool:
        """Whether the master talks to this newly accepted connection at all."""
        return True

    # -- the API of control files --------------------------------------------------------

    def rendezvous(self, *hostids: Any, abort: bool = False) -> None:
        """Wait until every one of ``hostids`` (this one included) has arrived.

        The master is the first of the sorted ids.  ``abort=True`` makes every
        participant raise ``abort_error`` once all have arrived.
        """
        members = sorted(set(_names(hostids)))
        if not members:
            raise self.error(f"barrier {self.tag!r}: rendezvous needs the participants' ids")
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
            raise self.error(
                f"{self._what()}: {self.hostid} is not one of the participants {', '.join(members)}"
            )
        deadline = Deadline(self.timeout)
        self.log.info("%s: waiting for %s (master %s)", self._what(), ", ".join(members), master)
        if len(members) == 1:
            self._verdict({"result": "abort" if abort else "go", "by": self.hostid}, master)
            return
        if self.hostid == master:
            self._serve(members, abort, deadline)
            return
        delays = backoff(0.02, 1.5, 0.25)
        while True:
            try:
                self._join(master, members, abort, deadline)
                return
            except _NotYet:
                deadline.sleep(next(delays))

    def _verdict(self, message: dict[str, Any], master: str) -> None:
        result = message.get("result")
        if result == "go":
            self.log.info("%s: everyone arrived", self._what())
            return
        if result == "abort":
            raise self.abort_error(f"{self._what()}: aborted by {message.get('by', master)}")
        raise self.error(f"{self._what()}: {message.get('message', 'failed')}")

    def _timeout_text(self, missing: Sequence[str]) -> str:
        return f"timed out after {self.timeout} s: never arrived: {', '.join(missing)}"

    def _serve(self, members: Sequence[str], abort: bool, deadline: Deadline) -> None:
        listener = self._listen(deadline)
        peers: dict[str, socket.socket] = {}
        pending: dict[socket.socket, _LineReader] = {}
        selector = selectors.DefaultSelector()
        try:
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
                    raise self.error(f"{self._what()}: {text}")
                wait = _SLICE if deadline.end is None else min(_SLICE, deadline.remaining())
                for key, _ in selector.select(wait):
                    if key.data is None:
                        self._accept(listener, selector, pending)
                        continue
                    reader = key.data
                    sock = reader.sock
                    messages = reader.read()
                    left = next((h for h, s in peers.items() if s is sock), None)
                    why = next((str(m["leaving"]) for m in messages or [] if "leaving" in m), None)
                    if messages is None or why is not None:
                        selector.unregister(sock)
                        pending.pop(sock, None)
                        sock.close()
                        if left is not None:
                            text = f"{left} left before everyone arrived" + (
                                f" ({why})" if why else "")
                            for other in peers.values():
                                if other is not sock:
                                    _send(other, {"result": "error", "message": text})
                            raise self.error(f"{self._what()}: {text}")
                        continue
                    for message in messages:
                        error: str | None
                        if message.get("tag") != self.tag:  # another barrier's participant
                            _send(sock, {"retry": True})
                            error = ""
                        else:
                            error = self._admit(message, members, peers, sock)
                        if error is not None:
                            if error:
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
        except BaseException as exc:
            if not isinstance(exc, Exception):  # e.g. the master's job aborted: say so
                text = f"the master {self.hostid} stopped waiting: {exc}"
                for sock in peers.values():
                    _send(sock, {"result": "error", "message": text})
            raise
        finally:
            selector.close()
            for sock in [*peers.values(), *pending]:
                sock.close()
            listener.close()

    def _accept(self, listener: socket.socket, selector: selectors.BaseSelector,
                pending: dict[socket.socket, _LineReader]) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        if not self._admit_peer(sock):
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
        if theirs != list(members):
            return (f"{hostid} expects participants {', '.join(theirs)}, "
                    f"the master {self.hostid} expects {', '.join(members)}")
        if hostid in peers or hostid == self.hostid:
            return f"{hostid} arrived twice (two participants with one id?)"
        peers[hostid] = sock
        self.log.debug("%s: %s arrived", self._what(), hostid)
        return None

    def _join(self, master: str, members: Sequence[str], abort: bool, deadline: Deadline) -> None:
        sock = self._connect(master, deadline)
        try:
            _send(sock, {"hostid": self.hostid, "tag": self.tag, "members": list(members),
                         "abort": abort})
            reader = _LineReader(sock)
            admitted = False  # the master read our hello (it sent a "waiting" message)
            waiting: list[str] = [m for m in members if m not in (self.hostid, master)]
            # The master's clock decides; it started at about the time ours did, so give its
            # verdict (which names who is missing) a moment before timing out on our own.
            verdict_by = Deadline(None if deadline.end is None
                                  else deadline.remaining() + VERDICT_GRACE)
            with selectors.DefaultSelector() as selector:
                selector.register(sock, selectors.EVENT_READ)
                while True:
                    wait = _SLICE if verdict_by.end is None else verdict_by.remaining()
                    if wait <= 0:
                        raise self.error(f"{self._what()}: {self._timeout_text(waiting)}")
                    if not selector.select(min(wait, _SLICE)):
                        continue
                    messages = reader.read()
                    if messages is None:
                        if not admitted and not deadline.expired():
                            raise _NotYet
                        raise self.error(
                            f"{self._what()}: the master {master} went away before everyone arrived"
                        )
                    for message in messages:
                        if "result" in message:
                            self._verdict(message, master)
                            return
                        if message.get("retry"):
                            if deadline.expired():
                                raise self.error(f"{self._what()}: {self._timeout_text([master])}"
                                                 " (the master; another barrier holds the port)")
                            raise _NotYet
                        admitted = True
                        waiting = _names(message.get("waiting", waiting))
        except BaseException as exc:
            if not isinstance(exc, Exception):  # e.g. this job aborted: tell the master why
                _send(sock, {"leaving": str(exc)})
            raise
        finally:
            sock.close()

    def _connect(self, master: str, deadline: Deadline) -> socket.socket:
        delays = backoff(0.02, 1.5, 0.25)
        while True:
            sock = self._dial(master, deadline)
            if sock is not None:
                sock.setblocking(False)
                return sock
            if deadline.expired():
                raise self.error(
                    f"{self._what()}: timed out after {self.timeout} s: "
                    f"never arrived: {master} (the master)"
                )
            deadline.sleep(next(delays))
