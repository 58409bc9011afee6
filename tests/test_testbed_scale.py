"""The test bed at scale: lab subnets that hold thousands of hosts, loopback port races,
neighbour table sizing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from autoserv import localsys
from autoserv.lab import testbed
from autoserv.lab.testbed import Testbed, TestbedError


@pytest.mark.parametrize(
    "count, prefixlen",
    [(1, 24), (3, 24), (213, 24), (214, 23), (245, 23), (246, 23), (1000, 21), (4000, 20),
     (20000, 17)],
)
def test_lab_prefixlen_holds_hosts_and_guest_room(count: int, prefixlen: int) -> None:
    assert testbed.lab_prefixlen(count) == prefixlen
    size = 1 << (32 - prefixlen)
    assert testbed.HOST_OFFSET + count + testbed.GUEST_ROOM < size - 1


def test_lab_prefixlen_refuses_what_10_231_cannot_hold() -> None:
    with pytest.raises(TestbedError, match="does not fit"):
        testbed.lab_prefixlen(70000)


@pytest.mark.parametrize("count, timeout", [(1, 20.0), (100, 20.0), (250, 35.0), (1000, 110.0)])
def test_listen_timeout_grows_with_the_bed(count: int, timeout: float) -> None:
    """1000 netns hosts on a loaded machine: a fixed 20 s for all of them to answer ran out
    (31 hosts 'not listening') before the ones that missed their first check were retried."""
    assert testbed.listen_timeout(20.0, count) == pytest.approx(timeout)


@pytest.mark.parametrize("count, first", [(3, 100), (90, 100), (91, 101), (245, 255), (1000, 1010)])
def test_guest_addresses_come_after_the_hosts(count: int, first: int) -> None:
    assert testbed.guest_offset(count) == first
    assert first > testbed.HOST_OFFSET + count


@pytest.mark.parametrize(
    "count, current, expected",
    [
        (3, (128, 512, 1024), None),
        (500, (128, 512, 1024), None),
        (501, (128, 512, 1024), (629, 1258, 2516)),
        (1000, (128, 512, 1024), (1128, 2256, 4512)),
        (1000, (2000, 8000, 16000), None),  # already larger: never lowered
        (1000, (128, 4000, 16000), (1128, 4000, 16000)),
    ],
)
def test_neigh_thresholds(count: int, current: tuple[int, int, int],
                          expected: tuple[int, int, int] | None) -> None:
    assert testbed.neigh_thresholds(count, current) == expected


def test_port_served_by_knows_the_owner() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert testbed.port_served_by(port, __import__("os").getpid())
        assert not testbed.port_served_by(port, 1)
    assert not testbed.port_served_by(port, __import__("os").getpid())


@pytest.mark.slow
def test_loopback_hosts_that_lose_a_port_race_are_restarted(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Two hosts given the same port (the race of bind-0-then-release): up() notices that
    one is not served by its own sshd and restarts it on a port of its own."""
    shared = localsys.free_port()
    calls = iter([shared, shared])
    monkeypatch.setattr(testbed, "free_port", lambda: next(calls, None) or localsys.free_port())
    with Testbed(tmp_path / "bed", count=3, kind="loopback") as tb:
        ports = [h.port for h in tb.hosts]
        assert len(set(ports)) == 3
        for host in tb.hosts:
            assert testbed.port_served_by(host.port, testbed._sshd_pid(host)), host.name
        config = tb.ssh_config.read_text()
        assert all(f"Port {p}\n" in config for p in ports)
        known = tb.known_hosts.read_text()
        assert all(f"[127.0.0.1]:{p} " in known for p in ports)
