"""``barrier``: a rendezvous of participants on one controller (Autotest's server barrier).

A control file writes, in each parallel worker::

    b = barrier(machine, "start", timeout=600)
    b.rendezvous(*machines)          # returns once every machine got here

Every participant names itself (``hostid``) and the whole group; the group's *master*
(the first of the sorted ids for :meth:`barrier.rendezvous`, the given one for
:meth:`barrier.rendezvous_servers`) listens, the others connect to it and wait for its
verdict.  The master releases everyone once all have arrived; when the timeout expires
it tells everyone who never arrived, and each raises :class:`BarrierError` naming them.
The protocol is :mod:`autoserv.barrier_protocol` (shared with the client runtime's
``job.barrier``, which meets over TCP between hosts); this module is its transport.

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
import logging
import os
import socket
import struct

from autoserv.barrier_protocol import DEFAULT_PORT, VERDICT_GRACE, Rendezvous
from autoserv.deadline import Deadline
from autoserv.errors import BarrierAbortError, BarrierError

__all__ = ["barrier", "BarrierError", "BarrierAbortError", "DEFAULT_PORT", "VERDICT_GRACE",
           "socket_name"]

log = logging.getLogger("autoserv.barrier")


def socket_name(port: int, tag: str, uid: int | None = None) -> bytes:
    """The abstract socket address of barrier ``tag`` on ``port`` (pure)."""
    uid = os.getuid() if uid is None else uid
    digest = hashlib.sha256(tag.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return f"\0autoserv-barrier/{uid}/{port}/{digest}".encode()


class barrier(Rendezvous):  # Autotest's name, lower case
    """One participant ``hostid`` of the barrier ``tag``, on this controller.

    ``timeout`` (seconds, None: wait for ever) bounds each rendezvous; ``port`` picks the
    rendezvous point together with ``tag`` (participants must agree on both).
    """

    error = BarrierError
    abort_error = BarrierAbortError
    log = log

    def _listen(self, deadline: Deadline) -> socket.socket:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(socket_name(self.port, self.tag))
            listener.listen(64)
        except OSError as exc:
            listener.close()
            if exc.errno == errno.EADDRINUSE:
                raise BarrierError(
                    f"{self._what()}: another master already waits on port {self.port} "
                    "with this tag (two participants with one id, or another job)"
                ) from None
            raise
        return listener

    def _dial(self, master: str, deadline: Deadline) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(socket_name(self.port, self.tag))
            return sock
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            return None
        except BaseException:
            sock.close()
            raise

    def _admit_peer(self, sock: socket.socket) -> bool:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid not in (0, os.getuid()):
            log.warning("barrier: refused a participant of user id %d", uid)
            return False
        return True
