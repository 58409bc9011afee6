"""The guest address pool: which MAC gets which IPv4 address and logical name.

A control file hands ``kvm.install(addresses)`` a list of ``{"mac": ..., "ip": ...}``
dicts.  The same list drives both sides of the classic Autotest set-up:

* the *pool* on the controller (each new guest takes the first unused entry and
  is started with that MAC), and
* the *guest image*, which looks its own MAC up to learn its address — either
  through a Debian ``/etc/network/interfaces`` with a ``mapping`` stanza
  (:func:`render_interfaces`, used with ``scripts/get-mac-address.sh``) or
  through a plain ``<mac> <ip>`` table (:func:`render_mac_table`, used by the
  tiny initramfs of :mod:`autoserv.guest_image`).

Everything here is pure Python; every validation problem raises
:class:`~autoserv.errors.AutoservVirtError` with a one-line message naming the
offending entry.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoserv.errors import AutoservVirtError

__all__ = [
    "Address",
    "AddressConfig",
    "DEFAULT_NETMASK",
    "DEFAULT_MAPPING_SCRIPT",
    "parse_addresses",
    "parse_mac",
    "parse_ipv4",
    "check_network",
    "netmask_prefixlen",
    "normalise_netmask",
    "load_addresses",
    "dump_addresses",
    "generate_addresses",
    "render_interfaces",
    "render_mac_table",
]

DEFAULT_NETMASK = "255.255.255.0"
"""Netmask used when none is given."""

DEFAULT_MAPPING_SCRIPT = "/etc/network/get-mac-address.sh"
"""Where the guest keeps the ifupdown mapping script (``scripts/get-mac-address.sh``)."""

_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_KEYS = frozenset({"mac", "ip", "name"})


@dataclass(frozen=True)
class Address:
    """One pool entry: a guest NIC's MAC, the IPv4 address it gets, and its name.

    ``name`` is the logical interface name of the ``/etc/network/interfaces``
    stanza and the guest's hostname (``vhost1``, ``vhost2``, ...).  Build these
    through :func:`parse_addresses` or :func:`generate_addresses`, which validate
    and normalise (MACs in lower case).
    """

    mac: str
    ip: str
    name: str

    def as_dict(self) -> dict[str, str]:
        """The ``{"mac", "ip", "name"}`` dict form (what :func:`dump_addresses` writes)."""
        return {"mac": self.mac, "ip": self.ip, "name": self.name}


@dataclass(frozen=True)
class AddressConfig:
    """An address list plus the network settings stored with it in a JSON file."""

    addresses: tuple[Address, ...]
    netmask: str = DEFAULT_NETMASK
    gateway: str | None = None


def parse_mac(value: object, where: str = "MAC") -> str:
    """Validate a unicast MAC (``aa:bb:cc:dd:ee:ff``) and return it in lower case."""
    if not isinstance(value, str) or not _MAC_RE.match(value):
        raise AutoservVirtError(f"{where}: invalid MAC {value!r} (expected 6 hex octets separated by ':')")
    mac = value.lower()
    if int(mac[:2], 16) & 1:
        raise AutoservVirtError(f"{where}: MAC {value!r} is a multicast address")
    if mac == "00:00:00:00:00:00":
        raise AutoservVirtError(f"{where}: MAC {value!r} is all zeros")
    return mac


def parse_ipv4(value: object, where: str = "IP") -> str:
    """Validate a host IPv4 address in dotted-quad form and return it normalised."""
    if not isinstance(value, str):
        raise AutoservVirtError(f"{where}: invalid IPv4 address {value!r} (expected a string)")
    try:
        ip = ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise AutoservVirtError(f"{where}: invalid IPv4 address {value!r}") from None
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_reserved:
        raise AutoservVirtError(f"{where}: IPv4 address {value!r} cannot be a host address")
    return str(ip)


def netmask_prefixlen(netmask: object) -> int:
    """The prefix length of a dotted netmask (``255.255.255.0`` → 24); also accepts ``24``."""
    text = str(netmask).strip() if isinstance(netmask, str | int) else None
    if text is not None:
        try:
            return ipaddress.IPv4Network(f"0.0.0.0/{text}").prefixlen
        except ValueError:
            pass
    raise AutoservVirtError(f"invalid netmask {netmask!r} (expected e.g. 255.255.255.0)")


def normalise_netmask(netmask: object) -> str:
    """A netmask in dotted form (``24`` → ``255.255.255.0``), validated."""
    return str(ipaddress.IPv4Network(f"0.0.0.0/{netmask_prefixlen(netmask)}").netmask)


def check_network(
    addresses: Sequence[Address], netmask: object = DEFAULT_NETMASK, gateway: object = None
) -> tuple[int, str | None]:
    """Validate ``netmask`` and ``gateway`` against ``addresses``.

    The gateway must be a host address inside the subnet of every address and
    must not be one of them.  Returns ``(prefix length, normalised gateway)``.
    """
    prefix = netmask_prefixlen(netmask)
    if gateway is None or gateway == "":
        return prefix, None
    gw = parse_ipv4(gateway, "gateway")
    for index, addr in enumerate(addresses):
        net = ipaddress.IPv4Interface(f"{addr.ip}/{prefix}").network
        if ipaddress.IPv4Address(gw) not in net:
            raise AutoservVirtError(f"gateway {gw} is not in the subnet {net} of address {index} ({addr.ip})")
        if addr.ip == gw:
            raise AutoservVirtError(f"address {index}: IP {addr.ip} is also the gateway")
    return prefix, gw


def parse_addresses(obj: object) -> list[Address]:
    """Validate the address list given to ``kvm.install(addresses)``.

    ``obj`` is a sequence of ``{"mac": ..., "ip": ...}`` dicts (an optional
    ``"name"`` key sets the logical name, default ``vhost<position+1>``) or of
    :class:`Address` objects.  MACs must be well formed, unicast, unique; IPs
    well-formed IPv4 host addresses, unique; names unique; the list non-empty.
    """
    if isinstance(obj, str | bytes | Mapping) or not isinstance(obj, Iterable):
        raise AutoservVirtError(
            f"addresses must be a list of {{'mac': ..., 'ip': ...}} dicts, not {type(obj).__name__}"
        )
    result: list[Address] = []
    seen_mac: dict[str, int] = {}
    seen_ip: dict[str, int] = {}
    seen_name: dict[str, int] = {}
    for index, entry in enumerate(obj):
        where = f"address {index}"
        if isinstance(entry, Address):
            mac_in: object = entry.mac
            ip_in: object = entry.ip
            name_in: object = entry.name
        elif isinstance(entry, Mapping):
            unknown = sorted(str(k) for k in entry if k not in _KEYS)
            if unknown:
                raise AutoservVirtError(
                    f"{where}: unknown key(s) {', '.join(unknown)} in {dict(entry)!r}"
                    " (expected 'mac', 'ip' and optionally 'name')"
                )
            for key in ("mac", "ip"):
                if key not in entry:
                    raise AutoservVirtError(f"{where}: missing {key!r} in {dict(entry)!r}")
            mac_in, ip_in = entry["mac"], entry["ip"]
            name_in = entry.get("name", f"vhost{index + 1}")
        else:
            raise AutoservVirtError(f"{where}: expected a {{'mac': ..., 'ip': ...}} dict, got {entry!r}")
        mac = parse_mac(mac_in, where)
        ip = parse_ipv4(ip_in, where)
        if not isinstance(name_in, str) or not _NAME_RE.match(name_in):
            raise AutoservVirtError(
                f"{where}: invalid name {name_in!r} (letters, digits and '-', at most 63)"
            )
        for kind, value, seen in (
            ("MAC", mac, seen_mac),
            ("IP", ip, seen_ip),
            ("name", name_in, seen_name),
        ):
            if value in seen:
                raise AutoservVirtError(
                    f"{where}: duplicate {kind} {value} (already used by address {seen[value]})"
                )
            seen[value] = index
        result.append(Address(mac=mac, ip=ip, name=name_in))
    if not result:
        raise AutoservVirtError("addresses: the address list is empty")
    return result


def generate_addresses(
    first: int = 1,
    last: int = 31,
    mac_prefix: str = "02:00:00:00:00",
    network: str = "192.168.2",
    name_prefix: str = "vhost",
) -> list[Address]:
    """The seed's default pool: ``<mac_prefix>:%02x`` ↔ ``<network>.%d`` for num in first..last.

    Entry ``num`` is named ``<name_prefix><num>``.  ``mac_prefix`` is five octets
    and ``network`` three (a /24); the defaults give 31 entries
    ``02:00:00:00:00:01 → 192.168.2.1 (vhost1)`` … ``…:1f → 192.168.2.31 (vhost31)``.
    """
    if not isinstance(first, int) or not isinstance(last, int):
        raise AutoservVirtError(f"first/last must be integers, got {first!r}/{last!r}")
    if not 1 <= first <= last <= 254:
        raise AutoservVirtError(f"need 1 <= first <= last <= 254, got first={first} last={last}")
    prefix = mac_prefix.rstrip(":")
    if not re.match(r"^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){4}$", prefix):
        raise AutoservVirtError(f"invalid MAC prefix {mac_prefix!r} (expected 5 hex octets)")
    net = network.rstrip(".")
    if not re.match(r"^\d{1,3}\.\d{1,3}\.\d{1,3}$", net):
        raise AutoservVirtError(f"invalid network {network!r} (expected 3 octets, e.g. 192.168.2)")
    return parse_addresses(
        [
            {"mac": f"{prefix}:{num:02x}", "ip": f"{net}.{num}", "name": f"{name_prefix}{num}"}
            for num in range(first, last + 1)
        ]
    )


def load_addresses(path: str | os.PathLike[str]) -> AddressConfig:
    """Read an address file: a JSON list of entries, or an object.

    The object form is ``{"addresses": [...], "netmask": "...", "gateway": "..."}``
    (netmask and gateway optional, no other keys).  The result is validated with
    :func:`parse_addresses` and :func:`check_network`.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise AutoservVirtError(f"cannot read address file {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise AutoservVirtError(f"address file {path} is not valid JSON: {exc}") from exc
    netmask: object = DEFAULT_NETMASK
    gateway: object = None
    if isinstance(data, dict):
        if "addresses" not in data:
            raise AutoservVirtError(f"address file {path}: object without an 'addresses' key")
        unknown = sorted(k for k in data if k not in ("addresses", "netmask", "gateway"))
        if unknown:
            raise AutoservVirtError(
                f"address file {path}: unknown key(s) {', '.join(unknown)}"
                " (expected 'addresses', 'netmask', 'gateway')"
            )
        netmask = data.get("netmask") or DEFAULT_NETMASK
        gateway = data.get("gateway")
        data = data["addresses"]
    try:
        addresses = parse_addresses(data)
        _, gw = check_network(addresses, netmask, gateway)
    except AutoservVirtError as exc:
        raise AutoservVirtError(f"address file {path}: {exc}") from None
    return AddressConfig(tuple(addresses), normalise_netmask(netmask), gw)


def dump_addresses(
    addresses: Iterable[Address | Mapping[str, Any]] | AddressConfig,
    path: str | os.PathLike[str] | None = None,
    netmask: str | None = None,
    gateway: str | None = None,
) -> str:
    """Serialise addresses as JSON (the format :func:`load_addresses` reads).

    Writes a plain list unless a netmask or gateway is given (or ``addresses``
    is an :class:`AddressConfig`), in which case the object form is written.
    Returns the text, and also writes it to ``path`` when given.
    """
    if isinstance(addresses, AddressConfig):
        netmask = netmask or addresses.netmask
        gateway = gateway or addresses.gateway
        addresses = addresses.addresses
    entries = parse_addresses(addresses)
    _, gw = check_network(entries, netmask or DEFAULT_NETMASK, gateway)
    items = [a.as_dict() for a in entries]
    data: Any = items
    if netmask is not None or gw is not None:
        data = {"addresses": items, "netmask": normalise_netmask(netmask or DEFAULT_NETMASK)}
        if gw:
            data["gateway"] = gw
    text = json.dumps(data, indent=2) + "\n"
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def render_interfaces(
    addresses: Iterable[Address | Mapping[str, Any]],
    netmask: str = DEFAULT_NETMASK,
    gateway: str | None = None,
    iface: str = "eth0",
    script: str = DEFAULT_MAPPING_SCRIPT,
) -> str:
    """A Debian ``/etc/network/interfaces`` selecting the stanza by the NIC's MAC.

    ``mapping <iface>`` runs ``script`` (``get-mac-address.sh``) with one
    ``map <mac> <name>`` line per address; each name then has an
    ``iface <name> inet static`` stanza with its address, ``netmask`` and (when
    given) ``gateway``.
    """
    entries = parse_addresses(addresses)
    _, gw = check_network(entries, netmask, gateway)
    netmask = normalise_netmask(netmask)
    if not re.match(r"^[A-Za-z0-9_.:-]{1,15}$", iface):
        raise AutoservVirtError(f"invalid interface name {iface!r}")
    if not script or any(c.isspace() for c in script):
        raise AutoservVirtError(f"invalid mapping script path {script!r}")
    lines = [
        "# Generated by autoserv.addresses: the guest's stanza is chosen by its MAC.",
        "auto lo",
        "iface lo inet loopback",
        "",
        f"mapping {iface}",
        f"    script {script}",
    ]
    lines += [f"    map {a.mac} {a.name}" for a in entries]
    for a in entries:
        lines += [
            "",
            f"iface {a.name} inet static",
            f"    address {a.ip}",
            f"    netmask {netmask}",
        ]
        if gw:
            lines.append(f"    gateway {gw}")
    return "\n".join(lines) + "\n"


def render_mac_table(addresses: Iterable[Address | Mapping[str, Any]]) -> str:
    """``<mac> <ip>`` lines, one per address (read by the guest image's init)."""
    return "".join(f"{a.mac} {a.ip}\n" for a in parse_addresses(addresses))
