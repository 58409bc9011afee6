"""SSH authentication and settings against real sshd hosts: keys, passwords, the environment,
ProxyJump, process defaults.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from autoserv import hosts
from autoserv.errors import (
    AutoservSshPermissionDeniedError,
)
from autoserv.hosts.defaults import SSHDefaults
from autoserv.hosts.ssh_connection import POOL
from autoserv.lab.testbed import Testbed
from tests.conftest import TEST_PASSWORD


@pytest.mark.probe_input
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


def test_an_encrypted_key_is_skipped_and_the_next_key_logs_in(testbed: Testbed,
                                                               tmp_path: Path) -> None:
    """An encrypted key file (no agent to unlock it) is passed over, not a failed connection:
    the ssh config's key logs in."""
    key = tmp_path / "locked_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(key)],
                   check=True)
    h = hosts.SSHHost(testbed.machines[0], key_file=str(key), ssh_config=str(testbed.ssh_config))
    try:
        assert h.params.key_files[0] == str(key)
        assert h.run("echo in").stdout == "in\n"
    finally:
        h.close()


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


@pytest.mark.probe_input
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


def test_process_defaults_apply(testbed: Testbed, ssh_defaults: Callable[..., SSHDefaults]) -> None:
    th = testbed.hosts[0]
    ssh_defaults(
        port=th.port,
        key_file=str(testbed.client_key),
        known_hosts=str(testbed.known_hosts),
        host_key_policy="strict",
        ssh_config=os.devnull,
    )
    h = hosts.create_host(th.address)
    assert h.run_output("hostname") == th.name
    assert POOL.get(h.params) is h.transport()
