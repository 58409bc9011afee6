"""The seed environment's routing to the guest pool: conflict detection (pure) and the
real routes on a namespace test bed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from autoserv.lab.demo import SEED_LAB_ADDRESS, lab_address, lab_route_conflicts
from autoserv.lab.testbed import Testbed, TestbedError

IPS = ["192.168.2.1", "192.168.2.2"]


def test_a_lan_or_a_leftover_on_the_same_subnet_is_not_a_conflict() -> None:
    routes = ("default via 192.168.2.1 dev eth0\n"
              "192.168.2.0/24 dev eth0 proto kernel scope link src 192.168.2.254\n"
              "192.168.2.0/24 dev asvc38x1833 proto kernel scope link src 192.168.2.254\n"
              "local 192.168.2.254 dev eth0 table local proto kernel scope host src 192.168.2.254\n"
              "broadcast 192.168.2.255 dev eth0 table local proto kernel scope link src 192.168.2.254\n")
    assert lab_route_conflicts(IPS, routes) == []


def test_host_routes_to_a_guest_ip_are_conflicts() -> None:
    routes = ("192.168.2.2 dev asvc7x1 scope link src 192.168.2.254\n"
              "192.168.2.1/32 dev x\n"
              "192.168.2.3 dev y\n")
    assert lab_route_conflicts(IPS, routes) == ["route 192.168.2.2 dev asvc7x1 scope link src 192.168.2.254",
                                                "route 192.168.2.1/32 dev x"]


@pytest.mark.netns
def test_lab_address_routes_the_pool_and_removes_its_routes(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces)")
    with Testbed(tmp_path / "tb", count=1, kind="netns") as tb:
        link = tb.state.controller_link
        with lab_address(tb, IPS):
            for ip in IPS:
                got = subprocess.run(["ip", "-4", "route", "get", ip], capture_output=True,
                                     text=True, check=True).stdout
                assert f"dev {link} src {SEED_LAB_ADDRESS}" in got
            with pytest.raises(TestbedError, match=r"already in use on this machine: route 192\.168\.2\.1 "):
                with lab_address(tb, IPS):
                    pass
        routes = subprocess.run(["ip", "-4", "route", "show", "dev", link], capture_output=True,
                                text=True, check=True).stdout
        assert "192.168.2." not in routes
