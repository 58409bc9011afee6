"""SSHHost against real sshd hosts (loopback and network-namespace kinds)."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest

from autoserv import hosts
from autoserv.errors import (
    AutoservError,
    AutoservHostKeyError,
    AutoservRunError,
    AutoservSshPermissionDeniedError,
    AutoservSSHTimeout,
)
from autoserv.hosts.ssh_connection import POOL
from autoserv.lab.testbed import Testbed
from tests.conftest import TEST_PASSWORD


def _alive(host: hosts.SSHHost, pattern: str) -> list[str]:
    """Live (non-zombie) processes on ``host`` whose command line matches ``pattern``."""
    out = host.run(f"pgrep -a -f {pattern!s} || true", verbose=False).stdout
    return [line for line in out.splitlines() if line.strip()]


# -- running commands -------------------------------------------------------------


def test_run_returns_result(host: hosts.SSHHost) -> None:
    r = host.run("echo out; echo err >&2; hostname")
    assert r.exit_status == 0
    assert r.stdout == f"out\n{host.hostname}\n"
    assert r.stderr == "err\n"
    assert r.duration > 0
    assert r.hostname == host.hostname
    assert r.command == "echo out; echo err >&2; hostname"


def test_args_are_quoted_one_word_each(host: hosts.SSHHost) -> None:
    nasty = ["a b", "$HOME", "'single'", '"double"', "`id`", "x; rm -rf /nonexistent", "*"]
    r = host.run("printf '%s\\n'", args=nasty)
    assert r.stdout.splitlines() == nasty


def test_nonzero_exit_raises_with_result(host: hosts.SSHHost) -> None:
    with pytest.raises(AutoservRunError) as info:
        host.run("echo partial; echo oops >&2; exit 3")
    err = info.value
    assert err.result_obj is not None and err.result_obj.exit_status == 3
    text = str(err)
    assert "exit 3" in text and "Exit status: 3" in text
    assert "partial" in text and "oops" in text and "Duration" in text


def test_ignore_status(host: hosts.SSHHost) -> None:
    r = host.run("exit 7", ignore_status=True)
    assert r.exit_status == 7


@pytest.mark.parametrize("kind", ["str", "bytes", "file"])
def test_stdin(host: hosts.SSHHost, kind: str) -> None:
    data = "line one\nline two ünïcode\n"
    stdin = {"str": data, "bytes": data.encode(), "file": io.BytesIO(data.encode())}[kind]
    assert host.run("cat", stdin=stdin).stdout == data


def test_without_stdin_reading_commands_get_eof(host: hosts.SSHHost) -> None:
    assert host.run("cat", timeout=10).stdout == ""


def test_large_stdin_and_output_do_not_deadlock(host: hosts.SSHHost) -> None:
    data = os.urandom(3 * 1024 * 1024).hex()  # 6 MiB of text each way
    r = host.run("cat; cat /dev/null", stdin=data, stdout_tee=None, timeout=120)
    assert r.stdout == data


def test_invalid_utf8_is_replaced(host: hosts.SSHHost) -> None:
    r = host.run("printf 'ok \\377\\376 done'")
    assert r.stdout == "ok \ufffd\ufffd done"


def test_output_streams_to_logger_and_tee(host: hosts.SSHHost, caplog: pytest.LogCaptureFixture) -> None:
    tee = io.StringIO()
    with caplog.at_level(logging.DEBUG, logger=f"autoserv.host.{host.hostname}"):
        host.run("echo to-log; echo err-log >&2")
        host.run("echo to-tee", stdout_tee=tee)
    messages = [r.getMessage() for r in caplog.records if r.name == f"autoserv.host.{host.hostname}"]
    assert any("to-log" in m for m in messages)
    assert any("err-log" in m for m in messages)
    assert tee.getvalue() == "to-tee\n"


def test_timeout_kills_remote_command_and_children(host: hosts.SSHHost) -> None:
    cmd = "echo started; sleep 3131 & sh -c 'sleep 3132' & sleep 3133; echo never"
    with pytest.raises(AutoservRunError) as info:
        host.run(cmd, timeout=1, ignore_status=True)
    res = info.value.result_obj
    assert res is not None and res.timed_out and info.value.timed_out
    assert res.stdout == "started\n"
    assert "timed out" in str(info.value)
    assert _alive(host, "'slee[p] 313'") == []


def test_exception_during_run_kills_remote_command(host: hosts.SSHHost) -> None:
    class Boom(BaseException):
        pass

    def interrupt(_frame: object = None, _sig: object = None) -> None:
        raise Boom

    tee_calls = []

    class RaisingTee(io.StringIO):
        def write(self, text: str) -> int:
            tee_calls.append(text)
            raise Boom

    with pytest.raises(Boom):
        host.run("echo go; sleep 3141", stdout_tee=RaisingTee())
    assert tee_calls
    assert _alive(host, "'slee[p] 3141'") == []


def test_one_transport_shared_with_nodelay(testbed: Testbed) -> None:
    a = hosts.SSHHost(testbed.machines[0], ssh_config=str(testbed.ssh_config))
    b = hosts.SSHHost(testbed.machines[0], ssh_config=str(testbed.ssh_config))
    a.run("true")
    b.run("true")
    t = a.transport()
    assert t is b.transport()
    assert t.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    a.close()
    assert t.is_active(), "still used by b"
    b.close()
    assert not t.is_active()


def test_threads_share_the_connection(host: hosts.SSHHost) -> None:
    # many short commands at once on one connection: a stdin EOF that raced the
    # channel's close made sshd drop the whole connection (a few % of commands)
    first = host.transport()
    for _ in range(5):
        results: list[str] = []

        def work(i: int, results: list[str] = results) -> None:
            results.append(host.run_output(f"echo {i}"))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results, key=int) == [str(i) for i in range(40)]
    assert host.transport() is first  # never dropped, never reconnected


def test_reconnects_after_connection_drop(host: hosts.SSHHost) -> None:
    host.run("true")
    first = host.transport()
    first.sock.shutdown(socket.SHUT_RDWR)
    time.sleep(0.1)
    assert host.run_output("echo back") == "back"
    assert host.transport() is not first


def test_command_killed_by_a_signal_says_so(host: hosts.SSHHost) -> None:
    # sshd reports "exit-signal", which paramiko drops: not a lost connection
    res = host.run("echo dying; kill -9 $$", ignore_status=True)
    assert (res.exit_status, res.stdout) == (-9, "dying\n")
    with pytest.raises(AutoservRunError, match="killed by signal TERM") as info:
        host.run("kill -TERM $$")
    assert info.value.result_obj is not None and info.value.result_obj.exit_status == -15
    assert host.run_output("echo same connection") == "same connection"


def test_host_dying_mid_command_is_clear_and_next_run_reconnects(testbed: Testbed) -> None:
    # a simulated reboot of the test bed host kills every process of that host,
    # sshd sessions included: the connection dies under the running command
    h = hosts.SSHHost(testbed.machines[1], ssh_config=str(testbed.ssh_config))
    old = h.get_boot_id()
    with pytest.raises(AutoservRunError, match="lost while running command") as info:
        h.run("echo before; reboot; sleep 30", timeout=60)
    assert info.value.result_obj is not None and info.value.result_obj.stdout == "before\n"
    assert h.wait_up(timeout=30)
    assert h.get_boot_id() != old
    assert h.run_output("echo again") == "again"


# -- helpers -------------------------------------------------------------------------


def test_run_helpers(host: hosts.SSHHost) -> None:
    assert host.run_output("echo '  padded  '") == "padded"
    assert host.run_short("echo short").stdout == "short\n"
    host.run_grep("echo hello world", stdout_ok_regexp="wor.d")
    with pytest.raises(AutoservRunError):
        host.run_grep("echo hello", stdout_err_regexp="hel+o")
    with pytest.raises(AutoservRunError):
        host.run_grep("echo hello", stdout_ok_regexp="absent")


def test_system_queries(host: hosts.SSHHost) -> None:
    assert host.get_num_cpu() == os.cpu_count()
    assert host.get_arch() == os.uname().machine
    assert host.get_kernel_ver() == os.uname().release
    assert host.get_cmdline()
    boot_id = host.get_boot_id()
    assert boot_id and len(boot_id) == 36


def test_tmp_dir_removed_at_close(testbed: Testbed) -> None:
    h = hosts.SSHHost(testbed.machines[0], ssh_config=str(testbed.ssh_config))
    d = h.get_tmp_dir()
    h.run("touch", args=[f"{d}/file"])
    assert os.path.isdir(d)
    h.close()
    h.close()  # idempotent
    assert not os.path.exists(d)


def test_context_manager_closes(testbed: Testbed) -> None:
    with hosts.SSHHost(testbed.machines[0], ssh_config=str(testbed.ssh_config)) as h:
        d = h.get_tmp_dir()
    assert h.closed and not os.path.exists(d)
    with pytest.raises(AutoservError):
        h.run("true")


class _FakeInstallable:
    def install(self, host: hosts.SSHHost) -> str:
        return host.run_output("hostname")


def test_install_calls_obj_install(host: hosts.SSHHost) -> None:
    assert host.install(_FakeInstallable()) == host.hostname


def test_is_up_wait_up_wait_down(host: hosts.SSHHost) -> None:
    assert host.is_up()
    assert host.wait_up(timeout=10)
    boot = host.get_boot_id()
    assert not host.wait_down(timeout=1, old_boot_id=boot)  # still up, same boot


def test_unreachable_host_is_down_without_raising() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    h = hosts.SSHHost("127.0.0.1", port=port, connect_timeout=2, host_key_policy="off")
    assert not h.is_up(timeout=1)
    assert not h.wait_up(timeout=1.5)
    assert h.wait_down(timeout=5)


def test_reboot_waits_down_and_up(testbed: Testbed) -> None:
    # the test bed simulates reboots per host (new boot id, sshd restarted)
    h = hosts.SSHHost(testbed.machines[2], ssh_config=str(testbed.ssh_config))
    records: list[tuple[object, ...]] = []
    hosts.set_status_hook(lambda *a, **k: records.append((*a, k.get("optional_fields"))))
    try:
        old = h.get_boot_id()
        h.reboot(timeout=60)
        assert h.get_boot_id() != old
        # the host is really back: nothing of the old boot kills the new sessions
        assert h.run_output("sleep 1; echo alive") == "alive"
    finally:
        hosts.set_status_hook(None)
    ops = [(r[0], r[2]) for r in records]
    assert ops == [
        ("START", "reboot"),
        ("GOOD", "reboot.start"),
        ("GOOD", "reboot.verify"),
        ("END GOOD", "reboot"),
    ]
    assert records[-1][-1] == {"kernel": os.uname().release}


# -- connection failures ----------------------------------------------------------


def test_connection_refused_names_host_and_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    h = hosts.SSHHost("127.0.0.1", port=port, connect_timeout=5, host_key_policy="off")
    with pytest.raises(AutoservSSHTimeout, match=f"127.0.0.1:{port}: connection refused"):
        h.run("true")


def test_unknown_host_name() -> None:
    h = hosts.SSHHost("no-such-host.invalid", connect_timeout=5)
    with pytest.raises(AutoservSSHTimeout, match="no-such-host.invalid:22: unknown host name"):
        h.run("true")


def test_silent_server_times_out_within_connect_timeout() -> None:
    # accepts TCP but never sends a banner (like qemu user networking before the guest listens)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    port = srv.getsockname()[1]
    try:
        h = hosts.SSHHost("127.0.0.1", port=port, connect_timeout=1, host_key_policy="off")
        with pytest.raises(AutoservSSHTimeout, match=f"127.0.0.1:{port}"):
            h.run("true")
    finally:
        srv.close()


def test_unreachable_address_in_lab_times_out(testbed_netns: Testbed) -> None:
    # an address inside the test bed's own lab subnet that no host has
    net = testbed_netns.subnet.rsplit(".", 1)[0]
    h = hosts.SSHHost(f"{net}.250", connect_timeout=1, host_key_policy="off")
    with pytest.raises(AutoservSSHTimeout, match=f"{net}.250:22"):
        h.run("true")


def test_wrong_key_is_permission_denied(testbed: Testbed, tmp_path: Path) -> None:
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    th = testbed.hosts[0]
    h = hosts.SSHHost(
        th.address,
        port=th.port,
        key_file=str(key),
        known_hosts=str(testbed.known_hosts),
        ssh_config=os.devnull,
    )
    h.params = h.params.__class__(**{**h.params.__dict__, "identities_only": True})
    with pytest.raises(AutoservSshPermissionDeniedError, match="permission denied for root@"):
        h.run("true")


def test_wait_up_on_a_host_that_refuses_us_raises(testbed: Testbed, tmp_path: Path) -> None:
    # no timeout: a host that answers but never lets us in must not be waited for forever
    wrong = Path(testbed.hosts[1].workdir, "ssh_host_ed25519_key.pub").read_text()
    h = _direct(testbed, known_hosts=str(testbed.known_hosts), pinned_host_keys=[wrong])
    with pytest.raises(AutoservHostKeyError, match="pinned"):
        h.wait_up()
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    th = testbed.hosts[0]
    h2 = hosts.SSHHost(th.address, port=th.port, key_file=str(key), known_hosts=str(testbed.known_hosts),
                       ssh_config=os.devnull)
    h2.params = dataclasses.replace(h2.params, identities_only=True)
    with pytest.raises(AutoservSshPermissionDeniedError, match="permission denied for root@"):
        h2.wait_up()
    assert not h2.is_up()  # is_up() still never raises


def test_password_auth(testbed: Testbed) -> None:
    th = testbed.hosts[1]
    h = hosts.SSHHost(
        f"root:{TEST_PASSWORD}@{th.address}:{th.port}",
        known_hosts=str(testbed.known_hosts),
        ssh_config=os.devnull,
    )
    assert h.run_output("hostname") == th.name
    assert TEST_PASSWORD not in repr(h) and TEST_PASSWORD not in repr(h.params)


def test_password_from_environment(testbed: Testbed, monkeypatch: pytest.MonkeyPatch) -> None:
    th = testbed.hosts[1]
    monkeypatch.setenv("AUTOSERV_SSH_PASS", TEST_PASSWORD)
    h = hosts.SSHHost(th.address, port=th.port, known_hosts=str(testbed.known_hosts), ssh_config=os.devnull)
    assert h.run_output("hostname") == th.name


def test_wrong_password_is_permission_denied(testbed: Testbed, caplog: pytest.LogCaptureFixture) -> None:
    th = testbed.hosts[1]
    h = hosts.SSHHost(
        th.address,
        port=th.port,
        password="not-the-password",
        known_hosts=str(testbed.known_hosts),
        ssh_config=os.devnull,
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(AutoservSshPermissionDeniedError) as info:
        h.run("true")
    assert "not-the-password" not in str(info.value)
    assert "not-the-password" not in caplog.text


def test_ssh_config_proxyjump(testbed: Testbed, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    target = testbed.hosts[1]
    config.write_text(
        testbed.ssh_config.read_text()
        + f"\nHost behind\n    HostName {target.address}\n    Port {target.port}\n"
        f"    ProxyJump {testbed.machines[0]}\n    IdentityFile {testbed.client_key}\n"
        f"    UserKnownHostsFile {testbed.known_hosts}\n    StrictHostKeyChecking yes\n"
    )
    h = hosts.SSHHost("behind", ssh_config=str(config))
    assert h.run_output("hostname") == target.name


# -- host keys -------------------------------------------------------------------------


def _direct(testbed: Testbed, **kw: object) -> hosts.SSHHost:
    th = testbed.hosts[0]
    return hosts.SSHHost(
        th.address, port=th.port, key_file=str(testbed.client_key), ssh_config=os.devnull, **kw
    )  # type: ignore[arg-type]


def test_strict_refuses_unknown_key(testbed: Testbed, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    h = _direct(testbed, known_hosts=str(empty), host_key_policy="strict")
    with pytest.raises(AutoservHostKeyError, match="unknown host key .* strict"):
        h.run("true")
    assert not empty.exists()


def test_accept_new_learns_then_refuses_changed_key(testbed: Testbed, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    h = _direct(testbed, known_hosts=str(known), host_key_policy="accept-new")
    h.run("true")
    lines = known.read_text().splitlines()
    assert len(lines) == 1 and "ssh-ed25519" in lines[0]
    h.close()
    # same host name, different key: the recorded line is named
    other = paramiko.Ed25519Key.from_path  # noqa: F841 (documenting the key type)
    key_path = tmp_path / "fake"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_path)], check=True)
    fake = Path(str(key_path) + ".pub").read_text().split()
    name = lines[0].split()[0]
    known.write_text(f"# comment\n{name} {fake[0]} {fake[1]}\n")
    h2 = _direct(testbed, known_hosts=str(known), host_key_policy="accept-new")
    with pytest.raises(AutoservHostKeyError, match=f"HOST KEY CHANGED .*{known}:2"):
        h2.run("true")


def test_hashed_known_hosts_entry(testbed: Testbed, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(testbed.known_hosts.read_text())
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert "|1|" in known.read_text()
    h = _direct(testbed, known_hosts=str(known), host_key_policy="strict")
    assert h.run_output("echo hashed") == "hashed"


def test_policy_off_accepts_and_writes_nothing(testbed: Testbed, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    h = _direct(testbed, known_hosts=str(known), host_key_policy="off")
    assert h.run_output("echo off") == "off"
    assert not known.exists()


def test_pinned_key(testbed: Testbed, tmp_path: Path) -> None:
    pub = Path(testbed.hosts[0].workdir, "ssh_host_ed25519_key.pub").read_text()
    h = _direct(testbed, known_hosts=str(tmp_path / "none"), pinned_host_keys=[pub])
    assert h.run_output("echo pinned") == "pinned"
    wrong = Path(testbed.hosts[1].workdir, "ssh_host_ed25519_key.pub").read_text()
    h2 = _direct(testbed, known_hosts=str(testbed.known_hosts), pinned_host_keys=[wrong])
    with pytest.raises(AutoservHostKeyError, match="pinned"):
        h2.run("true")


# -- defaults and machine strings --------------------------------------------------------


def test_process_defaults_apply(testbed: Testbed) -> None:
    th = testbed.hosts[0]
    hosts.set_ssh_defaults(
        port=th.port,
        key_file=str(testbed.client_key),
        known_hosts=str(testbed.known_hosts),
        host_key_policy="strict",
        ssh_config=os.devnull,
    )
    h = hosts.create_host(th.address)
    assert h.run_output("hostname") == th.name
    assert POOL.get(h.params) is h.transport()
