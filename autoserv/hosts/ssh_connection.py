"""Opening and sharing SSH connections (paramiko transports).

:func:`resolve` turns what the caller gave (plus process defaults and
``~/.ssh/config``) into :class:`ConnectParams`; :func:`open_transport` makes
one authenticated transport within ``connect_timeout`` (TCP connect, banner,
key exchange and authentication all on one deadline); :data:`POOL` keeps
one transport per destination per process, shared by every host object and
thread that talks to it, and reopens it when it has dropped.

The socket gets ``TCP_NODELAY``: without it, Nagle's algorithm and delayed
ACKs stall each small request/response ~40 ms on Linux.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import getpass
import logging
import os
import random
import shlex
import socket
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

import paramiko

from autoserv import inputs
from autoserv.deadline import Deadline, backoff
from autoserv.errors import (
    AutoservError,
    AutoservHostKeyError,
    AutoservSshPermissionDeniedError,
    AutoservSSHTimeout,
)
from autoserv.hosts import keepalive, paramiko_ext, paramiko_pump
from autoserv.hosts.defaults import get_ssh_defaults
from autoserv.hosts.known_hosts import HostKeyChecker, known_name
from autoserv.hosts.machine import Machine
from autoserv.hosts.paramiko_ext import send_eof
from autoserv.secret import Secret

log = logging.getLogger("autoserv.hosts.ssh")
# paramiko's records go to the job's handlers like any others; without one (a process whose
# logging was shut down, or never set up) they are dropped instead of printed on stderr by
# logging's last-resort handler: hosts never print.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: The log channel of a transport until it is connected: what its thread logs when the
#: connect fails (the banner read timing out or failing on the socket autoserv closed on an
#: abort, with a traceback) is kept as DEBUG, for the debug log only: autoserv's own error
#: says why the connect failed.
CONNECTING_LOG_CHANNEL = "paramiko.transport.connecting"
PARAMIKO_LOG_CHANNEL = "paramiko.transport"


class _AsDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


logging.getLogger(CONNECTING_LOG_CHANNEL).addFilter(_AsDebug())

DEFAULT_USER = "root"
DEFAULT_PORT = 22
DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_POLICY = "accept-new"
DEFAULT_KEEPALIVE = 15.0
DEFAULT_KEEPALIVE_COUNT = 3
DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
_STRICT_MAP = {"yes": "strict", "ask": "strict", "accept-new": "accept-new", "no": "off", "off": "off"}


@dataclass(frozen=True)
class ConnectParams:
    """Everything needed to open one SSH connection; the pool key is ``key``."""

    alias: str
    hostname: str
    port: int
    user: str
    password: Secret | None = None
    key_files: tuple[str, ...] = ()
    identities_only: bool = False
    proxy_jump: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: ServerAliveInterval: seconds between keepalives that expect an answer (0: none)
    keepalive: float = 15
    #: ServerAliveCountMax: unanswered keepalives in a row that declare the host lost
    keepalive_count: int = 3
    host_key_policy: str = DEFAULT_POLICY
    known_hosts: str | None = None
    host_key_alias: str | None = None
    pinned_host_keys: tuple[str, ...] = ()
    ssh_config: str | None = field(default=None, compare=False)
    #: Reach the server through this host's SSH connection (a direct-tcpip channel to
    #: ``via_target``, default ``(hostname, port)`` as that host sees them) instead of TCP.
    via: Any = field(default=None, compare=False)
    via_target: tuple[str, int] | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.user, self.hostname, self.port, self.proxy_jump, self.key_files,
                self.password, self.pinned_host_keys, self.host_key_policy, self.known_hosts,
                id(self.via) if self.via is not None else None, self.via_target)

    @property
    def where(self) -> str:
        return f"{self.hostname}:{self.port}"

    def deadline(self, connect_timeout: float | Deadline | None = None) -> Deadline:
        """The one window for reaching the host: connecting (TCP, banner, key
        exchange, authentication), opening a channel and the command request
        all draw on it.  ``connect_timeout`` (a number, or a deadline already
        running) wins over this host's setting; 0 or None means the host's.
        """
        if isinstance(connect_timeout, Deadline):
            return connect_timeout
        return Deadline(float(connect_timeout) if connect_timeout else self.connect_timeout)

    def checker(self) -> HostKeyChecker:
        return HostKeyChecker(self.host_key_policy, self.known_hosts, pinned=self.pinned_host_keys)

    def known_name(self) -> str:
        return known_name(self.host_key_alias or self.hostname, self.port)


paramiko_ext.install_getuser_cache()
paramiko_ext.install_fqdn_cache()
paramiko_ext.install_fast_mac_check()
paramiko_pump.install()


class _SSHConfigs:
    """Parsed ssh config files, cached while a file's mtime and size stay the same."""

    def __init__(self) -> None:
        self._parsed: dict[str, tuple[tuple[int, int], paramiko.SSHConfig]] = {}
        self._lock = threading.Lock()
        self._warmed: set[int] = set()  # ids of configs whose Host patterns are compiled
        self._process_warmed = False

    def load(self, path: str | None) -> paramiko.SSHConfig | None:
        """The parsed config at ``path`` (default ``~/.ssh/config``); None if there is none."""
        path = os.path.expanduser(path or "~/.ssh/config")
        try:
            st = os.stat(path)
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:  # worker threads starting at once: one parses, the others wait
            cached = self._parsed.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            try:
                cfg = paramiko.SSHConfig.from_path(path)
            except UnicodeDecodeError as exc:
                with open(path, "rb") as f:
                    line = f.read(exc.start).count(b"\n") + 1
                raise AutoservError(f"ssh config {path}: line {line} is not UTF-8 text") from None
            paramiko_ext.enable_match_exec(cfg)
            self._parsed[path] = (stamp, cfg)
            return cfg

    def reset_lock_in_child(self) -> None:
        """A forked worker starts with a free lock (another thread of the parent may hold it)."""
        self._lock = threading.Lock()

    def warm_before_fork(self) -> None:
        """Do in the parent, once, what every forked SSH worker would otherwise repeat.

        The default ssh config is parsed and its ``Host`` patterns compiled into
        :mod:`fnmatch`'s cache (without a lookup, so no ``Match exec`` runs);
        the passwd NSS module (paramiko's config lookup asks ``getpass.getuser()``)
        and the ``idna`` codec (``socket`` host names) are loaded.  Each of N
        ``parallel_simple`` workers spent ~6 ms of CPU on this with 50 hosts in
        the config.  The job's key file, the default ones and those the config names
        are loaded (see :class:`_KeyFiles`).
        """
        d = get_ssh_defaults()
        with contextlib.suppress(Exception):
            cfg = self.load(d.ssh_config)
            if cfg is not None and id(cfg) not in self._warmed:
                for pattern in cfg.get_hostnames():
                    fnmatch.fnmatch("", pattern.lstrip("!"))
                _KEYS.warm(paramiko_ext.config_identity_files(cfg))  # RSA: 72-230 ms each
                self._warmed.add(id(cfg))
        if not self._process_warmed:
            self._process_warmed = True
            with contextlib.suppress(Exception):
                getpass.getuser()
                "localhost".encode("idna")
        _KEYS.warm(os.path.expanduser(k) for k in (d.key_file, *DEFAULT_KEYS) if k)


_CONFIGS = _SSHConfigs()


class _KeyFiles:
    """Private keys loaded from files, kept while a file's identity, size and mtime stay.

    Why: loading an RSA key makes OpenSSL check it (its primes): 230 ms of CPU for a
    3072-bit key, ssh-keygen's default, and 72 ms for 2048 bits, against 0.14 ms for
    ed25519 (measured here, cryptography 50, paramiko 5.1), paid by every connection.  One
    load at a time: the worker threads of a fan-out that start together wait for the first
    instead of each checking the same key.  Encrypted keys are not kept: each load raises
    ``PasswordRequiredException`` (paramiko 5 raised cryptography's ``TypeError`` for an
    encrypted OpenSSH key, which no caller expected: a connection failed outright).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[tuple[int, int, int, int], paramiko.PKey]] = {}

    def load(self, path: str) -> paramiko.PKey:
        """The key in file ``path`` (paramiko's errors as ``PKey.from_path`` raises them)."""
        st = os.stat(path)
        stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._keys.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            try:
                key = paramiko.PKey.from_path(path)
            except TypeError as exc:  # paramiko 5 lets cryptography's "password-protected" out
                raise paramiko.PasswordRequiredException(f"{path}: {exc}") from None
            self._keys[path] = (stamp, key)
            return key

    def warm(self, paths: Iterable[str]) -> None:
        """Load the keys at ``paths`` that exist and need no passphrase (errors ignored)."""
        for path in paths:
            with contextlib.suppress(Exception):
                if os.path.exists(path):
                    self.load(path)

    def reset_lock_in_child(self) -> None:
        """A forked worker starts with a free lock (another thread of the parent may hold it)."""
        self._lock = threading.Lock()


_KEYS = _KeyFiles()


class ConnectOptions(TypedDict, total=False):
    """How to connect, as a caller may say it (absent or None: the job's SSH defaults, then
    the ssh config, then the built-in defaults).  Keyword arguments of :func:`resolve` and
    :class:`~autoserv.hosts.SSHHost`."""

    key_file: str | None
    host_key_policy: str | None
    known_hosts: str | None
    ssh_config: str | None
    connect_timeout: float | None
    pinned_host_keys: Iterable[str]
    #: ServerAliveInterval (seconds; 0 disables the keepalive check)
    keepalive: float | None
    #: ServerAliveCountMax
    keepalive_count: int | None


def resolve(
    hostname: str,
    user: str | None = None,
    port: int | None = None,
    password: str | Secret | None = None,
    **options: Unpack[ConnectOptions],
) -> ConnectParams:
    """Merge arguments > process defaults > ssh config > built-in defaults."""
    key_file, host_key_policy = options.get("key_file"), options.get("host_key_policy")
    known_hosts, connect_timeout = options.get("known_hosts"), options.get("connect_timeout")
    keepalive, keepalive_count = options.get("keepalive"), options.get("keepalive_count")
    d = get_ssh_defaults()
    config_path = options.get("ssh_config") or d.ssh_config
    cfg = _CONFIGS.load(config_path)
    try:
        entry: dict[str, Any] = dict(paramiko_ext.config_lookup(cfg, hostname)) if cfg is not None else {}
    except ImportError as exc:  # paramiko runs Match exec with invoke
        raise AutoservError(f"ssh config {config_path or '~/.ssh/config'}: a Match exec line "
                            f"needs the Python package invoke ({exc})") from None
    if password is not None and not isinstance(password, Secret):
        password = Secret(password) if password else None
    key_files: list[str] = []
    for k in (key_file, d.key_file):
        if k:
            key_files.append(os.path.expanduser(k))
    key_files += [os.path.expanduser(k) for k in entry.get("identityfile", [])]
    policy = host_key_policy or d.host_key_policy
    if policy is None and "stricthostkeychecking" in entry:
        policy = _STRICT_MAP.get(entry["stricthostkeychecking"].lower())
    known = known_hosts or d.known_hosts
    if known is None and "userknownhostsfile" in entry:
        known = _first_path(entry["userknownhostsfile"], "UserKnownHostsFile", config_path)
    if keepalive is None:
        keepalive = _config_number(entry, "ServerAliveInterval", DEFAULT_KEEPALIVE, config_path,
                                   hostname)
    if keepalive_count is None:
        keepalive_count = int(_config_number(entry, "ServerAliveCountMax", DEFAULT_KEEPALIVE_COUNT,
                                             config_path, hostname))
    timeout = connect_timeout or d.connect_timeout
    if timeout is None and "connecttimeout" in entry:
        timeout = inputs.config_seconds(entry["connecttimeout"], "ConnectTimeout", config_path,
                                        hostname)
    if cfg is not None and entry.get("proxyjump"):
        inputs.check_jump_chain(hostname, entry["proxyjump"],
                                functools.partial(paramiko_ext.config_lookup, cfg), config_path)
    if "port" in entry and not (port or d.port):
        entry["port"] = inputs.config_port(entry["port"], config_path, hostname)
    return ConnectParams(
        alias=hostname,
        hostname=entry.get("hostname", hostname),
        port=int(port or d.port or entry.get("port") or DEFAULT_PORT),
        user=user or d.user or entry.get("user") or DEFAULT_USER,
        password=password or d.password,
        key_files=tuple(dict.fromkeys(key_files)),
        identities_only=entry.get("identitiesonly", "no").lower() == "yes",
        proxy_jump=entry.get("proxyjump") if entry.get("proxyjump", "none") != "none" else None,
        connect_timeout=float(timeout or DEFAULT_CONNECT_TIMEOUT),
        keepalive=keepalive,
        keepalive_count=max(1, keepalive_count),
        host_key_policy=policy or DEFAULT_POLICY,
        known_hosts=known,
        host_key_alias=entry.get("hostkeyalias"),
        pinned_host_keys=tuple(options.get("pinned_host_keys", ())),
        ssh_config=config_path,
    )


def _first_path(value: str, key: str, path: str | None) -> str:
    """The first path of a config option that takes several, quoted as OpenSSH allows.

    paramiko strips the quotes of a value that is one quoted word
    (``"/a b/known_hosts"`` arrives as ``/a b/known_hosts``): a value without
    quotes that names an existing file is that one path.
    """
    if not any(q in value for q in "\"'\\") and os.path.exists(os.path.expanduser(value)):
        return os.path.expanduser(value)
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise AutoservError(f"ssh config {path or '~/.ssh/config'}: {key} {value!r}: {exc}") from None
    if not words:
        raise AutoservError(f"ssh config {path or '~/.ssh/config'}: {key} has no path")
    return os.path.expanduser(words[0])


def _config_number(entry: dict[str, Any], option: str, default: float, path: str | None,
                   host: str) -> float:
    """A non-negative number option of ``host``'s ssh config entry (``default`` when absent)."""
    key = option.lower()  # paramiko's keys
    if key not in entry:
        return default
    try:
        value = float(entry[key])
    except ValueError:
        value = -1
    if value < 0 or value != value or value == float("inf"):
        raise AutoservError(f"ssh config {path or '~/.ssh/config'}: host {host}: {option} "
                            f"{entry[key]!r} is not a number of seconds or a count")
    return value


def _window(deadline: Deadline) -> str:
    """The seconds a connect deadline was given, for messages ("1", "2.5")."""
    return f"{deadline.seconds:g}" if deadline.seconds is not None else "unbounded"


def _connect_error(p: ConnectParams, cause: str) -> AutoservSSHTimeout:
    return AutoservSSHTimeout(f"cannot connect to {p.where}: {cause}")


def _open_socket(p: ConnectParams, deadline: Deadline, jumps: list[paramiko.Transport]) -> Any:
    if p.via is not None:
        target = p.via_target or (p.hostname, p.port)
        try:
            vt = p.via.transport(max(0.1, deadline.remaining()))
            return vt.open_channel("direct-tcpip", target, ("127.0.0.1", 0),
                                   timeout=max(0.1, deadline.remaining()))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise _connect_error(
                p, f"{p.via.hostname} could not open a channel to {target[0]}:{target[1]}: "
                   f"{exc or type(exc).__name__}") from None
    if p.proxy_jump:
        jump_spec = p.proxy_jump.split(",")[0]
        jump = Machine.parse(jump_spec)
        jp = resolve(jump.host, user=jump.user, port=jump.port, ssh_config=p.ssh_config,
                     connect_timeout=deadline.remaining(), host_key_policy=p.host_key_policy,
                     known_hosts=p.known_hosts)
        jt = open_transport(jp, deadline)
        jumps.append(jt)
        try:
            return jt.open_channel("direct-tcpip", (p.hostname, p.port), ("127.0.0.1", 0),
                                   timeout=deadline.remaining())
        except (paramiko.SSHException, OSError) as exc:
            paramiko_ext.close_now(jt)
            raise _connect_error(p, f"jump host {jump_spec} could not open a channel: {exc}") from None
    try:
        sock = socket.create_connection((p.hostname, p.port), timeout=deadline.remaining())
    except socket.gaierror as exc:
        raise _connect_error(p, f"unknown host name ({exc.strerror})") from None
    except ConnectionRefusedError:
        raise _connect_error(p, "connection refused") from None
    except TimeoutError:
        raise _connect_error(p, f"timed out after {_window(deadline)} s") from None
    except OSError as exc:
        raise _connect_error(p, exc.strerror or str(exc)) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def _private_keys(p: ConnectParams, unusable: list[str] | None = None
                  ) -> list[tuple[str, paramiko.PKey]]:
    """The keys to offer; why each key file the user named cannot be offered goes to ``unusable``."""
    keys: list[tuple[str, paramiko.PKey]] = []
    unusable = [] if unusable is None else unusable
    paths = list(p.key_files)
    if not p.identities_only:
        paths += [os.path.expanduser(k) for k in DEFAULT_KEYS]
    for path in dict.fromkeys(paths):
        if not os.path.exists(path):
            if path in p.key_files:
                log.warning("key file %s does not exist", path)
                unusable.append(f"{path} does not exist")
            continue
        try:
            keys.append((path, _KEYS.load(path)))
        except paramiko.PasswordRequiredException:
            log.debug("skipping encrypted key %s (use ssh-agent)", path)
            if path in p.key_files:
                unusable.append(f"{path} is encrypted (use ssh-agent)")
        except (paramiko.SSHException, OSError, ValueError) as exc:
            log.warning("cannot load key %s: %s", path, exc)
            if path in p.key_files:
                why = str(exc).strip().split("\n")[0] or type(exc).__name__
                unusable.append(f"{path} cannot be loaded ({why})")
    return keys


def _authenticate(t: paramiko.Transport, p: ConnectParams, deadline: Deadline) -> None:
    tried: list[str] = []
    allowed: list[str] | None = None

    def attempt(what: str, fn: Any) -> bool:
        nonlocal allowed
        if deadline.expired():
            raise _connect_error(p, f"authentication timed out after {_window(deadline)} s")
        t.auth_timeout = max(0.1, deadline.remaining())
        tried.append(what)
        try:
            fn()
        except paramiko.BadAuthenticationType as exc:
            allowed = list(exc.allowed_types)
            return False
        except paramiko.AuthenticationException:
            return False
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not t.is_active():
                raise AutoservSshPermissionDeniedError(
                    f"permission denied for {p.user}@{p.where}: server closed the connection "
                    f"during authentication ({exc}; tried {', '.join(tried)})"
                ) from None
            return False
        return t.is_authenticated()

    agent_keys: list[paramiko.PKey] = []
    if not p.identities_only or not p.key_files:
        with contextlib.suppress(Exception):
            agent_keys = list(paramiko.Agent().get_keys())
    unusable: list[str] = []
    for path, key in _private_keys(p, unusable):
        if allowed is not None and "publickey" not in allowed:
            break
        if attempt(f"key {path}", lambda k=key: t.auth_publickey(p.user, k)):
            return
    for key in agent_keys:
        if allowed is not None and "publickey" not in allowed:
            break
        if attempt("agent key", lambda k=key: t.auth_publickey(p.user, k)):
            return
    if p.password:
        pw = p.password.reveal()
        if attempt("password", lambda: t.auth_password(p.user, pw)):
            return
    if not tried:
        with contextlib.suppress(Exception):
            t.auth_none(p.user)
            if t.is_authenticated():
                return
        tried.append("none (no keys, agent or password available)")
    skipped = f"; key file {'; key file '.join(unusable)}" if unusable else ""
    raise AutoservSshPermissionDeniedError(
        f"permission denied for {p.user}@{p.where} (tried {', '.join(tried)}{skipped})"
    )


#: Attempts at a host that drops connections before its banner, when the connect
#: timeout is unbounded (otherwise the connect deadline alone bounds them).
DROPPED_ATTEMPTS_UNBOUNDED = 12


class _DroppedBeforeBanner(Exception):
    """The server closed or reset the connection before its SSH banner (sshd's
    ``MaxStartups``): nothing was authenticated or run, so it may be tried again."""


def open_transport(p: ConnectParams, deadline: Deadline | None = None) -> paramiko.Transport:
    """Connect, check the host key and authenticate, all within ``deadline``
    (default: ``p.connect_timeout`` from now).

    A host that drops the connection before its SSH banner, as sshd does to
    unauthenticated connections past its ``MaxStartups``, is tried again after
    a jittered, growing pause (0.1 s doubling to 2 s, each drawn from its upper
    half) until the deadline; every other failure ends at once. Nothing has been
    authenticated or run at that point, so no command is ever run twice.
    """
    deadline = deadline or p.deadline()
    delays = backoff(0.1, 2.0, 2.0)
    attempts = 0

    def dropped(times: int, last: str = "") -> AutoservSSHTimeout:
        return _connect_error(
            p, f"the server closed the connection before its SSH banner {times} "
               f"times in {deadline.elapsed():.1f} s{last} (sshd's MaxStartups limits "
               f"unauthenticated connections: raise it on the host, or connect to "
               f"fewer hosts at once with --max-parallel)")

    while True:
        attempts += 1
        try:
            return _open_transport_once(p, deadline)
        except AutoservSSHTimeout:
            # the deadline ran out during a try after drops (a loaded sshd may take long
            # to drop one): the drops are the news, not the last try's timeout
            if attempts > 1 and deadline.expired():
                raise dropped(attempts - 1, ", then the next try timed out") from None
            raise
        except _DroppedBeforeBanner:
            pause = next(delays)
            pause = random.uniform(pause / 2, pause)
            unbounded = deadline.seconds is None
            if (attempts >= DROPPED_ATTEMPTS_UNBOUNDED if unbounded
                    else deadline.remaining() <= pause):
                raise dropped(attempts) from None
            log.debug("%s dropped the connection before its banner (attempt %d); "
                      "again in %.2f s", p.where, attempts, pause)
            time.sleep(pause)


def _open_transport_once(p: ConnectParams, deadline: Deadline) -> paramiko.Transport:
    """One attempt of :func:`open_transport`."""
    jumps: list[paramiko.Transport] = []
    sock = _open_socket(p, deadline, jumps)
    # over a real socket, the threads that wait on the connection read it (paramiko_pump);
    # through another host's channel, paramiko's own thread reads it
    t = (paramiko_pump.PumpedTransport(sock) if isinstance(sock, socket.socket)
         else paramiko.Transport(sock))
    t.set_log_channel(CONNECTING_LOG_CHANNEL)  # back to paramiko's once connected
    paramiko_ext.install_exit_signal_handler(t)
    paramiko_ext.install_handshake_clock(t)
    try:
        t.banner_timeout = max(0.1, deadline.remaining())
        t.handshake_timeout = max(0.1, deadline.remaining())
        checker = p.checker()
        prefer = checker.preferred_key_types(p.known_name())
        if prefer:
            opts = t.get_security_options()
            opts.key_types = tuple(prefer) + tuple(k for k in opts.key_types if k not in prefer)
        with paramiko_pump.driving(t):  # one claim for the handshake, the check and auth
            try:
                t.start_client(timeout=max(0.1, deadline.remaining()))
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if deadline.expired():
                    raise _connect_error(
                        p, f"no SSH handshake within {_window(deadline)} s ({exc or 'timeout'})"
                    ) from None
                if paramiko_ext.dropped_before_banner(t, exc):
                    raise _DroppedBeforeBanner from None
                raise _connect_error(
                    p, f"SSH handshake failed: {exc or type(exc).__name__}") from None
            if not (t.is_active() and t.initial_kex_done):
                raise _connect_error(p, f"no SSH handshake within {_window(deadline)} s")
            checker.check(p.known_name(), t.get_remote_server_key())
            _authenticate(t, p, deadline)
    except BaseException:
        _close_and_join(t)
        for j in jumps:
            paramiko_ext.close_now(j)
        raise
    t.set_log_channel(PARAMIKO_LOG_CHANNEL)
    if not isinstance(t, paramiko_pump.PumpedTransport):  # (its readers set their own)
        paramiko_ext.set_idle_poll(t)
    if p.keepalive:
        keepalive.watch(t, p.keepalive, p.keepalive_count, p.where)
    _jumps[t] = jumps  # closed with t
    log.debug("connected to %s@%s (%s)", p.user, p.where, t.remote_version)
    return t


def _close_and_join(t: paramiko.Transport, timeout: float = 2.0) -> None:
    """Close ``t`` and wait (bounded) for its thread to end.

    A transport thread still waiting for a banner wakes up on the closed
    socket and logs the error with a traceback; joined here, it does so
    while the job's logging is still set up, not after the CLI shut it down.
    """
    paramiko_ext.close_now(t)
    if t.is_alive() and t is not threading.current_thread():
        t.join(timeout)


#: transport -> the jump-host transports it runs through (closed with it)
_jumps: weakref.WeakKeyDictionary[paramiko.Transport, list[paramiko.Transport]] = weakref.WeakKeyDictionary()


def close_transport(t: paramiko.Transport) -> None:
    """Close ``t`` and the jump-host transports it runs through."""
    paramiko_ext.close_now(t)
    for j in _jumps.pop(t, []):
        paramiko_ext.close_now(j)


class TransportPool:
    """One transport per destination per process, shared and reference counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[Any, ...], paramiko.Transport] = {}
        self._refs: dict[tuple[Any, ...], int] = {}
        self._key_locks: dict[tuple[Any, ...], threading.Lock] = {}

    def acquire(self, p: ConnectParams) -> None:
        with self._lock:
            self._refs[p.key] = self._refs.get(p.key, 0) + 1

    def release(self, p: ConnectParams) -> None:
        with self._lock:
            n = self._refs.get(p.key, 0) - 1
            if n > 0:
                self._refs[p.key] = n
                return
            self._refs.pop(p.key, None)
            t = self._entries.pop(p.key, None)
        if t is not None:
            close_transport(t)

    def get(
        self, p: ConnectParams, connect_timeout: float | Deadline | None = None
    ) -> paramiko.Transport:
        """The live transport for ``p``, connecting (again) within ``p.deadline(connect_timeout)``."""
        t = self._entries.get(p.key)
        if t is not None and t.is_active():
            return t
        with self._lock:
            klock = self._key_locks.setdefault(p.key, threading.Lock())
        with klock:
            t = self._entries.get(p.key)
            if t is not None and t.is_active():
                return t
            if t is not None:
                log.info("connection to %s dropped; reconnecting", p.where)
                close_transport(t)
            t = open_transport(p, p.deadline(connect_timeout))
            self._entries[p.key] = t
            return t

    def live(self, p: ConnectParams) -> bool:
        """Whether there is an open transport for ``p`` now (never connects)."""
        t = self._entries.get(p.key)
        return t is not None and t.is_active()

    def drop(self, p: ConnectParams) -> None:
        """Close the transport for ``p`` (e.g. after a reboot) without touching refcounts."""
        t = self._entries.pop(p.key, None)
        if t is not None:
            close_transport(t)

    def _forget_in_child(self) -> None:
        self._lock = threading.Lock()
        self._entries.clear()
        self._refs.clear()
        self._key_locks.clear()


POOL = TransportPool()


def _after_fork_in_child() -> None:
    """A forked worker: no parent's connections, free locks, no parent's threads."""
    POOL._forget_in_child()
    _CONFIGS.reset_lock_in_child()
    _KEYS.reset_lock_in_child()
    keepalive.reset_in_child()
    paramiko_pump.reset_in_child()


os.register_at_fork(before=_CONFIGS.warm_before_fork, after_in_child=_after_fork_in_child)

__all__ = [
    "ConnectOptions",
    "ConnectParams",
    "resolve",
    "open_transport",
    "POOL",
    "AutoservHostKeyError",
    "send_eof",
]
