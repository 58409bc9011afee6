"""``autoserv -c``: run a client-side control file on every machine.

The job then runs a fixed server-side step instead of the user's file: for each
machine, in parallel (:meth:`ServerJob.parallel_simple`, one results subdir each when
there are several), ``Autotest(host).run(<the client control>, results_dir='.')`` with the
job's ``args``.  The client control file itself is never compiled on the controller: the
client runtime reads it (translating Python 2) on the host.
"""

from __future__ import annotations

from typing import Any

from autoserv import control as control_mod

__all__ = ["server_side", "run_everywhere"]

_STEP = "__autoserv_client_job__(job)\n"


def run_everywhere(job: Any, text: str) -> None:
    """Run client control ``text`` on every machine of ``job`` (in parallel)."""
    from autoserv import autotest_remote, hosts

    def run_on(machine: str) -> None:
        host = hosts.create_host(machine)
        autotest_remote.Autotest(host).run(text, results_dir=".", args=list(job.args))

    job.parallel_simple(run_on, list(job.machines))


def server_side(job: Any, text: str) -> tuple[control_mod.ControlFile, dict[str, Any]]:
    """The compiled server-side step and its namespace for the client control ``text``."""
    code = compile(_STEP, "<autoserv -c>", "exec", dont_inherit=True)
    control = control_mod.ControlFile(job.control, text, code)
    namespace = control_mod.build_namespace(job, None)
    namespace["__autoserv_client_job__"] = lambda j: run_everywhere(j, text)
    return control, namespace
