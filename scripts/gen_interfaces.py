#!/usr/bin/env python3
"""Write a guest's /etc/network/interfaces that picks its address by MAC.

Either from a generated pool (the seed's defaults: ``02:00:00:00:00:NN`` ↔
``192.168.2.N`` for N = 1..31, gateway 192.168.2.254)::

    gen_interfaces.py --first 1 --last 31 -o interfaces

or from the same JSON address list a control file passes to ``kvm.install()``::

    gen_interfaces.py --addresses pool.json -o interfaces

``--format mac-table`` writes ``<mac> <ip>`` lines instead (what the tiny guest
image reads) and ``--format json`` the address list itself.  A thin wrapper
around :mod:`autoserv.virt.addresses`; runs from a checkout without installing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_ROOT, "autoserv", "__init__.py")):
    sys.path.insert(0, _ROOT)  # run from a checkout: its own library, even when another is installed

import autoserv.virt.addresses as addrs  # noqa: E402
from autoserv.errors import AutoservError  # noqa: E402

DEFAULT_GATEWAY = "192.168.2.254"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (defaults are the seed's)."""
    parser = argparse.ArgumentParser(
        prog="gen_interfaces.py",
        description="Generate a Debian /etc/network/interfaces mapping guest MACs to addresses.",
    )
    pool = parser.add_argument_group("generated pool (default)")
    pool.add_argument("--first", type=int, default=None, help="first entry number (default 1)")
    pool.add_argument("--last", type=int, default=None, help="last entry number (default 31)")
    pool.add_argument("--mac-prefix", default=None, help="first 5 MAC octets (default 02:00:00:00:00)")
    pool.add_argument("--network", default=None, help="first 3 IPv4 octets (default 192.168.2)")
    parser.add_argument(
        "--addresses",
        metavar="FILE.json",
        help="read the address list (as given to kvm.install()) instead of generating one",
    )
    parser.add_argument("--netmask", default=None, help=f"netmask (default {addrs.DEFAULT_NETMASK})")
    parser.add_argument(
        "--gateway",
        default=None,
        help=f"default gateway; '' or 'none' for none (default {DEFAULT_GATEWAY})",
    )
    parser.add_argument("--iface", default="eth0", help="physical interface to map (eth0)")
    parser.add_argument(
        "--script",
        default=addrs.DEFAULT_MAPPING_SCRIPT,
        help=f"mapping script path in the guest (default {addrs.DEFAULT_MAPPING_SCRIPT})",
    )
    parser.add_argument(
        "--format",
        choices=("interfaces", "mac-table", "json"),
        default="interfaces",
        help="what to write (default interfaces)",
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="output file (default stdout)")
    return parser


def render(args: argparse.Namespace) -> str:
    """The text to write for parsed ``args``; raises AutoservError on bad input."""
    netmask: str = args.netmask or addrs.DEFAULT_NETMASK
    gateway: str | None = DEFAULT_GATEWAY
    if args.addresses:
        config = addrs.load_addresses(args.addresses)
        addresses = list(config.addresses)
        netmask = args.netmask or config.netmask
        gateway = config.gateway
    else:
        addresses = addrs.generate_addresses(
            first=1 if args.first is None else args.first,
            last=31 if args.last is None else args.last,
            mac_prefix=args.mac_prefix or "02:00:00:00:00",
            network=args.network or "192.168.2",
        )
    if args.gateway is not None:
        gateway = None if args.gateway.lower() in ("", "none") else args.gateway
    if args.format == "mac-table":
        return addrs.render_mac_table(addresses)
    if args.format == "json":
        return addrs.dump_addresses(addresses, netmask=netmask, gateway=gateway)
    return addrs.render_interfaces(
        addresses, netmask=netmask, gateway=gateway, iface=args.iface, script=args.script
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 bad addresses, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.addresses and any(v is not None for v in (args.first, args.last, args.mac_prefix, args.network)):
        parser.error("--addresses cannot be combined with --first/--last/--mac-prefix/--network")
    try:
        text = render(args)
        if args.output and args.output != "-":
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        else:
            sys.stdout.write(text)
    except AutoservError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{parser.prog}: error: {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
