"""What autoserv.hosts.paramiko_ext relies on in paramiko, one test per patch.

Each test first asserts the private name exists with the shape the patch
expects (so a paramiko release that changes it fails here, by name), then
exercises the patch against a real test-bed sshd where it matters.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from paramiko.packet import Packetizer

from autoserv import hosts
from autoserv.hosts import paramiko_ext
from autoserv.lab.testbed import Testbed


@pytest.fixture
def transport(testbed_loopback: Testbed) -> Iterator[paramiko.Transport]:
    """An authenticated transport (opened by autoserv) to the first loopback test-bed host."""
    h = hosts.SSHHost(testbed_loopback.machines[0], ssh_config=str(testbed_loopback.ssh_config))
    yield h.transport()
    h.close()


@pytest.fixture
def threaded_transport(testbed_loopback: Testbed) -> Iterator[paramiko.Transport]:
    """An authenticated transport with paramiko's own thread (as autoserv opens through
    another host's channel; over a socket it opens a ``paramiko_pump.PumpedTransport``)."""
    tb = testbed_loopback.hosts[0]
    t = paramiko.Transport((tb.address, tb.port))
    t.start_client(timeout=10)
    t.auth_publickey("root", paramiko.PKey.from_path(testbed_loopback.client_key))
    paramiko_ext.set_idle_poll(t)
    yield t
    paramiko_ext.close_now(t)


def _params(func: object) -> list[str]:
    return list(inspect.signature(func).parameters)  # type: ignore[arg-type]


# -- install_getuser_cache --------------------------------------------------------------


def test_getuser_cache_replaces_getpass_in_paramiko_config(monkeypatch: pytest.MonkeyPatch) -> None:
    source = inspect.getsource(paramiko.config)
    assert "import getpass" in source and "getpass.getuser()" in source
    paramiko_ext.install_getuser_cache()
    patched = paramiko.config.getpass  # type: ignore[attr-defined]
    assert isinstance(patched, paramiko_ext._OnceGetpass)
    paramiko_ext.install_getuser_cache()  # idempotent
    assert paramiko.config.getpass is patched  # type: ignore[attr-defined]
    # a lookup through many Host blocks asks the user name once
    calls: list[int] = []
    fresh = paramiko_ext._OnceGetpass()
    monkeypatch.setattr(paramiko.config, "getpass", fresh)
    monkeypatch.setattr(paramiko_ext.getpass, "getuser", lambda: calls.append(1) or "someone")
    cfg = paramiko.SSHConfig.from_text(
        "".join(f"Host h{i}\n    User u{i}\n" for i in range(20)) + "Host *\n    IdentityFile ~/%u\n"
    )
    entry = cfg.lookup("h19")
    cfg.lookup("h3")
    assert entry["user"] == "u19"
    assert len(calls) == 1


# -- install_exit_signal_handler / exit_signal ----------------------------------------


def test_exit_signal_handler_relies_on_the_dispatch_table(transport: paramiko.Transport) -> None:
    assert _params(paramiko.Channel._handle_request) == ["self", "m"]  # type: ignore[attr-defined]
    table = transport._channel_handler_table  # type: ignore[attr-defined]
    assert isinstance(table, dict)
    assert table[paramiko.common.MSG_CHANNEL_REQUEST] is paramiko_ext._channel_request
    # a transport autoserv did not patch still dispatches to paramiko's own method
    assert (paramiko.Transport._channel_handler_table[paramiko.common.MSG_CHANNEL_REQUEST]  # type: ignore[attr-defined]
            is paramiko.Channel._handle_request)  # type: ignore[attr-defined]


def test_exit_signal_is_recorded_and_exit_status_still_works(transport: paramiko.Transport) -> None:
    chan = transport.open_session(timeout=10)
    chan.exec_command("kill -KILL $$")
    assert chan.recv_exit_status() == -9
    assert paramiko_ext.exit_signal(chan) == "KILL"
    chan.close()
    ok = transport.open_session(timeout=10)
    ok.exec_command("exit 3")  # other requests (exit-status) still go to paramiko's handler
    assert ok.recv_exit_status() == 3
    assert paramiko_ext.exit_signal(ok) is None
    ok.close()


@pytest.mark.parametrize(("name", "number"), [("KILL", 9), ("TERM", 15), ("NOPE", None), (None, None)])
def test_exit_signal_number(name: str | None, number: int | None) -> None:
    assert paramiko_ext.exit_signal_number(name) == number


# -- send_eof ----------------------------------------------------------------------------


def test_send_eof_relies_on_channel_lock_and_private_senders(transport: paramiko.Transport) -> None:
    assert _params(paramiko.Channel._send_eof) == ["self"]  # type: ignore[attr-defined]
    assert _params(paramiko.Transport._send_message) == ["self", "data"]  # type: ignore[attr-defined]
    # what it does in place of _send_user_message: wait, then send under clear_to_send_lock
    sender = inspect.getsource(paramiko.Transport._send_user_message)  # type: ignore[attr-defined]
    assert "self.clear_to_send.wait(" in sender and "self.clear_to_send_lock.acquire()" in sender
    assert "self.clear_to_send.is_set()" in sender and "self._send_message(data)" in sender
    assert isinstance(transport.clear_to_send_lock, type(threading.Lock()))  # type: ignore[attr-defined]
    assert transport.clear_to_send_timeout > 0  # type: ignore[attr-defined]
    chan = transport.open_session(timeout=10)
    assert isinstance(chan.lock, type(threading.Lock()))  # type: ignore[attr-defined]
    chan.exec_command("cat; echo done")
    chan.sendall(b"typed\n")
    paramiko_ext.send_eof(chan)  # cat sees EOF and ends
    assert chan.recv_exit_status() == 0
    assert chan.makefile("rb").read() == b"typed\ndone\n"
    paramiko_ext.send_eof(chan)  # again, after EOF and close: nothing sent, no error
    chan.close()
    paramiko_ext.send_eof(chan)
    assert transport.is_active()


# -- send_exec ----------------------------------------------------------------------------


def test_send_exec_relies_on_the_request_event(transport: paramiko.Transport) -> None:
    assert _params(paramiko.Channel._event_pending) == ["self"]  # type: ignore[attr-defined]
    chan = transport.open_session(timeout=10)
    assert isinstance(chan.event, threading.Event)  # type: ignore[attr-defined]
    assert chan.event_ready is False  # type: ignore[attr-defined]
    assert paramiko_ext.send_exec(chan, "echo via-send-exec", timeout=10)
    assert chan.event_ready  # type: ignore[attr-defined]
    paramiko_ext.send_eof(chan)
    assert chan.recv_exit_status() == 0
    assert chan.makefile("rb").read() == b"via-send-exec\n"
    chan.close()


def test_send_exec_refused_raises(transport: paramiko.Transport) -> None:
    chan = transport.open_session(timeout=10)
    assert paramiko_ext.send_exec(chan, "sleep 5", timeout=10)  # still running: no race with its end
    with pytest.raises(paramiko.SSHException):  # sshd refuses a second exec on one channel
        paramiko_ext.send_exec(chan, "true", timeout=10)
    chan.close()


# -- dropped_before_banner --------------------------------------------------------------


def _handshake_error(server: Callable[[socket.socket], None], banner_timeout: float = 5
                     ) -> tuple[paramiko.Transport, BaseException]:
    """Start a client against ``server`` (run on the other end of a socket pair); its error."""
    ours, theirs = socket.socketpair()
    peer = threading.Thread(target=server, args=(theirs,))
    peer.start()
    t = paramiko.Transport(ours)
    t.banner_timeout = banner_timeout
    try:
        with pytest.raises((paramiko.SSHException, EOFError, OSError)) as info:
            t.start_client(timeout=banner_timeout + 5)
    finally:
        t.close()
        peer.join(10)
        theirs.close()
    return t, info.value


def _close_at_once(s: socket.socket) -> None:
    s.close()


def _say_and_close(s: socket.socket) -> None:
    s.sendall(b"Exceeded MaxStartups\r\n")
    s.close()


def _stay_silent(s: socket.socket) -> None:
    s.recv(1024)  # until the client gives up and closes


def _speak_another_protocol(s: socket.socket) -> None:
    s.sendall(b"SSH-1.5-old\r\n")
    s.recv(1024)


@pytest.mark.parametrize("server, dropped", [
    (_close_at_once, True),
    (_say_and_close, True),
    (_stay_silent, False),
    (_speak_another_protocol, False),
], ids=["closed", "line-then-closed", "silent", "other-version"])
def test_dropped_before_banner_tells_a_drop_from_other_failures(
        server: Callable[[socket.socket], None], dropped: bool) -> None:
    assert "remote_version" in vars(paramiko.Transport(socket.socket()))
    t, exc = _handshake_error(server, banner_timeout=0.5)
    assert paramiko_ext.dropped_before_banner(t, exc) is dropped, repr(exc)


# -- send_subsystem -----------------------------------------------------------------------


def test_send_subsystem_starts_sftp(transport: paramiko.Transport) -> None:
    chan = transport.open_session(timeout=10)
    assert paramiko_ext.send_subsystem(chan, "sftp", timeout=10)
    sftp = paramiko.SFTPClient(chan)
    assert sftp.normalize("/") == "/"
    sftp.close()


def test_send_subsystem_refused_raises(transport: paramiko.Transport) -> None:
    chan = transport.open_session(timeout=10)
    with pytest.raises(paramiko.SSHException):
        paramiko_ext.send_subsystem(chan, "no-such-subsystem", timeout=10)
    chan.close()


# -- StallGuard ---------------------------------------------------------------------------


def test_stall_guard_relies_on_sftp_waiting_in_recv_and_send() -> None:
    read_all = inspect.getsource(paramiko.sftp.BaseSFTP._read_all)  # type: ignore[attr-defined]
    write_all = inspect.getsource(paramiko.sftp.BaseSFTP._write_all)  # type: ignore[attr-defined]
    assert "isinstance(self.sock, socket.socket)" in read_all and "self.sock.recv(n)" in read_all
    assert "self.sock.send(out)" in write_all
    assert "type(sock) is Channel" in inspect.getsource(paramiko.SFTPClient.__init__)


def test_stall_guard_closes_the_channel_on_the_first_timeout(
        transport: paramiko.Transport, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"  # the test bed host shares this file system
    os.mkfifo(fifo)
    chan = transport.open_session(timeout=10)
    assert paramiko_ext.send_subsystem(chan, "sftp", timeout=10)
    guard = paramiko_ext.StallGuard(chan)
    sftp = paramiko.SFTPClient(guard)  # type: ignore[arg-type]
    assert sftp.stat(str(tmp_path)).st_mode is not None and not guard.stalled
    chan.settimeout(1)
    try:
        with pytest.raises(TimeoutError):
            sftp.open(str(fifo))  # the server blocks opening a FIFO no one writes: no reply
        assert guard.stalled and chan.closed
        with pytest.raises((OSError, EOFError, paramiko.SSHException)):
            sftp.stat(str(tmp_path))  # closed: fails at once instead of waiting again
    finally:
        with contextlib.suppress(OSError):  # let the server's open() return, so it ends
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        sftp.close()
    assert transport.is_active()


# -- install_handshake_clock ----------------------------------------------------------


def test_handshake_clock_relies_on_the_packetizer_handshake_hooks() -> None:
    pk = paramiko.packet.Packetizer
    assert _params(pk.start_handshake) == ["self", "timeout"]
    assert _params(pk.handshake_timed_out) == ["self"]
    assert _params(pk.complete_handshake) == ["self"]
    run = inspect.getsource(paramiko.Transport.run)
    assert "packetizer.start_handshake(self.handshake_timeout)" in run
    assert "packetizer.complete_handshake()" in run
    assert "self.handshake_timed_out()" in inspect.getsource(pk.read_all)


def test_connecting_starts_no_timer_thread(testbed_loopback: Testbed,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        started.append(self)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    h = hosts.SSHHost(testbed_loopback.machines[0], ssh_config=str(testbed_loopback.ssh_config))
    try:
        assert h.run("echo ok").stdout == "ok\n"
    finally:
        h.close()
    names = [t.name for t in started]
    assert not [t for t in started if isinstance(t, threading.Timer)], names
    # over a socket, not even the transport's own thread (paramiko_pump); at most the
    # process's one idle reader and keepalive starter, started by the first connection
    assert set(names) <= {"autoserv-ssh-idle-reader", "autoserv-keepalive-starter"}, names
    # paramiko's own thread, where autoserv still uses it (through another host's channel)
    started.clear()
    tb = testbed_loopback.hosts[0]
    t = paramiko.Transport((tb.address, tb.port))
    paramiko_ext.install_handshake_clock(t)
    try:
        t.start_client(timeout=10)
    finally:
        paramiko_ext.close_now(t)
    assert [type(th).__name__ for th in started] == ["Transport"]


def _banner_then_silence(s: socket.socket) -> None:
    s.sendall(b"SSH-2.0-OpenSSH_9.2p1 stalls\r\n")
    with contextlib.suppress(OSError):
        while s.recv(65536):  # the client's banner and KEXINIT, then until it gives up
            pass


def test_handshake_clock_still_ends_a_handshake_the_server_never_answers() -> None:
    timers_before = {th for th in threading.enumerate() if isinstance(th, threading.Timer)}
    ours, theirs = socket.socketpair()
    peer = threading.Thread(target=_banner_then_silence, args=(theirs,), daemon=True)
    peer.start()
    t = paramiko.Transport(ours)
    paramiko_ext.install_handshake_clock(t)
    t.handshake_timeout = 0.5
    try:
        # no timeout of its own: only the handshake clock can end this wait (paramiko
        # raises what ended its thread: the read loop's EOFError)
        with pytest.raises((paramiko.SSHException, EOFError)):
            t.start_client()
        assert not t.is_active()
        timers = {th for th in threading.enumerate() if isinstance(th, threading.Timer)}
        assert not timers - timers_before
    finally:
        t.close()
        ours.close()  # also when the transport never started (then close() leaves it open)
        peer.join(10)
        theirs.close()


# -- set_idle_poll ------------------------------------------------------------------


def test_idle_poll_replaces_the_active_check_timeout(
        threaded_transport: paramiko.Transport) -> None:
    assert paramiko.Transport._active_check_timeout == 0.1  # what paramiko polls at
    assert threaded_transport.sock.gettimeout() == paramiko_ext.IDLE_POLL


def test_close_ends_the_thread_of_a_transport_polling_slowly(
        threaded_transport: paramiko.Transport) -> None:
    transport = threaded_transport
    paramiko_ext.set_idle_poll(transport, 60)
    chan = transport.open_session(timeout=10)  # the thread's next read waits up to 60 s
    chan.exec_command("true")
    assert chan.recv_exit_status() == 0
    assert transport.is_alive()
    paramiko_ext.close_now(transport)
    transport.join(10)  # shutting the socket down wakes the poll; the next one is 60 s away
    assert not transport.is_alive()


# -- config_lookup ----------------------------------------------------------------------

_LAB_CONFIG = """\
Host tb1
    Port 2001
    IdentityFile ~/.ssh/one
Host tb2 tb3
    Port 2002
Host !tb3 tb*
    User lab
    IdentityFile ~/.ssh/lab
Host tb3
    Port 9999
    HostName three.lab
Match host tb4
    Port 2004
Host tb[5]
    Port 2005
Host *
    User root
    ConnectTimeout 7
    IdentityFile ~/.ssh/all
"""


def test_config_lookup_relies_on_the_parsed_blocks_in_file_order() -> None:
    cfg = paramiko.SSHConfig.from_text("Host a b\n  Port 1\nMatch host c\n  Port 2\n")
    blocks = cfg._config  # type: ignore[attr-defined]
    assert isinstance(blocks, list)
    assert [b.get("host") for b in blocks] == [["*"], ["a", "b"], None]
    assert blocks[2]["matches"] and all("config" in b for b in blocks)
    narrowed = paramiko.SSHConfig()
    assert narrowed._config == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["tb1", "tb2", "tb3", "tb4", "tb5", "tb6", "other", "tb"])
def test_config_lookup_gives_what_paramiko_gives(name: str) -> None:
    cfg = paramiko.SSHConfig.from_text(_LAB_CONFIG)
    assert paramiko_ext.config_lookup(cfg, name) == cfg.lookup(name)
    assert paramiko_ext.config_lookup(cfg, name) == cfg.lookup(name)  # the index, reused


def test_config_lookup_uses_the_whole_config_when_it_canonicalizes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The second pass looks up the canonical name, whose block a narrowed config would lack
    (canonicalization is stubbed: the real one asks DNS, which tests never do)."""
    cfg = paramiko.SSHConfig.from_text(
        "Host a.lab\n  Port 2\nHost a\n  CanonicalizeHostname yes\n  CanonicalDomains lab\n")
    monkeypatch.setattr(cfg, "canonicalize", lambda hostname, options, domains: "a.lab")
    assert paramiko_ext.config_lookup(cfg, "a")["port"] == "2"


# -- install_fast_mac_check -------------------------------------------------------------


@pytest.mark.parametrize(("a", "b", "equal"), [
    (b"", b"", True),
    (b"\x00" * 32, b"\x00" * 32, True),
    (bytes(range(32)), bytes(range(32)), True),
    (bytes(range(32)), bytes(range(31)) + b"\x00", False),
    (b"\x80" + bytes(31), bytes(32), False),
    (bytes(32), bytes(31), False),
    ("|1|abc=|def=", "|1|abc=|def=", True),  # text, as paramiko.hostkeys passes it
    ("|1|abc=|def=", "|1|abc=|dex=", False),
    ("h\u00e9", "h\u00e9", True),  # text compare_digest would refuse
])
def test_fast_mac_check_answers_as_paramiko_does(a: Any, b: Any, equal: bool) -> None:
    assert paramiko_ext._bytes_eq(a, b) is equal
    assert bool(paramiko_ext._python_bytes_eq(a, b)) is equal


def _packetizers(
        mac_key: bytes) -> tuple[socket.socket, Packetizer, Packetizer, socket.socket]:
    """A sending and a receiving Packetizer with hmac-sha2-256 over a socket pair; the
    middle socket is where a test tampers with the bytes in flight."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    a, middle = socket.socketpair()
    b, sink = socket.socketpair()
    key, iv = bytes(16), bytes(16)
    out, inb = Packetizer(a), Packetizer(b)
    out.set_outbound_cipher(Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor(), 16,
                            hashlib.sha256, 32, mac_key, sdctr=True)
    inb.set_inbound_cipher(Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor(), 16,
                           hashlib.sha256, 32, mac_key)
    return middle, out, inb, sink


def test_fast_mac_check_is_what_paramiko_checks_packets_with() -> None:
    assert "util.constant_time_bytes_eq(my_mac, mac)" in inspect.getsource(paramiko.packet)
    paramiko_ext.install_fast_mac_check()
    assert paramiko.util.constant_time_bytes_eq is paramiko_ext._bytes_eq
    paramiko_ext.install_fast_mac_check()  # idempotent
    assert paramiko.util.constant_time_bytes_eq is paramiko_ext._bytes_eq


@pytest.mark.parametrize("tamper", [False, True])
def test_fast_mac_check_takes_a_good_packet_and_refuses_a_tampered_one(tamper: bool) -> None:
    paramiko_ext.install_fast_mac_check()
    middle, out, inb, sink = _packetizers(b"k" * 32)
    try:
        m = paramiko.Message()
        m.add_byte(paramiko.common.cMSG_IGNORE)
        m.add_string(b"payload")
        out.send_message(m)
        wire = bytearray(middle.recv(4096))
        if tamper:
            wire[-1] ^= 0x01  # the last byte of the MAC
        sink.sendall(bytes(wire))
        if tamper:
            with pytest.raises(paramiko.SSHException, match="Mismatched MAC"):
                inb.read_message()
        else:
            kind, got = inb.read_message()
            assert kind == paramiko.common.MSG_IGNORE and got.get_string() == b"payload"
    finally:
        out.close()
        inb.close()
        middle.close()
        sink.close()


# -- install_fqdn_cache -----------------------------------------------------------------


def test_fqdn_cache_replaces_lazy_fqdn_in_paramiko_config(monkeypatch: pytest.MonkeyPatch) -> None:
    source = inspect.getsource(paramiko.config)
    assert "LazyFqdn(config, local_hostname)" in source and "socket.getfqdn()" in source
    paramiko_ext.install_fqdn_cache()
    assert paramiko.config.LazyFqdn is paramiko_ext._OnceFqdn
    paramiko_ext.install_fqdn_cache()  # idempotent
    assert paramiko.config.LazyFqdn is paramiko_ext._OnceFqdn
    # many machines' lookups ask the resolver once (the resolver is stubbed: tests ask no DNS)
    calls: list[int] = []
    monkeypatch.setattr(paramiko_ext, "_fqdns", {})
    monkeypatch.setattr(paramiko.config.socket, "getfqdn",  # type: ignore[attr-defined]
                        lambda name="": calls.append(1) or "ctl.lab.example")
    cfg = paramiko.SSHConfig.from_text(
        "Host *\n    IdentityFile ~/.ssh/%l\n    UserKnownHostsFile ~/.ssh/kh\n")
    entries = [cfg.lookup(f"m{i}") for i in range(10)]
    assert all(e["identityfile"][0].endswith("/.ssh/ctl.lab.example") for e in entries)
    assert len(calls) == 1


def test_fqdn_cache_asks_once_for_threads_that_look_up_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fan-out's threads all look their machine up at its start: one resolver call."""
    paramiko_ext.install_fqdn_cache()
    monkeypatch.setattr(paramiko_ext, "_fqdns", {})
    monkeypatch.setattr(paramiko_ext, "_fqdn_lookups", {})
    n = 12
    started = threading.Semaphore(0)
    second_call = threading.Event()
    calls: list[int] = []

    def resolver(name: str = "") -> str:
        calls.append(1)
        if len(calls) > 1:
            second_call.set()
            return "ctl.lab.example"
        for _ in range(n):  # every thread has begun its lookup
            assert started.acquire(timeout=30)
        second_call.wait(1.0)  # a second lookup arrives at once if the threads do not wait
        return "ctl.lab.example"

    monkeypatch.setattr(paramiko.config.socket, "getfqdn", resolver)  # type: ignore[attr-defined]
    cfg = paramiko.SSHConfig.from_text("Host *\n    IdentityFile ~/.ssh/%l\n")
    found: list[str] = []

    def lookup(i: int) -> None:
        started.release()
        found.append(cfg.lookup(f"m{i}")["identityfile"][0])

    threads = [threading.Thread(target=lookup, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(found) == n and all(f.endswith("/.ssh/ctl.lab.example") for f in found)
    assert len(calls) == 1


def test_fqdn_cache_keeps_nothing_a_stand_in_resolver_answered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``autoserv check`` looks names up through a resolver that answers offline: what it
    says must not become the job's %l."""
    from autoserv.check.machines import offline_ssh_config

    paramiko_ext.install_fqdn_cache()
    monkeypatch.setattr(paramiko_ext, "_fqdns", {})
    cfg = paramiko.SSHConfig.from_text("Host *\n    IdentityFile ~/.ssh/%l\n")
    with offline_ssh_config():
        cfg.lookup("m1")
    assert paramiko_ext._fqdns == {}


# -- config_identity_files ---------------------------------------------------------------


def test_config_identity_files_lists_the_named_keys_in_order() -> None:
    cfg = paramiko.SSHConfig.from_text(
        "Host a\n  IdentityFile ~/.ssh/a\n  IdentityFile /k/shared\n"
        "Host b\n  IdentityFile /k/shared\n  IdentityFile ~/.ssh/%h\nHost *\n  User root\n")
    assert paramiko_ext.config_identity_files(cfg) == [os.path.expanduser("~/.ssh/a"), "/k/shared"]


# -- enable_match_exec -------------------------------------------------------------------

_MATCH_EXEC = """\
import sys
from autoserv.hosts import ssh_connection
print("invoke loaded at import:", "invoke" in sys.modules)
try:
    print("port:", ssh_connection.resolve("h", ssh_config=sys.argv[1]).port)
except Exception as exc:
    print("error:", type(exc).__name__, exc)
"""


def _fresh_python(tmp_path: Path, config: str, block_invoke: bool = False) -> str:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(config)
    code = ("import sys; sys.modules['invoke'] = None\n" if block_invoke else "") + _MATCH_EXEC
    out = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True,
                         check=True, cwd=str(tmp_path))
    return out.stdout


def test_paramiko_is_loaded_without_invoke_and_match_exec_gets_it(tmp_path: Path) -> None:
    pytest.importorskip("invoke")
    marker = tmp_path / "ran"
    plain = _fresh_python(tmp_path, "Host h\n    Port 2201\n")
    assert "invoke loaded at import: False" in plain and "port: 2201" in plain
    out = _fresh_python(tmp_path, f'Match exec "touch {marker}"\n    Port 2202\n')
    assert "invoke loaded at import: False" in out and "port: 2202" in out, out
    assert marker.exists()
    config = paramiko.SSHConfig.from_text('Match exec "true"\n    Port 1\n')
    assert config._config[1]["matches"][0]["type"] == "exec"  # type: ignore[attr-defined]
    assert hasattr(paramiko.config, "invoke") and hasattr(paramiko.config, "invoke_import_error")


def test_match_exec_without_invoke_is_one_clear_error(tmp_path: Path) -> None:
    out = _fresh_python(tmp_path, 'Match exec "true"\n    Port 2202\n', block_invoke=True)
    assert "error: AutoservError ssh config" in out and "needs the Python package invoke" in out
