"""Host key policies against real sshd hosts: strict, accept-new, hashed entries, off, pinned keys."""

from __future__ import annotations

import subprocess
from pathlib import Path

import paramiko
import pytest

from autoserv.errors import (
    AutoservHostKeyError,
)
from autoserv.lab.testbed import Testbed
from tests.host_helpers import direct


@pytest.mark.probe_input
def test_strict_refuses_unknown_key(testbed: Testbed, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    h = direct(testbed, known_hosts=str(empty), host_key_policy="strict")
    with pytest.raises(AutoservHostKeyError, match="unknown host key .* strict"):
        h.run("true")
    assert not empty.exists()


@pytest.mark.probe_injection
def test_accept_new_learns_then_refuses_changed_key(testbed: Testbed, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    h = direct(testbed, known_hosts=str(known), host_key_policy="accept-new")
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
    h2 = direct(testbed, known_hosts=str(known), host_key_policy="accept-new")
    with pytest.raises(AutoservHostKeyError, match=f"HOST KEY CHANGED .*{known}:2"):
        h2.run("true")


def test_hashed_known_hosts_entry(testbed: Testbed, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(testbed.known_hosts.read_text())
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert "|1|" in known.read_text()
    h = direct(testbed, known_hosts=str(known), host_key_policy="strict")
    assert h.run_output("echo hashed") == "hashed"


def test_policy_off_accepts_and_writes_nothing(testbed: Testbed, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    h = direct(testbed, known_hosts=str(known), host_key_policy="off")
    assert h.run_output("echo off") == "off"
    assert not known.exists()


def test_pinned_key(testbed: Testbed, tmp_path: Path) -> None:
    pub = Path(testbed.hosts[0].workdir, "ssh_host_ed25519_key.pub").read_text()
    h = direct(testbed, known_hosts=str(tmp_path / "none"), pinned_host_keys=[pub])
    assert h.run_output("echo pinned") == "pinned"
    wrong = Path(testbed.hosts[1].workdir, "ssh_host_ed25519_key.pub").read_text()
    h2 = direct(testbed, known_hosts=str(testbed.known_hosts), pinned_host_keys=[wrong])
    with pytest.raises(AutoservHostKeyError, match="pinned"):
        h2.run("true")
