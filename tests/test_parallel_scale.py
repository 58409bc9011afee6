"""parallel_simple over 200 real loopback test bed hosts, in each worker model.

Every machine must end with its own results subdir (status.log with its own entry, keyval
with ``hostname=``, ``debug/`` holding its own command and nobody else's), its ``print``
on the console behind its own ``<arg> : `` prefix, its function run in that subdir, and
the results in arglist order.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoserv import status
from autoserv.job import read_keyval
from autoserv.lab.testbed import Testbed
from tests.cli_helpers import run_autoserv

pytestmark = pytest.mark.slow

COUNT = 200

CONTROL = """\
import os

def run(machine):
    host = hosts.create_host(machine)
    name = host.run("uname -n").stdout.strip()
    print("on", machine, "uname", name)
    with open("where", "w") as f:
        f.write(os.getcwd())
    job.record("GOOD", None, "uname", name)
    return machine

results = parallel_simple(run, machines, return_results=True)
with open(os.path.join(job.resultdir, "order"), "w") as f:
    f.write(",".join(str(r) for r in results))
"""


@pytest.fixture(scope="module")
def big_bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    with Testbed(tmp_path_factory.mktemp("bed200"), count=COUNT, kind="loopback") as tb:
        yield tb


@pytest.mark.parametrize("model", ["fork", "threads"])
def test_200_machines_each_with_its_own_results(big_bed: Testbed, tmp_path: Path,
                                                model: str) -> None:
    control = tmp_path / "control.py"
    control.write_text(textwrap.dedent(CONTROL))
    results = tmp_path / "r"
    machines = big_bed.machines
    proc = run_autoserv(control, "-m", ",".join(machines), "--ssh-config", big_bed.ssh_config,
                        "-r", results, cwd=tmp_path, timeout=600, AUTOSERV_WORKERS=model)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (results / "order").read_text() == ",".join(machines)
    console = proc.stdout + proc.stderr
    for machine in machines:
        sub = results / machine
        assert read_keyval(str(sub))["hostname"] == machine
        entries = [e for e in status.parse_file(str(sub / "status.log"))
                   if getattr(e, "operation", None) == "uname"]
        assert len(entries) == 1 and entries[0].status_code == "GOOD", machine
        assert (sub / "where").read_text() == str(sub)
        debug = (sub / "debug" / "autoserv.DEBUG").read_text()
        assert f"[{machine}] running: uname -n" in debug
        assert len(re.findall(r"\] running: ", debug)) == 1, f"{machine} has others' commands"
        assert f"{machine} : " in console and f"on {machine} uname {machine}" in console
        line = next(ln for ln in console.splitlines() if f"on {machine} uname {machine}" in ln)
        assert line.startswith(f"{machine} : "), line
