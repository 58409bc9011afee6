"""``python -m autoserv.guest_image``: build (or find in the cache) the guest image, print its paths."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoserv.errors import AutoservVirtError
from autoserv.lab.guest_image.builder import build_guest_image
from autoserv.virt.addresses import load_addresses

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m autoserv.guest_image``: build (or find) the image, print its paths."""
    parser = argparse.ArgumentParser(
        prog="python -m autoserv.guest_image", description="Build the cached autoserv qemu guest."
    )
    parser.add_argument("--cache", metavar="DIR", help="cache root (default $AUTOSERV_CACHE)")
    parser.add_argument(
        "--authorized-key",
        metavar="FILE",
        action="append",
        help="public key file for root (repeatable; default ~/.ssh/id_*.pub)",
    )
    parser.add_argument("--addresses", metavar="FILE.json", help="address list (kvm.install)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--json", action="store_true", help="print a JSON description")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        stream=sys.stderr,
    )
    key_files = args.authorized_key or sorted(str(p) for p in (Path.home() / ".ssh").glob("id_*.pub"))
    try:
        keys = "".join(Path(f).read_text() for f in key_files)
    except OSError as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc.filename}: {exc.strerror}\n")
        return 1
    try:
        kwargs: dict[str, Any] = {}
        if args.addresses:
            config = load_addresses(args.addresses)
            kwargs = {
                "addresses": list(config.addresses),
                "netmask": config.netmask,
                "gateway": config.gateway,
            }
        image = build_guest_image(cache_dir=args.cache, authorized_keys=keys, force=args.force, **kwargs)
    except AutoservVirtError as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(image.to_json(), indent=2) + "\n")
    else:
        sys.stdout.write(
            f"kernel: {image.kernel}\n"
            f"initrd: {image.initrd}\n"
            f"append: {image.append}\n"
            f"kernel_release: {image.kernel_release}\n"
            f"host_public_key: {image.host_public_key}\n"
        )
    return 0
