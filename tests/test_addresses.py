"""Unit tests of autoserv.virt.addresses; rendered interfaces files are checked with ifquery."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from autoserv.errors import AutoservError, AutoservVirtError
from autoserv.virt.addresses import (
    Address,
    AddressConfig,
    check_network,
    dump_addresses,
    generate_addresses,
    load_addresses,
    netmask_prefixlen,
    parse_addresses,
    render_interfaces,
    render_mac_table,
)

IFQUERY = shutil.which("ifquery") or next(
    (p for p in ("/usr/sbin/ifquery", "/sbin/ifquery") if Path(p).exists()), None
)
needs_ifquery = pytest.mark.skipif(IFQUERY is None, reason="ifquery (apt package ifupdown) missing")


def ifquery(*args: str) -> subprocess.CompletedProcess[str]:
    assert IFQUERY is not None
    return subprocess.run([IFQUERY, *args], capture_output=True, text=True, check=False)


def ifquery_fields(path: Path, name: str) -> dict[str, str]:
    proc = ifquery("-i", str(path), name)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)


# --------------------------------------------------------------------------- parsing

GOOD = [
    {"mac": "02:00:00:00:00:01", "ip": "192.168.2.1"},
    {"mac": "02:00:00:00:00:02", "ip": "192.168.2.2"},
]


def test_parse_accepts_dicts_and_names_by_position() -> None:
    assert parse_addresses(GOOD) == [
        Address("02:00:00:00:00:01", "192.168.2.1", "vhost1"),
        Address("02:00:00:00:00:02", "192.168.2.2", "vhost2"),
    ]


def test_parse_normalises_mac_to_lower_case_and_keeps_names() -> None:
    got = parse_addresses([{"mac": "02:AB:cd:EF:00:0A", "ip": "10.0.0.7", "name": "guest-a"}])
    assert got == [Address("02:ab:cd:ef:00:0a", "10.0.0.7", "guest-a")]


def test_parse_accepts_address_objects_and_tuples() -> None:
    objs = (Address("02:00:00:00:00:09", "10.1.1.9", "x9"), {"mac": "02:00:00:00:00:0a", "ip": "10.1.1.10"})
    assert [a.name for a in parse_addresses(objs)] == ["x9", "vhost2"]


def test_virt_error_is_an_autoserv_error() -> None:
    with pytest.raises(AutoservError):
        parse_addresses([])


BAD = [
    # (input, fragment expected in the message)
    ([], "empty"),
    ("02:00:00:00:00:01", "must be a list"),
    ({"mac": "02:00:00:00:00:01", "ip": "192.168.2.1"}, "must be a list"),
    (None, "must be a list"),
    ([("02:00:00:00:00:01", "192.168.2.1")], "address 0: expected a"),
    ([{"ip": "192.168.2.1"}], "address 0: missing 'mac'"),
    ([{"mac": "02:00:00:00:00:01"}], "address 0: missing 'ip'"),
    ([{"mac": "02:00:00:00:00:01", "ip": "192.168.2.1", "macaddr": "x"}], "unknown key(s) macaddr"),
    ([{"mac": "02:00:00:00:00:1", "ip": "192.168.2.1"}], "address 0: invalid MAC '02:00:00:00:00:1'"),
    ([{"mac": "02-00-00-00-00-01", "ip": "192.168.2.1"}], "invalid MAC '02-00-00-00-00-01'"),
    ([{"mac": "02:00:00:00:00:0g", "ip": "192.168.2.1"}], "invalid MAC"),
    ([{"mac": "02:00:00:00:00:00:01", "ip": "192.168.2.1"}], "invalid MAC"),
    ([{"mac": " 02:00:00:00:00:01", "ip": "192.168.2.1"}], "invalid MAC"),
    ([{"mac": 2, "ip": "192.168.2.1"}], "invalid MAC 2"),
    ([{"mac": "01:00:5e:00:00:01", "ip": "192.168.2.1"}], "multicast"),
    ([{"mac": "00:00:00:00:00:00", "ip": "192.168.2.1"}], "all zeros"),
    ([{"mac": "02:00:00:00:00:01", "ip": "192.168.2"}], "address 0: invalid IPv4 address '192.168.2'"),
    ([{"mac": "02:00:00:00:00:01", "ip": "192.168.2.256"}], "invalid IPv4 address"),
    ([{"mac": "02:00:00:00:00:01", "ip": "192.168.002.1"}], "invalid IPv4 address"),
    ([{"mac": "02:00:00:00:00:01", "ip": "fe80::1"}], "invalid IPv4 address"),
    ([{"mac": "02:00:00:00:00:01", "ip": 3232236033}], "expected a string"),
    ([{"mac": "02:00:00:00:00:01", "ip": "0.0.0.0"}], "cannot be a host address"),
    ([{"mac": "02:00:00:00:00:01", "ip": "127.0.0.1"}], "cannot be a host address"),
    ([{"mac": "02:00:00:00:00:01", "ip": "224.0.0.1"}], "cannot be a host address"),
    ([{"mac": "02:00:00:00:00:01", "ip": "255.255.255.255"}], "cannot be a host address"),
    ([{"mac": "02:00:00:00:00:01", "ip": "192.168.2.1", "name": "bad name"}], "invalid name"),
    ([{"mac": "02:00:00:00:00:01", "ip": "192.168.2.1", "name": "-x"}], "invalid name"),
    (
        [GOOD[0], {"mac": "02:00:00:00:00:01", "ip": "192.168.2.9"}],
        "address 1: duplicate MAC 02:00:00:00:00:01 (already used by address 0)",
    ),
    (
        [GOOD[0], {"mac": "02:00:00:00:00:01".upper(), "ip": "192.168.2.9"}],
        "address 1: duplicate MAC 02:00:00:00:00:01",
    ),
    (
        [GOOD[0], GOOD[1], {"mac": "02:00:00:00:00:03", "ip": "192.168.2.2"}],
        "address 2: duplicate IP 192.168.2.2 (already used by address 1)",
    ),
    (
        [
            {"mac": "02:00:00:00:00:01", "ip": "192.168.2.1", "name": "a"},
            {"mac": "02:00:00:00:00:02", "ip": "192.168.2.2", "name": "a"},
        ],
        "address 1: duplicate name a",
    ),
]


@pytest.mark.parametrize(("value", "fragment"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_parse_rejects(value: object, fragment: str) -> None:
    with pytest.raises(AutoservVirtError) as info:
        parse_addresses(value)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


# --------------------------------------------------------------------------- network


@pytest.mark.parametrize(
    ("netmask", "prefix"),
    [("255.255.255.0", 24), ("255.255.0.0", 16), ("255.255.255.252", 30), ("24", 24), (8, 8)],
)
def test_netmask_prefixlen(netmask: object, prefix: int) -> None:
    assert netmask_prefixlen(netmask) == prefix


@pytest.mark.parametrize("netmask", ["255.0.255.0", "255.255.255.256", "33", "", None, "x"])
def test_netmask_rejects(netmask: object) -> None:
    with pytest.raises(AutoservVirtError, match="invalid netmask"):
        netmask_prefixlen(netmask)


@pytest.mark.parametrize(
    ("gateway", "fragment"),
    [
        ("10.0.0.1", "gateway 10.0.0.1 is not in the subnet 192.168.2.0/24 of address 0"),
        ("192.168.2.2", "address 1: IP 192.168.2.2 is also the gateway"),
        ("192.168.2.x", "gateway: invalid IPv4 address"),
    ],
)
def test_check_network_rejects(gateway: str, fragment: str) -> None:
    with pytest.raises(AutoservVirtError) as info:
        check_network(parse_addresses(GOOD), "255.255.255.0", gateway)
    assert fragment in str(info.value)


def test_check_network_accepts() -> None:
    assert check_network(parse_addresses(GOOD), "255.255.255.0", "192.168.2.254") == (
        24,
        "192.168.2.254",
    )
    assert check_network(parse_addresses(GOOD), "255.255.0.0", None) == (16, None)


# --------------------------------------------------------------------------- generate


def test_generate_default_pool_is_the_seeds() -> None:
    pool = generate_addresses()
    assert len(pool) == 31
    assert pool[0] == Address("02:00:00:00:00:01", "192.168.2.1", "vhost1")
    assert pool[9] == Address("02:00:00:00:00:0a", "192.168.2.10", "vhost10")
    assert pool[-1] == Address("02:00:00:00:00:1f", "192.168.2.31", "vhost31")


def test_generate_custom() -> None:
    pool = generate_addresses(first=100, last=101, mac_prefix="52:54:00:AB:CD", network="10.9.8")
    assert pool == [
        Address("52:54:00:ab:cd:64", "10.9.8.100", "vhost100"),
        Address("52:54:00:ab:cd:65", "10.9.8.101", "vhost101"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"first": 0}, "1 <= first <= last <= 254"),
        ({"first": 5, "last": 4}, "1 <= first <= last <= 254"),
        ({"last": 255}, "1 <= first <= last <= 254"),
        ({"mac_prefix": "02:00:00:00"}, "invalid MAC prefix"),
        ({"mac_prefix": "03:00:00:00:00"}, "multicast"),
        ({"network": "192.168"}, "invalid network"),
        ({"network": "192.168.300"}, "invalid IPv4 address"),
    ],
)
def test_generate_rejects(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(AutoservVirtError) as info:
        generate_addresses(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- files


def test_dump_and_load_round_trip_list(tmp_path: Path) -> None:
    path = tmp_path / "pool.json"
    text = dump_addresses(GOOD, path)
    assert json.loads(text) == json.loads(path.read_text())
    assert isinstance(json.loads(text), list)
    config = load_addresses(path)
    assert config == AddressConfig(tuple(parse_addresses(GOOD)), "255.255.255.0", None)


def test_dump_and_load_round_trip_object(tmp_path: Path) -> None:
    path = tmp_path / "pool.json"
    dump_addresses(GOOD, path, netmask="16", gateway="192.168.255.254")
    data = json.loads(path.read_text())
    assert data["netmask"] == "255.255.0.0" and data["gateway"] == "192.168.255.254"
    config = load_addresses(path)
    assert config.netmask == "255.255.0.0"
    assert config.gateway == "192.168.255.254"
    assert [a.ip for a in config.addresses] == ["192.168.2.1", "192.168.2.2"]
    dump_addresses(config, tmp_path / "again.json")
    assert load_addresses(tmp_path / "again.json") == config


def test_load_plain_control_file_list(tmp_path: Path) -> None:
    path = tmp_path / "pool.json"
    path.write_text(json.dumps([{"mac": "02:00:00:00:00:0A", "ip": "192.168.2.10"}]))
    assert load_addresses(path).addresses == (Address("02:00:00:00:00:0a", "192.168.2.10", "vhost1"),)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[", "is not valid JSON"),
        ("{}", "object without an 'addresses' key"),
        ('{"addresses": [], "netmask": "255.255.255.0"}', "the address list is empty"),
        (
            '{"addresses": [{"mac": "02:00:00:00:00:01", "ip": "1.2.3.4"}], "bridge": "br0"}',
            "unknown key(s) bridge",
        ),
        ('[{"mac": "zz", "ip": "1.2.3.4"}]', "address 0: invalid MAC 'zz'"),
        (
            '{"addresses": [{"mac": "02:00:00:00:00:01", "ip": "1.2.3.4"}], "gateway": "9.9.9.9"}',
            "gateway 9.9.9.9 is not in the subnet",
        ),
    ],
)
def test_load_rejects(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "pool.json"
    path.write_text(content)
    with pytest.raises(AutoservVirtError) as info:
        load_addresses(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AutoservVirtError, match="cannot read address file"):
        load_addresses(tmp_path / "nope.json")


# --------------------------------------------------------------------------- rendering


def test_render_mac_table() -> None:
    assert render_mac_table(generate_addresses(last=2)) == (
        "02:00:00:00:00:01 192.168.2.1\n02:00:00:00:00:02 192.168.2.2\n"
    )
    assert render_mac_table([{"mac": "02:00:00:00:00:AA", "ip": "10.0.0.1"}]) == (
        "02:00:00:00:00:aa 10.0.0.1\n"
    )


def test_render_interfaces_text() -> None:
    text = render_interfaces(generate_addresses(last=2), gateway="192.168.2.254")
    assert text.splitlines()[1:] == [
        "auto lo",
        "iface lo inet loopback",
        "",
        "mapping eth0",
        "    script /etc/network/get-mac-address.sh",
        "    map 02:00:00:00:00:01 vhost1",
        "    map 02:00:00:00:00:02 vhost2",
        "",
        "iface vhost1 inet static",
        "    address 192.168.2.1",
        "    netmask 255.255.255.0",
        "    gateway 192.168.2.254",
        "",
        "iface vhost2 inet static",
        "    address 192.168.2.2",
        "    netmask 255.255.255.0",
        "    gateway 192.168.2.254",
    ]


def test_render_interfaces_without_gateway_and_options() -> None:
    text = render_interfaces(GOOD, netmask="16", iface="ens3", script="/usr/local/bin/map-mac")
    assert "gateway" not in text
    assert "mapping ens3\n    script /usr/local/bin/map-mac\n" in text
    assert "    netmask 255.255.0.0\n" in text


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"gateway": "10.0.0.1"}, "not in the subnet"),
        ({"netmask": "255.0.255.0"}, "invalid netmask"),
        ({"iface": "eth 0"}, "invalid interface name"),
        ({"script": "/bin/x y"}, "invalid mapping script path"),
    ],
)
def test_render_interfaces_rejects(kwargs: dict[str, str], fragment: str) -> None:
    with pytest.raises(AutoservVirtError) as info:
        render_interfaces(GOOD, **kwargs)
    assert fragment in str(info.value)


@needs_ifquery
def test_render_interfaces_parses_with_ifquery(tmp_path: Path) -> None:
    pool = generate_addresses()
    path = tmp_path / "interfaces"
    path.write_text(render_interfaces(pool, gateway="192.168.2.254"))
    listed = ifquery("-i", str(path), "--list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["lo"]
    for addr in (pool[0], pool[2], pool[-1]):
        assert ifquery_fields(path, addr.name) == {
            "address": addr.ip,
            "netmask": "255.255.255.0",
            "gateway": "192.168.2.254",
            "broadcast": "192.168.2.255",
        }
    assert ifquery("-i", str(path), "vhost32").returncode != 0


@needs_ifquery
def test_render_interfaces_custom_pool_with_ifquery(tmp_path: Path) -> None:
    path = tmp_path / "interfaces"
    path.write_text(
        render_interfaces(
            [{"mac": "52:54:00:12:34:56", "ip": "10.20.0.5", "name": "kvmguest"}],
            netmask="255.255.0.0",
        )
    )
    fields = ifquery_fields(path, "kvmguest")
    assert fields["address"] == "10.20.0.5"
    assert fields["netmask"] == "255.255.0.0"
    assert "gateway" not in fields
