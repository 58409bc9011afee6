"""One detached client run on a host: launch, follow its status live, reboot, kill, collect.

The client (``python3 -m autotest.client.runner``) runs in its own session and process
group, started with ``setsid``; its output goes to files on the host::

    <autodir>/results/<name>/        the client's results dir (status.log, debug/client.log,
                                     <test>[.<tag>]/ ...)
    <autodir>/run/<name>/pgid        the process group id of the client
    <autodir>/run/<name>/output      its stdout and stderr
    <autodir>/run/<name>/exit_code   written when it ends

The server follows ``status.log`` and ``debug/client.log`` from byte offsets with a small
follower on the host (:data:`FOLLOWER`, a ``python3 -c`` script) that streams every new
complete line, prefixed with its stream and the offset after it, and reports the end
(``X <exit code>``) or the death of the client (``D``).  A dropped connection only ends
the follower: the server records ``WARN`` "client disconnected", waits for the host and
starts a new follower from the saved offsets.

Each client status entry is re-recorded in the job's status.log at once, nested under
the server's open groups (the job's writer re-indents it); the client's log goes to
``<results_dir>/debug/client.N.log``.  After each top-level test, and at the end, the
client's results are copied to ``<results_dir>`` (``<test>[.<tag>]/`` and the rest, but
never over the server's own ``status.log``, ``keyval`` or ``debug/``).

A timeout, SIGINT/SIGTERM or any error while following kills the client on the host
(:data:`KILLER`: its process group and every descendant, tests in sessions of their own
included), records ``END ABORT`` with the reason for each client group still
open, collects what was produced and re-raises.  ``GOOD reboot.start`` followed by the
client's exit makes the server wait for the host to go down (by boot id) and come back,
record ``GOOD reboot.verify`` / ``END GOOD reboot`` and run the client again with
``--continue``.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoserv import abort, status
from autoserv.deadline import Deadline
from autoserv.errors import (
    AutoservError,
    AutoservRunError,
    AutotestRunError,
    AutotestTimeoutError,
)

__all__ = [
    "AutotestRunError",
    "AutotestTimeoutError",
    "RemoteLayout",
    "ClientRun",
    "launch_command",
    "follower_command",
    "kill_command",
    "parse_launch",
    "is_finished",
    "is_rebooting",
    "RESERVED_NAMES",
    "FOLLOWER",
    "KILLER",
]

log = logging.getLogger("autoserv.autotest")

#: Names in the client's results dir never copied over the server's own files.
RESERVED_NAMES = frozenset({"status.log", "keyval", "debug", "control.state", "control",
                            "control.srv"})
#: Exit status of a client that started a reboot.
EXIT_REBOOT = 3
DEFAULT_DISCONNECT_TIMEOUT = 1800.0
REBOOT_DOWN_TIMEOUT = 840.0
REBOOT_UP_TIMEOUT = 1800.0
#: Give up after this many dropped connections in a row with no new client output.
MAX_IDLE_DROPS = 5

_FINISHED = re.compile(r"^END .*\t----\t----\t.*$")
_REBOOTING = re.compile(r"^\t*GOOD\t----\treboot\.start")


def is_finished(line: str) -> bool:
    """The client's last status line says its job is over (``END ... ---- ----`` at depth 0)."""
    return bool(_FINISHED.match(line))


def is_rebooting(line: str) -> bool:
    """The client's last status line says it is rebooting the host."""
    return bool(_REBOOTING.match(line))


@dataclass(frozen=True)
class RemoteLayout:
    """Paths of one client run on the host (``name``: the results tag or ``default``)."""

    autodir: str
    name: str = "default"

    @property
    def results(self) -> str:
        return f"{self.autodir}/results/{self.name}"

    @property
    def run(self) -> str:
        return f"{self.autodir}/run/{self.name}"

    @property
    def control(self) -> str:
        return f"{self.autodir}/control.{self.name}.autoserv"


def launch_command(
    layout: RemoteLayout,
    tests_dirs: Sequence[str] = (),
    args: Sequence[str] = (),
    tag: str | None = None,
    resume: bool = False,
    control_on_stdin: bool = True,
) -> str:
    """Shell that starts the client detached and prints ``PGID <n>`` and ``BOOT <id>``.

    Unless ``resume``, the old results and monitor files are removed first and the
    control file is read from stdin (``control_on_stdin``).  With ``resume`` the client
    gets ``--continue`` and reuses both.
    """
    q = shlex.quote
    run, res = layout.run, layout.results
    steps = [f"cd -- {q(layout.autodir)}"]
    if not resume:
        steps.append(f"rm -rf -- {q(res)} {q(run)}")
    steps.append(f"mkdir -p -- {q(run)} {q(posixpath.dirname(res))}")
    steps.append(f"rm -f -- {q(run + '/exit_code')} {q(run + '/pgid')}")
    if control_on_stdin and not resume:
        steps.append(f"cat > {q(layout.control)}")
    argv = ["python3", "-m", "autotest.client.runner", layout.control, "--results", res]
    for d in tests_dirs:
        argv += ["--tests", d]
    if resume:
        argv.append("--continue")
    if tag:
        argv += ["--tag", tag]
    if args:
        argv += ["--args", *args]
    # $1 is the monitor dir; the rest is the client's argv.  sh is the session leader:
    # its pid is the process group of the client and everything it starts.
    inner = ('r=$1; shift; echo $$ > "$r/pgid.new" && mv "$r/pgid.new" "$r/pgid"; "$@"; '
             'echo $? > "$r/exit_code.new"; mv "$r/exit_code.new" "$r/exit_code"')
    start = (f"PYTHONPATH={q(layout.autodir)} setsid sh -c {q(inner)} sh {q(run)} "
             + " ".join(q(a) for a in argv)
             + f" </dev/null >{q(run + '/output')} 2>&1 &")
    wait = (f"i=0; while [ ! -s {q(run + '/pgid')} ] && [ $i -lt 200 ]; do sleep 0.05; "
            f"i=$((i+1)); done; echo \"PGID $(cat {q(run + '/pgid')} 2>/dev/null)\"; "
            "echo \"BOOT $(cat /proc/sys/kernel/random/boot_id 2>/dev/null)\"")
    return " && ".join(steps) + " && { " + start + " } && " + wait


def parse_launch(hostname: str, output: str) -> tuple[int, str]:
    """``(pgid, boot id)`` from the output of :func:`launch_command`."""
    pgid, boot = None, ""
    for line in output.splitlines():
        if line.startswith("PGID "):
            text = line[5:].strip()
            pgid = int(text) if text.isdigit() else None
        elif line.startswith("BOOT "):
            boot = line[5:].strip()
    if pgid is None:
        raise AutotestRunError(f"{hostname}: the client did not start (no process group id)")
    return pgid, boot


# The follower: argv = run dir, results dir, boot id at launch, status offset, log offset,
# mode ("follow" or "once").  Prints "S <offset> <line>", "L <offset> <line>", then
# "X <exit code>" (the client ended), "D" (it died without an exit code, or the host
# rebooted since the launch) or, in once mode, "R" (still running).
FOLLOWER = r"""
import os, sys, time
run, res, boot, so, lo, mode = sys.argv[1:7]
streams = [["S", os.path.join(res, "status.log"), int(so)],
           ["L", os.path.join(res, "debug", "client.log"), int(lo)]]
out = sys.stdout
def pump():
    got = False
    for s in streams:
        try:
            with open(s[1], "rb") as f:
                f.seek(s[2])
                data = f.read(1 << 20)
        except OSError:
            continue
        end = data.rfind(b"\n")
        if end < 0:
            continue
        for line in data[:end].split(b"\n"):
            s[2] += len(line) + 1
            out.write("%s %d %s\n" % (s[0], s[2], line.decode("utf-8", "replace")))
        got = True
    out.flush()
    return got
def code():
    try:
        with open(os.path.join(run, "exit_code")) as f:
            return f.read().strip() or None
    except OSError:
        return None
def alive():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            if boot and f.read().strip() != boot:
                return False
        with open(os.path.join(run, "pgid")) as f:
            pgid = int(f.read())
        with open("/proc/%d/stat" % pgid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, ValueError, IndexError):
        return False
idle = 0.0
while True:
    got = pump()
    c = code()
    if c is not None:
        while pump():
            pass
        out.write("X %s\n" % c)
        break
    if not alive():
        while pump():
            pass
        c = code()
        out.write(("X %s\n" % c) if c is not None else "D\n")
        break
    if mode == "once":
        while pump():
            pass
        out.write("R\n")
        break
    idle = 0.0 if got else min(idle + 0.01, 0.05)
    time.sleep(0.05 + idle)
out.flush()
"""


def follower_command(layout: RemoteLayout, boot_id: str, offsets: tuple[int, int],
                     once: bool = False) -> str:
    """Shell that runs :data:`FOLLOWER` on the host from the given byte offsets."""
    argv = ["python3", "-c", FOLLOWER, layout.run, layout.results, boot_id,
            str(int(offsets[0])), str(int(offsets[1])), "once" if once else "follow"]
    return " ".join(shlex.quote(a) for a in argv)


# The killer: argv = the client's process group id, grace seconds.  The runner puts every
# test in a session of its own and kills them on SIGTERM; so: SIGTERM to the group, wait
# for the group and every descendant of it (found through /proc) to end, SIGKILL whatever
# is left after the grace (a runner stuck or killed before its cleanup leaves no test).
KILLER = r"""
import os, signal, sys, time
pg, grace = int(sys.argv[1]), float(sys.argv[2])
def procs():
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    f = f.read().rsplit(")", 1)[1].split()
                if f[0] != "Z":
                    out[int(d)] = (int(f[1]), int(f[2]))
            except (OSError, IndexError, ValueError):
                pass
    return out
def tree():
    ps = procs()
    mine = {p for p, (pp, g) in ps.items() if g == pg}
    grew = True
    while grew:
        more = {p for p, (pp, g) in ps.items() if pp in mine and p not in mine}
        mine |= more
        grew = bool(more)
    return mine
seen = tree()
try:
    os.killpg(pg, signal.SIGTERM)
except OSError:
    pass
end = time.time() + grace
while time.time() < end:
    seen |= tree()
    alive = procs()
    if not any(p in alive for p in seen):
        break
    time.sleep(0.05)
left = (seen | tree()) & set(procs())
for p in left:
    try:
        os.kill(p, signal.SIGKILL)
    except OSError:
        pass
print("KILLED %d" % len(left))
"""


def kill_command(pgid: int, grace: float = 5.0) -> str:
    """Shell that ends the client: its process group and every descendant (TERM, then KILL)."""
    return " ".join(shlex.quote(a) for a in ("python3", "-c", KILLER, str(int(pgid)),
                                                 str(float(grace))))


@dataclass
class _Outcome:
    """How one follower ended."""

    exit_code: int | None = None  # the client's exit status, if it ended
    died: bool = False  # ended without an exit status (killed, host rebooted)
    running: bool = False  # once mode: still running


@dataclass
class ClientRun:
    """One client run on ``host``; :meth:`run` drives it to the end.

    ``record`` writes a parsed client entry to the job's status.log (None: only log it).
    """

    host: Any
    layout: RemoteLayout
    results_dir: str
    control_text: str
    tests_dirs: Sequence[str] = ()
    args: Sequence[str] = ()
    tag: str | None = None
    timeout: float | None = None
    disconnect_timeout: float | None = None
    record: Callable[[status.StatusEntry], None] | None = None
    offsets: list[int] = field(default_factory=lambda: [0, 0])
    pgid: int | None = None
    boot_id: str = ""
    last_line: str = ""
    failures: int = 0
    _open: list[tuple[str | None, str | None]] = field(default_factory=list)
    _last_entry: status.StatusEntry | None = None
    _pending: status.StatusEntry | None = None
    _pending_raw: str = ""
    _buffer: str = ""
    _log: Any = None
    _log_path: str = ""
    _outcome: _Outcome = field(default_factory=_Outcome)
    _collected: set[str] = field(default_factory=set)
    _deadline: Deadline = field(default_factory=lambda: Deadline(None))

    # -- recording -------------------------------------------------------------------
    def _rec(self, code: str, operation: str | None, message: str = "",
             fields: dict[str, str] | None = None, subdir: str | None = None) -> None:
        entry = status.StatusEntry(code, subdir, operation, message, dict(fields or {}))
        self._emit(entry, "")

    def _emit(self, entry: status.StatusEntry, raw: str) -> None:
        if status.is_failure(entry.status_code):
            self.failures += 1
        if entry.is_start:
            self._open.append((entry.subdir, entry.operation))
        elif entry.is_end and self._open:
            self._open.pop()
        self._last_entry = entry
        if self.record is not None:
            try:
                self.record(entry)
            except ValueError as exc:  # e.g. an END without its START: keep the job going
                log.warning("%s: bad client status entry %r: %s", self.host.hostname,
                            raw or entry.render(), exc)
        else:
            log.info("%s: %s", self.host.hostname, raw or entry.render())

    def _flush_pending(self) -> None:
        entry, raw = self._pending, self._pending_raw
        self._pending, self._pending_raw = None, ""
        if entry is None:
            return
        top_level_end = entry.is_end and len(self._open) == 2 and entry.subdir
        self._emit(entry, raw)
        if top_level_end and entry.subdir:
            self._collect([entry.subdir])

    def _status_line(self, line: str) -> None:
        entry = status.parse_line(line)
        if entry is None:
            stripped = line.lstrip("\t")
            if stripped.startswith(status.CONTINUATION) and self._pending is not None:
                self._pending.message += "\n" + stripped[len(status.CONTINUATION):]
                self._pending_raw += "\n" + line
            elif line.strip():
                self._log_line(f"[status.log] {line}")
            return
        self._flush_pending()
        self._pending, self._pending_raw = entry, line
        self.last_line = line

    def _log_line(self, line: str) -> None:
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()
        log.debug("[%s client] %s", self.host.hostname, line)

    # -- the follower's stream (a tee for host.run) ---------------------------------------
    def write(self, text: str) -> None:
        """Receives the follower's output as it arrives (host.run's ``stdout_tee``)."""
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._follower_line(line)
        if not self._buffer:
            self._flush_pending()

    def flush(self) -> None:
        pass

    def _follower_line(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind in ("S", "L"):
            off, _, text = rest.partition(" ")
            if not off.isdigit():
                return
            if kind == "S":
                self._status_line(text)
                self.offsets[0] = int(off)
            else:
                self._log_line(text)
                self.offsets[1] = int(off)
        elif kind == "X":
            self._outcome.exit_code = int(rest) if rest.strip().lstrip("-").isdigit() else -1
        elif kind == "D":
            self._outcome.died = True
        elif kind == "R":
            self._outcome.running = True

    # -- remote steps --------------------------------------------------------------------
    def _launch(self, resume: bool) -> None:
        cmd = launch_command(self.layout, self.tests_dirs, self.args, self.tag, resume)
        res = self.host.run(cmd, stdin=None if resume else self.control_text, timeout=120,
                            verbose=False, stdout_tee=None)
        self.pgid, self.boot_id = parse_launch(self.host.hostname, res.stdout)
        log.debug("%s: client started, process group %d", self.host.hostname, self.pgid)

    def _follow(self, once: bool, timeout: float | None) -> _Outcome:
        self._outcome = _Outcome()
        cmd = follower_command(self.layout, self.boot_id, (self.offsets[0], self.offsets[1]),
                               once=once)
        self.host.run(cmd, timeout=timeout, verbose=False, stdout_tee=self, stderr_tee=None,
                      ignore_status=True)
        if self._buffer:
            self._buffer += "\n"
            self.write("")
        self._flush_pending()
        return self._outcome

    def kill(self) -> None:
        """End the client's process group on the host; never raises."""
        if self.pgid is None:
            return
        try:
            self.host.run(kill_command(self.pgid), timeout=30, connect_timeout=15,
                          ignore_status=True, verbose=False, stdout_tee=None, stderr_tee=None)
            log.info("%s: killed the client (process group %d)", self.host.hostname, self.pgid)
        except Exception as exc:
            log.warning("%s: could not kill the client (process group %d): %s",
                        self.host.hostname, self.pgid, exc)

    def _collect(self, names: Sequence[str] | None = None) -> None:
        """Copy the client's results (``names``, or everything) into ``results_dir``."""
        try:
            res = self.host.run(
                "find " + shlex.quote(self.layout.results) +
                " -mindepth 1 -maxdepth 1 -printf '%f\\0' 2>/dev/null || true",
                timeout=60, verbose=False, stdout_tee=None, stderr_tee=None)
            present = [n for n in res.stdout.split("\0") if n]
            if names is None:  # the end: what was not collected after its test
                wanted = [n for n in present if n not in self._collected]
            else:
                wanted = [n for n in names if n in present]
            names = [n for n in wanted if n not in RESERVED_NAMES and "/" not in n]
            if not names:
                return
            os.makedirs(self.results_dir, exist_ok=True)
            sources = [f"{self.layout.results}/{n}" for n in names]
            self.host.get_file(sources, self.results_dir + "/", preserve_symlinks=True)
            self._collected.update(names)
        except Exception as exc:
            log.warning("%s: collecting client results failed: %s", self.host.hostname,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def _end_client_groups(self, message: str) -> None:
        if not self._open:
            self._rec("ABORT", None, message)
        while self._open:
            subdir, operation = self._open[-1]
            self._rec("END ABORT", operation, message, subdir=subdir)

    @property
    def finished(self) -> bool:
        """The client's outermost group has ended (its job ran to the end)."""
        last = self._last_entry
        return (last is not None and last.is_end and not self._open) or (
            is_finished(self.last_line))

    def _open_log(self) -> None:
        debug = os.path.join(self.results_dir, "debug")
        os.makedirs(debug, exist_ok=True)
        n = 0
        while os.path.exists(os.path.join(debug, f"client.{n}.log")):
            n += 1
        self._log_path = os.path.join(debug, f"client.{n}.log")
        self._log = open(self._log_path, "a", encoding="utf-8")

    def _output_tail(self) -> str:
        try:
            res = self.host.run("tail -c 2000 " + shlex.quote(self.layout.run + "/output"),
                                timeout=30, ignore_status=True, verbose=False,
                                stdout_tee=None, stderr_tee=None)
            return res.stdout.strip()
        except Exception:
            return ""

    # -- the whole run -----------------------------------------------------------------
    def run(self) -> bool:
        """Launch, follow to the end (through reboots), collect; True if nothing failed."""
        self.start()
        return self.wait()

    def start(self) -> None:
        """Launch the client on the host (detached); the timeout starts now."""
        self._deadline = Deadline(self.timeout)
        self._open_log()
        try:
            self._launch(resume=False)
        except BaseException as exc:
            self._abandon(exc)
            raise

    def wait(self) -> bool:
        """Follow the started client to its end; True if it recorded no failure."""
        try:
            self._drive(self._deadline)
        except BaseException as exc:
            self._abandon(exc)
            if isinstance(exc, AutoservRunError) and exc.result_obj is not None and \
                    exc.result_obj.timed_out:
                raise AutotestTimeoutError(
                    f"{self.host.hostname}: client timed out after {self.timeout} s"
                ) from None
            raise
        try:
            self._collect()
        finally:
            self._close_log()
        return self.failures == 0

    def _abandon(self, exc: BaseException) -> None:
        """After ``exc``: kill the client, record END ABORT for its groups, collect."""
        reason = _abort_reason(exc, self.timeout).removeprefix(f"{self.host.hostname}: ")
        try:
            with abort.deferred():
                # read what it wrote so far, then kill it: what a killed client writes on
                # its way out (its own END ABORT "killed by SIGTERM") is not the reason
                if self.pgid is not None:
                    self._catch_up()
                self.kill()
                if not self.finished:
                    self._end_client_groups(reason)
                self._collect()
        finally:
            self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _catch_up(self) -> None:
        """Read what the client wrote since the last offsets (once, never raises)."""
        try:
            self._follow(once=True, timeout=30)
        except Exception as exc:
            log.debug("%s: could not read the client's last status: %s",
                      self.host.hostname, exc)

    def _drive(self, deadline: Deadline) -> None:
        disconnect_timeout = (self.disconnect_timeout if self.disconnect_timeout is not None
                              else DEFAULT_DISCONNECT_TIMEOUT)
        drops = 0
        while True:
            before = tuple(self.offsets)
            try:
                outcome = self._follow(once=False, timeout=_remaining(deadline))
            except AutoservRunError as exc:
                if exc.result_obj is not None and exc.result_obj.timed_out:
                    raise
                outcome = None
                lost = str(exc).splitlines()[0] if str(exc) else "connection lost"
            except AutoservError as exc:
                outcome = None
                lost = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if outcome is None:
                if is_rebooting(self.last_line):
                    self._reboot(deadline)
                    continue
                drops = drops + 1 if tuple(self.offsets) == before else 1
                if drops > MAX_IDLE_DROPS:
                    raise AutotestRunError(
                        f"{self.host.hostname}: lost the client {drops} times in a row "
                        f"without progress (last: {lost})")
                self._rec("WARN", None, f"client disconnected: {lost}")
                log.warning("%s: client disconnected (%s); waiting up to %g s",
                            self.host.hostname, lost, disconnect_timeout)
                wait = min(disconnect_timeout, _remaining(deadline) or disconnect_timeout)
                if not self.host.wait_up(timeout=wait):
                    raise AutotestRunError(
                        f"{self.host.hostname}: client disconnected and the host did not "
                        f"come back within {disconnect_timeout:g} s")
                log.info("%s: reconnected; following the client again", self.host.hostname)
                continue
            if is_rebooting(self.last_line) and (outcome.exit_code == EXIT_REBOOT
                                                 or outcome.died):
                self._reboot(deadline)
                continue
            if outcome.exit_code is not None and self.finished:
                if outcome.exit_code == 0:
                    return
                self._collect()
                raise AutotestRunError(
                    f"{self.host.hostname}: the client control file failed (exit status "
                    f"{outcome.exit_code}; see its status in status.log)")
            tail = self._output_tail()
            what = (f"exit status {outcome.exit_code}" if outcome.exit_code is not None
                    else "no exit status")
            self._log_line(f"[client output] {tail}" if tail else "[client output] (none)")
            self.pgid = None  # nothing left to kill
            raise AutotestRunError(f"{self.host.hostname}: client terminated unexpectedly "
                                   f"({what}){': ' + tail.splitlines()[-1] if tail else ''}")

    def _reboot(self, deadline: Deadline) -> None:
        """The client started a reboot: wait down and up, record it, continue the client."""
        host = self.host
        old = self.boot_id or None
        log.info("%s: the client is rebooting the host", host.hostname)
        disconnect = getattr(host, "disconnect", None)
        if disconnect is not None:
            disconnect()
        if not host.wait_down(timeout=_cap(deadline, REBOOT_DOWN_TIMEOUT), old_boot_id=old):
            raise AutotestRunError(f"{host.hostname} did not go down for the client's reboot")
        if not host.wait_up(timeout=_cap(deadline, REBOOT_UP_TIMEOUT)):
            raise AutotestRunError(f"{host.hostname} did not come back after the client's "
                                   "reboot")
        self._rec("GOOD", "reboot.verify")
        kernel = ""
        try:
            kernel = host.get_kernel_ver()
        except Exception:
            pass
        self._rec("END GOOD", "reboot", "", {"kernel": kernel} if kernel else None)
        self.last_line = ""
        self._launch(resume=True)


def _remaining(deadline: Deadline) -> float | None:
    if deadline.end is None:
        return None
    left = deadline.remaining()
    if left <= 0:
        return 0.001
    return left


def _cap(deadline: Deadline, seconds: float) -> float:
    left = _remaining(deadline)
    return seconds if left is None else min(seconds, left)


def _abort_reason(exc: BaseException, timeout: float | None) -> str:
    if isinstance(exc, abort.JobAbort):
        return f"aborted: {exc.reason}"
    if isinstance(exc, KeyboardInterrupt):
        return "aborted: interrupted"
    if isinstance(exc, AutoservRunError) and exc.result_obj is not None and \
            exc.result_obj.timed_out:
        return f"client timed out after {timeout:g} s" if timeout else "client timed out"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text
