"""barrier: participants in threads (fast), then real jobs on test bed hosts through the CLI.

The CLI tests run a control file whose parallel_simple workers (one per test bed machine) each
run a command on their host and meet at a barrier; they check the status.log the workers wrote.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from autoserv import status, workers
from autoserv.abort import JobAbort
from autoserv.barrier import barrier, socket_name
from autoserv.deadline import Deadline
from autoserv.errors import BarrierAbortError, BarrierError
from autoserv.lab.testbed import Testbed
from tests.cli_helpers import autoserv_argv, cli_env, run_autoserv

_port = iter(range(21000 + os.getpid() % 5000 * 7, 10**9))


def fresh_port() -> int:
    """Each test its own rendezvous point (tests may run next to other jobs)."""
    return next(_port)


@pytest.mark.parametrize(
    ("port", "tag", "uid", "prefix"),
    [
        (11920, "start", 0, b"\0autoserv-barrier/0/11920/"),
        (1, "x", 1000, b"\0autoserv-barrier/1000/1/"),
    ],
)
def test_socket_name(port: int, tag: str, uid: int, prefix: bytes) -> None:
    name = socket_name(port, tag, uid)
    assert name.startswith(prefix) and len(name) == len(prefix) + 24
    assert name == socket_name(port, tag, uid)
    assert name != socket_name(port, tag + "2", uid) != socket_name(port + 1, tag, uid)


def meet(ids: list[str], present: list[str], timeout: float | None, port: int,
         delays: dict[str, float] | None = None, servers: str | None = None,
         **kw: Any) -> dict[str, Any]:
    """Run participants ``present`` of group ``ids`` in threads; each one's outcome and time."""
    outcome: dict[str, Any] = {}

    def one(hostid: str) -> None:
        time.sleep((delays or {}).get(hostid, 0))
        b = barrier(hostid, "t", timeout, port)
        try:
            if servers is None:
                b.rendezvous(*ids, **kw)
            else:
                b.rendezvous_servers(servers, *[i for i in ids if i != servers], **kw)
            outcome[hostid] = ("released", time.monotonic())
        except BarrierError as exc:
            outcome[hostid] = (exc, time.monotonic())

    threads = [threading.Thread(target=one, args=(h,)) for h in present]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcome


def test_everyone_released_after_the_last_arrives() -> None:
    start = time.monotonic()
    out = meet(["c", "a", "b"], ["a", "b", "c"], 10, fresh_port(), {"a": 0.6, "c": 0.3})
    assert {h: o[0] for h, o in out.items()} == dict.fromkeys("abc", "released")
    assert min(o[1] for o in out.values()) - start >= 0.6  # nobody left before the master (a)


def test_rendezvous_servers_master_last() -> None:
    start = time.monotonic()
    out = meet(["m", "a", "b"], ["a", "b", "m"], 10, fresh_port(), {"m": 0.5}, servers="m")
    assert {h: o[0] for h, o in out.items()} == dict.fromkeys("abm", "released")
    assert min(o[1] for o in out.values()) - start >= 0.5


def test_timeout_names_who_never_arrived() -> None:
    out = meet(["a", "b", "c"], ["a", "b"], 1.0, fresh_port())
    for hostid in ("a", "b"):
        exc = out[hostid][0]
        assert isinstance(exc, BarrierError), out
        assert str(exc).endswith("timed out after 1.0 s: never arrived: c"), str(exc)


def test_master_never_arrives() -> None:
    out = meet(["a", "b", "c"], ["b", "c"], 1.0, fresh_port())
    for hostid in ("b", "c"):
        assert "never arrived: a (the master)" in str(out[hostid][0]), out


def test_abort_flag_reaches_everyone() -> None:
    out = meet(["a", "b"], ["a", "b"], 10, fresh_port(), abort=True)
    assert all(isinstance(o[0], BarrierAbortError) for o in out.values()), out


class _AbortedMaster(barrier):
    """A master whose job is aborted when the last participant knocks (as SIGTERM would)."""

    def _admit_peer(self, sock: Any) -> bool:
        if self.hostid == "a" and getattr(self, "admitted", 0) == 1:
            raise JobAbort("received SIGTERM")
        self.admitted = getattr(self, "admitted", 0) + 1
        return True


def test_an_aborted_master_tells_everyone_why() -> None:
    port = fresh_port()
    outcome: dict[str, BaseException] = {}

    def master() -> None:
        try:
            _AbortedMaster("a", "t", 10, port).rendezvous("a", "b", "c")
        except BaseException as exc:
            outcome["a"] = exc

    def late_c() -> None:
        time.sleep(0.5)  # b is admitted by now
        with contextlib.suppress(BarrierError):  # c's knock aborts the master
            barrier("c", "t", 1, port).rendezvous("a", "b", "c")

    threads = [threading.Thread(target=master), threading.Thread(target=late_c)]
    for t in threads:
        t.start()
    with pytest.raises(BarrierError) as b_error:
        barrier("b", "t", 10, port).rendezvous("a", "b", "c")
    for t in threads:
        t.join(10)
    assert isinstance(outcome["a"], JobAbort)
    assert str(b_error.value) == ("barrier 't' (b): the master a stopped waiting: "
                                  "job aborted: received SIGTERM")


_PARTICIPANT = """
import sys
from autoserv import abort
from autoserv.barrier import barrier
abort.AbortHandlers().install()
open(sys.argv[2], "w").close()
barrier("b", "t", 30, int(sys.argv[1])).rendezvous("a", "b", "c")
"""


def test_an_aborted_participant_says_why_it_left(tmp_path: Path) -> None:
    """A real participant process gets SIGTERM while it waits: the master names the reason."""
    port = fresh_port()
    started = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", _PARTICIPANT, str(port), str(started)],
                            stderr=subprocess.PIPE, text=True)
    try:
        def kill_once_waiting() -> None:
            wait = Deadline(30)
            while not started.exists() and not wait.expired():
                time.sleep(0.05)
            time.sleep(0.5)  # connected and admitted by now
            proc.send_signal(signal.SIGTERM)

        killer = threading.Thread(target=kill_once_waiting)
        killer.start()
        with pytest.raises(BarrierError) as a_error:
            barrier("a", "t", 30, port).rendezvous("a", "b", "c")
        killer.join()
        assert proc.wait(30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert str(a_error.value) == ("barrier 't' (a): b left before everyone arrived "
                                  "(job aborted: received SIGTERM)")


def test_mismatched_participants_refused() -> None:
    port = fresh_port()
    errors: list[BaseException] = []

    def master() -> None:
        try:
            barrier("a", "t", 2, port).rendezvous("a", "b")
        except BarrierError as exc:
            errors.append(exc)

    t = threading.Thread(target=master)
    t.start()
    with pytest.raises(BarrierError, match="b expects participants a, b, c, the master a expects a, b"):
        barrier("b", "t", 2, port).rendezvous("a", "b", "c")
    t.join()
    assert errors and "never arrived: b" in str(errors[0])


def test_not_a_participant() -> None:
    with pytest.raises(BarrierError, match="x is not one of the participants a, b"):
        barrier("x", "t", 1, fresh_port()).rendezvous("a", "b")


# -- real jobs ---------------------------------------------------------------------------

CONTROL = """\
import time
port, skip, timeout = int(args[0]), args[1], float(args[2]) if args[2] != "none" else None

def work(machine):
    host = hosts.create_host(machine)
    name = host.run("hostname").stdout.strip()
    if machine == skip:
        job.record("GOOD", None, "skipped", name)
        return
    time.sleep(0.4 * machines.index(machine))
    open(machine + ".arrived", "w").close()
    b = barrier(machine, "start", timeout, port)
    b.rendezvous(*machines)
    job.record("GOOD", None, "released", f"{name} {time.time():.3f}")

parallel_simple(work, machines)
"""


def bed(tb: Testbed) -> list[str]:
    return ["-m", ",".join(tb.machines), "--ssh-config", str(tb.ssh_config)]


def entries(path: Path) -> list[status.StatusEntry]:
    return status.parse_file(str(path))


def test_three_workers_meet(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    ctl = tmp_path / "b.control"
    ctl.write_text(CONTROL)
    start = time.time()
    proc = run_autoserv(ctl, "-r", tmp_path / "r", *bed(tb), "-a", f"{fresh_port()} - 30",
                        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    released = []
    for machine in tb.machines:
        (entry,) = entries(tmp_path / "r" / machine / "status.log")
        assert (entry.status_code, entry.operation) == ("GOOD", "released")
        name, when = entry.message.split()
        assert name == machine  # the worker really ran on its host (tbN's hostname is tbN)
        released.append(float(when))
    # the last worker arrived 0.8 s after the first: nobody was released before it
    assert min(released) - start >= 0.8
    assert max(released) - min(released) < 0.5


def test_one_never_arrives(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    ctl = tmp_path / "b.control"
    ctl.write_text(CONTROL)
    absent = tb.machines[2]
    proc = run_autoserv(ctl, "-r", tmp_path / "r", *bed(tb), "-a", f"{fresh_port()} {absent} 2",
                        cwd=tmp_path)
    assert proc.returncode == 1
    assert "BarrierError" in proc.stderr and f"never arrived: {absent}" in proc.stderr
    for machine in tb.machines[:2]:
        log = entries(tmp_path / "r" / machine / "status.log")
        assert [e.status_code for e in log] == ["ERROR"], log
        assert f"BarrierError: barrier 'start' ({machine}): timed out after 2.0 s: " \
               f"never arrived: {absent}" in log[0].message
    skipped = entries(tmp_path / "r" / absent / "status.log")
    assert [(e.status_code, e.operation) for e in skipped] == [("GOOD", "skipped")]


@pytest.mark.parametrize("model", workers.MODELS)
def test_abort_releases_everyone(testbed_loopback: Testbed, tmp_path: Path, model: str) -> None:
    """Both worker models: a thread worker sees its abort between the barrier's waits."""
    tb = testbed_loopback
    ctl = tmp_path / "b.control"
    ctl.write_text(CONTROL)
    results = tmp_path / "r"
    absent = tb.machines[2]
    argv = autoserv_argv(ctl, "-r", results, *bed(tb), "-a", f"{fresh_port()} {absent} none")
    proc = subprocess.Popen(argv, cwd=tmp_path, env=cli_env(**{workers.MODEL_ENV: model}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        arrived = [results / m / f"{m}.arrived" for m in tb.machines[:2]]
        wait = Deadline(60)
        while not all(p.exists() for p in arrived) and not wait.expired():
            time.sleep(0.05)
        assert all(p.exists() for p in arrived), proc
        time.sleep(0.3)  # inside rendezvous, waiting for ever (timeout None)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    assert took < 10, took
    assert "aborted" in err
    top = entries(results / "status.log")
    assert any(e.fields.get("job_abort_reason") == "received SIGTERM" for e in top), top
    for machine in tb.machines[:2]:
        log = entries(results / machine / "status.log")
        assert any("aborted" in e.message or e.status_code == "ABORT" for e in log), (machine, log)
        assert not any(e.operation == "released" for e in log)
    for machine in tb.machines:  # an aborted job collects crash information too
        readme = (results / machine / "crashinfo" / "README").read_text()
        assert readme.startswith(f"Crash information collected by autoserv from {machine}: "
                                 "the job was aborted.")


def test_two_autoserv_processes_meet(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    ctl = tmp_path / "two.control"
    ctl.write_text(textwrap.dedent("""\
        import time
        me, other, port = args
        host = hosts.create_host(machines[0])
        host.run("true")
        time.sleep(1.0 if me == "first" else 0)
        barrier(me, "pair", 30, int(port)).rendezvous(me, other)
        job.record("GOOD", None, "met", f"{time.time():.3f}")
        """))
    port = str(fresh_port())
    procs = []
    for i, (me, other) in enumerate((("first", "second"), ("second", "first"))):
        argv = autoserv_argv(ctl, "-r", tmp_path / f"r{i}", "-m", tb.machines[i], "--ssh-config",
                             str(tb.ssh_config), me, other, port)
        procs.append(subprocess.Popen(argv, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    start = time.time()
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    times = []
    for i in range(2):
        (e,) = entries(tmp_path / f"r{i}" / "status.log")
        times.append(float(e.message))
    assert min(times) - start >= 0.9  # "second" waited for "first"


def test_one_barrier_met_again_and_again() -> None:
    """A participant that is released reconnects at once for the next round, maybe while
    the master still closes the last round's socket: that connection is simply made again."""
    port = fresh_port()
    rounds: dict[str, Any] = {}

    def loop(hostid: str) -> None:
        b = barrier(hostid, "again", 10, port)
        try:
            for i in range(40):
                b.rendezvous("a", "b", "c")
                rounds[hostid] = i + 1
        except BarrierError as exc:
            rounds[hostid] = exc

    threads = [threading.Thread(target=loop, args=(h,)) for h in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert rounds == dict.fromkeys("abc", 40), rounds
