"""The CLI's lifecycle flags: -v, -R, --host-protection, --min-disk-gb, -i, -I, -C, --hooks...

Kept apart from :mod:`autoserv.cli` so the CLI only adds the group (:func:`add_flags`), checks
the combination (:func:`check`, which builds the :class:`autoserv.lifecycle.Plan`) and passes
``--cleanup=MODE`` through :func:`cleanup_equals`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from autoserv.errors import AutoservUsageError

__all__ = ["HELP", "add_flags", "cleanup_equals", "check"]

HELP = """\
lifecycle (in this order: repair, verify, install, job, install-after, cleanup):
  -v   verify only: SSH answers and 'true' runs within the connect timeout, the host is
       not shutting down (runlevel 0/6, systemd 'stopping'), --min-disk-gb free at /tmp
       and the autodir, and the hook file's verify(host); GOOD/FAIL verify per machine.
  -R   repair, then verify: wait for a host shutting down, on a full disk delete files
       older than the job from /tmp and /var/tmp on that mount, reboot, then the hook
       file's repair/install/hardreset (as --host-protection allows); each step once.
  -C   after the job, 'safe' cleanup (default): kill the processes the job left on each
       host and remove its remote temp dirs.  --cleanup=reboot reboots every host instead
       (what the original Autoserv's -C did).
  -i/-I  run the hook file's install(host) on each machine before/after the job.
  A failed job (or an abort) collects <results>/<machine>/crashinfo/ from every machine
  that answers; --collect-crashinfo does only that.
  hook file (--hooks FILE or AUTOSERV_HOOKS): Python defining any of verify(host),
  repair(host), install(host), hardreset(host), collect_crashinfo(host, dest).
"""


def add_flags(p: argparse.ArgumentParser) -> None:
    from autoserv import hooks, lifecycle

    g = p.add_argument_group("lifecycle (see the section below)")
    g.add_argument("-v", "--verify", action="store_true",
                   help="verify the machines only (no control file)")
    g.add_argument("-R", "--repair", action="store_true",
                   help="repair the machines, then verify them (no control file)")
    g.add_argument("--host-protection", type=_protection, default="NO_PROTECTION",
                   metavar="LEVEL",
                   help="what repair may do: " + ", ".join(lifecycle.PROTECTION_LEVELS)
                   + " (default NO_PROTECTION: everything)")
    g.add_argument("--min-disk-gb", type=_non_negative_float,
                   default=lifecycle.DEFAULT_MIN_DISK_GB, metavar="GB",
                   help="free space verify wants at /tmp and the autodir (default 1)")
    g.add_argument("-i", "--install-before", action="store_true",
                   help="run the install hook on each machine before the job")
    g.add_argument("-I", "--install-after", action="store_true",
                   help="run the install hook on each machine after the job")
    g.add_argument("-C", "--cleanup", dest="cleanup", action="store_const", const="safe",
                   help="clean up each machine after the job; --cleanup=reboot reboots it")
    g.add_argument("--cleanup-mode", dest="cleanup", choices=lifecycle.CLEANUP_MODES,
                   help=argparse.SUPPRESS)
    g.add_argument("--collect-crashinfo", action="store_true",
                   help="only collect crash information from the machines")
    g.add_argument("--hooks", metavar="FILE",
                   help=f"the lab's hook file (or {hooks.ENV})")


def _protection(text: str) -> str:
    from autoserv import lifecycle

    try:
        return lifecycle.valid_protection(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    if math.isinf(value):  # verify could never pass
        raise argparse.ArgumentTypeError(f"must be finite: {text!r}")
    return value


def cleanup_equals(argv: Sequence[str]) -> list[str]:
    """``--cleanup=MODE`` → ``--cleanup-mode MODE`` (``-C``/``--cleanup`` alone take no value)."""
    out: list[str] = []
    for arg in argv:
        if arg == "--":
            out += argv[len(out):]
            break
        if arg.startswith("--cleanup="):
            out += ["--cleanup-mode", arg.split("=", 1)[1]]
        else:
            out.append(arg)
    return out


def check(options: argparse.Namespace) -> None:
    """Flag combinations of the lifecycle; sets ``options.plan`` (an autoserv.lifecycle.Plan)."""
    from autoserv import hooks, lifecycle

    only = [flag for flag, on in (("-v", options.verify), ("-R", options.repair),
                                  ("--collect-crashinfo", options.collect_crashinfo)) if on]
    if options.collect_crashinfo and (options.verify or options.repair):
        raise AutoservUsageError("--collect-crashinfo cannot be combined with -v or -R")
    if only and (options.control_file is not None or options.args):
        raise AutoservUsageError(f"{only[0]} runs no control file: give none (and no arguments)")
    if not only and options.control_file is None:
        raise AutoservUsageError("a control file is needed (or -v, -R, --collect-crashinfo)")
    if options.collect_crashinfo and options.no_results:
        raise AutoservUsageError("--collect-crashinfo needs a results directory: not with -N")
    options.hook_file = hooks.from_option(options.hooks)
    for flag, on in (("-i", options.install_before), ("-I", options.install_after)):
        if on and options.hook_file.get("install") is None:
            raise AutoservUsageError(
                f"{flag} needs an install hook: define install(host) in a hook file and pass "
                f"--hooks FILE (or set {hooks.ENV})"
            )
    options.plan = lifecycle.Plan(
        verify=options.verify, repair=options.repair, install_before=options.install_before,
        install_after=options.install_after, cleanup=options.cleanup,
        collect_crashinfo=options.collect_crashinfo, crashinfo_on_failure=not options.no_results,
        protection=options.host_protection, min_disk_gb=options.min_disk_gb,
        hooks=options.hook_file,
    )
