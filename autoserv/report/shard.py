"""``--shard I/N``: the I-th of N stable slices of a machine list (pure code).

A machine's shard is ``sha256(name) mod N`` (``I`` counts from 1, as GitLab's
``CI_NODE_INDEX`` does), so adding or removing other machines never moves it.  The name
hashed is the machine's label (:attr:`autoserv.hosts.Machine.label`: the entry without its
password), so a password change never moves a machine either.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autoserv.hosts.machine import Machine

__all__ = ["parse_shard", "shard_of", "select"]

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` → ``(I, N)`` with 1 <= I <= N; :class:`ValueError` naming the problem."""
    match = _SHARD.match(text)
    if not match:
        raise ValueError(f"--shard wants I/N (e.g. 2/4), not {text!r}")
    index, total = int(match.group(1)), int(match.group(2))
    if total < 1 or not 1 <= index <= total:
        raise ValueError(f"--shard {text}: I must be between 1 and N (N at least 1)")
    return index, total


def shard_of(label: str, total: int) -> int:
    """The shard (1..total) of the machine whose label (entry without password) is ``label``."""
    digest = hashlib.sha256(label.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % total + 1


def select(machines: Sequence[Machine], index: int, total: int) -> list[Machine]:
    """The machines of shard ``index`` of ``total``, in their given order."""
    return [m for m in machines if shard_of(m.label, total) == index]
