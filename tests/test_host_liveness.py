"""Host liveness and connection failures against real sshd hosts and loopback sockets: is_up, wait_up,
wait_down, refused, unknown, silent and unreachable hosts.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoserv import hosts
from autoserv.errors import (
    AutoservHostKeyError,
    AutoservSshPermissionDeniedError,
    AutoservSSHTimeout,
)
from autoserv.lab.testbed import Testbed
from tests.host_helpers import direct


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


@pytest.mark.probe_input
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


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP but never sends a banner (like qemu user
    networking before the guest listens)."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(5)
        yield srv.getsockname()[1]


def test_silent_server_times_out_within_connect_timeout(silent_port: int) -> None:
    h = hosts.SSHHost("127.0.0.1", port=silent_port, connect_timeout=1, host_key_policy="off")
    with pytest.raises(AutoservSSHTimeout, match=f"127.0.0.1:{silent_port}: no SSH handshake within 1 s"):
        h.run("true")


def test_connect_timeout_of_a_run_is_one_window_and_named_in_the_error(silent_port: int) -> None:
    # the host's own default is 30 s; the run asks 1 s, and the message says so
    h = hosts.SSHHost("127.0.0.1", port=silent_port, host_key_policy="off")
    assert h.params.connect_timeout == 30
    start = time.monotonic()
    with pytest.raises(AutoservSSHTimeout) as info:
        h.run("true", connect_timeout=1)
    assert time.monotonic() - start < 10  # generous: the window is 1 s, not 30
    assert f"127.0.0.1:{silent_port}: no SSH handshake within 1 s" in str(info.value)


def test_unreachable_address_in_lab_times_out(testbed_netns: Testbed) -> None:
    # an address inside the test bed's own lab subnet that no host has
    net = testbed_netns.subnet.rsplit(".", 1)[0]
    h = hosts.SSHHost(f"{net}.250", connect_timeout=1, host_key_policy="off")
    with pytest.raises(AutoservSSHTimeout, match=f"{net}.250:22"):
        h.run("true")


def test_wait_up_on_a_host_that_refuses_us_raises(testbed: Testbed, tmp_path: Path) -> None:
    # no timeout: a host that answers but never lets us in must not be waited for forever
    wrong = Path(testbed.hosts[1].workdir, "ssh_host_ed25519_key.pub").read_text()
    h = direct(testbed, known_hosts=str(testbed.known_hosts), pinned_host_keys=[wrong])
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
