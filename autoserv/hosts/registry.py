"""The registry of open hosts (and other closables, e.g. ``kvm.KVM``) in this process.

Every :class:`~autoserv.hosts.base.Host` registers itself when created and
unregisters on ``close()``; so does a ``kvm.KVM``, whose ``close()`` deletes
the guests it started.  The job closes whatever is still open at the end
(and on abort) with :func:`close_all`, newest first, so a guest is closed
before the host it runs on.  A forked child forgets its parent's hosts
without closing them: their connections belong to the parent.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Protocol


class Closable(Protocol):
    def close(self) -> None: ...


Host = Closable

log = logging.getLogger("autoserv.hosts")

_lock = threading.RLock()
_hosts: dict[int, Host] = {}  # insertion ordered: creation order


def register(host: Host) -> None:
    with _lock:
        _hosts[id(host)] = host


def unregister(host: Host) -> None:
    with _lock:
        _hosts.pop(id(host), None)


def open_hosts() -> list[Host]:
    """Hosts created in this process and not yet closed, oldest first."""
    with _lock:
        return list(_hosts.values())


def close_all() -> None:
    """Close every open host, newest first; never raises (failures are logged)."""
    for host in reversed(open_hosts()):
        try:
            host.close()
        except Exception:
            log.exception("closing %s failed", host)
        finally:
            unregister(host)


def _forget_in_child() -> None:
    global _lock
    _lock = threading.RLock()
    _hosts.clear()


os.register_at_fork(after_in_child=_forget_in_child)
