"""Crash collection: what each machine knew when a job failed, in ``<results>/<machine>/crashinfo/``.

When the control file fails or the job is aborted (and there is a results directory), every
machine that still answers is asked, in parallel, for:

``dmesg``          the kernel ring buffer (``dmesg``, else ``journalctl -k`` of this boot)
``journal``        the system journal since the job started (``journalctl --since``, the job's
                   start converted to the host's clock, so clock skew does not matter)
``messages``       the last lines of ``/var/log/messages`` / ``/var/log/syslog`` (hosts without a
                   journal; these files carry no reliable position, so it is a bounded tail)
``uptime``, ``df`` ``uptime`` and ``df -P``
``ps``             the processes the job left running (those with its mark, autoserv.jobmark)
``client_results`` an Autotest client's results still in the autodir, if small enough
plus whatever the lab's ``collect_crashinfo(host, dest)`` hook writes.

Bounds (also written to ``crashinfo/README``): each command at most :data:`COMMAND_TIMEOUT`
seconds and :data:`MAX_BYTES` bytes of output (the end is kept), each machine at most
:data:`MACHINE_BUDGET` seconds, connecting with at most :data:`CONNECT_TIMEOUT` seconds.
Collection is never fatal: what fails is noted in the README and the debug log.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Callable
from typing import Any

from autoserv import hooks as hooks_mod
from autoserv import jobmark
from autoserv.deadline import Deadline
from autoserv.errors import AutoservError

__all__ = ["COMMAND_TIMEOUT", "MAX_BYTES", "MACHINE_BUDGET", "collect", "collect_segment",
           "commands"]

log = logging.getLogger("autoserv.crashinfo")

COMMAND_TIMEOUT = 30.0
MAX_BYTES = 1_000_000
MACHINE_BUDGET = 120.0
CONNECT_TIMEOUT = 10.0
#: Client results larger than this (KiB) are not copied.
MAX_CLIENT_RESULTS_KB = 50_000
AUTODIRS = ("/usr/local/autotest", "/home/autotest")


def _bounded(command: str) -> str:
    return f"{{ {command} ; }} 2>&1 | tail -c {MAX_BYTES}"


def commands(since_host: int | None, mark: str | None) -> dict[str, str]:
    """The file name → remote command of each piece collected (pure)."""
    cmds = {
        "dmesg": _bounded("dmesg 2>/dev/null || journalctl -k -b --no-pager"),
        "messages": _bounded("for f in /var/log/messages /var/log/syslog; do "
                             "[ -r \"$f\" ] && { echo \"== $f\"; tail -n 2000 \"$f\"; }; done; true"),
        "uptime": "uptime",
        "df": "df -P",
    }
    if since_host is not None:
        cmds["journal"] = _bounded(f"journalctl --no-pager --since=@{int(since_host)}")
    if mark is not None:
        env = shlex.quote(f"{jobmark.ENV}={mark}")
        cmds["ps"] = (
            f"pids=$(grep -lzxF -e {env} /proc/[0-9]*/environ 2>/dev/null | "
            "sed 's|/proc/||; s|/environ||' | grep -vx \"$$\" | tr '\\n' ,); "
            "[ -n \"$pids\" ] && ps -o pid,ppid,pgid,stat,etime,args -p \"${pids%,}\" "
            "| grep -v ' ps -o ' || echo 'no process of the job is left'"
        )
    return cmds


README = """\
Crash information collected by autoserv from {machine}: {why}.

{listing}
Bounds: each command at most {timeout:g} s and {max_bytes} bytes of output (the end is kept),
at most {budget:g} s for this machine.  'journal' starts at the job's start ({since}, on the
host's clock); 'messages' is a bounded tail of /var/log/messages or /var/log/syslog, which
carry no position to start from.
{notes}"""


def collect(host: Any, dest: str, started: float | None, why: str = "the job failed",
            hooks: hooks_mod.Hooks | None = None) -> list[str]:
    """Collect ``host``'s crash information into ``dest``; the files written.  Never raises
    :class:`AutoservError` or a hook's exception (they are noted in ``dest/README``)."""
    os.makedirs(dest, exist_ok=True)
    deadline = Deadline(MACHINE_BUDGET)
    notes: list[str] = []
    written: list[str] = []
    since_host: int | None = None
    since_text = "unknown"
    try:
        host_now = int(host.run_output("date +%s", timeout=COMMAND_TIMEOUT,
                                       connect_timeout=CONNECT_TIMEOUT, verbose=False,
                                       stdout_tee=None))
        if started is not None:
            since_host = int(started) + host_now - int(time.time())
            since_text = f"@{since_host}"
    except (AutoservError, ValueError) as exc:
        notes.append(f"the host did not answer: {str(exc).strip().splitlines()[0]}")
    if not notes:
        mark = jobmark.process_mark(host.hostname)
        for name, command in commands(since_host, mark).items():
            if deadline.expired():
                notes.append(f"{name}: skipped, the {MACHINE_BUDGET:g} s budget was spent")
                continue
            try:
                result = host.run(command, timeout=deadline.remaining(COMMAND_TIMEOUT),
                                  ignore_status=True, verbose=False, stdout_tee=None,
                                  stderr_tee=None)
                with open(os.path.join(dest, name), "w", encoding="utf-8",
                          errors="replace") as f:
                    f.write(result.stdout)
                written.append(name)
            except AutoservError as exc:
                notes.append(f"{name}: {str(exc).strip().splitlines()[0]}")
        _client_results(host, dest, deadline, written, notes)
        hooks = hooks_mod.current() if hooks is None else hooks
        hook = hooks.get("collect_crashinfo")
        if hook is not None and not deadline.expired():
            before = set(os.listdir(dest))
            try:
                hook(host, dest)
            except Exception as exc:
                notes.append(f"collect_crashinfo hook ({hooks.path}): {type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
            written += sorted(set(os.listdir(dest)) - before - {"README"})
    listing = "".join(f"  {name}\n" for name in written) or "  (nothing)\n"
    with open(os.path.join(dest, "README"), "w", encoding="utf-8") as f:
        f.write(README.format(
            machine=host.hostname, why=why, listing="Files:\n" + listing, timeout=COMMAND_TIMEOUT,
            max_bytes=MAX_BYTES, budget=MACHINE_BUDGET, since=since_text,
            notes="".join(f"Note: {n}\n" for n in notes)))
    return written


def _client_results(host: Any, dest: str, deadline: Deadline, written: list[str],
                    notes: list[str]) -> None:
    """An Autotest client's results left in the autodir (copied only when small)."""
    dirs = [d for d in [getattr(host, "autodir", None), *AUTODIRS] if isinstance(d, str) and d]
    script = "; ".join(f"[ -d {shlex.quote(d + '/results')} ] && echo \"$(du -sk -- "
                       f"{shlex.quote(d + '/results')} | cut -f1) {d}/results\"" for d in dirs)
    try:
        out = host.run(script + "; true", timeout=deadline.remaining(COMMAND_TIMEOUT),
                       verbose=False, stdout_tee=None).stdout
    except AutoservError as exc:
        notes.append(f"client results: {str(exc).strip().splitlines()[0]}")
        return
    for line in out.splitlines():
        size, _, path = line.partition(" ")
        if not size.isdigit():
            continue
        if int(size) > MAX_CLIENT_RESULTS_KB:
            notes.append(f"client results {path}: {size} KiB, more than {MAX_CLIENT_RESULTS_KB} "
                         "KiB: not copied")
            continue
        try:
            host.get_file(path, os.path.join(dest, "client_results"))
            written.append("client_results")
        except AutoservError as exc:
            notes.append(f"client results {path}: {str(exc).strip().splitlines()[0]}")
        return


def _collector(job: Any, top: str, why: str, record: bool) -> Callable[[str], str | None]:
    from autoserv import hosts, parallel

    names = dict(zip(job.machines, parallel._subdir_names(
        [parallel.arg_label(m) for m in job.machines]), strict=True))
    started = _job_started(top)

    def one(machine: str) -> str | None:
        dest = os.path.join(top, names[machine], "crashinfo")
        host = hosts.create_host(machine)
        try:
            written = collect(host, dest, started, why)
        finally:
            host.close()
        if record:
            if written:
                job.record("GOOD", None, "collect_crashinfo",
                           f"{len(written)} file(s) in {names[machine]}/crashinfo")
            else:
                job.record("WARN", None, "collect_crashinfo",
                           f"nothing collected (see {names[machine]}/crashinfo/README)")
        return None

    return one


def _job_started(top: str) -> float | None:
    try:
        with open(os.path.join(top, "keyval"), encoding="utf-8") as f:
            values = [line.split("=", 1)[1] for line in f if line.startswith("job_started=")]
        return float(values[0]) if values else None
    except (OSError, ValueError):
        return None


def collect_segment(job: Any, why: str = "--collect-crashinfo", record: bool = True) -> None:
    """Collect from every machine in parallel (bounded); ``record``: a status.log group."""
    from autoserv import parallel

    top = job.resultdir
    if top is None or not job.machines:
        return
    if record:
        job.record("START", None, "collect_crashinfo")
    results = parallel.parallel_simple(_collector(job, top, why, record), job.machines,
                                       timeout=MACHINE_BUDGET + 60, return_results=True) or []
    errors = [f"{parallel.arg_label(m)}: {r}" for m, r in zip(job.machines, results, strict=True)
              if isinstance(r, BaseException)]
    for error in errors:
        log.warning("crash collection: %s", error)
    if record:
        job.record("END GOOD", None, "collect_crashinfo", "; ".join(errors))
