"""What a killed job leaves behind, and ending it.

* :func:`die_with_parent`: a forked parallel worker asks the kernel for SIGTERM when its
  parent dies (``prctl(PR_SET_PDEATHSIG)``), so a SIGKILLed autoserv takes its workers with
  it, and each runs its own abort path (remote command killed, hosts closed, ``END ABORT``).
* ``autoserv cleanup RESULTS`` (:func:`main`): reads the job's journal
  (:mod:`autoserv.journal`) and, for every host, kills what is still running of the job's
  remote commands (the process groups whose ``SSH_CONNECTION`` is the job's connection),
  removes the job's remote temp dirs and ends the job's qemu guests still running (qemu
  killed, tap, files and address lease freed: :func:`autoserv.virt.leases.reap_lease`, only
  while the lease still names the job's process), one line per item; each item done is
  journaled, so a second cleanup has nothing left to do.  Passwords are never in the journal: they come from
  ``--ssh-pass`` or ``AUTOSERV_SSH_PASS`` again.
"""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import signal
import sys
from collections.abc import Sequence
from typing import Any

from autoserv import jobmark, journal
from autoserv.cleanup import env_kill_script
from autoserv.cmdline import UsageParser
from autoserv.errors import AutoservError, AutoservUsageError

__all__ = ["die_with_parent", "kill_connection_command", "remove_dir_command", "main",
           "TMPDIR_RE"]

_PR_SET_PDEATHSIG = 1
#: The temp dirs ``get_tmp_dir`` makes (``mktemp -d <parent>/autoserv-XXXXXX``); cleanup
#: removes nothing else, whatever a journal says.
TMPDIR_RE = re.compile(r"/(?:[^/\0\n]+/)*" + jobmark.TMPDIR_NAME)
_CONNECTION_RE = re.compile(r"[0-9A-Fa-f.:%\w-]+ \d+ [0-9A-Fa-f.:%\w-]+ \d+")


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Call first thing in a forked child: get ``signum`` when the parent dies.

    If the parent died before the request took effect, the signal is sent at once.  Linux
    only; elsewhere this does nothing.  The kernel ties the signal to the *thread* that
    forked: fork workers from the main thread.
    """
    parent_pid = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)


def kill_connection_command(connection: str, grace: float = 2.0) -> str:
    """Shell that ends every process group a process of SSH connection ``connection`` is in.

    ``connection`` is the server's ``SSH_CONNECTION`` value of the job's connection; the
    script prints ``killed N`` (see :func:`autoserv.cleanup.env_kill_script`).  Pure.
    """
    if not _CONNECTION_RE.fullmatch(connection):
        raise ValueError(f"not an SSH connection: {connection!r}")
    return env_kill_script(f"SSH_CONNECTION={connection}", grace, groups=True)


def remove_dir_command(path: str) -> str:
    """Shell that removes temp dir ``path`` and prints ``removed`` or ``gone``.  Pure."""
    if not TMPDIR_RE.fullmatch(path):
        raise ValueError(f"not an autoserv temp dir: {path!r}")
    q = shlex.quote(path)
    return f"if [ -e {q} ]; then rm -rf -- {q} && echo removed; else echo gone; fi"


class _Host:
    """The items of one host in the journal."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.connections: dict[str, list[str]] = {}  # connection -> command ids
        self.tmpdirs: dict[str, str] = {}  # id -> path
        self.guests: dict[str, dict[str, Any]] = {}  # id -> guest entry


def _connect(fields: dict[str, Any], password: str | None) -> Any:
    from autoserv import hosts

    keys = fields.get("key_files") or []
    return hosts.SSHHost(
        fields["alias"], user=fields.get("user"), port=fields.get("port"),
        password=password if fields.get("password") else None,
        key_file=keys[0] if keys else None, ssh_config=fields.get("ssh_config"),
        known_hosts=fields.get("known_hosts"), host_key_policy=fields.get("host_key_policy"),
        connect_timeout=fields.get("connect_timeout"),
    )


def _job_alive(entries: list[dict[str, Any]]) -> int | None:
    for entry in entries:
        if entry.get("kind") == "job":
            pid, start = entry.get("job_pid"), entry.get("job_start")
            if isinstance(pid, int) and start is not None and journal.process_start(pid) == start:
                return pid
            return None
    return None


def cleanup(resultdir: str, password: str | None, out: Any) -> int:
    """End what the job of ``resultdir`` left behind; one line per item on ``out``."""
    path = os.path.join(resultdir, journal.JOURNAL_NAME)
    if not os.path.isfile(path):
        raise AutoservUsageError(f"{resultdir} has no journal ({journal.JOURNAL_NAME}): not a results "
                     "directory of this autoserv")
    entries = list(journal.read(path))
    if not entries and os.path.getsize(path) > 0:  # not "nothing left": nothing readable
        raise AutoservError(f"{path}: no line of it is a journal entry of this autoserv: "
                            "nothing cleaned up")
    pid = _job_alive(entries)
    if pid is not None:
        out.write(f"the job is still running (pid {pid}): stop it first\n")
        return 1
    ended = any(e.get("kind") == "end" for e in entries)
    done = {e.get("item") for e in entries if e.get("kind") in ("cleaned", "ended")}
    by_host: dict[str, _Host] = {}
    for e in entries:
        host = e.get("host")
        if not isinstance(host, dict) or not isinstance(host.get("alias"), str):
            continue
        h = by_host.setdefault(host["alias"], _Host(host))
        if e.get("kind") == "command" and isinstance(e.get("connection"), str) and not ended:
            key = f"{host['alias']}|{e['connection']}"
            if key not in done:
                h.connections.setdefault(e["connection"], []).append(str(e.get("id")))
        elif e.get("kind") == "tmpdir" and isinstance(e.get("path"), str):
            if e.get("id") not in done:
                h.tmpdirs[str(e.get("id"))] = e["path"]
        elif e.get("kind") == "guest" and _guest_entry(e) and e.get("id") not in done:
            h.guests[str(e.get("id"))] = e
    todo = [h for h in by_host.values() if h.connections or h.tmpdirs or h.guests]
    if not todo:
        out.write(f"nothing left to clean up in {resultdir}\n")
        return 0
    failures = 0
    for h in todo:
        alias = h.fields["alias"]
        if h.fields.get("password") and not password:
            out.write(f"{alias}: needs a password (--ssh-pass or AUTOSERV_SSH_PASS): skipped\n")
            failures += 1
            continue
        try:
            host = _connect(h.fields, password)
        except Exception as exc:
            out.write(f"{alias}: cannot reach it: {_first(exc)}\n")
            failures += 1
            continue
        with host:
            failures += _reap_guests(host, alias, h.guests, path, out)
            for connection, ids in h.connections.items():
                try:
                    res = host.run(kill_connection_command(connection), timeout=60,
                                   verbose=False, stdout_tee=None, stderr_tee=None)
                    killed = (res.stdout.strip().splitlines() or [""])[0].rsplit(" ", 1)[-1]
                except Exception as exc:
                    out.write(f"{alias}: could not end the commands of connection "
                              f"{connection}: {_first(exc)}\n")
                    failures += 1
                    continue
                what = f"{len(ids)} command(s) of connection {connection}"
                if killed.isdigit() and int(killed):
                    out.write(f"{alias}: killed {killed} process group(s) left by {what}\n")
                else:
                    out.write(f"{alias}: nothing left running of {what}\n")
                journal.append(path, {"kind": "cleaned", "item": f"{alias}|{connection}"})
            for item, tmp in h.tmpdirs.items():
                try:
                    res = host.run(remove_dir_command(tmp), timeout=120, verbose=False,
                                   stdout_tee=None, stderr_tee=None)
                except ValueError as exc:
                    out.write(f"{alias}: skipped {tmp!r}: {exc}\n")
                    journal.append(path, {"kind": "cleaned", "item": item})
                    continue
                except Exception as exc:
                    out.write(f"{alias}: could not remove temp dir {tmp}: {_first(exc)}\n")
                    failures += 1
                    continue
                word = "removed" if res.stdout.strip() == "removed" else "already gone:"
                out.write(f"{alias}: {word} temp dir {tmp}\n")
                journal.append(path, {"kind": "cleaned", "item": item})
    return 1 if failures else 0


def _guest_entry(e: dict[str, Any]) -> bool:
    return (all(isinstance(e.get(k), str) for k in ("state_dir", "ip", "owner"))
            and isinstance(e.get("qemu_pid"), int | None))


def _reap_guests(host: Any, alias: str, guests: dict[str, dict[str, Any]], path: str,
                 out: Any) -> int:
    """End the journaled ``guests`` on ``host`` (before its commands: a guest's qemu is not in
    a process group of the job's connection); returns the number of failures."""
    from autoserv.virt.leases import reap_lease

    failures = 0
    for item, g in guests.items():
        try:
            answer = reap_lease(host, g["state_dir"], g["ip"], g.get("qemu_pid"), g["owner"])
        except Exception as exc:
            out.write(f"{alias}: could not end guest {g['ip']}: {_first(exc)}\n")
            failures += 1
            continue
        word, _, tap = answer.partition(" ")
        tap_text = f", tap {g.get('tap')} removed" if tap else ""
        line = {
            "killed": f"killed guest {g['ip']} (qemu {g.get('qemu_pid')}), freed its lease{tap_text}",
            "freed": f"guest {g['ip']} had stopped: freed its lease{tap_text}",
            "gone": f"guest {g['ip']}: already gone",
            "taken": f"guest {g['ip']}: its address is leased by another job now: left alone",
        }[word]
        out.write(f"{alias}: {line}\n")
        journal.append(path, {"kind": "cleaned", "item": item})
    return failures


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def main(argv: Sequence[str]) -> int:
    """``autoserv cleanup RESULTS_DIR [--ssh-pass PW]``: exit 0 when all was cleaned up.

    Raises AutoservUsageError (exit 2) and AutoservError (exit 1); the CLI reports them.
    """
    from autoserv.cli import PASS_ENV

    parser = UsageParser(
        prog="autoserv cleanup",
        description="End the remote commands, remove the remote temp dirs and end the qemu "
                    "guests a killed job left behind, as its journal (RESULTS_DIR/journal) "
                    "lists them.")
    parser.add_argument("resultdir", metavar="RESULTS_DIR")
    parser.add_argument("--ssh-pass", metavar="PASSWORD",
                        help=f"password for hosts the job reached with one (better: "
                             f"${PASS_ENV})")
    options = parser.parse_args(list(argv))
    password = options.ssh_pass or os.environ.get(PASS_ENV) or None
    try:
        return cleanup(os.path.abspath(options.resultdir), password, sys.stdout)
    except OSError as exc:
        raise AutoservError(f"{options.resultdir}: {exc.strerror or exc}") from None
