"""The registry of open hosts (and other closables, e.g. ``kvm.KVM``) in this process.

Every :class:`~autoserv.hosts.base.Host` registers itself when created and
unregisters on ``close()``; so does a ``kvm.KVM``, whose ``close()`` deletes
the guests it started.  The job closes whatever is still open at the end
(and on abort) with :func:`close_all`, newest first, so a guest is closed
before the host it runs on.  A forked child forgets its parent's hosts
without closing them: their connections belong to the parent.  A worker
*thread* (:mod:`autoserv.scope`) closes only the hosts it created.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Protocol

from autoserv import scope


class Closable(Protocol):
    def close(self) -> None: ...


Host = Closable

log = logging.getLogger("autoserv.hosts")

_lock = threading.RLock()
_hosts: dict[int, Host] = {}  # insertion ordered: creation order
_owners: dict[int, scope.Scope] = {}  # host id -> the worker thread's scope that created it


def register(host: Host) -> None:
    owner = scope.current()
    with _lock:
        _hosts[id(host)] = host
        if owner is not None:
            _owners[id(host)] = owner


def unregister(host: Host) -> None:
    with _lock:
        _hosts.pop(id(host), None)
        _owners.pop(id(host), None)


def open_hosts(owner: scope.Scope | None = None) -> list[Host]:
    """Hosts created in this process and not yet closed, oldest first.

    With ``owner``: only those a worker thread of that scope created.
    """
    with _lock:
        if owner is None:
            return list(_hosts.values())
        return [h for key, h in _hosts.items() if _owners.get(key) is owner]


def close_all(owner: scope.Scope | None = None) -> None:
    """Close every open host, newest first; never raises (failures are logged).

    In a worker thread (or with ``owner``) only the hosts of that worker's scope.
    """
    for host in reversed(open_hosts(owner or scope.current())):
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
    _owners.clear()


os.register_at_fork(after_in_child=_forget_in_child)
