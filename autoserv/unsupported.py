"""Names of the original's server namespace that this autoserv does not implement.

Real control files use the kernel helpers ``deb_kernel``, ``rpm_kernel``, ``git_kernel`` and
``source_kernel`` (and ``host.bootloader``).  They are defined, so that such a file fails with
one clear line at the first use, not with a NameError: any attribute or call raises
:class:`~autoserv.errors.AutoservUnsupportedError`.
"""

from __future__ import annotations

from typing import Any, NoReturn

from autoserv.errors import AutoservUnsupportedError

__all__ = ["KERNEL_MESSAGE", "KERNEL_HELPERS", "HOST_ATTRIBUTES", "Unsupported", "namespace"]

KERNEL_MESSAGE = "not supported by this autoserv: install kernels with an install hook (--hooks)"
KERNEL_HELPERS = ("deb_kernel", "rpm_kernel", "git_kernel", "source_kernel")
#: Host attributes of the original that hosts here have only to raise: name -> why.
HOST_ATTRIBUTES = {"bootloader": KERNEL_MESSAGE}


class Unsupported:
    """Stands for the unsupported ``name``: using it raises, with ``message``."""

    def __init__(self, name: str, message: str = KERNEL_MESSAGE) -> None:
        self._name = name
        self._message = message

    def _fail(self, what: str) -> NoReturn:
        raise AutoservUnsupportedError(f"{what}: {self._message}")

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)  # copy, pickle, inspect: not a use
        self._fail(f"{self._name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._fail(self._name)

    def __repr__(self) -> str:
        return f"<{self._name}: {self._message}>"


def namespace() -> dict[str, Unsupported]:
    """The control file names for the kernel helpers."""
    return {name: Unsupported(name) for name in KERNEL_HELPERS}
