"""The host lifecycle of a lab: verify, repair, install, cleanup, and the job's segments.

Per host (also ``host.verify()``, ``host.repair()``, ``host.cleanup()``,
``host.machine_install()``, ``host.hardreset()`` in control files):

:func:`verify`
    SSH reachable and ``true`` runs within the connect timeout (permission denied and time-outs
    named); not shutting down (``runlevel`` 0 or 6, or systemd's ``is-system-running`` =
    ``stopping``); at least ``min_disk_gb`` GB (10^9 bytes) free at ``/tmp`` and at the autodir;
    then the lab's ``verify`` hook.  Raises :class:`AutoservVerifyError` listing every failed check.
:func:`repair`
    Built-in steps by protection level, each at most once and only when it applies, with a verify
    after each: wait for a host that is shutting down or rebooting; on a full disk, delete from
    ``/tmp`` and ``/var/tmp`` on that mount the files older than the job (by the host's clock);
    reboot; then the lab's ``repair`` hook, reinstall (``install`` hook) and ``hardreset`` hook.
    Raises :class:`AutoservRepairError` listing every step tried.
:func:`cleanup`
    ``safe`` (default): kill the processes this job left on the host and remove its remote temp
    directories; ``reboot``: reboot the host, as the original Autoserv did.
:func:`machine_install` / :func:`hardreset`
    The lab's ``install`` / ``hardreset`` hook (:mod:`autoserv.hooks`); without one a one-line
    :class:`~autoserv.errors.AutoservUnsupportedError` naming the hook.

The job's segments (:func:`run_segments`), in the original's order: repair, verify, install, the
control file, install-after, cleanup.  Each runs on every machine in parallel (one worker per
machine, as ``parallel_simple``) inside its own ``START``/``END`` group of the job's status.log;
each machine records ``GOOD``/``FAIL <segment>`` with the reason in ``<machine>/status.log``.  A
failed repair, verify or install stops the job before the control file runs.  When the control
file fails or is aborted, crash information is collected (:mod:`autoserv.crashinfo`); while it
runs, each machine's system log positions are marked when the job first uses the host.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoserv import hooks as hooks_mod
from autoserv import jobmark
from autoserv.deadline import Deadline, backoff
from autoserv.errors import (
    AutoservError,
    AutoservHostError,
    AutoservHostKeyError,
    AutoservRunError,
    AutoservSshPermissionDeniedError,
    AutoservSSHTimeout,
    AutoservUnsupportedError,
)

__all__ = [
    "PROTECTION_LEVELS",
    "CLEANUP_MODES",
    "DEFAULT_MIN_DISK_GB",
    "AUTODIRS",
    "Problem",
    "AutoservVerifyError",
    "AutoservRepairError",
    "shutdown_reason",
    "parse_df",
    "verify_script",
    "parse_verify_output",
    "diagnose",
    "verify",
    "repair",
    "machine_install",
    "hardreset",
    "Plan",
    "configure",
    "run_segments",
]

log = logging.getLogger("autoserv.lifecycle")

#: ``--host-protection`` levels, most repair first (as in the original).
PROTECTION_LEVELS = ("NO_PROTECTION", "SOFTWARE_ONLY", "FILESYSTEM_ONLY", "DO_NOT_REPAIR")
#: ``--cleanup`` modes.
CLEANUP_MODES = ("safe", "reboot")
DEFAULT_MIN_DISK_GB = 1.0
#: Where an Autotest client may live on a host (the original's autodir candidates).
AUTODIRS = ("/usr/local/autotest", "/home/autotest")
#: How long repair waits for a host that is shutting down or rebooting to come back.
SHUTDOWN_WAIT = 600.0
#: How long repair waits for a host that does not answer (it may be rebooting).
UNREACHABLE_WAIT = 120.0
_GB = 10**9


@dataclass(frozen=True)
class Problem:
    """One failed check: ``check`` is ``ssh`` (unreachable, too slow), ``auth`` (permission
    denied, host key refused), ``shutdown``, ``disk`` or ``hook``."""

    check: str
    message: str
    paths: tuple[str, ...] = ()  # for ``disk``: the paths short of space

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"


class AutoservVerifyError(AutoservHostError):
    """A host failed verify; ``problems`` lists every failed check."""

    def __init__(self, hostname: str, problems: Sequence[Problem]) -> None:
        super().__init__(hostname, list(problems))
        self.hostname = hostname
        self.problems = list(problems)

    def __str__(self) -> str:
        return f"{self.hostname} failed verify: " + "; ".join(map(str, self.problems))


class AutoservRepairError(AutoservHostError):
    """A host could not be repaired; ``steps`` lists every step tried, ``problems`` what is left."""

    def __init__(self, hostname: str, steps: Sequence[str], problems: Sequence[Problem]) -> None:
        super().__init__(hostname, list(steps), list(problems))
        self.hostname = hostname
        self.steps = list(steps)
        self.problems = list(problems)

    def __str__(self) -> str:
        tried = "; ".join(self.steps) if self.steps else "no repair step applies"
        left = "; ".join(map(str, self.problems))
        return f"{self.hostname} could not be repaired: {left} (tried: {tried})"


# -- pure parts: command builder and parsers -------------------------------------------------

def shutdown_reason(runlevel: str, state: str) -> str | None:
    """Why ``runlevel`` / ``systemctl is-system-running`` output means shutting down, else None.

    >>> shutdown_reason("5 6", "stopping")
    'runlevel 6 (rebooting)'
    """
    fields = runlevel.split()
    if len(fields) == 2 and fields[1] in ("0", "6"):
        return f"runlevel {fields[1]} ({'halting' if fields[1] == '0' else 'rebooting'})"
    if state.strip() == "stopping":
        return "systemd is stopping (is-system-running: stopping)"
    return None


def parse_df(text: str) -> tuple[str, int] | None:
    """(mount point, available KiB) from ``df -Pk -- PATH`` output, None if unreadable."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    fields = lines[-1].split()
    if len(fields) < 6 or not fields[3].isdigit():
        return None
    return " ".join(fields[5:]), int(fields[3])


def verify_script(paths: Sequence[str]) -> str:
    """One remote shell command reporting the run level, the systemd state and ``df`` of ``paths``.

    Sections start with ``@@ runlevel``, ``@@ state`` and ``@@ df <path>``; a path that does not
    exist is skipped.
    """
    parts = [
        "echo '@@ runlevel'; runlevel 2>/dev/null",
        "echo '@@ state'; systemctl is-system-running 2>/dev/null",
    ]
    for path in paths:
        q = shlex.quote(path)
        parts.append(f"if [ -e {q} ]; then printf '@@ df %s\\n' {q}; df -Pk -- {q} 2>&1; fi")
    return "; ".join(parts) + "; true"


def parse_verify_output(text: str) -> tuple[str, str, dict[str, str]]:
    """Split :func:`verify_script` output into (runlevel, state, {path: df output})."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("@@ "):
            current = line[3:]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    df = {name[3:]: "\n".join(lines) for name, lines in sections.items() if name.startswith("df ")}
    return ("\n".join(sections.get("runlevel", [])).strip(),
            "\n".join(sections.get("state", [])).strip(), df)


def disk_problem(df: dict[str, str], min_disk_gb: float) -> Problem | None:
    """The paths of ``df`` (:func:`parse_verify_output`) with less than ``min_disk_gb`` GB free."""
    short: list[str] = []
    texts: list[str] = []
    for path, output in df.items():
        parsed = parse_df(output)
        if parsed is None:
            short.append(path)
            texts.append(f"{path}: cannot read free space ({output.strip().splitlines()[-1:]})")
            continue
        mount, avail_kb = parsed
        free = avail_kb * 1024 / _GB
        if free < min_disk_gb:
            short.append(path)
            texts.append(f"{path} has {free:.3f} GB free (on {mount}), needs {min_disk_gb:g} GB")
    if not short:
        return None
    return Problem("disk", "; ".join(texts) + " (--min-disk-gb)", tuple(short))


# -- settings of the running job ---------------------------------------------------------------

@dataclass
class _Settings:
    min_disk_gb: float = DEFAULT_MIN_DISK_GB
    protection: str = "NO_PROTECTION"
    shutdown_wait: float = SHUTDOWN_WAIT


_settings = _Settings()


def configure(min_disk_gb: float | None = None, protection: str | None = None,
              shutdown_wait: float | None = None) -> None:
    """Set the job-wide defaults of :func:`verify` and :func:`repair` (the CLI's flags)."""
    if min_disk_gb is not None:
        _settings.min_disk_gb = float(min_disk_gb)
    if protection is not None:
        if protection not in PROTECTION_LEVELS:
            raise ValueError(f"host protection must be one of {', '.join(PROTECTION_LEVELS)}")
        _settings.protection = protection
    if shutdown_wait is not None:
        _settings.shutdown_wait = float(shutdown_wait)


def _connect_timeout(host: Any) -> float:
    params = getattr(host, "params", None)
    return float(getattr(params, "connect_timeout", None) or 30.0)


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _autodirs(host: Any) -> list[str]:
    own = getattr(host, "autodir", None)
    return [own] if isinstance(own, str) and own else list(AUTODIRS)


# -- verify ---------------------------------------------------------------------------------------

def check_ssh(host: Any, timeout: float | None = None) -> Problem | None:
    """Reachable over SSH and ``true`` runs within ``timeout`` (default: the connect timeout)."""
    timeout = timeout or _connect_timeout(host)
    try:
        host.run("true", timeout=timeout, connect_timeout=timeout, verbose=False,
                 stdout_tee=None, stderr_tee=None)
    except AutoservSshPermissionDeniedError as exc:
        return Problem("auth", _first(exc))  # "permission denied for root@h:22 (tried ...)"
    except AutoservHostKeyError as exc:
        return Problem("auth", f"host key refused: {_first(exc)}")
    except AutoservSSHTimeout as exc:
        return Problem("ssh", f"unreachable: {_first(exc)}")
    except AutoservRunError as exc:
        if exc.timed_out:
            return Problem("ssh", f"'true' did not finish within {timeout:g} s (connect timeout)")
        return Problem("ssh", f"'true' failed: {_first(exc)}")
    except AutoservError as exc:
        return Problem("ssh", _first(exc))
    return None


def diagnose(host: Any, min_disk_gb: float | None = None,
             hooks: hooks_mod.Hooks | None = None, run_hook: bool = True) -> list[Problem]:
    """Every failed check of :func:`verify` (empty: the host is fit)."""
    min_disk_gb = _settings.min_disk_gb if min_disk_gb is None else min_disk_gb
    problem = check_ssh(host)
    if problem is not None:
        return [problem]  # nothing else can be checked
    problems: list[Problem] = []
    paths = ["/tmp", *_autodirs(host)]
    try:
        out = host.run(verify_script(paths), timeout=60, verbose=False,
                       stdout_tee=None, stderr_tee=None).stdout
    except AutoservError as exc:
        return [Problem("ssh", f"the checks did not run: {_first(exc)}")]
    runlevel, state, df = parse_verify_output(out)
    reason = shutdown_reason(runlevel, state)
    if reason is not None:
        problems.append(Problem("shutdown", f"shutting down: {reason}"))
    disk = disk_problem(df, min_disk_gb)
    if disk is not None:
        problems.append(disk)
    hooks = hooks_mod.current() if hooks is None else hooks
    hook = hooks.get("verify")
    if run_hook and hook is not None:
        try:
            hook(host)
        except Exception as exc:
            problems.append(Problem("hook", f"verify hook ({hooks.path}): "
                                    f"{type(exc).__name__}: {_first(exc)}"))
    return problems


def verify(host: Any, min_disk_gb: float | None = None,
           hooks: hooks_mod.Hooks | None = None) -> None:
    """Raise :class:`AutoservVerifyError` unless ``host`` passes every check (module docstring)."""
    problems = diagnose(host, min_disk_gb, hooks)
    if problems:
        raise AutoservVerifyError(host.hostname, problems)
    host.log.info("%s verified", host.hostname)


# -- hooks ----------------------------------------------------------------------------------------

def _need_hook(name: str, hooks: hooks_mod.Hooks | None, what: str) -> Callable[..., Any]:
    hooks = hooks_mod.current() if hooks is None else hooks
    hook = hooks.get(name)
    if hook is None:
        where = f" ({hooks.path} defines none)" if hooks.path else ""
        raise AutoservUnsupportedError(
            f"{what} needs the hook {name}(host): define it in a hook file and pass "
            f"--hooks FILE (or set {hooks_mod.ENV}){where}"
        )
    return hook


def machine_install(host: Any, hooks: hooks_mod.Hooks | None = None) -> None:
    """Reinstall ``host`` with the lab's ``install`` hook."""
    _need_hook("install", hooks, "installing a machine")(host)


def hardreset(host: Any, hooks: hooks_mod.Hooks | None = None, wait: bool = True,
              timeout: float = 1800) -> None:
    """Power-cycle ``host`` with the lab's ``hardreset`` hook.

    With ``wait``: wait until the old boot is over (unreachable or a new boot id) and the host
    answers again, so a hook may just start the power cycle and return.
    """
    hook = _need_hook("hardreset", hooks, "a hard reset")
    old: str | None = None
    if wait:
        try:
            old = host.get_boot_id(timeout=10)
        except AutoservError:
            old = None  # not answering: that is what the reset is for
    hook(host)
    if not wait:
        return
    deadline = Deadline(timeout)
    if old is not None and not host.wait_down(timeout=deadline.remaining(), old_boot_id=old):
        raise AutoservHostError(f"{host.hostname} did not go down within {timeout:g} s "
                                "of its hard reset")
    if not host.wait_up(timeout=deadline.remaining()):
        raise AutoservHostError(f"{host.hostname} did not come back within {timeout:g} s "
                                "of its hard reset")


# -- repair ---------------------------------------------------------------------------------------

def tmp_cleanup_script(dirs: Sequence[str], before: int) -> str:
    """Delete what ``dirs`` hold on their own mount that was last modified before ``before``.

    Only files, symlinks and (then empty) directories under each dir, never the dir itself, never
    across a mount (``-xdev``); prints how many entries were deleted.
    """
    parts = []
    for d in dirs:
        q = shlex.quote(d)
        parts.append(
            f"[ -d {q} ] && find {q} -xdev -mindepth 1 -depth ! -newermt @{int(before)} "
            f"-delete -print 2>/dev/null | wc -l | sed 's|^|{d}: |'"
        )
    return "; ".join(parts) + "; true"


def _host_now(host: Any) -> int | None:
    try:
        return int(host.run_output("date +%s", timeout=30, verbose=False, stdout_tee=None))
    except (AutoservError, ValueError):
        return None


def repair(host: Any, protection: str | None = None, min_disk_gb: float | None = None,
           hooks: hooks_mod.Hooks | None = None, since: int | None = None) -> list[str]:
    """Repair ``host`` until it verifies; return the steps taken (module docstring).

    ``since``: files older than this (host's epoch seconds) count as older than the job;
    default: the host's clock when repair starts.
    """
    protection = protection or _settings.protection
    if protection not in PROTECTION_LEVELS:
        raise ValueError(f"host protection must be one of {', '.join(PROTECTION_LEVELS)}")
    hooks = hooks_mod.current() if hooks is None else hooks
    level = PROTECTION_LEVELS.index(protection)  # 0: everything allowed ... 3: nothing
    problems = diagnose(host, min_disk_gb, hooks)
    if not problems:
        return []
    steps: list[str] = []
    if since is None:
        since = _host_now(host)

    def done(step: str) -> bool:
        nonlocal problems
        problems = diagnose(host, min_disk_gb, hooks)
        steps.append(f"{step}: {'verified' if not problems else 'still ' + '; '.join(map(str, problems))}")
        host.log.info("repair %s: %s", host.hostname, steps[-1])
        return not problems

    def checks() -> set[str]:
        return {p.check for p in problems}

    if level >= PROTECTION_LEVELS.index("DO_NOT_REPAIR"):
        raise AutoservRepairError(host.hostname, ["none (--host-protection DO_NOT_REPAIR)"], problems)
    if checks() & {"shutdown", "ssh"}:
        # Shutting down, rebooting, or not answering (yet): wait until it answers and is not
        # shutting down, whether it went down and came back or changed its mind.  A host
        # that merely does not answer may be rebooting: it gets a shorter wait.
        wait = _settings.shutdown_wait
        if "shutdown" not in checks():
            wait = min(wait, UNREACHABLE_WAIT)
        deadline = Deadline(wait)
        for delay in backoff(0.5, 1.5, 10.0):
            now = {p.check for p in diagnose(host, min_disk_gb, hooks, run_hook=False)}
            if not now & {"shutdown", "ssh"} or deadline.expired():
                break
            deadline.sleep(delay)
        if done(f"wait up to {wait:g} s for the host to finish shutting down or rebooting"):
            return steps
    if "disk" in checks():
        disk = next(p for p in problems if p.check == "disk")
        if since is None:
            since = _host_now(host)
        try:
            mounts = _full_mounts(host, disk.paths)
            dirs = [d for d, m in mounts.items() if m]
            out = host.run(tmp_cleanup_script(dirs, since or 0), timeout=600,
                           verbose=False, stdout_tee=None).stdout if dirs and since else ""
            what = ", ".join(line.strip() + " entries" for line in out.splitlines()) or "nothing"
            step = f"empty /tmp and /var/tmp of files older than the job on the full mount ({what})"
        except AutoservError as exc:
            step = f"empty /tmp and /var/tmp of old files failed ({_first(exc)})"
        if done(step):
            return steps
    if not checks() & {"ssh", "auth"}:
        try:
            host.reboot(timeout=_settings.shutdown_wait)
            step = "reboot"
        except AutoservError as exc:
            step = f"reboot failed ({_first(exc)})"
        if done(step):
            return steps
    hook_steps: list[tuple[str, int]] = [("repair", 1), ("install", 1), ("hardreset", 0)]
    for name, max_level in hook_steps:
        hook = hooks.get(name)
        if hook is None or level > max_level:
            continue
        try:
            if name == "hardreset":
                hardreset(host, hooks, timeout=_settings.shutdown_wait)
            else:
                hook(host)
            step = f"{name} hook"
        except Exception as exc:
            step = f"{name} hook failed ({type(exc).__name__}: {_first(exc)})"
        if done(step):
            return steps
    raise AutoservRepairError(host.hostname, steps, problems)


def _full_mounts(host: Any, paths: Sequence[str]) -> dict[str, bool]:
    """For /tmp and /var/tmp: is it on the same mount as one of ``paths`` (the full ones)?"""
    script = "; ".join(
        f"printf '%s %s\\n' {shlex.quote(p)} \"$(df -Pk -- {shlex.quote(p)} 2>/dev/null | "
        "awk 'NR==2 {print $6}')\"" for p in ["/tmp", "/var/tmp", *paths]
    )
    out = host.run(script, timeout=60, verbose=False, stdout_tee=None).stdout
    mount_of: dict[str, str] = {}
    for line in out.splitlines():
        path, _, mount = line.partition(" ")
        mount_of[path] = mount.strip()
    full = {mount_of.get(p) for p in paths} - {None, ""}
    return {d: mount_of.get(d) in full for d in ("/tmp", "/var/tmp")}


# -- the job's segments -------------------------------------------------------------------------

@dataclass
class Plan:
    """Which segments a job runs (from the CLI's flags)."""

    verify: bool = False
    repair: bool = False
    install_before: bool = False
    install_after: bool = False
    cleanup: str | None = None  # None, "safe" or "reboot"
    collect_crashinfo: bool = False  # only this
    crashinfo_on_failure: bool = True
    protection: str = "NO_PROTECTION"
    min_disk_gb: float = DEFAULT_MIN_DISK_GB
    hooks: hooks_mod.Hooks = field(default_factory=hooks_mod.Hooks)

    @property
    def runs_control(self) -> bool:
        """False for the lifecycle-only jobs (-v, -R, --collect-crashinfo)."""
        return not (self.verify or self.repair or self.collect_crashinfo)



def _per_machine(job: Any, name: str, action: Callable[[Any], str]) -> Callable[[str], str | None]:
    """The function a worker runs for ``name``: records GOOD/FAIL, returns None or the reason."""
    from autoserv import hosts

    def one(machine: str) -> str | None:
        host = hosts.create_host(machine)
        try:
            message = action(host)
        except AutoservError as exc:
            reason = str(exc)
            job.record("FAIL", None, name, reason)
            return reason
        except Exception as exc:  # a hook raising anything: the machine failed this segment
            reason = f"{type(exc).__name__}: {_first(exc)}"
            job.record("FAIL", None, name, reason)
            return reason
        finally:
            host.close()
        job.record("GOOD", None, name, message)
        return None

    return one


def segment(job: Any, name: str, action: Callable[[Any], str]) -> bool:
    """Run ``action(host)`` on every machine in parallel in a ``name`` group; True if all passed."""
    from autoserv import parallel

    job.record("START", None, name)  # on an abort, the job's end closes it with END ABORT
    failed: list[str] = []
    results = parallel.parallel_simple(_per_machine(job, name, action), job.machines,
                                       return_results=True) or []
    for machine, result in zip(job.machines, results, strict=True):
        if isinstance(result, BaseException):
            result = _first(result)
        if result is not None:
            failed.append(f"{parallel.arg_label(machine)}: {result}")
    if failed:
        job.record("END FAIL", None, name, "; ".join(failed))
        return False
    job.record("END GOOD", None, name)
    return True


def _verify_action(host: Any) -> str:
    verify(host)
    return f"{host.hostname} verified"


def _repair_action(host: Any) -> str:
    steps = repair(host)
    return f"{host.hostname} repaired: " + "; ".join(steps) if steps else \
        f"{host.hostname} needed no repair"


def _install_action(host: Any) -> str:
    machine_install(host)
    return f"{host.hostname} installed"


def run_segments(job: Any, plan: Plan, run_control: Callable[[], None] | None) -> None:
    """Run the job's segments in order (module docstring); ``run_control`` runs the control file."""
    from autoserv.abort import JobAbort

    configure(plan.min_disk_gb, plan.protection)
    previous = hooks_mod.set_current(plan.hooks)
    jobmark.start()  # what the job's commands start can be found by cleanup
    try:
        if plan.collect_crashinfo:
            _crashinfo_segment(job)
            return
        if plan.repair and not segment(job, "repair", _repair_action):
            return
        if (plan.verify or plan.repair) and not segment(job, "verify", _verify_action):
            return
        if plan.install_before and not segment(job, "install", _install_action):
            return
        if run_control is None:
            return
        aborted = False
        try:
            with _log_marks(job, plan):
                run_control()
            if job.failed and plan.crashinfo_on_failure and job.resultdir is not None:
                _crashinfo_after_failure(job, False)  # failures recorded, nothing raised
        except BaseException as exc:
            aborted = isinstance(exc, JobAbort | KeyboardInterrupt)
            if plan.crashinfo_on_failure and job.resultdir is not None:
                _crashinfo_after_failure(job, aborted)
            raise
        finally:
            if plan.install_after and not aborted:
                segment(job, "install_after", _install_action)
            if plan.cleanup:
                _cleanup_segment(job, plan.cleanup)
    finally:
        hooks_mod.set_current(previous)
        jobmark.stop()


def _log_marks(job: Any, plan: Plan) -> contextlib.AbstractContextManager[None]:
    """While the control file runs: each machine's log positions marked for crash collection."""
    from autoserv import crashinfo

    if not plan.crashinfo_on_failure or job.resultdir is None:
        return contextlib.nullcontext()
    return crashinfo.marking(job.resultdir, job.parsed_machines)


def _crashinfo_after_failure(job: Any, aborted: bool) -> None:
    """Collect crash information after the control file failed (never fatal)."""
    from autoserv import crashinfo

    try:
        crashinfo.collect_segment(job, "the job was aborted" if aborted else "the job failed",
                                  record=False)
    except Exception:
        log.exception("crash collection failed (ignored)")


def _crashinfo_segment(job: Any) -> None:
    from autoserv import crashinfo

    crashinfo.collect_segment(job)


def _cleanup_segment(job: Any, mode: str) -> None:
    from autoserv import cleanup as cleanup_mod

    segment(job, "cleanup", lambda host: cleanup_mod.cleanup(host, mode))


def valid_protection(text: str) -> str:
    """``--host-protection`` value, case-insensitive (``no_protection`` works too)."""
    value = re.sub(r"[-\s]", "_", text.strip()).upper()
    if value not in PROTECTION_LEVELS:
        raise ValueError(f"{text!r} is not a level: must be one of {', '.join(PROTECTION_LEVELS)}")
    return value
