"""The KVM kernel modules on a remote host: vendor detection, the swap, the removal.

:func:`insert_modules` removes unused ``kvm_intel``/``kvm_amd``/``kvm``, then
inserts ``kvm`` and the vendor module, from the built tree when it has both,
else the running kernel's (``modprobe``), skipping what ``/proc/modules``
already shows; it returns the modules it inserted, in removal order, for
:func:`remove_modules`.  The parsers are pure and table-tested.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from autoserv.errors import AutoservRunError, AutoservVirtError

if TYPE_CHECKING:
    from autoserv.hosts.ssh_host import SSHHost

__all__ = ["cpu_vendor", "vendor_module", "parse_proc_modules", "insert_modules", "remove_modules"]


def cpu_vendor(cpuinfo: str) -> str:
    """``"intel"`` (``vmx``) or ``"amd"`` (``svm``) from the first ``flags`` line of ``/proc/cpuinfo``."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = value.split()
            if "vmx" in flags:
                return "intel"
            if "svm" in flags:
                return "amd"
            break
    raise AutoservVirtError(
        "this CPU offers no hardware virtualization (neither vmx nor svm in /proc/cpuinfo flags)"
    )


def vendor_module(vendor: str) -> str:
    """The KVM module for a CPU vendor: ``kvm_intel`` or ``kvm_amd``."""
    return {"intel": "kvm_intel", "amd": "kvm_amd"}[vendor]


def parse_proc_modules(text: str) -> dict[str, int]:
    """``{module name: use count}`` from ``/proc/modules``."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2].isdigit():
            result[parts[0]] = int(parts[2])
    return result


def _proc_modules(host: SSHHost) -> dict[str, int]:
    return parse_proc_modules(host.run("cat /proc/modules", verbose=False, stdout_tee=None).stdout)


def insert_modules(host: SSHHost, tree: str, skip_unsupported: bool, log: logging.Logger) -> list[str]:
    """Load the KVM modules on ``host`` (see the module docstring); returns those inserted.

    A kernel without module support is an :class:`AutoservVirtError`, or with
    ``skip_unsupported`` a warning and no module step.
    """
    if host.run("test -r /proc/modules", ignore_status=True, verbose=False).exit_status != 0:
        msg = (f"{host.hostname}: the running kernel has no loadable module support "
               "(no /proc/modules): cannot insert the KVM modules; use "
               "install(insert_modules=False) with a kernel that has KVM built in")
        if skip_unsupported:
            log.warning("%s; skipping the module step as asked", msg)
            return []
        raise AutoservVirtError(msg)
    vendor = cpu_vendor(host.run("cat /proc/cpuinfo", verbose=False, stdout_tee=None).stdout)
    vmod = vendor_module(vendor)
    before = _proc_modules(host)
    for name in ("kvm_intel", "kvm_amd", "kvm"):
        loaded = _proc_modules(host)
        if name in loaded and loaded[name] == 0:
            log.info("removing unused module %s", name)
            host.run("rmmod", args=[name], ignore_status=True)
    found = host.run(shlex.join(["find", tree, "-name", "kvm.ko", "-o", "-name", f"{vmod}.ko",
                                 "-o", "-name", f"{vmod.replace('_', '-')}.ko"]),
                     verbose=False, stdout_tee=None, ignore_status=True).stdout.split()
    by_name = {os.path.basename(p)[:-3].replace("-", "_"): p for p in found}
    loaded = _proc_modules(host)
    for name in ("kvm", vmod):
        if name in loaded:
            log.info("module %s already loaded: skipped", name)
            continue
        if "kvm" in by_name and vmod in by_name:
            log.info("inserting %s from the tree", by_name[name])
            cmd = shlex.join(["insmod", by_name[name]])
        else:
            log.info("inserting the running kernel's %s (modprobe)", name)
            cmd = shlex.join(["modprobe", name])
        try:
            host.run(cmd)
        except AutoservRunError as exc:
            raise AutoservVirtError(f"cannot load KVM module {name} on {host.hostname}: "
                                    f"{exc.result_obj.stderr.strip() if exc.result_obj else exc}"
                                    ) from None
    after = _proc_modules(host)
    new = [m for m in after if m not in before and m in ("kvm", "kvm_amd", "kvm_intel", "irqbypass")]
    # remove order: vendor module, kvm, then helpers it pulled in
    order = {vmod: 0, "kvm": 1, "irqbypass": 2}
    inserted = sorted(new, key=lambda m: order.get(m, 3))
    log.info("KVM modules loaded on %s: %s (inserted by us: %s)", host.hostname,
             ", ".join(m for m in after if m.startswith("kvm")), ", ".join(inserted))
    return inserted


def remove_modules(host: SSHHost, names: Sequence[str], log: logging.Logger) -> list[str]:
    """``rmmod`` each of ``names`` in order; returns those that could not be removed."""
    left = []
    for name in names:
        res = host.run("rmmod", args=[name], ignore_status=True)
        if res.exit_status != 0:
            left.append(name)
            log.warning("cannot remove module %s: %s", name, res.stderr.strip())
    return left
