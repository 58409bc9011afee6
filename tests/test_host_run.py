"""SSHHost.run against real sshd hosts: results, quoting, stdin, output, timeouts, the shared
connection, signals, the run helpers and the host lifecycle.
"""

from __future__ import annotations

import io
import logging
import os
import resource
import socket
import threading
import time

import pytest

from autoserv import hosts
from autoserv.errors import (
    AutoservError,
    AutoservRunError,
    AutoservRunTimeoutError,
)
from autoserv.lab.testbed import Testbed
from autoserv.run_core import KILL_BUDGET
from tests.conftest import HOST_KINDS
from tests.host_helpers import alive


@pytest.fixture(scope="session", params=HOST_KINDS)
def testbed(request: pytest.FixtureRequest) -> Testbed:
    """Each test using this runs against a loopback, a netns and a noisy-login host."""
    return request.getfixturevalue(f"testbed_{request.param}")



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
    with pytest.raises(AutoservRunTimeoutError) as info:  # an AutoservRunError too
        host.run(cmd, timeout=1, ignore_status=True)
    assert isinstance(info.value, AutoservRunError)
    res = info.value.result_obj
    assert res is not None and res.timed_out and info.value.timed_out
    assert res.stdout == "started\n"
    assert "timed out" in str(info.value)
    assert alive(host, "'slee[p] 313'") == []


def test_timeout_kills_a_command_that_ignores_term_within_the_kill_budget(host: hosts.SSHHost) -> None:
    # TERM is ignored: the kill path escalates to KILL on its own deadline, not fixed waits
    start = time.monotonic()
    with pytest.raises(AutoservRunTimeoutError, match="timed out after 1 s"):
        host.run("trap '' TERM; sleep 3171 & trap '' TERM; sleep 3172", timeout=1)
    assert time.monotonic() - start < 1 + KILL_BUDGET
    assert alive(host, "'slee[p] 317'") == []


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
    assert alive(host, "'slee[p] 3141'") == []


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


def test_commands_run_when_the_process_holds_descriptors_above_1023(testbed: Testbed) -> None:
    """A thread-model fan-out to 1000 machines holds thousands of descriptors: waiting on a
    channel whose descriptors are above 1023 must work (``select`` refuses them)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = []
    try:
        while len(filler) < 1100 and (not filler or filler[-1] < 1100):
            filler.append(os.open(os.devnull, os.O_RDONLY))
        h = hosts.SSHHost(testbed.machines[0], ssh_config=str(testbed.ssh_config))
        try:
            r = h.run("sleep 0.3; echo late")
            assert r.stdout == "late\n"
            with pytest.raises(AutoservRunTimeoutError):
                h.run("sleep 30", timeout=0.5)
        finally:
            h.close()
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


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
    assert (res.exit_status, res.exit_signal, res.stdout) == (-9, 9, "dying\n")
    assert host.run("exit 3", ignore_status=True).exit_signal is None
    with pytest.raises(AutoservRunError, match="killed by signal TERM") as info:
        host.run("kill -TERM $$")
    assert info.value.result_obj is not None and info.value.result_obj.exit_status == -15
    assert info.value.result_obj.exit_signal == 15 and not isinstance(info.value, AutoservRunTimeoutError)
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
