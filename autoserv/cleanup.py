"""``-C`` cleanup after a job, and ``host.cleanup()``.

``safe`` (the default)
    Kill the processes this job left running on the host, i.e. those carrying its mark
    (``AUTOSERV_JOB=<job id>@<host>`` in their environment, see :mod:`autoserv.jobmark`:
    whatever the job's commands started, in their process groups or in new sessions, its
    qemu guests included): SIGTERM, then SIGKILL after a grace period.  Then remove the
    job's remote temp dirs of this host (``/tmp`` and ``/var/tmp``:
    ``autoserv-<job id>-<host hash>-*``).  Nothing
    without this job's mark is touched.
``reboot``
    Reboot the host, as the original Autoserv's ``-C`` did.
"""

from __future__ import annotations

import logging
import shlex
from typing import Any

from autoserv import jobmark
from autoserv.errors import AutoservError
from autoserv.localsys import ENV_PIDS_SH

__all__ = ["MODES", "env_kill_script", "kill_script", "tmp_script", "cleanup"]

log = logging.getLogger("autoserv.cleanup")

MODES = ("safe", "reboot")
#: Seconds between SIGTERM and SIGKILL.
GRACE = 2.0
TMP_PARENTS = ("/tmp", "/var/tmp")


def env_kill_script(line: str, grace: float = GRACE, groups: bool = False) -> str:
    """Shell ending every process whose environment holds exactly ``line`` (``VAR=value``),
    or with ``groups`` every process group such a process is in: SIGTERM, then SIGKILL
    after ``grace`` s.  The script's own session is spared (it may carry the line too: sshd
    makes the shell of every remote command a session leader); zombies are ignored.
    Prints ``killed N`` and, if any survived SIGKILL, ``left ...``.  Pure.
    """
    target = '"-$g"' if groups else '"$p"'
    steps = max(1, int(grace / 0.1))
    return (
        f"{ENV_PIDS_SH}\n"
        f"want={shlex.quote(line)}; me=$$; "
        'targets() { t=; for x in $(env_pids "$want" | while read -r p g s; do '
        f'[ "$s" = "$me" ] || echo {target}; done); do '
        'case " $t " in *" $x "*) ;; *) t="$t $x";; esac; done; echo $t; }; '
        "first=$(targets); n=0; for x in $first; do n=$((n+1)); done; "
        '[ -n "$first" ] && kill -TERM $first 2>/dev/null; i=0; '
        f'while [ -n "$(targets)" ] && [ $i -lt {steps} ]; do sleep 0.1; i=$((i+1)); done; '
        'rest=$(targets); [ -n "$rest" ] && kill -KILL $rest 2>/dev/null && sleep 0.2; '
        'echo killed $n; rest=$(targets); [ -n "$rest" ] && echo left $rest; true'
    )


def kill_script(mark: str, grace: float = GRACE) -> str:
    """Shell ending every process with ``AUTOSERV_JOB=<mark>`` in its environment
    (see :func:`env_kill_script`)."""
    return env_kill_script(f"{jobmark.ENV}={mark}", grace)


def tmp_script(hostname: str, job_id: str) -> str:
    """Shell removing the job's temp dirs on ``hostname``; prints ``removed N``."""
    prefix = jobmark.tmp_prefix(hostname, job_id)
    globs = " ".join(f"{p}/{prefix}*" for p in TMP_PARENTS)
    return (f"n=0; for d in {globs}; do [ -d \"$d\" ] || continue; "
            "rm -rf -- \"$d\" && n=$((n+1)); done; echo removed $n")


def cleanup(host: Any, mode: str = "safe", job_id: str | None = None) -> str:
    """Clean ``host`` up after the job ``job_id`` (default: the running one); says what it did."""
    if mode not in MODES:
        raise ValueError(f"cleanup mode must be one of {', '.join(MODES)}")
    if mode == "reboot":
        host.reboot()
        return f"{host.hostname} rebooted"
    job_id = job_id or jobmark.current()
    if job_id is None:
        raise AutoservError("safe cleanup needs a job: outside one nothing is marked as its own")
    mark = jobmark.process_mark(host.hostname, job_id)
    assert mark is not None
    out = host.run(kill_script(mark), timeout=120, verbose=False, stdout_tee=None).stdout
    killed = next((line.split()[1] for line in out.splitlines() if line.startswith("killed ")), "0")
    left = next((line[5:] for line in out.splitlines() if line.startswith("left ")), "")
    removed = host.run(tmp_script(host.hostname, job_id), timeout=300, verbose=False,
                       stdout_tee=None).stdout.split()[-1]
    if left:
        raise AutoservError(f"{host.hostname}: processes of the job survived SIGKILL: {left}")
    return f"{host.hostname} cleaned up: killed {killed} process(es), removed {removed} temp dir(s)"
