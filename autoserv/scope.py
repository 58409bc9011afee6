"""Worker scopes: the state that belongs to one parallel worker thread, not to the process.

A forked ``parallel_simple`` worker owns a copy of everything: the job's results dir and
status.log, the logging handlers, the hosts context, the registry of open hosts.  A worker
*thread* (``AUTOSERV_WORKERS=threads``, :mod:`autoserv.workers`) shares the process with its
siblings, so each concern keeps what is per worker in the worker's :class:`Scope` instead,
under a key of its own (``"logging"``, ``"hosts.context"``, ...).  A scope is found through
a :class:`contextvars.ContextVar`: code running in the worker's thread sees its scope,
every other thread (the controller, paramiko's transport threads) sees none and uses the
process-wide state as before.  Scopes nest: a worker that itself runs ``parallel_simple``
gives each inner worker a scope whose :func:`lookup` falls back to the outer one.

This module imports nothing of autoserv: every layer may use it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

__all__ = ["Scope", "current", "lookup", "own", "chain", "run_in", "PerWorker"]

T = TypeVar("T")


class Scope:
    """The per-worker state of one parallel worker, keyed by the concern that owns it."""

    def __init__(self, label: str, parent: Scope | None = None) -> None:
        self.label = label
        self.parent = parent
        self.slots: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"<Scope {self.label}>"


_var: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "autoserv_worker_scope", default=None
)


def current() -> Scope | None:
    """The scope of the worker running in this thread (None outside worker threads)."""
    return _var.get()


def chain() -> Iterator[Scope]:
    """The current scope, then its parents, innermost first."""
    s = _var.get()
    while s is not None:
        yield s
        s = s.parent


def lookup(key: Any, default: Any = None) -> Any:
    """The value of ``key`` in the innermost scope that has it; ``default`` if none does."""
    for s in chain():
        if key in s.slots:
            return s.slots[key]
    return default


def own(key: Any, factory: Callable[[], T]) -> T | None:
    """The current scope's own value of ``key`` (made by ``factory`` the first time).

    None outside worker threads.
    """
    s = _var.get()
    if s is None:
        return None
    if key not in s.slots:
        s.slots[key] = factory()
    return s.slots[key]  # type: ignore[no-any-return]


def run_in(scope: Scope, func: Callable[..., T], *args: Any) -> T:
    """Call ``func(*args)`` with ``scope`` current (in a copy of this thread's context)."""

    def enter() -> T:
        _var.set(scope)
        return func(*args)

    return contextvars.copy_context().run(enter)


class PerWorker(Generic[T]):
    """An instance attribute that a worker thread sets for itself only (a descriptor).

    Set in a worker thread, the value goes to that worker's scope; read there, it comes
    from the innermost scope that set it, else from the instance, as a forked worker sees
    its own copy of the object.  Elsewhere it is a plain attribute.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: Any = None) -> PerWorker[T]: ...

    @overload
    def __get__(self, obj: object, owner: Any = None) -> T: ...

    def __get__(self, obj: object | None, owner: Any = None) -> T | PerWorker[T]:
        if obj is None:
            return self
        key = ("attrs", id(obj))
        for s in chain():
            overlay = s.slots.get(key)
            if overlay is not None and self._name in overlay:
                return overlay[self._name]  # type: ignore[no-any-return]
        try:
            return obj.__dict__[self._name]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(self._name) from None

    def __set__(self, obj: object, value: T) -> None:
        overlay: dict[str, Any] | None = own(("attrs", id(obj)), dict)
        if overlay is None:
            obj.__dict__[self._name] = value
        else:
            overlay[self._name] = value
