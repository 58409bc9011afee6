"""autoserv.localsys: local tools, /proc liveness (zombies, reused pids), free ports, the SSH banner probe.

Real processes and sockets on this machine; the banner probe also against a real test bed sshd.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest

from autoserv.errors import AutoservError, AutoservUsageError, AutoservVirtError
from autoserv.lab.testbed import Testbed
from autoserv.localsys import (
    ALIVE_SH,
    GROUP_ALIVE_SH,
    descendants,
    find_tool,
    free_port,
    pid_alive,
    proc_stat,
    run_tool,
    ssh_banner,
    start_time,
)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def zombie() -> Iterator[int]:
    """A child that exited and is not reaped yet."""
    proc = subprocess.Popen(["true"])
    while proc_stat(proc.pid)[:1] != ["Z"]:
        threading.Event().wait(0.01)
    yield proc.pid
    proc.wait()


# -- run_tool / find_tool -------------------------------------------------------------------


def test_run_tool_returns_the_output() -> None:
    assert run_tool(["sh", "-c", "echo out; echo err >&2"]).stdout == "out\n"
    assert run_tool(["cat"], input="fed\n").stdout == "fed\n"


def test_run_tool_failure_names_the_command_status_and_stderr() -> None:
    with pytest.raises(AutoservVirtError) as exc:
        run_tool(["sh", "-c", "echo one >&2; echo two >&2; exit 3", "a b"],
                 error=AutoservVirtError, context="thing: ")
    msg = str(exc.value)
    assert msg.startswith("thing: sh -c ") and "'a b' failed with exit status 3: one | two" in msg
    assert "\n" not in msg


def test_run_tool_missing_program_is_one_line() -> None:
    with pytest.raises(AutoservError, match=r"^cannot run /no/such/tool: No such file or directory$"):
        run_tool(["/no/such/tool"])


def test_run_tool_closes_stdin() -> None:
    assert run_tool(["cat"]).stdout == ""  # would hang reading a terminal otherwise


def test_find_tool() -> None:
    assert find_tool("sh", "dash") in ("/usr/bin/sh", "/bin/sh")
    assert find_tool("sh", "dash", candidates=["/nowhere/sh", "/bin/sh"]) == "/bin/sh"
    with pytest.raises(AutoservVirtError, match=r"^x: no-such-tool-4711 not found \(looked in /a/b and "
                       r"\$PATH\): install the Debian package pkg \(apt-get install pkg\)$"):
        find_tool("no-such-tool-4711", "pkg", ["/a/b"], error=AutoservVirtError, context="x: ")


# -- /proc liveness ---------------------------------------------------------------------------


def test_pid_alive_for_a_running_process(sleeper: subprocess.Popen[bytes]) -> None:
    assert pid_alive(sleeper.pid)
    assert pid_alive(sleeper.pid, start_time(sleeper.pid))
    assert pid_alive(os.getpid(), start_time(os.getpid()))


def test_pid_alive_rejects_another_start_time(sleeper: subprocess.Popen[bytes]) -> None:
    # a reused pid: same number, a different process (it started at another time)
    assert not pid_alive(sleeper.pid, start_time(sleeper.pid) - 1)


def test_a_zombie_is_not_alive(zombie: int) -> None:
    assert os.path.exists(f"/proc/{zombie}")
    os.kill(zombie, 0)  # what kill -0 says: it exists
    assert not pid_alive(zombie)


@pytest.mark.parametrize("pid", [0, -1, 2**22 + 1])
def test_no_such_process(pid: int) -> None:
    assert proc_stat(pid) == []
    assert start_time(pid) == 0
    assert not pid_alive(pid)


def test_reaped_process_is_gone() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert not pid_alive(proc.pid)


def test_descendants_finds_grandchildren() -> None:
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 61 & sh -c 'sleep 62 & wait' & wait"])
    try:
        for _ in range(200):
            kids = descendants(proc.pid)
            if len(kids) == 4:
                break
            threading.Event().wait(0.02)
        cmdlines = sorted(open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")[1] for p in kids
                          if open(f"/proc/{p}/cmdline", "rb").read().startswith(b"sleep"))
        assert cmdlines == [b"60", b"61", b"62"]
        assert proc.pid not in kids and os.getpid() not in kids
    finally:
        for p in [*descendants(proc.pid), proc.pid]:
            os.kill(p, 9)
        proc.wait()


def _sh_alive(*args: str) -> int:
    return subprocess.run(["sh", "-c", ALIVE_SH + '\nalive "$@"', "alive", *args]).returncode


def test_alive_sh_matches_pid_alive(sleeper: subprocess.Popen[bytes], zombie: int) -> None:
    assert _sh_alive(str(sleeper.pid)) == 0
    assert _sh_alive(str(sleeper.pid), "sleep") == 0
    assert _sh_alive(str(sleeper.pid), "qemu") == 1  # the pid now runs something else
    assert _sh_alive(str(zombie)) == 1
    for bad in ("", "abc", "12x", "-1", str(2**22 + 1)):
        assert _sh_alive(bad) == 1


def _sh_group_alive(pgid: str) -> int:
    return subprocess.run(["sh", "-c", GROUP_ALIVE_SH + '\ngroup_alive "$@"', "group_alive", pgid]).returncode


def test_group_alive_sh_sees_the_children_of_a_group() -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & exec sleep 61"], start_new_session=True)
    try:
        for _ in range(200):
            if open(f"/proc/{leader.pid}/cmdline", "rb").read() == b"sleep\x0061\x00":
                break
            threading.Event().wait(0.02)
        assert _sh_group_alive(str(leader.pid)) == 0
        leader.kill()
        leader.wait()  # the leader is gone; its child 'sleep 60' still runs in the group
        assert _sh_group_alive(str(leader.pid)) == 0
    finally:
        os.killpg(leader.pid, 9)
    for _ in range(200):  # the orphan is reaped by init
        if _sh_group_alive(str(leader.pid)) == 1:
            break
        threading.Event().wait(0.02)
    assert _sh_group_alive(str(leader.pid)) == 1
    for bad in ("", "x", "0x1"):
        assert _sh_group_alive(bad) == 1


def test_group_alive_sh_ignores_zombies() -> None:
    lone = subprocess.Popen(["true"], start_new_session=True)
    while proc_stat(lone.pid)[:1] != ["Z"]:
        threading.Event().wait(0.01)
    try:
        assert _sh_group_alive(str(lone.pid)) == 1  # only a zombie left in that group
    finally:
        lone.wait()


# -- ports and the SSH banner -----------------------------------------------------------------


def test_free_port_can_be_bound() -> None:
    port = free_port()
    assert 1024 <= port < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_ssh_banner_closed_port() -> None:
    assert not ssh_banner("127.0.0.1", free_port(), timeout=1)


def test_ssh_banner_silent_and_wrong_servers() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        port = srv.getsockname()[1]
        answered = threading.Event()
        assert not ssh_banner("127.0.0.1", port, timeout=0.3)  # accepts, never speaks
        conn, _ = srv.accept()
        conn.close()

        def http() -> None:
            c, _ = srv.accept()
            c.sendall(b"HTTP/1.0 200 OK\r\n")
            c.close()
            answered.set()

        threading.Thread(target=http, daemon=True).start()
        assert not ssh_banner("127.0.0.1", port, timeout=2)
        assert answered.wait(5)


@pytest.mark.skipif(os.geteuid() != 0, reason="the test bed needs root")
def test_ssh_banner_of_a_real_sshd(tmp_path: Path) -> None:
    with Testbed(str(tmp_path), count=1) as tb:
        host = tb.hosts[0]
        assert ssh_banner(host.address, host.port, timeout=5, connect_timeout=1)


def test_localsys_imports_nothing_but_the_core_basics() -> None:
    code = ("import json, sys, autoserv.localsys; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('autoserv'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # the runner core may use it: it must not pull in hosts, virt, the lab or the job
    assert set(json.loads(out)) <= {"autoserv", "autoserv.errors", "autoserv.outcomes", "autoserv.result",
                                    "autoserv.localsys"}


@pytest.mark.parametrize("timeout", [-1, -0.5, Fraction(-1), float("nan")])
def test_a_negative_timeout_is_refused_whatever_its_number_type(timeout: object) -> None:
    from autoserv import utils

    with pytest.raises(AutoservUsageError, match="timeout must be a number of seconds >= 0"):
        utils.run("true", timeout=timeout)  # type: ignore[arg-type]
    assert utils.run("true", timeout=Fraction(5)).exit_status == 0  # type: ignore[arg-type]
