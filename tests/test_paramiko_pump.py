"""autoserv.hosts.paramiko_pump: connections read by the threads that wait on them.

First what it relies on in paramiko (so a release that changes it fails here, by name),
then each promise of the module against real test-bed sshd hosts: no thread per
connection, waits outside ``driving`` served by the idle reader, threads sharing one
connection, a close that ends another thread's wait, and the handshake's failure modes.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from autoserv import hosts
from autoserv.deadline import Deadline
from autoserv.errors import AutoservError
from autoserv.hosts import paramiko_ext, paramiko_pump
from autoserv.lab.testbed import Testbed


@pytest.fixture
def ssh_host(testbed_loopback: Testbed) -> Iterator[hosts.SSHHost]:
    h = hosts.SSHHost(testbed_loopback.machines[0], ssh_config=str(testbed_loopback.ssh_config))
    yield h
    h.close()


# -- what it relies on -------------------------------------------------------------------


def test_the_read_loop_it_repeats_is_paramikos() -> None:
    run = inspect.getsource(paramiko.Transport.run)
    for name in ("_check_banner()", "start_handshake(", "_send_kex_init()",
                 "_expect_packet(MSG_KEXINIT)", "need_rekey()", "read_message()",
                 "NeedRekeyException", "MSG_IGNORE", "MSG_DISCONNECT", "_parse_disconnect(m)",
                 "MSG_DEBUG", "_parse_debug(m)", "_enforce_strict_kex(ptype)",
                 "_expected_packet", "kex_engine.parse_next(ptype, m)", "_handler_table[ptype](m)",
                 "_ensure_authed(ptype, m)", "_channel_handler_table[ptype](chan, m)",
                 "channels_seen", "auth_handler._handler_table", "cMSG_UNIMPLEMENTED",
                 "complete_handshake()", "chan._unlink()", "completion_event.set()",
                 "auth_handler.abort()", "channel_events.values()"):
        assert name in run, name
    assert "self.start()" in inspect.getsource(paramiko.Transport.start_client)
    read_all = inspect.getsource(paramiko.packet.Packetizer.read_all)
    assert "self.__remainder" in read_all  # what arrived before is read first
    assert hasattr(paramiko.packet.Packetizer(socket.socket()), "_Packetizer__remainder")


def test_install_replaces_event_and_condition_in_paramikos_modules() -> None:
    paramiko_pump.install()
    paramiko_pump.install()  # idempotent
    for mod in (paramiko.transport, paramiko.channel, paramiko.buffered_pipe,
                paramiko.auth_handler):
        source = inspect.getsource(mod)
        assert "import threading" in source
        shim = mod.threading  # type: ignore[attr-defined]
        assert shim.Event is paramiko_pump._PumpEvent
        assert shim.Condition is paramiko_pump._PumpCondition
        assert shim.Lock is threading.Lock and shim.Thread is threading.Thread
    # outside driving() they are threading's own
    ev = paramiko.transport.threading.Event()  # type: ignore[attr-defined]
    assert not ev.wait(0.01)
    ev.set()
    assert ev.wait(0)


# -- against real hosts --------------------------------------------------------------------


def test_a_connection_has_no_thread_of_its_own(ssh_host: hosts.SSHHost) -> None:
    before = {th.ident for th in threading.enumerate()}
    assert ssh_host.run("echo one").stdout == "one\n"
    t = ssh_host.transport()
    assert isinstance(t, paramiko_pump.PumpedTransport)
    assert not t.is_alive() and t.is_active()
    assert ssh_host.run("echo two").stdout == "two\n"
    new = [th.name for th in threading.enumerate() if th.ident not in before]
    # (the process's one idle reader and keepalive starter, if this test connected first)
    assert set(new) <= {"autoserv-ssh-idle-reader", "autoserv-keepalive-starter"}, new


def test_waits_outside_driving_are_served_by_the_idle_reader(ssh_host: hosts.SSHHost) -> None:
    t = ssh_host.transport()
    outcome: list[object] = []

    def plain_paramiko() -> None:  # a thread that knows nothing of driving()
        try:
            chan = t.open_session(timeout=10)
            chan.exec_command("echo hi; sleep 0.3; echo there")
            out = chan.makefile("rb").read()
            outcome.append((out, chan.recv_exit_status()))
        except Exception as exc:
            outcome.append(exc)

    th = threading.Thread(target=plain_paramiko)
    th.start()
    th.join(20)
    assert outcome == [(b"hi\nthere\n", 0)]
    # a keepalive's answer, awaited by nobody who reads: the idle reader reads it
    assert paramiko_ext.ping(t, 10)


def test_the_idle_reader_takes_a_connection_back_when_its_last_driver_leaves(
        ssh_host: hosts.SSHHost) -> None:
    ssh_host.run("true")  # connect, open, send, wait: each claims and releases it
    t = ssh_host.transport()
    assert isinstance(t, paramiko_pump.PumpedTransport)
    assert (t._idle_claims, t._idle_registered) == (0, True)
    with paramiko_pump.driving(t):
        with paramiko_pump.driving(t):  # nested: one claim of the epoll, counted twice
            assert (t._idle_claims, t._idle_registered) == (2, False)
        assert (t._idle_claims, t._idle_registered) == (1, False)
    assert (t._idle_claims, t._idle_registered) == (0, True)
    assert paramiko_ext.ping(t, 10)  # nobody drives it: the idle reader reads the answer
    assert ssh_host.run("echo again").stdout == "again\n"
    assert (t._idle_claims, t._idle_registered) == (0, True)
    ssh_host.close()
    assert (t._idle_fd, t._idle_registered) == (None, False)


def test_threads_sharing_one_connection_take_turns_reading_it(ssh_host: hosts.SSHHost) -> None:
    ssh_host.run("true")
    results: dict[int, object] = {}

    def one(i: int) -> None:
        try:
            r = ssh_host.run(f"sleep 0.{i % 4}; echo {i}; echo e{i} >&2")
            results[i] = (r.stdout, r.stderr)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert results == {i: (f"{i}\n", f"e{i}\n") for i in range(8)}


def test_closing_a_connection_ends_a_wait_in_another_thread(ssh_host: hosts.SSHHost) -> None:
    ssh_host.run("true")
    t = ssh_host.transport()
    raised: list[BaseException] = []

    started = threading.Event()

    class Tee:
        def write(self, text: str) -> int:
            started.set()
            return len(text)

        def flush(self) -> None:
            pass

    def waits() -> None:
        try:
            ssh_host.run("echo started; sleep 60", stdout_tee=Tee())
        except BaseException as exc:
            raised.append(exc)

    th = threading.Thread(target=waits)
    th.start()
    assert started.wait(20)  # the command runs: the thread reads the connection now
    paramiko_ext.close_now(t)
    th.join(20)
    assert not th.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], AutoservError), raised
    assert "lost" in str(raised[0])
    assert ssh_host.run("echo again").stdout == "again\n"  # a new connection


# -- the handshake, against a scripted server -------------------------------------------------


def _serve(sock: socket.socket, send: bytes, then_close: bool) -> None:
    with sock:
        sock.sendall(send)
        if then_close:
            return
        sock.settimeout(10)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass


def _pumped_handshake(send: bytes, then_close: bool
                      ) -> tuple[paramiko_pump.PumpedTransport, BaseException | None]:
    """A pumped handshake against a scripted server, with no timeout of its own: only the
    server, the banner check or the 0.5-s handshake clock can end it."""
    ours, theirs = socket.socketpair()
    peer = threading.Thread(target=_serve, args=(theirs, send, then_close), daemon=True)
    peer.start()
    t = paramiko_pump.PumpedTransport(ours)
    paramiko_ext.install_handshake_clock(t)
    t.handshake_timeout = 0.5
    error: BaseException | None = None
    try:
        with paramiko_pump.driving(t):
            t.start_client()
    except BaseException as exc:
        error = exc
    finally:
        t.close()
        peer.join(15)
    return t, error


def test_a_server_that_closes_before_its_banner_is_a_drop() -> None:
    t, error = _pumped_handshake(b"", then_close=True)
    assert error is not None
    assert paramiko_ext.dropped_before_banner(t, error)


def test_a_server_that_speaks_another_protocol_is_no_drop() -> None:
    t, error = _pumped_handshake(b"HTTP/1.1 400 Bad Request\r\n" * 120, then_close=False)
    # paramiko's banner check gave up on the lines (the server's close, 10 s later, would
    # have been an EOFError)
    assert isinstance(error, paramiko.SSHException), error
    assert not paramiko_ext.dropped_before_banner(t, error)


def test_the_handshake_clock_ends_a_pumped_handshake_the_server_never_answers() -> None:
    t, error = _pumped_handshake(b"Welcome\r\nSSH-2.0-Silent\r\n", then_close=False)
    assert error is not None and not t.is_active()
    assert "handshake timed out" in str(error)  # (not the server's close, 10 s later)
    assert t.remote_version == "SSH-2.0-Silent"


def _rekey_often(t: paramiko.Transport) -> list[int]:
    """Make ``t`` renegotiate its keys every ~200 kB each way; count the renegotiations."""
    pk = t.packetizer
    pk.REKEY_BYTES = 200_000  # type: ignore[misc]
    kexinits: list[int] = []
    real = t._send_kex_init  # type: ignore[attr-defined]

    def send_kex_init() -> None:
        kexinits.append(1)
        real()

    t._send_kex_init = send_kex_init  # type: ignore[attr-defined]
    return kexinits


def test_keys_are_renegotiated_while_a_worker_reads(ssh_host: hosts.SSHHost) -> None:
    ssh_host.run("true")
    t = ssh_host.transport()
    kexinits = _rekey_often(t)
    for _ in range(3):  # 2.7 MB of output each, read by the waiting thread (driving it)
        big = ssh_host.run("head -c 2000000 /dev/zero | base64 -w 0").stdout
        assert len(big) == 2666668 and set(big.rstrip("=")) == {"A"}
    assert len(kexinits) >= 3, kexinits
    # a CLOSE that arrives during a key exchange is answered once it ends (paramiko's own
    # reader waited 30 s there for a key exchange only it could finish, then failed the
    # connection): the same connection is still up
    assert ssh_host.transport() is t and t.is_active()


def test_keys_are_renegotiated_while_the_idle_reader_reads(
        ssh_host: hosts.SSHHost, tmp_path: Path) -> None:
    ssh_host.run("head -c 3000000 /dev/urandom > /tmp/pump-rekey.bin")
    t = ssh_host.transport()
    kexinits = _rekey_often(t)
    up = tmp_path / "up.bin"
    up.write_bytes(os.urandom(3_000_000))
    try:
        for _ in range(2):  # no driving(): scp's waits are served by the idle reader
            ssh_host.get_file("/tmp/pump-rekey.bin", str(tmp_path / "got.bin"))
            ssh_host.send_file(str(up), "/tmp/pump-rekey-up.bin")
        sums = ssh_host.run("md5sum /tmp/pump-rekey.bin /tmp/pump-rekey-up.bin").stdout.split()
    finally:
        ssh_host.run("rm -f /tmp/pump-rekey.bin /tmp/pump-rekey-up.bin")
    assert sums[0] == hashlib.md5((tmp_path / "got.bin").read_bytes()).hexdigest()
    assert sums[2] == hashlib.md5(up.read_bytes()).hexdigest()
    assert len(kexinits) >= 3, kexinits
    assert ssh_host.transport() is t and t.is_active()


def test_stdin_is_sent_and_ended_while_keys_are_renegotiated(ssh_host: hosts.SSHHost) -> None:
    ssh_host.run("true")
    t = ssh_host.transport()
    kexinits = _rekey_often(t)
    outcome: list[object] = []

    def feed() -> None:
        try:
            for i in range(6):  # EOF follows 1 MB of stdin, often during a key exchange
                r = ssh_host.run("wc -c; echo ok", stdin=bytes([65 + i]) * 1_000_000)
                outcome.append(r.stdout.split())
        except Exception as exc:
            outcome.append(exc)

    th = threading.Thread(target=feed, daemon=True)
    th.start()
    th.join(120)  # (a deadlock fails here, not at the suite's timeout)
    assert not th.is_alive(), "stuck sending stdin or its EOF during a key exchange"
    assert outcome == [["1000000", "ok"]] * 6
    assert len(kexinits) >= 6, kexinits
    assert ssh_host.transport() is t and t.is_active()


class _StalledStdout:
    """A tee whose first write blocks, as a stalled reader of autoserv's stdout would."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        if not self.lines:
            time.sleep(self.seconds)
        self.lines.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_a_connection_whose_driver_is_blocked_still_answers_keepalives(
        testbed_loopback: Testbed) -> None:
    """The thread driving the connection blocks in a tee for 4 s; keepalives every 0.5 s
    (lost after 3 unanswered) are still answered: the watchdog reads the connection."""
    h = hosts.SSHHost(testbed_loopback.machines[0], ssh_config=str(testbed_loopback.ssh_config),
                      keepalive=0.5)
    try:
        h.run("true")
        watchdog = f"autoserv-keepalive-{h.params.where}"
        deadline = Deadline(10)  # (it starts one interval after connecting)
        while (watchdog not in {th.name for th in threading.enumerate()}
               and not deadline.expired()):
            time.sleep(0.05)
        tee = _StalledStdout(4.0)
        r = h.run("echo hi; sleep 0.2; echo there", stdout_tee=tee)
        assert r.stdout == "hi\nthere\n" and "".join(tee.lines) == "hi\nthere\n"
        assert h.transport().is_active()
        assert paramiko_ext.ping(h.transport(), 5)
    finally:
        h.close()


class _Abort(BaseException):
    """Stands for an abort raised into a thread (autoserv.abort.JobAbort is one)."""


def test_an_abort_inside_a_read_ends_the_connection_and_the_next_use_reconnects(
        ssh_host: hosts.SSHHost, monkeypatch: pytest.MonkeyPatch) -> None:
    ssh_host.run("true")
    t = ssh_host.transport()
    assert isinstance(t, paramiko_pump.PumpedTransport)
    real = t._dispatch
    calls: list[int] = []

    def dispatch(ptype: int, m: paramiko.Message) -> bool:
        calls.append(ptype)
        if len(calls) == 2:  # in the middle of the command's packets
            raise _Abort()
        return real(ptype, m)

    monkeypatch.setattr(t, "_dispatch", dispatch)
    with pytest.raises(_Abort):
        ssh_host.run("echo hi; sleep 0.2; echo there")
    assert not t.is_active()  # (the stream may be cut anywhere: not used again)
    assert ssh_host.run("echo again").stdout == "again\n"
    assert ssh_host.transport() is not t
