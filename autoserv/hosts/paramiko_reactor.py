# mypy: disable-error-code="attr-defined"
# (this module is made of paramiko's private names; tests/test_paramiko_reactor.py checks each)
"""paramiko transports read by one I/O thread per process, not by a thread each.

paramiko gives every :class:`paramiko.Transport` its own thread, which reads the socket
and handles each packet.  A fan-out of N machines so runs 2N Python threads (the
transports' and the workers'), and each packet hands the GIL from one to another.  On 2
cores the handoffs cost more than the work: at 250 machines raw paramiko in threads made
60,000-74,000 context switches and spent 0.5-0.7 s in the kernel, against asyncssh's
1,600-2,900 and 0.2 s, for the same user CPU (``perf stat``; ``perf record -e
sched:sched_switch`` put 30,000 of 42,000 switches in CPython's GIL mutex and condition
variable).

Here one daemon thread, the reactor, waits on all sockets with one ``epoll`` and handles
each complete packet with paramiko's own handlers, as ``Transport.run`` does; workers
still send from their own threads and wait on paramiko's events.  Same bench, same
run, 250 machines (three trials each, interleaved): this prototype 0.94-1.00 s of CPU,
20,000 switches, 3.2-3.4 s of wall time; asyncssh 1.01-1.29 s and 3.4-4.1 s; paramiko's
threads 1.30-1.60 s and 3.4-4.0 s.

How a packet is known to be complete without blocking: its length is in clear before
the first ``NEWKEYS``, with an AEAD cipher (AES-GCM) and with an encrypt-then-MAC mode.
With any other cipher the reactor decrypts the first block itself to read the length and
hands that block's plain text to paramiko's ``read_message``, which then asks the cipher
for it again (:class:`_FirstBlock`).  Only complete packets go to ``read_message``,
so it never reads the socket and never waits.

What stays in threads: transports whose socket is a channel of another transport
(ProxyJump, a guest reached through its host) — paramiko's own thread reads them — and
every transport when ``AUTOSERV_SSH_IO=threads`` is set (paramiko's own model, for
comparison or as a way out).

A known limit: the reactor sends paramiko's replies (key re-exchange, global requests)
on the thread that reads; if a worker is blocked in sending to a host whose network
stalled, a reply to that same host waits for the send, and the other hosts' packets wait
with it until the send ends or the connection is closed (its deadline, keepalives).

Every private name of paramiko used here is checked by ``tests/test_paramiko_reactor.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import struct
import threading
import time
from typing import Any

import paramiko
from paramiko.common import (
    DEBUG,
    ERROR,
    MSG_DEBUG,
    MSG_DISCONNECT,
    MSG_IGNORE,
    MSG_KEXINIT,
    MSG_UNIMPLEMENTED,
    cMSG_UNIMPLEMENTED,
)
from paramiko.message import Message
from paramiko.packet import NeedRekeyException
from paramiko.ssh_exception import MessageOrderError

__all__ = ["ReactorTransport", "ENABLED", "reset_in_child", "SWEEP"]

log = logging.getLogger("autoserv.hosts.ssh")

#: How often the reactor looks at every transport for a key re-exchange that sending asked for.
SWEEP = 1.0
#: The most a server may send before its SSH banner line (RFC 4253 allows lines before it).
_BANNER_MAX = 64 * 1024
_RECV = 256 * 1024


#: Whether new direct connections are read by the reactor: ``AUTOSERV_SSH_IO`` unset or
#: ``reactor``; ``threads`` gives paramiko's own thread per transport.  Read once, at import.
ENABLED = os.environ.get("AUTOSERV_SSH_IO", "reactor") != "threads"


class _FirstBlock:
    """A transport's inbound cipher that hands out, once, a first block decrypted in advance.

    The reactor decrypts a packet's first block to learn its length; paramiko's
    ``read_message`` then asks the cipher for the same block and gets the same plain text.
    """

    __slots__ = ("engine", "cipher_text", "plain")

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.cipher_text: bytes | None = None
        self.plain = b""

    def peek(self, block: bytes) -> bytes:
        if self.cipher_text is None:
            self.plain = self.engine.update(block)
            self.cipher_text = block
        return self.plain

    def update(self, data: bytes) -> bytes:
        if self.cipher_text is not None:
            if data != self.cipher_text:  # never: read_message reads what was peeked
                raise paramiko.SSHException("reactor: first block changed under the cipher")
            self.cipher_text = None
            return self.plain
        return bytes(self.engine.update(data))

    def __getattr__(self, name: str) -> Any:  # an AEAD engine's ``decrypt``, ``finalize``
        return getattr(self.engine, name)


class ReactorTransport(paramiko.Transport):
    """A client :class:`paramiko.Transport` whose packets the process's reactor reads.

    Used as paramiko's own: ``start_client``, ``auth_*``, ``open_session``, ``close``.
    It never starts its thread, so ``is_alive()`` is always False; ``is_active()`` says
    whether the connection is up.
    """

    def __init__(self, sock: socket.socket, **kwargs: Any) -> None:
        super().__init__(sock, **kwargs)
        self._banner_seen = False
        self._registered = False
        self._finished = False
        self._reactor: _Reactor | None = None
        pk = self.packetizer
        original: Any = pk.set_inbound_cipher

        def set_inbound_cipher(block_engine: Any, *args: Any, **kw: Any) -> None:
            original(_FirstBlock(block_engine) if block_engine is not None else None, *args, **kw)

        pk.set_inbound_cipher = set_inbound_cipher  # type: ignore[method-assign]

    # -- the caller's side ---------------------------------------------------------------

    def start_client(self, event: threading.Event | None = None,
                     timeout: float | None = None) -> None:
        """paramiko's ``start_client``, with the reactor reading instead of a new thread."""
        self.active = True
        self.completion_event = done = event if event is not None else threading.Event()
        self.packetizer.write_all((self.local_version + "\r\n").encode())
        self._reactor = _reactor()
        self._reactor.add(self)
        if event is not None:
            return
        max_time = time.monotonic() + timeout if timeout is not None else None
        while True:
            done.wait(0.1 if max_time is None else max(0.0, min(0.1, max_time - time.monotonic())))
            if not self.active:
                e = self.get_exception()
                if e is not None:
                    raise e
                raise paramiko.SSHException("Negotiation failed.")
            if done.is_set() or (max_time is not None and time.monotonic() >= max_time):
                break

    def close(self) -> None:
        """End the connection: the socket is shut down at once, released by the reactor."""
        if self._finished:
            return
        self.active = False
        for chan in list(self._channels.values()):
            chan._unlink()
        if not self._registered or self._reactor is None:
            self._finish()
            return
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # the reactor reads EOF and finishes it
        self._reactor.drop(self)

    # -- the reactor's side --------------------------------------------------------------

    def _on_readable(self) -> bool:
        """Take what arrived and handle every complete packet; False once the transport ended."""
        try:
            data = self.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return True
        except OSError as e:
            self.saved_exception = e
            return False
        if not data:
            if self.saved_exception is None and self.active:
                self.saved_exception = EOFError()
            return False
        pk = self.packetizer
        pk._Packetizer__remainder += data
        try:
            if not self._banner_seen:
                if not self._banner_complete():
                    return True
                self._check_banner()  # reads only whole lines already here: never waits
                self._banner_seen = True
                pk.start_handshake(self.handshake_timeout)
                self._send_kex_init()
                self._expect_packet(MSG_KEXINIT)
            while self.active and self._packet_complete():
                if pk.need_rekey() and not self.in_kex:
                    self._send_kex_init()
                try:
                    ptype, m = pk.read_message()
                except NeedRekeyException:
                    continue
                if not self._handle(ptype, m):
                    return False
        except EOFError as e:
            self.saved_exception = e
            return False
        except Exception as e:  # paramiko's run() ends the transport on any error, and says why
            self._log(ERROR, f"Exception (client): {e}")
            self.saved_exception = e
            return False
        return self.active

    def _banner_complete(self) -> bool:
        buf: bytes = self.packetizer._Packetizer__remainder
        lines = buf.split(b"\n")[:-1]  # the whole lines
        if any(line.startswith(b"SSH-") for line in lines):
            return True
        if len(lines) >= 100 or len(buf) > _BANNER_MAX:
            raise paramiko.SSHException("Indecipherable protocol version: no SSH banner line")
        return False

    def _packet_complete(self) -> bool:
        """Whether the buffer holds a whole packet (its length read without consuming it)."""
        pk = self.packetizer
        buf: bytes = pk._Packetizer__remainder
        engine = pk._Packetizer__block_engine_in
        clear = (engine is None or pk._Packetizer__etm_in
                 or pk._Packetizer__aead_in)
        if clear:
            if len(buf) < 4:
                return False
            head = buf[:4]
        else:
            block = pk._Packetizer__block_size_in
            if len(buf) < block:
                return False
            head = engine.peek(buf[:block])
        size = struct.unpack(">I", head[:4])[0]
        return len(buf) >= 4 + size + pk._Packetizer__mac_size_in

    def _handle(self, ptype: int, m: Message) -> bool:
        """One packet, dispatched as paramiko's ``Transport.run`` does; False ends the transport."""
        t: Any = self  # paramiko's dispatch state, untyped in its stubs
        if ptype == MSG_IGNORE:
            t._enforce_strict_kex(ptype)
            return True
        if ptype == MSG_DISCONNECT:
            t._parse_disconnect(m)
            return False
        if ptype == MSG_DEBUG:
            t._enforce_strict_kex(ptype)
            t._parse_debug(m)
            return True
        if len(t._expected_packet) > 0:
            if ptype not in t._expected_packet:
                exc = MessageOrderError if t.agreed_on_strict_kex else paramiko.SSHException
                raise exc(f"Expecting packet from {t._expected_packet!r}, got {ptype:d}")
            t._expected_packet = ()
            if 30 <= ptype <= 41:  # key exchange messages, by kex algorithm
                t.kex_engine.parse_next(ptype, m)
                return True
        if ptype in t._handler_table:
            error_msg = t._ensure_authed(ptype, m)
            if error_msg:
                t._send_message(error_msg)
            else:
                t._handler_table[ptype](m)
        elif ptype in t._channel_handler_table:
            chanid = m.get_int()
            chan = t._channels.get(chanid)
            if chan is not None:
                t._channel_handler_table[ptype](chan, m)
            elif chanid in t.channels_seen:
                t._log(DEBUG, f"Ignoring message for dead channel {chanid:d}")
            else:
                t._log(ERROR, f"Channel request for unknown channel {chanid:d}")
                return False
        elif t.auth_handler is not None and ptype in t.auth_handler._handler_table:
            t.auth_handler._handler_table[ptype](m)
            if len(t._expected_packet) > 0:
                return True
        else:
            t._log(DEBUG, f"unhandled packet type {ptype}")
            if ptype != MSG_UNIMPLEMENTED:
                msg = Message()
                msg.add_byte(cMSG_UNIMPLEMENTED)
                msg.add_int(m.seqno)
                t._send_message(msg)
        t.packetizer.complete_handshake()
        return True

    def _sweep(self) -> None:
        """A key re-exchange that sending asked for (paramiko's thread checks at each read)."""
        if self.active and self._banner_seen and self.packetizer.need_rekey() and not self.in_kex:
            self._send_kex_init()

    def _finish(self) -> None:
        """What ``Transport.run`` does when it ends: everyone waiting is woken, the socket closed."""
        if self._finished:
            return
        self._finished = True
        for chan in list(self._channels.values()):
            chan._unlink()
        self.packetizer.close()  # closes the socket
        if self.active:
            self.active = False
            if self.completion_event is not None:
                self.completion_event.set()
            if self.auth_handler is not None:
                self.auth_handler.abort()
            for event in self.channel_events.values():
                event.set()
            with self.lock:
                self.server_accept_cv.notify()
        with contextlib.suppress(OSError):
            self.sock.close()


class _Reactor:
    """One thread that reads every registered transport's socket."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._added: list[ReactorTransport] = []
        self._dropped: list[ReactorTransport] = []
        self._live: set[ReactorTransport] = set()
        self._thread = threading.Thread(target=self._run, name="autoserv-ssh-reactor", daemon=True)
        self._thread.start()

    def add(self, t: ReactorTransport) -> None:
        t._registered = True
        with self._lock:
            self._added.append(t)
        self._wake()

    def drop(self, t: ReactorTransport) -> None:
        if threading.current_thread() is self._thread:
            self._end(t)
            return
        with self._lock:
            self._dropped.append(t)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def _end(self, t: ReactorTransport) -> None:
        if t in self._live:
            self._live.discard(t)
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(t.sock)
        try:
            t._finish()
        except Exception:  # one transport's cleanup never stops the others'
            log.debug("reactor: closing a transport failed", exc_info=True)

    def _take_queues(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_r.recv(4096)
        with self._lock:
            added, self._added = self._added, []
            dropped, self._dropped = self._dropped, []
        for t in added:
            if t._finished:
                continue
            try:
                self._selector.register(t.sock, selectors.EVENT_READ, t)
            except (KeyError, ValueError, OSError) as e:
                t.saved_exception = e
                t._finish()
                continue
            self._live.add(t)
        for t in dropped:
            self._end(t)

    def _run(self) -> None:
        next_sweep = time.monotonic() + SWEEP
        while True:
            try:
                events = self._selector.select(SWEEP)
            except OSError:  # a descriptor closed under us: drop what the queues say, go on
                events = []
            for key, _ in events:
                t = key.data
                if t is None:
                    self._take_queues()
                    continue
                if t not in self._live:
                    continue
                try:
                    alive = t._on_readable()
                except Exception:
                    log.debug("reactor: reading a transport failed", exc_info=True)
                    alive = False
                if not alive:
                    self._end(t)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + SWEEP
                for t in list(self._live):
                    try:
                        t._sweep()
                    except Exception as e:
                        t.saved_exception = e
                        self._end(t)


_lock = threading.Lock()
_instance: _Reactor | None = None


def _reactor() -> _Reactor:
    global _instance
    with _lock:
        if _instance is None:
            _instance = _Reactor()
        return _instance


def reset_in_child() -> None:
    """A forked worker: the parent's reactor thread is not here; the next connection starts one."""
    global _instance, _lock
    _lock = threading.Lock()
    if _instance is not None:
        with contextlib.suppress(OSError):
            _instance._selector.close()  # the child's copy of the epoll descriptor
            _instance._wake_r.close()
            _instance._wake_w.close()
    _instance = None
