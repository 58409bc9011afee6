"""paramiko transports read by the threads that wait on them, not by a thread each.

Why: paramiko gives every :class:`paramiko.Transport` a thread that reads its socket and
wakes the thread waiting for the packet.  In a fan-out of one worker thread per machine
that is two threads per machine handing CPython's GIL to each other for every packet;
``perf`` put 30,000 of 42,000 context switches of 250 raw paramiko connections in the
GIL.  A :class:`PumpedTransport` has no thread of its own: a thread that waits on it
(for the handshake, an auth reply, a channel, a command's output) reads the socket itself
and hands each packet to paramiko's own handlers, as ``Transport.run`` does.  Measured
(2026-12-07, 250 netns hosts, ``uname -a`` each, raw paramiko, 3 interleaved trials):
1.29-1.56 s of CPU and 47,000-59,000 switches with paramiko's threads, 0.81-0.99 s and
12,000-18,000 pumped, asyncssh 1.03-1.42 s; wall 3.11-3.42 s pumped, 3.43-3.90 s asyncssh.
Inside autoserv (the thread worker model, ``bench/uname.control``, interleaved runs with
and without it): 250 machines, 5 pairs, median CPU 2.30 against 2.44 s, 21,000 against
34,000 context switches, the same wall time (4.79 against 4.86 s; asyncssh 4.12 s);
1000 machines, 3 pairs, median wall 17.8 against 20.1 s (asyncssh 17.3 s), CPU 8.1
against 8.7 s.  What the job costs around each connection stays (see autoserv.workers).

Who reads a pumped transport, at every moment (so that nothing waits for a packet no
one reads):

* a thread inside :func:`driving` for it, while it waits on paramiko (its ``Event`` and
  ``Condition`` waits pump the transport; see :func:`install`).  Two such threads
  take turns through the transport's pump lock: the one that reads dispatches packets
  for both.  autoserv drives a connection only around its own waits (handshake,
  authentication, opening a channel, an exec request, a command's output, a keepalive's
  answer).  A command's output is teed while its thread drives the connection: when that
  blocks (a stalled reader of autoserv's stdout), the keepalive watchdog, which drives the
  connection while it waits for its answer, still reads it;
* otherwise the idle reader: one thread per process that waits on every transport no
  thread is driving with one ``epoll``, and handles what arrives (answers to keepalives,
  data for a thread that waits without :func:`driving`: file transfers, a transport
  tunnelled through a channel of this one, code using paramiko directly).  In a fan-out
  it is rarely woken.

Relies on paramiko's internals, each checked by tests/test_paramiko_pump.py: the read
loop's dispatch (``_expected_packet``, ``_handler_table``, ``_channel_handler_table``,
``auth_handler._handler_table``, ``kex_engine.parse_next``, ``_check_banner``,
``_send_kex_init``, ``_expect_packet``, ``_enforce_strict_kex``, ``_parse_disconnect``,
``_parse_debug``, ``_ensure_authed``), its end (``completion_event``,
``channel_events``, ``Channel._unlink``), the packetizer (``read_message``, its banner
remainder ``_Packetizer__remainder``, ``need_rekey``, ``handshake_timed_out``), and the
modules whose ``threading.Event``/``threading.Condition`` it replaces.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import paramiko
import paramiko.auth_handler
import paramiko.buffered_pipe
import paramiko.channel
import paramiko.transport
from paramiko.common import (
    MSG_DEBUG,
    MSG_DISCONNECT,
    MSG_IGNORE,
    MSG_KEXINIT,
    MSG_UNIMPLEMENTED,
    cMSG_UNIMPLEMENTED,
)
from paramiko.packet import NeedRekeyException

__all__ = ["Event", "PumpedTransport", "driving", "install", "pump_wait", "reset_in_child"]

#: The longest a waiting thread reads before it looks at its own clock again (s).
SLICE = 0.1
#: How long a thread waits for another that is reading the same transport (s).
TURN = 0.02

_local = threading.local()


def _driven() -> PumpedTransport | None:
    """The transport this thread drives now (innermost :func:`driving`), unless it is in
    the middle of handling a packet (see :class:`_PumpEvent`)."""
    stack: list[PumpedTransport | None] | None = getattr(_local, "stack", None)
    if not stack or _pumping() is not None:
        return None
    return stack[-1]


def _pumping() -> PumpedTransport | None:
    """The transport whose packet this thread is handling now (it holds its pump lock)."""
    return getattr(_local, "pumping", None)


@contextlib.contextmanager
def driving(t: Any) -> Iterator[None]:
    """While inside, this thread's waits on paramiko read ``t`` (a no-op for transports
    that are not :class:`PumpedTransport`).  ``driving(None)``: while inside, they read
    nothing (a wait under a lock that a packet's handler would take)."""
    if t is not None and not isinstance(t, PumpedTransport):
        yield
        return
    stack: list[PumpedTransport | None] = _local.__dict__.setdefault("stack", [])
    stack.append(t)
    if t is not None:
        _IDLE.claim(t)
    try:
        yield
    finally:
        stack.pop()
        if t is not None:
            _IDLE.release(t)


class _PumpEvent(threading.Event):
    """paramiko's ``threading.Event``: a wait inside :func:`driving` reads the transport.

    So does a wait inside a packet's handler, on the transport being read: paramiko answers
    a channel's CLOSE from the handler with ``_send_user_message``, which waits for a key
    exchange in progress to end, and only reading on ends it.  (paramiko's own reader
    thread waits there for the 30-s ``clear_to_send_timeout`` and then fails the
    connection: seen with keys renegotiated every 200 kB, tests/test_paramiko_pump.py.)
    """

    def wait(self, timeout: float | None = None) -> bool:
        if self.is_set():
            return True
        inner = _pumping()
        if inner is not None:
            return self._read_until_set(inner, timeout, nested=True)
        t = _driven()
        if t is None:
            return super().wait(timeout)
        return self._read_until_set(t, timeout)

    def _read_until_set(self, t: PumpedTransport, timeout: float | None,
                        nested: bool = False) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = SLICE if end is None else min(SLICE, end - time.monotonic())
            if left <= 0:
                return False
            if not t.is_active():
                return super().wait(None if end is None else end - time.monotonic())
            if nested:
                t._pump(left)  # (this thread holds the pump lock already)
            elif not t.pump_once(left):
                super().wait(min(left, TURN))  # another thread reads: it sets us
        return True


class _PumpCondition(threading.Condition):
    """paramiko's ``threading.Condition``: a wait inside :func:`driving` reads the transport
    (with the condition's lock released, as a wait does); its callers loop on their
    predicate, so returning after one read is a wake-up like any other."""

    def wait(self, timeout: float | None = None) -> bool:
        t = _driven()
        if t is None:
            return super().wait(timeout)
        left = SLICE if timeout is None else min(SLICE, timeout)
        if left <= 0 or not t.is_active():
            return super().wait(timeout)
        self.release()
        try:
            read = t.pump_once(left)
        finally:
            self.acquire()
        if not read:
            super().wait(min(left, TURN))
        return True


#: An event whose wait inside :func:`driving` reads the transport (for waits of autoserv's own).
Event = _PumpEvent


def install() -> None:
    """Give paramiko's transport, channel, buffered-pipe and auth modules the events and
    conditions above (idempotent).  Outside :func:`driving` they behave as threading's."""
    for mod in (paramiko.transport, paramiko.channel, paramiko.buffered_pipe,
                paramiko.auth_handler):
        current = mod.threading  # type: ignore[attr-defined]
        if getattr(current, "_autoserv_pump", False):
            continue
        shim = types.ModuleType("threading")
        shim.__dict__.update({k: v for k, v in vars(threading).items() if not k.startswith("__")})
        shim.Event = _PumpEvent  # type: ignore[attr-defined]
        shim.Condition = _PumpCondition  # type: ignore[attr-defined]
        shim._autoserv_pump = True  # type: ignore[attr-defined]
        mod.threading = shim  # type: ignore[attr-defined]


class PumpedTransport(paramiko.Transport):
    """A client transport with no thread of its own (see the module's docstring).

    Only for a transport over a real socket; :meth:`start_client` is called inside
    :func:`driving` (or the idle reader does the handshake, slowly).
    """

    def __init__(self, sock: socket.socket, **kwargs: Any) -> None:
        super().__init__(sock, **kwargs)
        self._pump_lock = threading.Lock()
        self._banner_done = False
        self._poller: Any = None  # set by start()
        # the idle reader's view of this transport (its lock is this transport's alone)
        self._idle_lock = threading.Lock()
        self._idle_fd: int | None = None  # watched by the idle reader (while not closed)
        self._idle_claims = 0  # threads driving it now
        self._idle_registered = False  # in the idle reader's epoll (armed, or fired once)

    # -- the thread paramiko would start ------------------------------------------
    def start(self) -> None:
        """Instead of starting a thread: send our banner; readers do the rest.

        The socket becomes blocking, and readers ``poll`` it themselves: a socket with a
        timeout makes Python ``poll`` before every send and receive, and each change of
        timeout is two ``fcntl`` calls, every one of them a hand-over of the GIL in a
        fan-out of threads.  Nothing here blocks on it without a ``poll`` first but the
        rest of a packet whose start has arrived, and sends (as paramiko's own do).
        """
        self.sock.settimeout(None)
        self._poller = select.poll()
        self._poller.register(self.sock.fileno(), select.POLLIN)
        self.packetizer.write_all((self.local_version + "\r\n").encode())
        _IDLE.add(self)

    def is_alive(self) -> bool:
        """No thread to join (paramiko's ``stop_thread`` and our close ask)."""
        return False

    def close(self) -> None:
        """Close: wake whoever reads (the socket is shut down), then end every wait and
        close the descriptor while no one reads it (its number may be reused at once)."""
        if not self.is_active():
            return
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        mine = _pumping() is self  # closed by a handler: we hold the lock
        got = not mine and self._pump_lock.acquire(timeout=1.0)
        try:
            self._end(None)
            self.sock.close()
        finally:
            if got:
                self._pump_lock.release()

    # -- reading ---------------------------------------------------------------------
    def pump_once(self, timeout: float) -> bool:
        """Read for at most ``timeout`` s and handle every packet that came; False when
        another thread is reading (the caller waits its turn)."""
        if not self._pump_lock.acquire(blocking=False):
            return False
        _local.pumping = self
        try:
            self._pump(timeout)
        except BaseException:
            # an abort raised into this thread (a job's SIGTERM, a worker's timeout) may cut
            # a packet in two: the stream cannot go on, and the next use reconnects (as the
            # abort path's kill of the remote command does)
            self._end(EOFError("connection abandoned: an abort interrupted its reading"))
            raise
        finally:
            _local.pumping = None
            self._pump_lock.release()
        return True

    def _pump(self, timeout: float) -> None:
        me: Any = self  # paramiko's internals (see the module's docstring)
        if not me.active or me._poller is None:
            return
        pk = me.packetizer
        try:
            if not me._banner_done:
                if not me._banner_complete():
                    if not me._recv(timeout) or not me._banner_complete():
                        return
                me._check_banner()
                me._banner_done = True
                pk.start_handshake(me.handshake_timeout)
                me._send_kex_init()
                me._expect_packet(MSG_KEXINIT)
            elif not pk._Packetizer__remainder and not me._recv(timeout):
                return
            while me.active and pk._Packetizer__remainder:
                if pk.need_rekey() and not me.in_kex:
                    me._send_kex_init()
                try:
                    ptype, m = pk.read_message()
                except NeedRekeyException:
                    continue
                if not me._dispatch(ptype, m):
                    me._end(None)
                    return
        except Exception as exc:  # the end of the connection, as in Transport.run
            if not isinstance(exc, (EOFError, OSError)):
                me._log(logging.ERROR, f"Exception (client): {exc}")
            me._end(exc)

    def _recv(self, timeout: float) -> bool:
        """Read what arrived into the packetizer's buffer; False when nothing did."""
        if not self._poller.poll(max(0, int(timeout * 1000 + 0.999))):
            if self.packetizer.handshake_timed_out():
                raise EOFError("handshake timed out")
            return False
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed by the server")
        self.packetizer._Packetizer__remainder += data  # type: ignore[attr-defined]
        return True

    def _banner_complete(self) -> bool:
        """Whether paramiko's banner check can run without reading the socket: a whole
        ``SSH-`` line arrived (or enough other lines for it to give up on)."""
        buf: bytes = self.packetizer._Packetizer__remainder  # type: ignore[attr-defined]
        lines = buf.split(b"\n")[:-1]
        return any(line.startswith(b"SSH-") for line in lines) or len(lines) >= 100

    def _dispatch(self, ptype: int, m: paramiko.Message) -> bool:
        """One packet, as ``Transport.run`` handles it; False ends the connection."""
        me: Any = self
        if ptype == MSG_IGNORE:
            me._enforce_strict_kex(ptype)
            return True
        if ptype == MSG_DISCONNECT:
            me._parse_disconnect(m)
            return False
        if ptype == MSG_DEBUG:
            me._enforce_strict_kex(ptype)
            me._parse_debug(m)
            return True
        expected = me._expected_packet
        if expected:
            if ptype not in expected:
                exc_class = (paramiko.ssh_exception.MessageOrderError
                             if me.agreed_on_strict_kex else paramiko.SSHException)
                raise exc_class(f"Expecting packet from {expected!r}, got {ptype:d}")
            me._expected_packet = ()
            if 30 <= ptype <= 41:
                me.kex_engine.parse_next(ptype, m)
                return True
        if ptype in me._handler_table:
            error_msg = me._ensure_authed(ptype, m)
            if error_msg:
                me._send_message(error_msg)
            else:
                me._handler_table[ptype](m)
        elif ptype in me._channel_handler_table:
            chanid = m.get_int()
            chan = me._channels.get(chanid)
            if chan is not None:
                me._channel_handler_table[ptype](chan, m)
            elif chanid not in me.channels_seen:
                me._log(logging.ERROR, f"Channel request for unknown channel {chanid:d}")
                return False
        elif me.auth_handler is not None and ptype in me.auth_handler._handler_table:
            me.auth_handler._handler_table[ptype](m)
            if me._expected_packet:
                return True
        elif ptype != MSG_UNIMPLEMENTED:
            msg = paramiko.Message()
            msg.add_byte(cMSG_UNIMPLEMENTED)
            msg.add_int(m.seqno)
            me._send_message(msg)
        me.packetizer.complete_handshake()
        return True

    def _end(self, exc: BaseException | None) -> None:
        """The connection is over: every wait on it ends (as at the end of ``Transport.run``)."""
        me: Any = self
        if exc is not None and me.saved_exception is None:
            me.saved_exception = exc
        _IDLE.remove(me)
        for chan in list(me._channels.values()):
            chan._unlink()
        if me.active:
            me.active = False
            me.packetizer.close()
            if me.completion_event is not None:
                me.completion_event.set()
            if me.auth_handler is not None:
                me.auth_handler.abort()
            for event in me.channel_events.values():
                event.set()


class _IdleReader:
    """Reads the pumped transports no thread is driving (one thread, one ``epoll``).

    A thread that drives a transport claims it (its descriptor leaves the ``epoll``) and
    releases it after (the descriptor is armed again, one-shot).  Claims and releases are a
    worker's every wait, several per command: they take the transport's own lock, never
    one shared by every connection (a shared lock held across the ``epoll_ctl`` call, which
    hands the GIL over, made the fan-out's threads queue on it).
    """

    def __init__(self) -> None:
        self.reset_in_child()

    def reset_in_child(self) -> None:
        """Start afresh (a forked worker has no thread and none of the parent's transports)."""
        self._lock = threading.Lock()  # the epoll, the thread and _fds
        self._epoll: select.epoll | None = None
        self._fds: dict[int, PumpedTransport] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def _ensure(self) -> select.epoll:
        if self._epoll is None or self._pid != os.getpid():
            self.reset_in_child()
            self._epoll = select.epoll()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="autoserv-ssh-idle-reader")
            self._thread.start()
        return self._epoll

    def add(self, t: PumpedTransport) -> None:
        """Watch ``t`` whenever no thread drives it."""
        with self._lock:
            ep = self._ensure()
            fd = t.sock.fileno()
            self._fds[fd] = t
        with t._idle_lock:
            t._idle_fd = fd
            if not t._idle_claims:
                self._arm(ep, t)

    def remove(self, t: PumpedTransport) -> None:
        with self._lock:
            ep = self._epoll
            fd = t._idle_fd
            if fd is not None and self._fds.get(fd) is t:
                del self._fds[fd]
        with t._idle_lock:
            t._idle_fd = None
            if t._idle_registered and ep is not None and fd is not None:
                with contextlib.suppress(OSError, ValueError):
                    ep.unregister(fd)
            t._idle_registered = False

    def claim(self, t: PumpedTransport) -> None:
        with t._idle_lock:
            t._idle_claims += 1
            if t._idle_claims == 1 and t._idle_registered:
                t._idle_registered = False
                ep, fd = self._epoll, t._idle_fd
                if ep is not None and fd is not None:
                    with contextlib.suppress(OSError, ValueError):
                        ep.unregister(fd)

    def release(self, t: PumpedTransport) -> None:
        with t._idle_lock:
            t._idle_claims = max(0, t._idle_claims - 1)
            if not t._idle_claims and self._epoll is not None and t.is_active():
                self._arm(self._epoll, t)

    @staticmethod
    def _arm(ep: select.epoll, t: PumpedTransport) -> None:
        """Arm ``t``'s descriptor for one event (under ``t._idle_lock``)."""
        fd = t._idle_fd
        if fd is None:
            return
        mask = select.EPOLLIN | select.EPOLLONESHOT
        try:
            if t._idle_registered:
                ep.modify(fd, mask)
            else:
                ep.register(fd, mask)
        except FileExistsError:  # (registered after all)
            with contextlib.suppress(OSError, ValueError):
                ep.modify(fd, mask)
        except FileNotFoundError:  # (left the epoll with its descriptor's last close)
            with contextlib.suppress(OSError, ValueError):
                ep.register(fd, mask)
        except (OSError, ValueError):
            return  # closed under us
        t._idle_registered = True

    def _run(self) -> None:
        ep = self._epoll
        assert ep is not None
        while True:
            try:
                ready = ep.poll(1.0)
            except InterruptedError:
                continue
            except (OSError, ValueError):
                return  # closed (a forked child's copy)
            for fd, _ in ready:
                t = self._fds.get(fd)
                if t is None:
                    continue
                if not t.pump_once(0.0):
                    time.sleep(TURN)  # a thread reads it now; look again
                with t._idle_lock:
                    # fired once: armed again unless a thread drives it now (its claim
                    # took it out) or it closed
                    if t._idle_registered and not t._idle_claims and t.is_active():
                        self._arm(ep, t)


_IDLE = _IdleReader()


def reset_in_child() -> None:
    """Forget the parent's idle reader in a forked child."""
    _IDLE.reset_in_child()


def pump_wait(t: Any, timeout: float, fallback: Callable[[float], None]) -> None:
    """Wait at most ``timeout`` s for news on ``t``: read it when this thread drives it,
    else ``fallback(timeout)`` (a ``poll`` on a channel, which another reader wakes)."""
    if isinstance(t, PumpedTransport) and _driven() is t and t.is_active():
        if not t.pump_once(min(timeout, SLICE)):
            time.sleep(min(timeout, TURN))  # another thread reads it: look again soon
        return
    fallback(timeout)
