"""Host-side faults of issue 11 against real test bed hosts: noisy login shells, endless
output, hostile file names, silent servers, full disks, lost connections and networks.

Each test failed before its fix; together they measure that nothing is left running on a
host and nothing hangs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoserv import hosts
from autoserv.deadline import Deadline
from autoserv.errors import AutoservRunError, AutoservRunTimeoutError, AutoservSSHTimeout
from autoserv.lab.testbed import Testbed
from autoserv.localsys import descendants, pid_alive, proc_stat, start_time
from autoserv.run_core import KILL_BUDGET, LOG_OUTPUT_CAP
from tests.cli_helpers import cli_env, run_autoserv, stderr_lines
from tests.host_helpers import alive


@pytest.fixture
def noisy(testbed_noisy: Testbed) -> hosts.SSHHost:
    """A host whose root ``.bashrc`` prints banners on stdout and stderr before every command."""
    return hosts.SSHHost(testbed_noisy.machines[0], ssh_config=str(testbed_noisy.ssh_config))


# -- 1: the remote kill does not depend on a silent login shell ----------------------------


@pytest.mark.probe_fault
def test_noisy_login_output_is_not_in_the_result(noisy: hosts.SSHHost) -> None:
    r = noisy.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr) == ("out\n", "err\n")
    assert "AUTOSERV" not in r.stdout + r.stderr


@pytest.mark.probe_fault
def test_timeout_on_a_noisy_host_kills_the_remote_command(noisy: hosts.SSHHost) -> None:
    with pytest.raises(AutoservRunTimeoutError) as info:
        noisy.run("sleep 36011", timeout=3)
    res = info.value.result_obj
    assert res is not None and "AUTOSERV" not in res.stderr + res.stdout
    assert alive(noisy, "'slee[p] 36011'") == []


@pytest.mark.probe_fault
def test_exception_on_a_noisy_host_kills_the_remote_command(noisy: hosts.SSHHost) -> None:
    class Interrupt(BaseException):
        pass

    class RaisingTee:
        def write(self, text: str) -> int:
            raise Interrupt

    with pytest.raises(Interrupt):
        noisy.run("echo go; sleep 36012", stdout_tee=RaisingTee())
    assert alive(noisy, "'slee[p] 36012'") == []


# -- 3: a timeout holds while output keeps coming; the logs keep a capped part of it -------


@pytest.mark.probe_fault
def test_timeout_holds_while_output_keeps_coming(
        host: hosts.SSHHost, caplog: pytest.LogCaptureFixture) -> None:
    start = time.monotonic()
    with caplog.at_level(logging.DEBUG, logger=f"autoserv.host.{host.hostname}"), \
            pytest.raises(AutoservRunTimeoutError) as info:
        # Output that never ends (so the run can only end by its timeout, however fast the
        # machine), in bursts that keep the held result to some ten megabytes a second.
        host.run("while :; do yes fault-3-output | head -c 1000000; sleep 0.1; done", timeout=3)
    took = time.monotonic() - start
    assert took < 3 + KILL_BUDGET, took
    res = info.value.result_obj
    assert res is not None and len(res.stdout) > LOG_OUTPUT_CAP  # the result keeps it all
    logged = [r.getMessage() for r in caplog.records if r.name == f"autoserv.host.{host.hostname}"]
    assert sum(len(m) for m in logged) < 3 * LOG_OUTPUT_CAP
    assert any("more output not logged" in m for m in logged)
    assert alive(host, "'[y]es fault-3-output'") == []


# -- 12: names that look like options stay names -------------------------------------------

OPTION_NAMES = ["-rf", "--checkpoint=1", "-"]


@pytest.mark.probe_injection
@pytest.mark.parametrize("symlinks", [False, True], ids=["scp", "tar"])
def test_remote_names_that_look_like_options_are_names(
        host: hosts.SSHHost, tmp_path: Path, symlinks: bool) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    for name in OPTION_NAMES:
        (tmp_path / name).write_text(name)
    host.send_file([str(tmp_path / n) for n in OPTION_NAMES], str(remote) + "/",
                   preserve_symlinks=symlinks)
    assert sorted(os.listdir(remote)) == sorted(OPTION_NAMES)
    back = tmp_path / "back"
    back.mkdir()
    for name in OPTION_NAMES:
        host.get_file(str(remote / name), str(back) + "/", preserve_symlinks=symlinks)
        assert (back / name).read_text() == name
    host.get_file(str(remote) + "/", str(tmp_path / "whole"), delete_dest=True)
    assert sorted(os.listdir(tmp_path / "whole")) == sorted(OPTION_NAMES)


@pytest.mark.probe_injection
@pytest.mark.parametrize("symlinks", [False, True], ids=["scp", "tar"])
def test_relative_remote_destination_starting_with_a_dash(
        host: hosts.SSHHost, tmp_path: Path, symlinks: bool) -> None:
    # relative to root's home on the host; a unique name, removed again
    name = f"-autoserv-fault12-{os.getpid()}-{int(symlinks)}"
    (tmp_path / "f").write_text("payload")
    try:
        host.send_file(str(tmp_path / "f"), name, preserve_symlinks=symlinks)
        assert host.run("cat", args=[f"./{name}"]).stdout == "payload"
        host.get_file(name, str(tmp_path / "back"), preserve_symlinks=symlinks)
        assert (tmp_path / "back").read_text() == "payload"
    finally:
        host.run("rm -f --", args=[name], ignore_status=True)


# -- 10: a server that accepts TCP and never speaks: one line, no paramiko traceback -------

_SILENT_CLIENT = """
import logging, sys, time
from autoserv import hosts
h = hosts.SSHHost("127.0.0.1", port=int(sys.argv[1]), ssh_config="/dev/null", connect_timeout=0.5)
try:
    h.run("true")
except Exception as exc:
    print(f"error: {exc}", file=sys.stderr)
h.close()
logging.shutdown()  # as a CLI at its end: the transport thread must not print after this
time.sleep(1.5)
"""


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never sends a byte."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        yield srv.getsockname()[1]


@pytest.mark.probe_fault
def test_silent_server_leaves_no_traceback_after_logging_shut_down(silent_port: int) -> None:
    proc = subprocess.run([sys.executable, "-c", _SILENT_CLIENT, str(silent_port)],
                          capture_output=True, text=True, env=cli_env(), timeout=60)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect to 127.0.0.1"), proc.stderr


@pytest.mark.probe_fault
def test_cli_against_a_silent_server_prints_one_line(silent_port: int, tmp_path: Path) -> None:
    control = tmp_path / "control.py"
    control.write_text("hosts.create_host(machines[0]).run('true')\n")
    for i in range(3):
        proc = run_autoserv(control, "-m", f"127.0.0.1:{silent_port}", "--connect-timeout", "0.5",
                            "-r", tmp_path / f"results{i}", cwd=tmp_path, timeout=120)
        assert proc.returncode == 1
        assert stderr_lines(proc) == [line for line in stderr_lines(proc)
                                      if "cannot connect to 127.0.0.1" in line], proc.stderr
        assert len(stderr_lines(proc)) == 1


# -- 2: a full disk ends a transfer with one line; nothing hangs, no partial file ----------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs under the test's own directory."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def sftp_bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    """A test bed of one host without scp: its transfers use SFTP."""
    with Testbed(tmp_path_factory.mktemp("sftp-only"), count=1, scp=False) as tb:
        yield tb


@pytest.fixture
def sftp_only(sftp_bed: Testbed) -> Iterator[hosts.SSHHost]:
    h = hosts.SSHHost(sftp_bed.machines[0], ssh_config=str(sftp_bed.ssh_config))
    yield h
    h.close()


@pytest.mark.probe_fault
@pytest.mark.parametrize("how", ["scp", "sftp", "tar"])
def test_get_file_to_a_full_local_disk_is_one_clear_line(
        request: pytest.FixtureRequest, testbed_loopback: Testbed, small_disk: Path,
        tmp_path: Path, how: str) -> None:
    h = (request.getfixturevalue("sftp_only") if how == "sftp" else
         hosts.SSHHost(testbed_loopback.machines[0], ssh_config=str(testbed_loopback.ssh_config)))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    start = time.monotonic()
    with pytest.raises(AutoservRunError) as info:
        h.get_file(str(big), str(small_disk) + "/", preserve_symlinks=how == "tar")
    assert time.monotonic() - start < 30
    text = str(info.value)
    assert "\n" not in text and "disk full" in text and "free" in text
    assert str(small_disk / "big.bin") in text
    assert os.listdir(small_disk) == []  # the partial file is gone
    assert h.run_output("echo still usable") == "still usable"


@pytest.mark.probe_fault
@pytest.mark.parametrize("how", ["scp", "sftp", "tar"])
def test_send_file_to_a_full_remote_disk_is_one_clear_line(
        request: pytest.FixtureRequest, testbed_loopback: Testbed, tmp_path: Path,
        how: str) -> None:
    h = (request.getfixturevalue("sftp_only") if how == "sftp" else
         hosts.SSHHost(testbed_loopback.machines[0], ssh_config=str(testbed_loopback.ssh_config)))
    small = tmp_path / "remote-small"
    small.mkdir()
    # a 1 MiB tmpfs in the host's own mount namespace, under the test's directory
    h.run("mount -t tmpfs -o size=1m tmpfs", args=[str(small)])
    try:
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(3 << 20))
        start = time.monotonic()
        with pytest.raises(AutoservRunError) as info:
            h.send_file(str(big), str(small) + "/", preserve_symlinks=how == "tar")
        assert time.monotonic() - start < 30
        text = str(info.value)
        assert "\n" not in text and "remote disk full" in text and "free" in text, text
        assert str(small / "big.bin") in text
        assert h.run_output("ls -A --", args=[str(small)]) == ""  # the partial file is gone
    finally:
        h.run("umount -l --", args=[str(small)], ignore_status=True)


def _sftp_servers(tb: Testbed) -> list[int]:
    """The sftp-server processes under this test bed's own sshd (never another test's)."""
    found = []
    for pid in descendants(tb.hosts[0].pid):
        with contextlib.suppress(OSError):
            if b"sftp-server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


@pytest.mark.probe_fault
@pytest.mark.parametrize("direction", ["get", "send"])
def test_a_stalled_sftp_server_ends_the_transfer_with_one_clear_line(
        sftp_bed: Testbed, sftp_only: hosts.SSHHost, tmp_path: Path, direction: str) -> None:
    h = sftp_only
    h.transfer_timeout = 3
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(64 << 20))  # seconds to copy through paramiko: time to stop it
    dest = tmp_path / "dest"
    dest.mkdir()
    copy = dest / "big.bin"  # the test bed host shares this file system
    errors: list[BaseException] = []

    def work() -> None:
        try:
            if direction == "get":
                h.get_file(str(src), str(dest) + "/")
            else:
                h.send_file(str(src), str(dest) + "/")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    start = time.monotonic()
    thread.start()
    stopped: list[int] = []
    starts: dict[int, int] = {}
    try:
        while thread.is_alive() and not stopped and time.monotonic() - start < 60:
            if copy.exists() and copy.stat().st_size > 0:  # the copy is under way: stall it
                stopped = _sftp_servers(sftp_bed)
                starts = {pid: start_time(pid) for pid in stopped}
                for pid in stopped:
                    os.kill(pid, signal.SIGSTOP)
            time.sleep(0.005)  # polling, not a timed assertion
        assert stopped, f"the copy ended before its SFTP server was stopped: {errors}"
        thread.join(60)
        assert not thread.is_alive(), "the transfer hangs on a stalled SFTP server"
        assert time.monotonic() - start < 60
    finally:
        for pid in stopped:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)
    assert len(errors) == 1 and isinstance(errors[0], AutoservSSHTimeout), errors
    text = str(errors[0])
    assert "\n" not in text and "SFTP server stalled" in text and h.hostname in text, text
    assert str(src if direction == "get" else copy) in text, text
    if direction == "get":
        assert not copy.exists()  # the partial local copy is gone
    # the stopped server's channel was closed: once continued it ends; the host still works
    gone = Deadline(30)
    while any(pid_alive(p, starts[p]) for p in stopped) and not gone.expired():
        gone.sleep(0.1)
    assert not any(pid_alive(p, starts[p]) for p in stopped)
    assert h.run_output("echo still usable") == "still usable"


# -- 8: a lost connection does not orphan the command of a host that is still up ----------


def _session_sshds(pid: int) -> list[int]:
    """The sshd processes between ``pid`` and its sshd listener (the session's own)."""
    out = []
    p = int(proc_stat(pid)[1])
    while p > 1:
        cmdline = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"[listener]" in cmdline:
            break
        if b"sshd" in cmdline:
            out.append(p)
        p = int(proc_stat(p)[1])
    return out


@pytest.mark.probe_fault
def test_lost_connection_reconnects_and_kills_the_command(testbed_loopback: Testbed) -> None:
    h = hosts.SSHHost(testbed_loopback.machines[0], ssh_config=str(testbed_loopback.ssh_config))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            h.run("sleep 36081 & sleep 36082", timeout=120)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 20
    pids: list[str] = []
    while time.monotonic() < deadline and len(pids) < 2:
        pids = subprocess.run(["pgrep", "-f", "^sleep 3608[12]$"], capture_output=True,
                              text=True).stdout.split()
        time.sleep(0.1)
    assert len(pids) == 2
    sshds = _session_sshds(int(pids[0]))
    assert sshds, "no session sshd found"
    for p in sshds:
        os.kill(p, signal.SIGKILL)
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1 and "lost while running command" in str(errors[0])
    assert alive(h, "'slee[p] 3608[12]'") == []
    h.close()


# -- 4: a host whose network is gone is declared lost within the keepalives ----------------


def test_keepalive_thread_starts_only_when_the_first_keepalive_is_due(
        testbed_loopback: Testbed) -> None:
    """A fan-out's short connections start no watchdog thread; a lasting one gets its own."""
    h = hosts.SSHHost(testbed_loopback.machines[0], ssh_config=str(testbed_loopback.ssh_config),
                      keepalive=1)
    where = h.params.where

    def watchdogs() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name == f"autoserv-keepalive-{where}"]

    try:
        h.run("true")
        assert watchdogs() == [], "a watchdog thread right after connecting"
        deadline = Deadline(10)
        while not watchdogs() and not deadline.expired():
            time.sleep(0.05)
        assert watchdogs(), "no watchdog thread once the first keepalive was due"
        h.run("true")  # and the connection still works with it pinging
    finally:
        h.close()


@pytest.mark.probe_fault
def test_cut_network_is_lost_within_server_alive_interval_times_count(
        testbed_netns: Testbed, tmp_path: Path) -> None:
    th = testbed_netns.hosts[2]
    config = tmp_path / "ssh_config"  # the options as an ssh config gives them (first wins)
    config.write_text(f"Host {th.name}\n  ServerAliveInterval 1\n  ServerAliveCountMax 2\n\n"
                      + testbed_netns.ssh_config.read_text())
    h = hosts.SSHHost(th.name, ssh_config=str(config))
    assert (h.params.keepalive, h.params.keepalive_count) == (1, 2)
    h.run("true")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            h.run("sleep 36091", timeout=None)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    time.sleep(0.5)
    subprocess.run(["ip", "-n", th.netns, "link", "set", "br0", "down"], check=True)
    try:
        start = time.monotonic()
        thread.join(30)
        took = time.monotonic() - start
        assert not thread.is_alive()
        assert took < 1 * 2 + 2, took  # interval * count, plus one interval of slack
        assert len(errors) == 1 and "lost" in str(errors[0])
        assert "no answer to 2 keepalives" in str(errors[0])
    finally:
        subprocess.run(["ip", "-n", th.netns, "link", "set", "br0", "up"], check=True)
    # the host is back: its next command first ends the one the lost connection left running
    assert h.run_output("echo back", timeout=30) == "back"
    assert alive(h, "'^slee[p] 36091$'") == []
    h.close()


# -- (a): a quoted UserKnownHostsFile path with a space ------------------------------------


def test_known_hosts_file_under_a_directory_with_a_space(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    where = tmp_path_factory.mktemp("with space") / "test bed"
    with Testbed(where, count=1) as tb:
        assert '"' in tb.ssh_config.read_text()  # the path is quoted there
        h = hosts.SSHHost(tb.machines[0], ssh_config=str(tb.ssh_config), host_key_policy="strict")
        assert h.params.known_hosts == str(tb.known_hosts)
        assert h.run_output("echo ok") == "ok"
        h.close()


@pytest.mark.probe_fault
def test_kill_after_a_timeout_on_a_cut_network_ends_with_the_keepalives(
        testbed_netns: Testbed, tmp_path: Path) -> None:
    th = testbed_netns.hosts[1]
    config = tmp_path / "ssh_config"
    config.write_text(f"Host {th.name}\n  ServerAliveInterval 1\n  ServerAliveCountMax 2\n\n"
                      + testbed_netns.ssh_config.read_text())
    h = hosts.SSHHost(th.name, ssh_config=str(config))
    h.run("true")
    cut = threading.Timer(0.5, subprocess.run,
                          [["ip", "-n", th.netns, "link", "set", "br0", "down"]])
    cut.start()
    try:
        start = time.monotonic()
        with pytest.raises(AutoservRunTimeoutError):
            h.run("sleep 36092", timeout=2)
        took = time.monotonic() - start
        # not 2 s + the whole kill budget of attempts on a dead connection
        assert took < 2 + 1 * 2 + 2 < 2 + KILL_BUDGET, took
    finally:
        cut.join()
        subprocess.run(["ip", "-n", th.netns, "link", "set", "br0", "up"], check=True)
    assert h.orphans
    assert h.run_output("echo back", timeout=30) == "back"
    assert alive(h, "'^slee[p] 36092$'") == [] and not h.orphans
    h.close()
