"""Crash collection: what each machine knew when a job failed, in ``<results>/<machine>/crashinfo/``.

When the control file fails or the job is aborted (and there is a results directory), every
machine that still answers is asked, in parallel, for:

``dmesg``          the kernel ring buffer (``dmesg``, else ``journalctl -k`` of this boot)
``journal``        the system journal since the job started using the host: since the host's own
                   time marked then (``journalctl --since=@T``); without a mark, since the job's
                   start (converted to the host's clock, so skew does not matter)
``messages``       ``/var/log/messages`` / ``/var/log/syslog`` from the byte size marked when the
                   job started using the host (a file replaced since then: all of the new one);
                   without a mark, a bounded tail
``uptime``, ``df`` ``uptime`` and ``df -P``
``ps``             the processes the job left running (those with its mark, autoserv.jobmark)
``client_results`` an Autotest client's results still in the autodir, if small enough
plus whatever the lab's ``collect_crashinfo(host, dest)`` hook writes.

Bounds (also written to ``crashinfo/README``): each command at most :data:`COMMAND_TIMEOUT`
seconds and :data:`MAX_BYTES` bytes of output (the end is kept), each machine at most
:data:`MACHINE_BUDGET` seconds, connecting with at most :data:`CONNECT_TIMEOUT` seconds.
Collection is never fatal: what fails is noted in the README and the debug log.

The marks: while the control file runs, the first command of each SSH host of one of the
job's machines runs :func:`mark_command` first, in its own session (the job context's
``first_command`` hook, :func:`marking`: no extra round trip or session), its output framed
by a random line; when that command ends, :func:`parse_marks` of it goes to
``<results>/.logmarks/<host>`` (:func:`mark_path`; the first mark of a host in the job
wins), failures only logged.  :func:`mark_logs` takes them with a command of their own.
``$AUTOSERV_CRASHINFO_SYSLOG`` (paths on the hosts, ``:``-separated) replaces the two
system log files, for tests and for labs that log elsewhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoserv import hooks as hooks_mod
from autoserv import jobmark
from autoserv.deadline import Deadline
from autoserv.errors import AutoservError
from autoserv.status import write_all

__all__ = ["COMMAND_TIMEOUT", "MAX_BYTES", "MACHINE_BUDGET", "LogMarks", "collect",
           "collect_segment", "commands", "mark_command", "parse_marks", "mark_path", "mark_logs",
           "save_marks", "read_marks", "marking", "syslog_files"]

log = logging.getLogger("autoserv.crashinfo")

COMMAND_TIMEOUT = 30.0
MAX_BYTES = 1_000_000
MACHINE_BUDGET = 120.0
CONNECT_TIMEOUT = 10.0
#: Client results larger than this (KiB) are not copied.
MAX_CLIENT_RESULTS_KB = 50_000
AUTODIRS = ("/usr/local/autotest", "/home/autotest")
#: The system log files read on hosts without a journal (or besides it).
SYSLOG_FILES = ("/var/log/messages", "/var/log/syslog")
#: Replaces :data:`SYSLOG_FILES` (``:``-separated paths on the hosts).
SYSLOG_ENV = "AUTOSERV_CRASHINFO_SYSLOG"
#: Where the job keeps each host's log marks, in its results directory.
MARKS_DIR = ".logmarks"
#: At most this long (seconds) for taking one host's marks.
MARK_TIMEOUT = 10.0
#: Lines of a system log file collected when the job took no mark of it.
TAIL_LINES = 2000


def _bounded(command: str) -> str:
    return f"{{ {command} ; }} 2>&1 | tail -c {MAX_BYTES}"


@dataclass
class LogMarks:
    """Where a host's system logs stood when the job started using it."""

    since: int | None = None  # the host's clock (epoch seconds) then, if it keeps a journal
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (inode, size)


def syslog_files() -> tuple[str, ...]:
    """The system log files to read on the hosts (``$AUTOSERV_CRASHINFO_SYSLOG`` or the two)."""
    value = os.environ.get(SYSLOG_ENV, "")
    paths = tuple(p for p in value.split(":") if p)
    return paths or SYSLOG_FILES


def mark_command(files: Sequence[str]) -> str:
    """Shell printing the log positions now: ``since <epoch seconds>`` (the host's clock, if
    it keeps a journal), ``file <inode> <size> <path>`` per readable file (pure).

    The journal's position is the host's time, not its cursor: ``journalctl`` costs the host
    ~11 ms of CPU per run against ~1.5 ms for ``date`` (measured on the test bed), paid on
    every host of every job; the time may take in a few entries of the second before.  A
    bash login shell (5.0+) tells the time itself (``$EPOCHSECONDS``), without ``date``.
    """
    quoted = " ".join(shlex.quote(f) for f in files)
    return (  # journald keeps its files in one of the two directories
        "if [ -d /run/log/journal ] || [ -d /var/log/journal ]; then "
        "printf 'since %s\\n' \"${EPOCHSECONDS:-$(date +%s)}\"; fi; "
        f"for f in {quoted}; do [ -f \"$f\" ] && [ -r \"$f\" ] && "
        "printf 'file %s %s\\n' \"$(stat -L -c '%i %s' -- \"$f\")\" \"$f\"; done; true"
    )


def parse_marks(output: str) -> LogMarks:
    """The :class:`LogMarks` in :func:`mark_command`'s output (lines it does not know: ignored)."""
    marks = LogMarks()
    for line in output.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "since" and rest.strip().isdigit():
            marks.since = int(rest.strip())
        elif kind == "file":
            inode, _, rest = rest.partition(" ")
            size, _, path = rest.partition(" ")
            if inode.isdigit() and size.isdigit() and path:
                marks.files[path] = (int(inode), int(size))
    return marks


def _file_command(path: str, mark: tuple[int, int] | None) -> str:
    f = shlex.quote(path)
    if mark is None:
        return (f"[ -r {f} ] && {{ echo {shlex.quote(f'== {path} (its last {TAIL_LINES} lines)')}; "
                f"tail -n {TAIL_LINES} -- {f}; }}")
    inode, size = mark
    since = shlex.quote(f"== {path} since the job started (from byte {size})")
    cut = shlex.quote(f"== {path} since the job started: more than {MAX_BYTES} bytes, the last of them")
    replaced = shlex.quote(f"== {path} was replaced since the job started (rotated?): its end")
    # tail -c N of a file seeks to its end: bounded in time however much was logged
    return (f"[ -r {f} ] && {{ set -- $(stat -L -c '%i %s' -- {f}); "
            f"if [ \"$1\" != {inode} ] || [ \"$2\" -lt {size} ]; then echo {replaced}; "
            f"tail -c {MAX_BYTES} -- {f}; elif [ $(($2 - {size})) -gt {MAX_BYTES} ]; then echo {cut}; "
            f"tail -c {MAX_BYTES} -- {f}; else echo {since}; tail -c +{size + 1} -- {f}; fi; }}")


def commands(since_host: int | None, mark: str | None, marks: LogMarks | None = None,
             files: Sequence[str] = SYSLOG_FILES) -> dict[str, str]:
    """The file name → remote command of each piece collected (pure).

    ``marks``: the host's log positions at the job's start (else the time and a tail)."""
    marks = marks or LogMarks()
    cmds = {
        "dmesg": _bounded("dmesg 2>/dev/null || journalctl -k -b --no-pager"),
        "messages": _bounded("; ".join(_file_command(p, marks.files.get(p)) for p in files)
                             + "; true"),
        "uptime": "uptime",
        "df": "df -P",
    }
    if marks.since is not None:
        cmds["journal"] = _bounded(f"journalctl --no-pager --since=@{marks.since}")
    elif since_host is not None:
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


def mark_path(directory: str, host: Any) -> str:
    """The file of ``host``'s marks in the marks ``directory`` (pure)."""
    raw = f"{host.hostname}:{getattr(host, 'port', '')}"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", raw)[:80]
    return os.path.join(directory, f"{safe}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}")


def mark_logs(host: Any, directory: str) -> LogMarks | None:
    """Take ``host``'s log marks into ``directory`` unless the job has them already; never
    raises an :class:`Exception` (a failure is logged: collection then uses the time)."""
    path = mark_path(directory, host)
    if os.path.exists(path):
        return None
    try:
        output = host.run(mark_command(syslog_files()), timeout=MARK_TIMEOUT, ignore_status=True,
                          verbose=False, stdout_tee=None, stderr_tee=None).stdout
        return save_marks(host, directory, parse_marks(output))
    except Exception as exc:
        log.warning("%s: could not mark the system logs' positions (crash collection will use "
                    "the time): %s", host.hostname, _first_line(exc))
        return None


def save_marks(host: Any, directory: str, marks: LogMarks) -> LogMarks | None:
    """Keep ``marks`` as ``host``'s in ``directory`` unless it has some already (the first
    mark in the job wins; None then); never raises an :class:`OSError` (logged)."""
    data = json.dumps({"since": marks.since, "files": marks.files}).encode("utf-8")
    path = mark_path(directory, host)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        try:  # (plain descriptors: a file object costs 5 system calls more, per machine)
            fd = os.open(path, flags, 0o666)
        except FileNotFoundError:  # the job's first marks
            os.makedirs(directory, exist_ok=True)
            fd = os.open(path, flags, 0o666)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
    except FileExistsError:
        return None
    except OSError as exc:
        log.warning("%s: could not keep the system logs' marks: %s", host.hostname, exc)
        return None
    log.debug("%s: log marks for crash collection: %s", host.hostname, marks)
    return marks


def read_marks(directory: str, host: Any) -> LogMarks | None:
    """The marks :func:`mark_logs` took of ``host`` (None: none, or unreadable)."""
    try:
        with open(mark_path(directory, host), encoding="utf-8") as f:
            data = json.load(f)
        files = {str(p): (int(v[0]), int(v[1])) for p, v in dict(data.get("files") or {}).items()}
        since = data.get("since")
        return LogMarks(int(since) if since is not None else None, files)
    except (OSError, ValueError, TypeError, AttributeError, IndexError):
        return None


def framed(head: bytes, frame: str) -> tuple[str | None, bytes]:
    """Split what a command printed before its own output into the text between two
    ``frame`` lines and the rest, the login shell's own (pure).  Without both frame lines:
    ``(None, head)``."""
    line = frame.encode() + b"\n"
    before, found, rest = head.partition(line)
    text, ended, after = rest.partition(line)
    if not (found and ended):
        return None, head
    return text.decode(errors="replace"), before + after


@contextlib.contextmanager
def marking(resultdir: str, machines: Sequence[Any]) -> Iterator[None]:
    """While the block runs, the hosts of ``machines`` (parsed machines: their ``host``) take
    their log marks into ``<resultdir>/.logmarks`` before their first command."""
    from autoserv.hosts import context

    directory = os.path.join(resultdir, MARKS_DIR)
    names = {getattr(m, "host", m) for m in machines}

    def first_command(host: Any) -> tuple[str, Callable[[bytes], bytes]] | None:
        if host.hostname not in names or os.path.exists(mark_path(directory, host)):
            return None
        frame = f"AUTOSERV-LOGMARKS-{secrets.token_hex(8)}"

        def taken(head: bytes) -> bytes:
            text, shell = framed(head, frame)
            if text is not None:
                save_marks(host, directory, parse_marks(text))
            else:
                log.warning("%s: could not mark the system logs' positions (crash collection "
                            "will use the time): no marks in the first command's output",
                            host.hostname)
            return shell

        return f"echo {frame}; {mark_command(syslog_files())}; echo {frame}", taken

    previous = context.current()
    context.update(first_command=first_command)
    try:
        yield
    finally:
        context.update(first_command=previous.first_command)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


README = """\
Crash information collected by autoserv from {machine}: {why}.

{listing}
Bounds: each command at most {timeout:g} s and {max_bytes} bytes of output (the end is kept),
at most {budget:g} s for this machine.
'journal' starts {journal_from}.
'messages' holds {messages_from}.
{notes}"""


def collect(host: Any, dest: str, started: float | None, why: str = "the job failed",
            hooks: hooks_mod.Hooks | None = None, marks: LogMarks | None = None) -> list[str]:
    """Collect ``host``'s crash information into ``dest``; the files written.  Never raises
    :class:`AutoservError` or a hook's exception (they are noted in ``dest/README``).

    ``marks``: where the host's logs stood when the job started using it (else the
    journal starts at ``started`` and the log files are a bounded tail)."""
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
        for name, command in commands(since_host, mark, marks, syslog_files()).items():
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
            max_bytes=MAX_BYTES, budget=MACHINE_BUDGET,
            journal_from=(f"since the host's time marked when the job started using it "
                          f"(@{marks.since})" if marks and marks.since is not None else
                          f"at the job's start ({since_text}, on the host's clock)"),
            messages_from=_messages_from(marks),
            notes="".join(f"Note: {n}\n" for n in notes)))
    return written


def _messages_from(marks: LogMarks | None) -> str:
    files = " or ".join(syslog_files())
    if marks and marks.files:
        marked = ", ".join(f"{p} from byte {size}" for p, (_, size) in sorted(marks.files.items()))
        return (f"what was logged to {files} since the job started using the host ({marked}, "
                f"the end if more; a file without a mark: its last {TAIL_LINES} lines)")
    return f"the last {TAIL_LINES} lines of {files} (no position was marked at the job's start)"


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
            written = collect(host, dest, started, why,
                              marks=read_marks(os.path.join(top, MARKS_DIR), host))
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
