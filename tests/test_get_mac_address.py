"""scripts/get-mac-address.sh against real interfaces with MACs the test sets.

This kernel has no ``dummy`` link type, so each test gets a private network
namespace holding a veth pair ``eth0``/``eth1`` with chosen MACs.  The script is
run under every POSIX shell available (sh, dash, busybox sh).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoserv.virt.addresses import generate_addresses, render_interfaces

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "get-mac-address.sh"
MAC0 = "02:00:00:00:00:05"
MAC1 = "02:00:00:00:00:1e"

SHELLS = {
    "sh": ["/bin/sh"],
    "dash": [shutil.which("dash") or "/bin/dash"],
    "busybox": [shutil.which("busybox") or "/bin/busybox", "sh"],
}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[str]:
    """A new namespace with ``eth0`` (MAC0) and ``eth1`` (MAC1); always deleted."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    name = f"asv-mac-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        _ip("-n", name, "link", "set", "eth0", "address", MAC0)
        _ip("-n", name, "link", "set", "eth1", "address", MAC1)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


@pytest.fixture(params=sorted(SHELLS))
def shell(request: pytest.FixtureRequest) -> list[str]:
    argv = SHELLS[request.param]
    if not Path(argv[0]).exists():
        pytest.skip(f"{argv[0]} not installed")
    return argv


def run_script(
    ns: str, shell: list[str], stdin: str, *args: str, hide_sysfs: bool = False
) -> subprocess.CompletedProcess[str]:
    cmd = [*shell, str(SCRIPT), *args]
    if hide_sysfs:  # a private mount namespace with /sys/class/net emptied: forces `ip link`
        cmd = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs none /sys/class/net && exec "$@"',
               "hide-sysfs", *cmd]  # fmt: skip
    return subprocess.run(
        ["ip", "netns", "exec", ns, *cmd],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


MAPPING = f"""\
02:00:00:00:00:01 vhost1
02:00:00:00:00:04 vhost4
{MAC0} vhost5
{MAC1} vhost30
"""

CASES = [
    # (name, interface, stdin, expected status, expected stdout)
    ("match eth0", "eth0", MAPPING, 0, "vhost5\n"),
    ("match eth1", "eth1", MAPPING, 0, "vhost30\n"),
    ("upper-case MAC in input", "eth0", MAPPING.upper(), 0, "VHOST5\n"),
    ("mixed case", "eth1", "02:00:00:00:00:1E Guest-1E\n", 0, "Guest-1E\n"),
    ("first match wins", "eth0", f"{MAC0} first\n{MAC0} second\n", 0, "first\n"),
    ("extra fields ignored", "eth0", f"{MAC0} vhost5 trailing words\n", 0, "vhost5\n"),
    ("tabs and blank lines", "eth0", f"\n\t{MAC0}\tvhost5\n\n", 0, "vhost5\n"),
    ("comment skipped", "eth0", f"# {MAC0} nope\n{MAC0} yes\n", 0, "yes\n"),
    ("last line without newline", "eth0", f"02:00:00:00:00:01 a\n{MAC0} b", 0, "b\n"),
    ("no match", "eth0", "02:00:00:00:00:01 vhost1\n02:00:00:00:00:06 vhost6\n", 1, ""),
    ("empty input", "eth0", "", 1, ""),
    ("MAC without scheme", "eth0", f"{MAC0}\n", 1, ""),
    ("prefix is not a match", "eth0", "02:00:00:00:00:0 x\n02:00:00:00:00:055 y\n", 1, ""),
]


@pytest.mark.parametrize(
    ("iface", "stdin", "status", "stdout"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_mapping(netns: str, shell: list[str], iface: str, stdin: str, status: int, stdout: str):
    proc = run_script(netns, shell, stdin, iface)
    assert (proc.returncode, proc.stdout) == (status, stdout), proc.stderr


@pytest.mark.parametrize("iface", ["eth0", "eth1"])
def test_falls_back_to_ip_link_without_sysfs(netns: str, shell: list[str], iface: str) -> None:
    proc = run_script(netns, shell, MAPPING, iface, hide_sysfs=True)
    assert (proc.returncode, proc.stdout) == (0, {"eth0": "vhost5\n", "eth1": "vhost30\n"}[iface])


def test_unknown_interface(netns: str, shell: list[str]) -> None:
    proc = run_script(netns, shell, MAPPING, "eth9")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "cannot read the MAC address of eth9" in proc.stderr


@pytest.mark.parametrize("args", [(), ("",), ("eth0", "eth1"), ("../eth0",), ("..",)])
def test_usage_errors(netns: str, shell: list[str], args: tuple[str, ...]) -> None:
    proc = run_script(netns, shell, MAPPING, *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr


def test_is_executable_posix_sh() -> None:
    assert os.access(SCRIPT, os.X_OK)
    text = SCRIPT.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "ifconfig" not in text
    if shutil.which("checkbashisms"):
        assert subprocess.run(["checkbashisms", str(SCRIPT)], check=False).returncode == 0


def test_ifupdown_runs_the_mapping(netns: str, tmp_path: Path) -> None:
    """ifupdown itself: ``ifquery eth0`` runs the script and prints eth0's mapped stanza."""
    ifquery = shutil.which("ifquery") or "/usr/sbin/ifquery"
    if not Path(ifquery).exists():
        pytest.skip("ifquery (apt package ifupdown) missing")
    results = {}
    for iface in ("eth0", "eth1"):
        interfaces = tmp_path / f"interfaces.{iface}"
        interfaces.write_text(
            render_interfaces(generate_addresses(), gateway="192.168.2.254", iface=iface, script=str(SCRIPT))
        )
        proc = subprocess.run(
            ["ip", "netns", "exec", netns, ifquery, "-i", str(interfaces), iface],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        results[iface] = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert results["eth0"]["address"] == "192.168.2.5"
    assert results["eth1"]["address"] == "192.168.2.30"
    assert results["eth0"]["gateway"] == "192.168.2.254"
