"""A host whose sshd limits unauthenticated connections (``MaxStartups``), as busy lab hosts do.

sshd drops each connection past its ``MaxStartups`` before its banner; autoserv tries such a
host again with a jittered backoff within the connect timeout (nothing was authenticated or
run, so no command runs twice), and says what limits it when the limit outlasts the timeout.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoserv import hosts
from autoserv.deadline import Deadline
from autoserv.errors import AutoservSSHTimeout
from autoserv.lab.testbed import Testbed
from tests.conftest import _need_root_tools


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    """One loopback host whose sshd admits one unauthenticated connection at a time."""
    _need_root_tools("loopback")
    with Testbed(tmp_path_factory.mktemp("testbed-maxstartups"), count=1,
                 max_startups="1") as tb:
        yield tb


@pytest.fixture
def slot_taken(limited: Testbed) -> Iterator[socket.socket]:
    """A TCP connection that reads the banner and never authenticates: it holds sshd's one slot."""
    h = limited.hosts[0]
    # sshd frees the slot of an earlier test's connection only once it has reaped that
    # connection's child: until then it drops this one too.
    deadline = Deadline(30)
    while True:
        sock = socket.create_connection((h.address, h.port), timeout=10)
        if sock.recv(64).startswith(b"SSH-"):
            break
        sock.close()
        assert not deadline.expired(), "the test bed host never had a free slot"
        deadline.sleep(0.1)
    try:
        yield sock
    finally:
        sock.close()


def _host(tb: Testbed, connect_timeout: float) -> hosts.SSHHost:
    return hosts.SSHHost(tb.machines[0], ssh_config=str(tb.ssh_config),
                         connect_timeout=connect_timeout)


@pytest.mark.probe_fault
def test_a_host_past_its_max_startups_is_named_as_such(
        limited: Testbed, slot_taken: socket.socket) -> None:
    host = _host(limited, connect_timeout=4)
    try:
        with pytest.raises(AutoservSSHTimeout) as info:
            host.run("true")
    finally:
        host.close()
    msg = str(info.value)
    assert "closed the connection before its SSH banner" in msg, msg
    assert "MaxStartups" in msg and "--max-parallel" in msg, msg
    times = int(msg.split("banner ")[1].split(" times")[0])
    assert times > 1, msg  # it was tried again, not given up at the first drop


def test_a_host_that_frees_a_slot_is_reached_by_the_retry(
        limited: Testbed, slot_taken: socket.socket, caplog: pytest.LogCaptureFixture,
        tmp_path: Path) -> None:
    host = _host(limited, connect_timeout=30)
    marker = tmp_path / "ran"
    out: list[object] = []

    def run() -> None:
        try:
            out.append(host.run(f"echo x >> {marker}; echo ok").stdout)
        except Exception as exc:  # reported by the assertion below
            out.append(exc)

    with caplog.at_level(logging.DEBUG, logger="autoserv.hosts.ssh"):
        worker = threading.Thread(target=run)
        worker.start()
        try:
            # Free the slot once the host has dropped at least one attempt.
            for _ in range(200):
                if any("dropped the connection before its banner" in r.getMessage()
                       for r in caplog.records):
                    break
                worker.join(0.05)
            slot_taken.close()
            worker.join(60)
        finally:
            host.close()
    assert out == ["ok\n"], out
    assert any("dropped the connection before its banner" in r.getMessage()
               for r in caplog.records)
    assert marker.read_text() == "x\n"  # the command ran once


def _drop_twice_then_stay_silent(listener: socket.socket, stop: threading.Event) -> None:
    """A host whose sshd drops two connections, then accepts one and never sends its banner
    (a loaded sshd that has not got to it before the client's deadline)."""
    held: list[socket.socket] = []
    try:
        for n in range(3):
            conn, _ = listener.accept()
            if n < 2:
                conn.close()
            else:
                held.append(conn)
        stop.wait(30)
    finally:
        for conn in held:
            conn.close()


def test_drops_then_a_try_that_times_out_still_name_max_startups() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    server = threading.Thread(target=_drop_twice_then_stay_silent, args=(listener, stop),
                              daemon=True)
    server.start()
    host = hosts.SSHHost(f"127.0.0.1:{listener.getsockname()[1]}", ssh_config="/dev/null",
                         connect_timeout=2)
    try:
        with pytest.raises(AutoservSSHTimeout) as info:
            host.run("true")
    finally:
        host.close()
        stop.set()
        server.join(10)
        listener.close()
    msg = str(info.value)
    assert "closed the connection before its SSH banner 2 times" in msg, msg
    assert "then the next try timed out" in msg and "MaxStartups" in msg, msg
