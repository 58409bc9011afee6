"""``job.barrier``: client jobs on several hosts meet over TCP (Autotest's client barrier).

A client control file writes, on each host::

    b = job.barrier(me, "start", timeout=600)     # me: this host's address ("host" or "host#n")
    b.rendezvous(*everyone)                        # returns once every id got here

The ids name the hosts: ``"10.0.0.5"``, ``"box1.lab"``, or ``"box1.lab#2"`` for a second
participant on one host (what follows ``#`` only tells them apart).  The master (the
first of the sorted ids; for :meth:`~autotest.client.shared.barrier_protocol.Rendezvous.rendezvous_servers`
the given one) listens on TCP ``port`` on all its addresses, the others connect to the
address of its id; so the master's id must be an address the others can reach, and
``port`` open between the hosts.  A timeout raises :class:`~autotest.client.shared.error.BarrierError`
naming who never arrived; a participant that leaves (its job killed) fails the barrier for
everyone; ``abort=True`` makes everyone raise :class:`~autotest.client.shared.error.BarrierAbortError`.

The protocol is autoserv's own (``barrier_protocol``, shipped from ``autoserv/barrier_protocol.py``;
autoserv's server-side ``barrier`` speaks it over a local socket).  Unlike the original's
``rendezvous_servers``, where every member listened and the master connected to each, the
master listens here too: the hosts' roles in the network are the same for both calls.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

from autotest.client.shared.barrier_protocol import DEFAULT_PORT, Rendezvous
from autotest.client.shared.deadline import Deadline, backoff
from autotest.client.shared.error import BarrierAbortError, BarrierError

__all__ = ["barrier", "host_of", "DEFAULT_PORT"]

log = logging.getLogger("autotest.barrier")

#: connect() errors that mean "the master is not listening (yet)": try again.
_NOT_YET = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET,
            errno.ETIMEDOUT, errno.EHOSTDOWN)
#: Longest single connect attempt (seconds).
_CONNECT_ATTEMPT = 5.0


def host_of(hostid: Any) -> str:
    """The address part of a participant id (``"host#2"`` -> ``"host"``)."""
    address = str(hostid).split("#", 1)[0].strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if not address:
        raise BarrierError(f"barrier: participant id {hostid!r} names no host (host or host#n)")
    return address


class barrier(Rendezvous):  # Autotest's name, lower case
    """One participant ``hostid`` of the barrier ``tag``, meeting the others over TCP ``port``."""

    error = BarrierError
    abort_error = BarrierAbortError
    log = log

    def __init__(self, hostid: Any, tag: str, timeout: float | None = None,
                 port: int | None = DEFAULT_PORT) -> None:
        super().__init__(hostid, tag, timeout, port)
        host_of(self.hostid)  # a bad id fails here, not at the rendezvous

    def _listen(self, deadline: Deadline) -> socket.socket:
        delays = backoff(0.05, 1.5, 1.0)
        warned = False
        while True:
            try:
                return self._bind()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise self.error(f"{self._what()}: cannot listen on TCP port {self.port}: "
                                     f"{exc.strerror or exc}") from None
            if deadline.expired():
                raise self.error(f"{self._what()}: timed out after {self.timeout} s: TCP port "
                                 f"{self.port} stayed in use (another barrier's master or "
                                 "another program)")
            if not warned:
                log.warning("%s: TCP port %d is in use: waiting for it", self._what(), self.port)
                warned = True
            deadline.sleep(next(delays))

    def _bind(self) -> socket.socket:
        if socket.has_dualstack_ipv6():
            try:
                return socket.create_server(("", self.port), family=socket.AF_INET6,
                                            backlog=64, dualstack_ipv6=True)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise
                # no IPv6 on this host after all: IPv4 alone
        return socket.create_server(("", self.port), family=socket.AF_INET, backlog=64)

    def _dial(self, master: str, deadline: Deadline) -> socket.socket | None:
        address = host_of(master)
        try:
            sock = socket.create_connection((address, self.port),
                                            timeout=max(0.1, deadline.remaining(_CONNECT_ATTEMPT)))
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                return None
            raise self.error(f"{self._what()}: the master's address {address!r} does not "
                             f"resolve: {exc.strerror or exc}") from None
        except TimeoutError:
            return None
        except OSError as exc:
            if exc.errno in _NOT_YET:
                return None
            raise self.error(f"{self._what()}: cannot connect to the master {master} "
                             f"({address} port {self.port}): {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
