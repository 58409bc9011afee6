"""The test bed itself: the ``autoserv-testbed`` command, paths with spaces, leftovers of a killed owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autoserv import hosts
from autoserv.lab.testbed import (
    Testbed,
    TestbedError,
    _netns_list,
    _registered,
    bridge_mac,
    ssh_config_word,
)
from autoserv.localsys import pid_alive as _alive

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, sshd)")


def run_testbed_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autoserv.lab.testbed", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_up_status_down(tmp_path: Path) -> None:
    d = tmp_path / "test bed"
    up = run_testbed_cli("up", "--dir", str(d), "-n", "2", "--kind", "loopback")
    assert up.returncode == 0, up.stderr
    assert f"--ssh-config '{d}/ssh_config' -m tb1,tb2" in up.stdout  # ready to paste
    try:
        # the hosts outlive the command, and a later test bed does not take them for leftovers
        with Testbed(tmp_path / "other", count=1):
            pass
        status = run_testbed_cli("status", "--dir", str(d))
        assert [line.split("\t")[2] for line in status.stdout.splitlines()] == ["up", "up"]
        # known_hosts given: hosts/ssh_connection.py cuts UserKnownHostsFile at its first space
        with hosts.SSHHost("tb2", ssh_config=str(d / "ssh_config"), known_hosts=str(d / "known_hosts")) as h:
            assert h.run("hostname").stdout.strip() == "tb2"
    finally:
        down = run_testbed_cli("down", "--dir", str(d))
    assert down.returncode == 0 and "is down" in down.stdout
    assert not (d / "ssh_config").exists()  # its addresses are no longer ours to connect to
    assert run_testbed_cli("down", "--dir", str(d)).stdout.startswith("no test bed")
    assert run_testbed_cli("up", "--kind", "nope").returncode == 2


_OWNER = textwrap.dedent("""
    import sys, time
    from autoserv.lab.testbed import Testbed
    tb = Testbed(sys.argv[1], count=2, kind="netns").up()
    print(" ".join([tb.state.lab_netns, *(h.netns for h in tb.hosts),
                    *(str(h.pid) for h in tb.hosts)]), flush=True)
    time.sleep(600)
""")


@pytest.mark.netns
def test_a_killed_owners_test_bed_is_torn_down_by_the_next(tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(tmp_path / "killed")],
                             stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    fields = owner.stdout.readline().split()
    namespaces, pids = fields[:3], [int(p) for p in fields[3:]]
    owner.send_signal(signal.SIGKILL)  # no down(): its sshd hosts and namespaces stay behind
    owner.wait()
    assert set(namespaces) <= _netns_list()
    assert all(_alive(p) for p in pids)
    with Testbed(tmp_path / "next", count=1, kind="netns") as tb:
        assert tb.hosts[0].netns not in namespaces
        assert not set(namespaces) & _netns_list()
        assert not any(_alive(p) for p in pids)  # (a zombie may remain: not ours to reap)
        assert [state.directory for _, state in _registered()
                if state.directory == str(tmp_path / "killed")] == []


def test_a_test_bed_under_a_directory_with_a_space(tmp_path: Path) -> None:
    # every path reaches sh (mount --bind), sshd_config and ssh_config as one word
    d = tmp_path / "dir with  spaces" / "tb $HOME;x"
    with Testbed(d, count=1, kind="loopback") as tb:
        host = tb.hosts[0]
        assert _alive(host.pid, host.pid_start)
        (Path(host.workdir) / "state" / "probe").write_text("bound\n")
        ssh = subprocess.run(
            ["ssh", "-F", str(tb.ssh_config), "tb1", "hostname; cat /var/lib/autoserv/probe"],
            input="", capture_output=True, text=True, timeout=60,
        )
        assert (ssh.returncode, ssh.stdout) == (0, "tb1\nbound\n"), ssh.stderr
        # known_hosts given: hosts/ssh_connection.py cuts UserKnownHostsFile at its first space
        with hosts.SSHHost("tb1", ssh_config=str(tb.ssh_config), known_hosts=str(tb.known_hosts)) as h:
            assert h.run("echo $((6 * 7))").stdout == "42\n"
    assert not _alive(host.pid, host.pid_start)
    assert not (d / "testbed.json").exists()


@pytest.mark.parametrize(("path", "word"), [
    ("/plain/path", "/plain/path"),
    ("/a b/c", '"/a b/c"'),
    ("/tab\there", '"/tab\there"'),
    ("/x$y;z", "/x$y;z"),
])
def test_ssh_config_word(path: str, word: str) -> None:
    assert ssh_config_word(path) == word


@pytest.mark.parametrize("path", ['/a"b', "/new\nline"])
def test_ssh_config_word_refuses_what_openssh_cannot_hold(path: str) -> None:
    with pytest.raises(TestbedError, match="OpenSSH config files cannot hold it"):
        ssh_config_word(path)


@pytest.mark.parametrize("name", ["asv1234lab/br0", "asv1234h1/br0", "x", "ü/br0"])
def test_bridge_mac_is_locally_administered_unicast_and_fixed(name: str) -> None:
    mac = bridge_mac(name)
    first = int(mac.split(":")[0], 16)
    assert len(mac.split(":")) == 6 and first & 0x02 and not first & 0x01
    assert bridge_mac(name) == mac and bridge_mac(name + "x") != mac


def _mac(ns: str, dev: str) -> str:
    out = subprocess.run(["ip", "-n", ns, "-o", "link", "show", "dev", dev], capture_output=True,
                         text=True, check=True).stdout
    return out.split("link/ether ", 1)[1].split()[0]


@pytest.mark.netns
def test_bridges_keep_their_mac_when_a_port_with_a_lower_one_comes_and_goes(testbed_netns: Testbed) -> None:
    """A bridge takes the lowest MAC of its ports unless it has one of its own: a guest's tap
    coming and going (its qemu died) then changes the KVM host's MAC under the controller."""
    tb = testbed_netns
    namespaces = [tb.state.lab_netns, *(h.netns for h in tb.hosts)]
    for ns in namespaces:
        assert _mac(ns, "br0") == bridge_mac(f"{ns}/br0"), ns
    ns = tb.hosts[0].netns
    port = f"asvlow{os.getpid() % 100000}"
    subprocess.run(["ip", "-n", ns, "link", "add", port, "address", "00:00:00:00:00:01", "type", "veth",
                    "peer", "name", port + "p"], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", port, "master", "br0", "up"], check=True)
        assert _mac(ns, "br0") == bridge_mac(f"{ns}/br0")
    finally:
        subprocess.run(["ip", "-n", ns, "link", "del", port], check=True)
    assert _mac(ns, "br0") == bridge_mac(f"{ns}/br0")
