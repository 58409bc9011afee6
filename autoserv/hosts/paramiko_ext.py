"""Every use of paramiko's private or undocumented internals, each behind one function.

autoserv needs things paramiko's public API does not give; each function
here says why, and ``tests/test_paramiko_ext.py`` fails when a paramiko
release changes what it relies on (setup.py pins paramiko below 6 so a major
release is checked first).  No other module touches paramiko's private names but
:mod:`autoserv.hosts.paramiko_pump`, which repeats paramiko's read loop (its tests check
that loop the same way).

* :func:`install_getuser_cache` — replaces :mod:`getpass` inside
  :mod:`paramiko.config` (the local user name asked once, not per ``Host`` block).
* :func:`install_fqdn_cache` — replaces ``paramiko.config.LazyFqdn`` (the local FQDN,
  for ``%l``) with one that asks the resolver once per process.
* :func:`install_fast_mac_check` — ``paramiko.util.constant_time_bytes_eq``, which
  :mod:`paramiko.packet` checks every packet's MAC with, done by :func:`hmac.compare_digest`.
* :func:`install_exit_signal_handler` / :func:`exit_signal` — RFC 4254
  ``exit-signal`` requests, which paramiko drops (``Transport._channel_handler_table``,
  ``Channel._handle_request``).
* :func:`send_eof` — EOF sent under the channel's ``lock`` (``Channel._send_eof``,
  ``Transport.clear_to_send``, ``clear_to_send_lock``, ``_send_message``), ordered before
  our CLOSE, after a key exchange in progress was waited out holding no lock.
* :func:`send_exec` / :func:`send_subsystem` — an ``exec`` or ``subsystem`` request
  whose reply is awaited with a bound (``Channel._event_pending``, ``Channel.event``,
  ``Channel.event_ready``).
* :class:`StallGuard` — the channel an :class:`paramiko.SFTPClient` talks through, whose
  first timed-out wait closes it (``BaseSFTP`` waits only in its socket's ``recv``/``send``).
* :func:`ping` — a keepalive global request that expects an answer, awaited
  with a bound (``Transport.completion_event``, ``Transport._send_user_message``).
* :func:`install_handshake_clock` — the handshake timeout kept as a deadline the
  transport's own read loop checks, not a ``threading.Timer`` thread per connection
  (``Packetizer.start_handshake``, ``handshake_timed_out``, ``complete_handshake``).
* :func:`close_now` — a transport closed so that its thread ends at once (the socket shut
  down first: the thread waits in ``poll`` on it, up to :data:`IDLE_POLL` s).
* :func:`set_idle_poll` — a transport's thread wakes every 2 s instead of
  paramiko's 0.1 s when idle (``Transport._active_check_timeout``, the socket
  timeout its read loop checks ``active`` on).
* :func:`config_lookup` — ``SSHConfig.lookup`` trying only the blocks that can apply
  to the name (``SSHConfig._config``, the parsed blocks in file order);
  :func:`config_identity_files` — the key files a config names, from the same blocks;
  :func:`enable_match_exec` — ``invoke`` (loaded only for a config with ``Match exec``).
* :func:`dropped_before_banner` — tells a server that closed or reset the
  connection before its SSH banner (sshd's ``MaxStartups``) from every other
  handshake failure (the ``__context__`` of paramiko's banner error).

What autoserv associates with paramiko objects (the exit signal of a channel)
lives in a weak dictionary here, never as attributes added to them.
"""

from __future__ import annotations

import contextlib
import getpass
import hmac
import importlib
import os
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import paramiko

from autoserv.hosts import paramiko_pump

__all__ = [
    "install_getuser_cache",
    "install_fqdn_cache",
    "install_fast_mac_check",
    "install_exit_signal_handler",
    "install_handshake_clock",
    "close_now",
    "exit_signal",
    "exit_signal_number",
    "send_eof",
    "send_exec",
    "send_subsystem",
    "StallGuard",
    "ping",
    "config_lookup",
    "config_identity_files",
    "enable_match_exec",
]

_A = TypeVar("_A")
_R = TypeVar("_R")

#: channel -> the signal name of its RFC 4254 exit-signal (e.g. "KILL")
_exit_signals: weakref.WeakKeyDictionary[paramiko.Channel, str] = weakref.WeakKeyDictionary()


class _OnceGetpass:
    """Stands in for :mod:`getpass` inside :mod:`paramiko.config`: ``getuser()`` asked once."""

    def __init__(self) -> None:
        self._user: str | None = None

    def getuser(self) -> str:
        if self._user is None:
            self._user = getpass.getuser()
        return self._user


def install_getuser_cache() -> None:
    """Make :mod:`paramiko.config` ask the local user name once per process.

    Why: paramiko's config lookup calls ``getpass.getuser()`` (environment,
    then the passwd database) for every ``Host`` block it tries, twice per
    lookup: with 50 hosts in the config that was ~2.5 ms of CPU per
    connection, paid again by every forked ``parallel_simple`` worker.  The
    local user name does not change while a process runs.  Relies on
    ``paramiko.config`` importing the module ``getpass`` under that name and
    calling only ``getpass.getuser``.  Idempotent.
    """
    if not isinstance(paramiko.config.getpass, _OnceGetpass):  # type: ignore[attr-defined]
        paramiko.config.getpass = _OnceGetpass()  # type: ignore[attr-defined]


#: (host name, AddressFamily) -> this machine's FQDN, as paramiko's LazyFqdn found it
_fqdns: dict[tuple[str | None, str], str] = {}
_fqdn_lookups: dict[tuple[str | None, str], threading.Lock] = {}  # held while one is looked up
_fqdns_lock = threading.Lock()


class _OnceFqdn(paramiko.config.LazyFqdn):  # type: ignore[misc]
    """paramiko's lazy ``%l`` (local FQDN) value, looked up once per process."""

    def __str__(self) -> str:
        if paramiko.config.socket is not socket:  # type: ignore[attr-defined]
            return str(super().__str__())  # a stand-in resolver (autoserv check): not cached
        options: Any = self.config  # the options looked up so far (an SSHConfigDict)
        family = str(options.get("addressfamily", "any")).lower()
        key = (self.host, family)
        with _fqdns_lock:
            known = _fqdns.get(key)
            if known is not None:
                return known
            lookup = _fqdn_lookups.setdefault(key, threading.Lock())
        # one thread asks the resolver; the threads of a fan-out that look up at the same
        # moment wait for its answer instead of each asking again
        with lookup:
            with _fqdns_lock:
                known = _fqdns.get(key)
            if known is None:
                known = str(super().__str__())
                with _fqdns_lock:
                    _fqdns[key] = known
        return known


def _fresh_fqdn_locks() -> None:
    """A forked child starts with free locks (another thread may hold one at the fork)."""
    global _fqdns_lock, _fqdn_lookups
    _fqdns_lock = threading.Lock()
    _fqdn_lookups = {}


os.register_at_fork(after_in_child=_fresh_fqdn_locks)


def install_fqdn_cache() -> None:
    """Make :mod:`paramiko.config` look up this machine's FQDN once per process.

    Why: for every option that may hold ``%l`` (``IdentityFile``, ``UserKnownHostsFile``,
    ``ControlPath``...) paramiko's lookup turns a fresh ``LazyFqdn`` into text whether or
    not the value holds ``%l``, so each machine's lookup asked the resolver (``getfqdn``:
    /etc/hosts, then DNS) two or three times: a DNS query per machine on a controller
    whose name is not in /etc/hosts, and as many DNS timeouts when the resolver is away.
    The local FQDN does not change while a job runs, and the threads of a fan-out that
    need it at the same moment wait for one lookup (each of 20 threads starting at once read
    ``/etc/hosts`` twice before).  Relies on ``paramiko.config``
    creating ``LazyFqdn(config, host)`` by that module-level name and reading it with
    ``str()``.  Idempotent.
    """
    if paramiko.config.LazyFqdn is not _OnceFqdn:
        paramiko.config.LazyFqdn = _OnceFqdn  # type: ignore[misc]


_python_bytes_eq = paramiko.util.constant_time_bytes_eq


def _bytes_eq(a: Any, b: Any) -> bool:
    """paramiko's constant-time comparison, in C (:func:`hmac.compare_digest`) for bytes."""
    if isinstance(a, bytes) and isinstance(b, bytes):
        return hmac.compare_digest(a, b)
    return bool(_python_bytes_eq(a, b))  # text (hashed known_hosts names): as paramiko did


def install_fast_mac_check() -> None:
    """Make :mod:`paramiko.packet` compare each packet's MAC in C, still in constant time.

    Why: paramiko compares the MAC it computed with the one received byte by byte in a
    Python loop (``paramiko.util.constant_time_bytes_eq``, two function calls per byte), for
    every packet read: 3.7 µs for a 32-byte MAC against 0.1 µs (``timeit``), ~14 packets
    per connect + ``uname -a`` + close, so ~50 µs of the ~4.3 ms of CPU that costs.
    :func:`hmac.compare_digest` is the standard library's constant-time comparison.
    Relies on ``paramiko.packet`` calling it as ``util.constant_time_bytes_eq`` (a module
    attribute, looked up at each call).  Idempotent.
    """
    paramiko.util.constant_time_bytes_eq = _bytes_eq


def _channel_request(chan: paramiko.Channel, m: paramiko.Message) -> None:
    """paramiko's channel-request handler, plus RFC 4254 ``exit-signal``."""
    start = m.packet.tell()
    if m.get_text() != "exit-signal":
        m.packet.seek(start)
        paramiko.Channel._handle_request(chan, m)  # type: ignore[attr-defined]
        return
    m.get_boolean()  # want_reply: false for exit-signal
    name = m.get_text()
    _exit_signals[chan] = name
    number = exit_signal_number(name)
    if number is not None:
        chan.exit_status = -number
    chan.status_event.set()


def install_exit_signal_handler(t: paramiko.Transport) -> None:
    """Record RFC 4254 ``exit-signal`` on every channel of ``t`` (call before ``start_client``).

    Why: paramiko drops ``exit-signal``, so a command killed by a signal (the
    OOM killer, ``kill -9``) would look like a lost connection.  Our handler
    ends the channel with ``exit_status = -signum``, as a local run reports
    it, and remembers the signal's name for :func:`exit_signal`.  Relies on
    the per-transport dispatch table ``Transport._channel_handler_table``
    (message type -> ``Channel`` method) and ``Channel._handle_request(m)``.
    The table is copied, so other transports keep paramiko's.
    """
    table = dict(t._channel_handler_table)  # type: ignore[attr-defined]
    table[paramiko.common.MSG_CHANNEL_REQUEST] = _channel_request
    t._channel_handler_table = table  # type: ignore[attr-defined]


def exit_signal(chan: paramiko.Channel) -> str | None:
    """The name of the signal that ended ``chan``'s command (``"KILL"``), or None."""
    return _exit_signals.get(chan)


def exit_signal_number(name: str | None) -> int | None:
    """``"KILL"`` -> 9; None for no or an unknown signal name."""
    if not name:
        return None
    number = getattr(signal.Signals, "SIG" + name, None)
    return int(number) if number is not None else None


def send_eof(chan: paramiko.Channel) -> None:
    """``chan.shutdown_write()`` without its race against the channel's close.

    Why: paramiko builds the EOF under the channel lock but sends it after
    letting go.  When the command has just ended, the transport thread can
    answer the server's CLOSE in between, and an EOF that arrives after our
    CLOSE makes OpenSSH drop the whole connection ("ieof packet referred to
    nonexistent channel"), killing every other command on it (seen with 20-40
    concurrent short commands on one connection: ~5 % of them failed).
    Sending under the lock orders the EOF before the CLOSE, as paramiko's own
    data sends do.

    It never waits under that lock: a key exchange in progress is waited out first, holding
    no lock, because whoever reads the packets that end it (this thread when it drives the
    connection, another thread, the idle reader: :mod:`autoserv.hosts.paramiko_pump`) may
    first handle a packet for this channel, which takes the channel's lock.  Waiting for it
    under the lock stalled until paramiko's 30-s ``clear_to_send_timeout``, and the EOF was
    then lost: a command reading stdin never ended.  Then, under the channel's lock and
    the transport's ``clear_to_send_lock`` (in that order, as no one takes them the other
    way round), the EOF goes out if no new key exchange began meanwhile, else the wait
    starts again.  Relies on ``Channel.lock``, ``Channel._send_eof()`` (returns the message,
    None once EOF or CLOSE went out), ``Transport.clear_to_send``, ``clear_to_send_lock``,
    ``clear_to_send_timeout`` and ``Transport._send_message(m)`` (what
    ``_send_user_message`` does once clear to send).
    """
    t: Any = chan.transport
    if t is None:
        return
    deadline = time.monotonic() + t.clear_to_send_timeout
    while True:
        if not t.clear_to_send.is_set():
            t.clear_to_send.wait(0.1)  # (reads the connection if this thread drives it)
        if not t.is_active():
            return  # (paramiko drops a user packet on a dead connection, too)
        with chan.lock:  # type: ignore[attr-defined]
            if chan.closed:
                return
            with t.clear_to_send_lock:
                if t.clear_to_send.is_set():
                    m = chan._send_eof()  # type: ignore[attr-defined]
                    if m is not None:
                        t._send_message(m)
                    return
        if time.monotonic() > deadline:
            raise paramiko.SSHException("Key-exchange timed out waiting for key negotiation")


def _send_request(chan: paramiko.Channel, kind: str, text: str, timeout: float) -> bool:
    """Send the channel request ``kind`` (want-reply) with one string; wait ``timeout`` s."""
    m = paramiko.Message()
    m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string(kind)
    m.add_boolean(True)
    m.add_string(text)
    chan._event_pending()  # type: ignore[attr-defined]
    chan.transport._send_user_message(m)  # type: ignore[union-attr]
    event: threading.Event = chan.event  # type: ignore[attr-defined]
    if not event.wait(timeout):
        return False
    if not chan.event_ready:  # type: ignore[attr-defined]
        raise chan.transport.get_exception() or paramiko.SSHException("Channel closed.")  # type: ignore[union-attr]
    return True


def send_exec(chan: paramiko.Channel, command: str, timeout: float) -> bool:
    """``chan.exec_command(command)``, waiting at most ``timeout`` s for the server's reply.

    Returns False when no reply came in time (the caller closes the channel);
    raises the transport's error (or :class:`paramiko.SSHException`) when the
    server refused the request or the channel closed.

    Why: paramiko's ``exec_command`` waits forever for the reply; a watchdog
    thread per command would cost ~0.5 ms on the hot path.  This sends the
    same request (RFC 4254 "exec", want-reply) as paramiko does and waits on
    the same event with a bound.  Relies on ``Channel._event_pending()``, the
    undocumented ``Channel.event`` (a :class:`threading.Event`) and
    ``Channel.event_ready``, and ``Transport._send_user_message(m)``.
    """
    return _send_request(chan, "exec", command, timeout)


def send_subsystem(chan: paramiko.Channel, name: str, timeout: float) -> bool:
    """``chan.invoke_subsystem(name)`` (e.g. ``"sftp"``) with the bound of :func:`send_exec`.

    Why: paramiko's ``invoke_subsystem`` waits forever for the reply, as
    ``exec_command`` does; the same request, awaited the same way.
    """
    return _send_request(chan, "subsystem", name, timeout)


class StallGuard:
    """A channel as :class:`paramiko.SFTPClient` uses it: ``SFTPClient(StallGuard(chan))``.

    Why: an SFTP client waits for its server only in its socket's ``recv``
    (replies) and ``send`` (window space), which obey the channel's
    ``settimeout``; but after one wait times out paramiko's own cleanup waits
    again (closing the remote file handle, collecting pipelined write
    replies), a timeout each.  The first wait that times out here closes the
    channel, so every later one fails at once, and sets ``stalled``.  Relies
    on ``BaseSFTP._read_all``/``_write_all`` calling only ``sock.recv``/
    ``sock.send`` on a socket that is not a :class:`socket.socket`, and on
    :class:`paramiko.SFTPClient` accepting such a socket (it checks ``type(sock)
    is Channel`` only to name its logger).  Anything else is the channel's.
    """

    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan
        #: a wait timed out (and the channel was closed)
        self.stalled = False

    def recv(self, nbytes: int) -> bytes:
        return self._wait(self.chan.recv, nbytes)

    def send(self, data: bytes) -> int:
        return self._wait(self.chan.send, data)

    def _wait(self, call: Callable[[_A], _R], arg: _A) -> _R:
        """``call(arg)``; when it times out, the channel is closed (and the timeout raised)."""
        try:
            return call(arg)
        except TimeoutError:
            self.stalled = True
            self.chan.close()
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.chan, name)


def ping(t: paramiko.Transport, timeout: float) -> bool:
    """Send ``keepalive@openssh.com`` (want-reply) and wait at most ``timeout`` s for any answer.

    Why: paramiko's keepalives ask for no reply, so a dead peer goes unnoticed
    until TCP gives up (~15 min), and ``global_request(wait=True)`` waits
    forever.  OpenSSH answers this request (with a failure: it does not know
    it), which is all a ServerAliveInterval check needs.  Relies on paramiko
    setting ``Transport.completion_event`` on either reply and on
    ``Transport._send_user_message(m)``; autoserv sends no other global
    requests that could race for that event.
    """
    event = paramiko_pump.Event()  # (read on while waiting, when the caller drives ``t``)
    t.completion_event = event  # type: ignore[attr-defined]
    m = paramiko.Message()
    m.add_byte(paramiko.common.cMSG_GLOBAL_REQUEST)
    m.add_string("keepalive@openssh.com")
    m.add_boolean(True)
    t._send_user_message(m)  # type: ignore[attr-defined]
    return event.wait(timeout)


def dropped_before_banner(t: paramiko.Transport, exc: BaseException) -> bool:
    """Whether ``start_client`` failed because the server closed or reset the
    connection before it sent its SSH banner, as sshd does to connections past
    its ``MaxStartups`` (dropped before authentication, so a retry is safe).

    Why: paramiko reports every banner failure as one ``SSHException("Error
    reading SSH protocol banner...")``; only the exception it was raised from
    (``__context__``: ``EOFError`` from ``Packetizer.readline`` on a closed
    socket, ``ConnectionResetError`` on a reset) tells a dropped connection
    from a silent server (a timeout) or one that speaks another protocol.
    ``Transport.remote_version`` stays empty until a banner arrived.
    """
    if t.remote_version:
        return False
    cause = exc if isinstance(exc, (EOFError, ConnectionResetError)) else exc.__context__
    return isinstance(cause, (EOFError, ConnectionResetError))


class _HandshakeClock:
    """The handshake deadline of one packetizer (see :func:`install_handshake_clock`)."""

    __slots__ = ("deadline", "done")

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.done = False

    def start(self, timeout: float) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + float(timeout)

    def timed_out(self) -> bool:
        return self.deadline is not None and not self.done and time.monotonic() > self.deadline

    def complete(self) -> None:
        self.done = True


def install_handshake_clock(t: paramiko.Transport) -> None:
    """Keep ``t``'s handshake timeout as a deadline instead of a timer thread.

    Why: paramiko's ``Packetizer.start_handshake`` starts a ``threading.Timer`` for every
    connection, only to set a flag that the transport's read loop checks before each socket
    read (at least every 0.1 s, its socket's timeout, until the handshake is done);
    ``complete_handshake`` cancels it.  That thread (created, started, woken, joined by
    nobody) cost 1.1 ms of CPU per connection in a fan-out of 250 raw paramiko
    connections in threads (1.55 -> 1.27 s of CPU, medians of 4).  The read loop checks
    the deadline at the same points, so a server that sends its banner and then nothing
    still fails the handshake after ``handshake_timeout`` s.  Call before ``start_client``.
    """
    clock = _HandshakeClock()
    packetizer = t.packetizer
    packetizer.start_handshake = clock.start  # type: ignore[method-assign]
    packetizer.handshake_timed_out = clock.timed_out  # type: ignore[method-assign]
    packetizer.complete_handshake = clock.complete  # type: ignore[method-assign]


def close_now(t: paramiko.Transport) -> None:
    """Close ``t`` so that its thread ends now, not at its next poll.

    Why: the thread waits in ``poll`` on the socket (up to :data:`IDLE_POLL` s once
    connected, see :func:`set_idle_poll`), and closing a descriptor on Linux does not wake
    another thread's ``poll`` on it; shutting the connection down does.  With
    ``Transport.close`` alone, the threads of a fan-out's closed connections lived on for
    up to 2 s each (93 of 250 were still alive when the job had ended), and the process
    paid for them at exit.  A transport through another host's channel (``sock`` is a
    channel) is only closed.
    """
    if isinstance(t.sock, socket.socket):
        with contextlib.suppress(OSError):
            t.sock.shutdown(socket.SHUT_RDWR)
    t.close()


#: How often the thread of an idle, authenticated transport wakes up (paramiko: 0.1 s).
IDLE_POLL = 2.0


def set_idle_poll(t: paramiko.Transport, seconds: float = IDLE_POLL) -> None:
    """Let ``t``'s thread sleep ``seconds`` between checks while nothing arrives.

    Why: paramiko sets its socket's timeout to ``Transport._active_check_timeout``
    (0.1 s) and its read loop wakes on each timeout only to see whether the
    transport was closed; 200 idle transports so cost a tenth of a core, 1000 of
    them (a fan-out waiting on its slowest hosts) half of one.  Keepalives do not
    depend on it (autoserv's watchdog sends them), nor does closing: :func:`close_now`
    shuts the socket down, which wakes the thread's read at once (closing the descriptor
    alone does not).  Set after the handshake, whose banner timeout the read loop measures
    in these same steps.
    """
    t.sock.settimeout(seconds)



@dataclass(frozen=True)
class _ConfigIndex:
    """Which blocks of a parsed ssh config a lookup must try."""

    #: positions of the blocks that may apply to any name (patterns, negations, ``Match``)
    general: tuple[int, ...]
    #: literal ``Host`` name -> positions of the literal-only blocks that name it
    literal: dict[str, tuple[int, ...]]
    #: a block asks for canonicalization: the second pass may look up another name
    canonicalizes: bool


#: parsed config -> its index (built on first lookup; a changed file is a new config)
_config_indexes: weakref.WeakKeyDictionary[paramiko.SSHConfig, _ConfigIndex] = \
    weakref.WeakKeyDictionary()
_config_index_lock = threading.Lock()
_PATTERN_CHARS = frozenset("*?[!")


def _index_config(cfg: paramiko.SSHConfig) -> _ConfigIndex:
    general: list[int] = []
    literal: dict[str, list[int]] = {}
    canonicalizes = False
    for i, block in enumerate(cfg._config):  # type: ignore[attr-defined]
        names = block.get("host") or []
        if "canonicalizehostname" in block.get("config", {}):
            canonicalizes = True
        if block.get("matches") or not names or any(_PATTERN_CHARS & set(n) for n in names):
            general.append(i)
            continue
        for name in dict.fromkeys(names):
            literal.setdefault(name, []).append(i)
    return _ConfigIndex(tuple(general), {k: tuple(v) for k, v in literal.items()}, canonicalizes)


def config_lookup(cfg: paramiko.SSHConfig, hostname: str) -> paramiko.SSHConfigDict:
    """``cfg.lookup(hostname)``, the same result, trying only the blocks that can apply.

    Why: paramiko tries every block's patterns (``fnmatch``) in each of a lookup's two
    passes, so a lab config with one ``Host`` block per machine costs each machine time in
    proportion to the lab: with 1000 blocks, ``resolve`` cost 1.9 ms of CPU per machine
    here, 0.09 ms with this.  A block whose ``Host`` patterns are all literal names (no ``*``, ``?``, ``[``,
    ``!``) and that is no ``Match`` block applies exactly to the names it lists; the lookup
    runs on a config holding only the blocks for ``hostname`` and the others, in file
    order, which is what paramiko would apply.  When a block asks for
    ``CanonicalizeHostname`` (the second pass may look up another name), the whole config
    is used.  Relies on ``SSHConfig._config``: the parsed blocks in file order, each a dict
    with ``host`` (its patterns), ``matches`` and ``config``.
    """
    with _config_index_lock:
        index = _config_indexes.get(cfg)
        if index is None:
            index = _config_indexes[cfg] = _index_config(cfg)
    if index.canonicalizes:
        return cfg.lookup(hostname)
    blocks = cfg._config  # type: ignore[attr-defined]
    narrowed = paramiko.SSHConfig()
    narrowed._config = [  # type: ignore[attr-defined]
        blocks[i] for i in sorted((*index.general, *index.literal.get(hostname, ())))
    ]
    return narrowed.lookup(hostname)


def config_identity_files(cfg: paramiko.SSHConfig) -> list[str]:
    """Every ``IdentityFile`` the config names without a ``%`` token, ``~`` expanded, in order.

    Why: a parent about to fork a worker per machine loads these keys once for all of them
    (an RSA key's check costs 72-230 ms of CPU per load).  Relies on ``SSHConfig._config``
    (see :func:`config_lookup`), whose blocks keep ``identityfile`` as a list of paths.
    """
    found: dict[str, None] = {}
    for block in cfg._config:  # type: ignore[attr-defined]
        for value in block.get("config", {}).get("identityfile") or []:
            if "%" not in value:
                found[os.path.expanduser(value)] = None
    return list(found)


def enable_match_exec(cfg: paramiko.SSHConfig) -> None:
    """Give :mod:`paramiko.config` the ``invoke`` module when ``cfg`` has a ``Match exec``.

    Why: :mod:`autoserv.hosts` loads paramiko without invoke, which it imports only to run
    ``Match exec`` commands (~40 ms of every start where invoke is installed).  Relies on
    ``paramiko.config`` keeping the module in its global ``invoke`` (None when its import
    failed) and reading it when it evaluates a ``Match exec``, and on ``SSHConfig._config``
    (see :func:`config_lookup`), whose blocks keep ``matches`` as dicts with a ``type``.
    Without invoke installed, such a lookup raises the ImportError of importing it
    (``paramiko.config.invoke_import_error``).
    """
    if paramiko.config.invoke is not None:  # type: ignore[attr-defined]
        return
    blocks = cfg._config  # type: ignore[attr-defined]
    if any(m.get("type") == "exec" for b in blocks for m in b.get("matches") or ()):
        try:
            paramiko.config.invoke = importlib.import_module("invoke")  # type: ignore[attr-defined]
        except ImportError as exc:  # not installed: paramiko raises this one, not our block's
            paramiko.config.invoke_import_error = exc  # type: ignore[attr-defined]
