"""The running job's mark on what it leaves on its hosts, so cleanup can find exactly that.

While a job runs (:func:`start`), every remote command runs with ``AUTOSERV_JOB=<job id>@<host>``
in its environment (inherited by everything it starts, even in a new session), and remote temp
dirs are named ``autoserv-<job id>-<host hash>-XXXXXX``.  ``-C`` cleanup (:mod:`autoserv.cleanup`) kills the
processes carrying this host's mark and removes this job's temp dirs, and nothing else.
Outside a job nothing is marked.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shlex

__all__ = ["ENV", "start", "stop", "current", "process_mark", "export_command", "tmp_prefix", "TMPDIR_NAME"]

#: The environment variable remote commands carry.
ENV = "AUTOSERV_JOB"
_ID = re.compile(r"^[0-9a-f]{4,32}$")
_job_id: str | None = None


def start(job_id: str | None = None) -> str:
    """Mark what follows with ``job_id`` (default: a new random id); returns it."""
    global _job_id
    job_id = job_id or secrets.token_hex(6)
    if not _ID.match(job_id):
        raise ValueError(f"a job id is 4 to 32 lower-case hex digits, not {job_id!r}")
    _job_id = job_id
    return job_id


def stop() -> None:
    """Stop marking (the job ended)."""
    global _job_id
    _job_id = None


def current() -> str | None:
    """The running job's id, None outside a job."""
    return _job_id


def process_mark(hostname: str, job_id: str | None = None) -> str | None:
    """The value of :data:`ENV` for commands on ``hostname`` (None outside a job)."""
    job_id = job_id or _job_id
    return f"{job_id}@{hostname}" if job_id else None


def export_command(hostname: str) -> str:
    """Shell that puts the mark in the environment (empty outside a job)."""
    mark = process_mark(hostname)
    return f"export {ENV}={shlex.quote(mark)}; " if mark else ""


#: The name of a remote temp dir made by ``get_tmp_dir`` (with or without a job's mark).
TMPDIR_NAME = r"autoserv-(?:[0-9a-f]{4,32}-[0-9a-f]{6}-)?[A-Za-z0-9]{6}"


def tmp_prefix(hostname: str, job_id: str | None = None) -> str:
    """The name prefix of remote temp dirs on ``hostname``.

    ``autoserv-<job id>-<host hash>-`` in a job (hosts may share a file system), else
    ``autoserv-``.
    """
    job_id = job_id or _job_id
    if not job_id:
        return "autoserv-"
    digest = hashlib.sha256(hostname.encode("utf-8", "surrogateescape")).hexdigest()[:6]
    return f"autoserv-{job_id}-{digest}-"
