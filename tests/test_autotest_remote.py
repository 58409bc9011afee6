"""Autotest client tests on real test bed hosts: autotest_remote, -c, server-side job.run_test.

The client runtime is the real one (``autoserv.client``), installed over SSH into a
``--install-in-tmpdir`` autodir (or an autodir under the test's tmp_path), so nothing
outside the test's own directories is touched on the (shared) filesystem.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from autoserv import autotest_remote, hosts, status
from autoserv.deadline import Deadline
from autoserv.job import read_keyval
from autoserv.lab.testbed import Testbed
from tests.cli_helpers import autoserv_argv, cli_env, run_autoserv, stderr_lines

pytestmark = pytest.mark.slow


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def bed_args(tb: Testbed, count: int | None = None) -> list[str]:
    machines = tb.machines if count is None else tb.machines[:count]
    return ["-m", ",".join(machines), "--ssh-config", str(tb.ssh_config), "--install-in-tmpdir"]


def entries(path: Path) -> list[tuple[int, str, str | None, str | None]]:
    return [(e.indent, e.status_code, e.subdir, e.operation)
            for e in status.parse_file(str(path))]


def client_processes(marker: str) -> list[str]:
    """Command lines of processes on this machine (the test bed's hosts share it) naming
    ``marker`` (an autodir)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z" and "autotest.client.runner" in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def installed_autodirs(results: Path) -> list[str]:
    """The autodirs the job's debug logs say it installed into."""
    dirs = []
    for log in results.rglob("autoserv.DEBUG"):
        for line in log.read_text(errors="replace").splitlines():
            if "installing the client runtime" in line:
                dirs.append(line.rsplit(" in ", 1)[1].strip())
    return dirs


SLEEP_AND_FAIL = """\
def run(machine):
    host = hosts.create_host(machine, initialize=True, auto_monitor=False)
    at = autotest_remote.Autotest(host)
    at.run_test('sleeptest', seconds=1)
    at.run_test('failtest')
    autotest.Autotest().run_test('sleeptest', host=host, seconds=0, tag='again')
    at.run_test('sleeptest', '.', host, seconds=0, tag='positional')
    ok = host.run_test('sleeptest', seconds=0, tag='hostcall')
    assert ok is True, ok
    assert float(host.check_uptime()) > 0
parallel_simple(run, machines)
"""


def test_sleeptest_and_failtest_on_three_machines(testbed: Testbed, tmp_path: Path) -> None:
    control = write(tmp_path / "tests.control", SLEEP_AND_FAIL)
    results = tmp_path / "r"
    proc = run_autoserv(control, "-r", results, *bed_args(testbed), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # failtest failed: FAIL recorded, job exit 1
    assert "job failed" in proc.stderr and "Traceback" not in proc.stderr
    for machine in testbed.machines:
        sub = results / machine
        got = entries(sub / "status.log")
        assert got[:5] == [
            (0, "START", None, None),
            (1, "START", "sleeptest", "sleeptest"),
            (2, "GOOD", "sleeptest", "sleeptest"),
            (1, "END GOOD", "sleeptest", "sleeptest"),
            (0, "END GOOD", None, None),
        ], got  # Autotest's operation is the tagged test name, as its subdir
        assert (1, "START", "failtest", "failtest") in got
        assert (2, "FAIL", "failtest", "failtest") in got
        assert (1, "END FAIL", "failtest", "failtest") in got
        for tag in ("again", "positional", "hostcall"):
            assert (2, "GOOD", f"sleeptest.{tag}", f"sleeptest.{tag}") in got
            assert (sub / f"sleeptest.{tag}" / "keyval").exists()
        keyval = read_keyval(str(sub / "sleeptest"))
        assert keyval["param-seconds"] == "1" and "version" in keyval
        assert (sub / "failtest" / "keyval").exists()
        assert read_keyval(str(sub))["hostname"] == machine  # the server's keyval, not the client's
        logs = sorted(p.name for p in (sub / "debug").glob("client.*.log"))
        assert logs == [f"client.{n}.log" for n in range(5)]
    for autodir in installed_autodirs(results):
        assert not os.path.exists(autodir), f"--install-in-tmpdir left {autodir}"
    assert len(installed_autodirs(results)) == len(testbed.machines)  # once per host


def test_sleeptest_alone_exits_zero_and_status_is_live(testbed_loopback: Testbed,
                                                       tmp_path: Path) -> None:
    tb = testbed_loopback
    control = write(tmp_path / "sleep.control", """\
        at = autotest_remote.Autotest(hosts.create_host(machines[0]))
        at.run_test('sleeptest', seconds=3)
    """)
    results = tmp_path / "r"
    proc = subprocess.Popen(autoserv_argv(control, "-r", results, *bed_args(tb, 1)),
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = results / "status.log"
    deadline = Deadline(60)
    while not deadline.expired():
        text = log.read_text() if log.exists() else ""
        if "START\tsleeptest" in text:
            break
        deadline.sleep(0.05)
    text = log.read_text()
    assert "START\tsleeptest" in text and "GOOD\tsleeptest" not in text
    assert proc.poll() is None, "the status line should appear while the client runs"
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "\t\tGOOD\tsleeptest\tsleeptest\t" in log.read_text()


def test_timeout_kills_the_client(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tests_dir = tmp_path / "tests"
    write(tests_dir / "shellsleep" / "shellsleep.py", """\
        from autotest.client import test, utils

        class shellsleep(test.test):
            version = 1

            def run_once(self):
                utils.system('sleep 377')
    """)
    control = write(tmp_path / "timeout.control", """\
        h = hosts.create_host(machines[0])
        try:
            autotest_remote.Autotest(h).run_timed_test('shellsleep', timeout=4)
        except AutotestTimeoutError as exc:
            print('caught:', exc)
    """)
    results = tmp_path / "r"
    proc = run_autoserv(control, "-r", results, "--client-tests", tests_dir,
                        *bed_args(testbed_loopback, 1), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # END ABORT recorded
    assert "caught: tb1: client timed out after 4 s" in proc.stdout
    got = status.parse_file(str(results / "status.log"))
    aborts = [e for e in got if e.status_code == "END ABORT"]
    assert [(e.subdir, e.operation) for e in aborts] == [("shellsleep", "shellsleep"),
                                                          (None, None)]
    assert all("client timed out after 4 s" in e.message for e in aborts)
    (autodir,) = installed_autodirs(results)
    assert client_processes(autodir) == []
    assert not [p for p in _cmdlines() if p == "sleep 377"]  # the test's own command too


def _cmdlines() -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    out.append(f.read().replace(b"\0", b" ").decode(errors="replace").strip())
            except OSError:
                pass
    return out


def test_sigterm_kills_the_client(testbed_loopback: Testbed, tmp_path: Path) -> None:
    control = write(tmp_path / "long.control", """\
        def run(machine):
            autotest_remote.Autotest(hosts.create_host(machine)).run_test('sleeptest', seconds=120)
        parallel_simple(run, machines)
    """)
    results = tmp_path / "r"
    proc = subprocess.Popen(autoserv_argv(control, "-r", results, *bed_args(testbed_loopback, 2)),
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    logs = [results / m / "status.log" for m in testbed_loopback.machines[:2]]
    deadline = Deadline(60)
    while not deadline.expired():
        if all(p.exists() and "START\tsleeptest" in p.read_text() for p in logs):
            break
        deadline.sleep(0.05)
    autodirs = installed_autodirs(results)
    assert len(autodirs) == 2 and all(client_processes(a) for a in autodirs)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    for log in logs:
        got = status.parse_file(str(log))
        ends = [(e.status_code, e.subdir) for e in got if e.is_end]
        assert ends == [("END ABORT", "sleeptest"), ("END ABORT", None)], got
        assert all(e.message == "aborted: received SIGTERM" for e in got if e.is_end), got
        assert got[-1].fields["job_abort_reason"] == "received SIGTERM"
    for autodir in autodirs:
        assert client_processes(autodir) == []
        assert not os.path.exists(autodir)


class _Recorder:
    """Stands in for the job's status.log writer in library use (hosts are real)."""

    control = None
    tests = None

    def __init__(self) -> None:
        self.entries: list[status.StatusEntry] = []

    def record_entry(self, entry: status.StatusEntry) -> None:
        self.entries.append(entry)


def _session_sshds(host: Any) -> list[int]:
    """The per-connection sshd processes of a test bed host (children of its listener)."""
    listener = int(Path(host.workdir, "sshd.pid").read_text())
    kids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == listener:
                kids.append(int(pid))
    return kids


def test_dropped_connection_reattaches(testbed: Testbed, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(autotest_remote.Autotest, "job", recorder)
    autodir = tmp_path / "autodir"
    host = hosts.SSHHost(testbed.machines[0], ssh_config=str(testbed.ssh_config))
    at = autotest_remote.Autotest(host)
    at.install(autodir=str(autodir))
    client_status = autodir / "results" / "default" / "status.log"
    killed: list[int] = []

    def cut() -> None:
        deadline = Deadline(60)
        while not deadline.expired():
            if client_status.exists() and "START\tsleeptest" in client_status.read_text():
                break
            deadline.sleep(0.05)
        for pid in _session_sshds(testbed.hosts[0]):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    thread = threading.Thread(target=cut)
    thread.start()
    try:
        ok = at.run_test("sleeptest", str(tmp_path / "res"), seconds=3,
                         client_disconnect_timeout=60)
    finally:
        thread.join()
        host.close()
    assert killed, "no SSH session was cut"
    got = [(e.status_code, e.operation, e.message) for e in recorder.entries]
    warns = [g for g in got if g[0] == "WARN"]
    assert len(warns) >= 1 and warns[0][2].startswith("client disconnected"), got
    assert ("GOOD", "sleeptest", "completed successfully") in got
    assert [g[0] for g in got if g[0].startswith("END")] == ["END GOOD", "END GOOD"]
    assert ok is True
    assert (tmp_path / "res" / "sleeptest" / "keyval").exists()


def test_reboot_in_a_client_job_continues(testbed_loopback: Testbed, tmp_path: Path) -> None:
    control = write(tmp_path / "reboot.control", """\
        if job.get_state('rebooted', False):
            job.run_test('sleeptest', seconds=0, tag='after')
        else:
            job.set_state('rebooted', True)
            job.run_test('sleeptest', seconds=0, tag='before')
            job.reboot()
    """)
    results = tmp_path / "r"
    proc = run_autoserv("-c", control, "-r", results, *bed_args(testbed_loopback, 1),
                        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout[-3000:]
    got = entries(results / "status.log")
    assert got == [
        (0, "START", None, None),
        (1, "START", "sleeptest.before", "sleeptest.before"),
        (2, "GOOD", "sleeptest.before", "sleeptest.before"),
        (1, "END GOOD", "sleeptest.before", "sleeptest.before"),
        (1, "START", None, "reboot"),
        (2, "GOOD", None, "reboot.start"),
        (2, "GOOD", None, "reboot.verify"),
        (1, "END GOOD", None, "reboot"),
        (1, "START", "sleeptest.after", "sleeptest.after"),
        (2, "GOOD", "sleeptest.after", "sleeptest.after"),
        (1, "END GOOD", "sleeptest.after", "sleeptest.after"),
        (0, "END GOOD", None, None),
    ], got
    assert (results / "sleeptest.before" / "keyval").exists()
    assert (results / "sleeptest.after" / "keyval").exists()
    assert (results / "control").read_text() == control.read_text()  # -c copies as 'control'


PY2_TEST = """\
from autotest_lib.client.bin import test
from autotest_lib.client.common_lib import error

class py2test(test.test):
    version = 1

    def run_once(self, word='hello'):
        try:
            n = 0777
        except ValueError, e:
            raise error.TestFail, "unreachable"
        print "py2test says", word, n
        self.write_perf_keyval({'answer': 42})
"""


def test_python2_client_test_from_client_tests_dir(testbed_loopback: Testbed,
                                                   tmp_path: Path) -> None:
    tests_dir = tmp_path / "mytests"
    write(tests_dir / "py2test" / "py2test.py", PY2_TEST)
    write(tests_dir / "py2test" / "control", "job.run_test('py2test', word='hi')\n")
    control = write(tmp_path / "py2.control", """\
        h = hosts.create_host(machines[0])
        autotest_remote.Autotest(h).run_test('py2test', word='hi')
        autotest_remote.Autotest(h).run_test('nosuchtest')
        print('still running after the missing test')
    """)
    results = tmp_path / "r"
    proc = run_autoserv(control, "-r", results, "--client-tests", tests_dir,
                        *bed_args(testbed_loopback, 1), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # the missing test's ERROR
    assert "still running after the missing test" in proc.stdout
    got = status.parse_file(str(results / "status.log"))
    assert ("GOOD", "py2test") in [(e.status_code, e.operation) for e in got], got
    errors = [e for e in got if e.status_code == "ERROR"]
    assert [e.message for e in errors] == ["nosuchtest: test does not exist"]
    perf = (results / "py2test" / "results" / "keyval").read_text()
    assert "answer{perf}=42" in perf
    assert read_keyval(str(results / "py2test"))["param-word"] == "'hi'"  # repr, as Autotest


def test_host_without_python3(tmp_path: Path) -> None:
    """A real sshd host whose login PATH has every tool of /usr/bin except python3."""
    bin_dir = tmp_path / "nopython-bin"
    bin_dir.mkdir()
    for name in os.listdir("/usr/bin"):
        if not name.startswith("python"):
            os.symlink(os.path.join("/usr/bin", name), bin_dir / name)
    with Testbed(tmp_path / "tb", count=1) as tb:
        (tb.dir / "bashrc").write_text(f"export PATH={bin_dir}\n")  # bind-mounted: same inode
        control = write(tmp_path / "c.control", """\
            autotest_remote.Autotest(hosts.create_host(machines[0])).run_test('sleeptest')
        """)
        proc = run_autoserv(control, "-r", tmp_path / "r", *bed_args(tb), cwd=tmp_path)
    assert proc.returncode == 1
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert "tb1: python3 not found on the host" in lines[0]


def test_client_control_on_two_machines(testbed: Testbed, tmp_path: Path) -> None:
    control = write(tmp_path / "client.control", """\
        job.run_test('sleeptest', seconds=0, tag=args[0] if args else None)
    """)
    results = tmp_path / "r"
    proc = run_autoserv("-c", control, "-r", results, *bed_args(testbed, 2), "smoke",
                        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for machine in testbed.machines[:2]:
        got = entries(results / machine / "status.log")
        assert (2, "GOOD", "sleeptest.smoke", "sleeptest.smoke") in got, got
        assert (results / machine / "sleeptest.smoke" / "keyval").exists()
    assert (results / "control").exists() and not (results / "control.srv").exists()


@pytest.mark.parametrize("argv", [["-c", "-s"], ["-c"]])
def test_client_control_usage_errors(tmp_path: Path, argv: list[str]) -> None:
    control = write(tmp_path / "client.control", "job.run_test('sleeptest')\n")
    proc = run_autoserv(*argv, control, "-r", tmp_path / "r", cwd=tmp_path)
    assert proc.returncode == 2
    assert len(stderr_lines(proc)) == 1 and "error:" in proc.stderr


SERVER_TEST = """\
from autotest.server import test
from autotest.client.shared import error

class srvsleep(test.test):
    version = 2

    def initialize(self):
        self.calls = ['initialize']

    def execute(self, host, seconds=0):
        self.calls.append('execute')
        out = host.run('sleep %s; hostname' % seconds).stdout.strip()
        self.write_perf_keyval({'slept': seconds})
        open(self.outputdir + '/host', 'w').write(out + ' ' + ' '.join(self.calls))
        if seconds > 5:
            raise error.TestFail('too long: %s' % seconds)

    def cleanup(self):
        open(self.outputdir + '/cleanup', 'w').write('done')
"""

SERVER_TEST_PY2 = """\
from autotest_lib.server import test

class oldstyle(test.test):
    version = 1

    def run_once(self, host=None):
        print "old style server test on", host.hostname
        raise ValueError, "boom"
"""


def repr_host(machine: str, tb: Testbed) -> str:
    with hosts.SSHHost(machine, ssh_config=str(tb.ssh_config)) as h:
        return repr(h)


def test_server_side_run_test(testbed_loopback: Testbed, tmp_path: Path) -> None:
    srv = tmp_path / "srvtests"
    write(srv / "srvsleep" / "srvsleep.py", SERVER_TEST)
    write(tmp_path / "job" / "server" / "tests" / "oldstyle" / "oldstyle.py", SERVER_TEST_PY2)
    control = write(tmp_path / "job" / "server.control", """\
        def run(machine):
            host = hosts.create_host(machine)
            assert job.run_test('srvsleep', host=host, seconds=1) is True
            assert job.run_test('srvsleep', host=host, seconds=9, tag='long') is False
            job.run_test('oldstyle', host=host)
            job.run_test('missing', host=host)
            assert os.path.isfile(os.path.join(job.autodir, 'client', 'tests', 'sleeptest',
                                               'sleeptest.py'))
        parallel_simple(run, machines)
    """)
    results = tmp_path / "r"
    proc = run_autoserv(control, "-r", results, "--server-tests", srv,
                        *bed_args(testbed_loopback, 2), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    for machine in testbed_loopback.machines[:2]:
        sub = results / machine
        got = status.parse_file(str(sub / "status.log"))
        seen = [(e.indent, e.status_code, e.subdir, e.operation) for e in got]
        assert seen == [
            (0, "START", "srvsleep", "srvsleep"),
            (1, "GOOD", "srvsleep", "srvsleep"),
            (0, "END GOOD", "srvsleep", "srvsleep"),
            (0, "START", "srvsleep.long", "srvsleep.long"),
            (1, "FAIL", "srvsleep.long", "srvsleep.long"),
            (0, "END FAIL", "srvsleep.long", "srvsleep.long"),
            (0, "START", "oldstyle", "oldstyle"),
            (1, "FAIL", "oldstyle", "oldstyle"),
            (0, "END FAIL", "oldstyle", "oldstyle"),
            (0, "START", "missing", "missing"),
            (1, "ERROR", "missing", "missing"),
            (0, "END ERROR", "missing", "missing"),
        ], seen
        assert got[1].message == "completed successfully"
        assert got[4].message == "too long: 9"
        assert "boom" in got[7].message
        assert got[10].message == "missing: test does not exist"
        assert (sub / "srvsleep" / "host").read_text() == f"{machine} initialize execute"
        assert (sub / "srvsleep" / "cleanup").read_text() == "done"
        assert (sub / "srvsleep.long" / "cleanup").read_text() == "done"
        assert "slept{perf}=1" in (sub / "srvsleep" / "results" / "keyval").read_text()
        keyval = read_keyval(str(sub / "srvsleep"))
        assert keyval["version"] == "2" and keyval["param-seconds"] == "1"
        assert keyval["param-host"] == repr_host(machine, testbed_loopback)


EXAMPLES = Path(__file__).resolve().parent.parent / "control_examples"


@pytest.mark.parametrize(
    ("example", "flags", "code", "subdirs"),
    [
        ("autotest_sleeptest.control", [], 0, ["sleeptest"]),
        ("autotest_failtest.control", [], 1, ["failtest", "sleeptest"]),
        ("autotest_client.control", ["-c"], 0,
         ["sleeptest.before_reboot", "sleeptest.after_reboot"]),
    ],
)
def test_control_examples(testbed_loopback: Testbed, tmp_path: Path, example: str,
                          flags: list[str], code: int, subdirs: list[str]) -> None:
    results = tmp_path / "r"
    proc = run_autoserv(*flags, EXAMPLES / example, "-r", results, *bed_args(testbed_loopback),
                        cwd=tmp_path)
    assert proc.returncode == code, proc.stderr
    for machine in testbed_loopback.machines:
        for sub in subdirs:
            assert (results / machine / sub / "keyval").exists(), (machine, sub)


@pytest.mark.parametrize(
    ("client_control", "message", "outer_status"),
    [
        ("job.run_test('sleeptest', seconds=0)\nimport os, signal\nos.killpg(0, signal.SIGKILL)\n",
         "client terminated unexpectedly", "END ABORT"),  # recorded by the server
        ("job.run_test('sleeptest', seconds=0)\nraise RuntimeError('control gave up')\n",
         "the client control file failed", "END FAIL"),  # recorded by the client
    ],
    ids=["killed", "raised"],
)
def test_client_that_dies_or_raises(testbed_loopback: Testbed, tmp_path: Path,
                                    client_control: str, message: str,
                                    outer_status: str) -> None:
    control = write(tmp_path / "client.control", client_control)
    results = tmp_path / "r"
    proc = run_autoserv("-c", control, "-r", results, *bed_args(testbed_loopback, 1),
                        cwd=tmp_path)
    assert proc.returncode == 1
    lines = stderr_lines(proc)
    assert len(lines) == 1 and message in lines[0], proc.stderr
    got = status.parse_file(str(results / "status.log"))
    assert ("GOOD", "sleeptest") in [(e.status_code, e.operation) for e in got]
    outer = [e for e in got if e.is_end and e.operation is None]
    assert len(outer) == 1 and outer[0].status_code == outer_status, got
    if message == "client terminated unexpectedly":
        assert outer[0].message.startswith("client terminated unexpectedly"), outer[0].message
    assert (results / "sleeptest" / "keyval").exists()  # collected all the same


def test_install_once_per_version_and_background_run(testbed_loopback: Testbed, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    autodir = str(tmp_path / "autodir")
    tb = testbed_loopback
    caplog.set_level("DEBUG", logger="autoserv.autotest")
    with hosts.SSHHost(tb.machines[0], ssh_config=str(tb.ssh_config)) as h:
        autotest_remote.Autotest(h).install(autodir=autodir)
    with hosts.SSHHost(tb.machines[0], ssh_config=str(tb.ssh_config)) as h:  # a new connection
        at = autotest_remote.Autotest(h)
        assert at.install(autodir=autodir) == autodir
        run = at.run("job.run_test('sleeptest', seconds=1)", str(tmp_path / "res"), background=True)
        assert not isinstance(run, bool)
        assert run.wait() is True
    installs = [r for r in caplog.records if "installing the client runtime" in r.getMessage()]
    assert len(installs) == 1
    assert any("already in" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "res" / "sleeptest" / "keyval").exists()


def test_python2_server_control_in_the_samples_shape(testbed_loopback: Testbed,
                                                     tmp_path: Path) -> None:
    """A 2008-style file: ``autotest`` module, getopt on args, positional results_dir/host."""
    control = write(tmp_path / "run_test.srv", """\
        import getopt

        def run(client):
            m = hosts.create_host(client)
            at = autotest.Autotest()
            at.run_test(test, os.path.join(logdir, client), m)

        opts, rest = getopt.getopt(args, 't:l:', [])
        for flag, value in opts:
            if flag == '-t':
                test = value
            elif flag == '-l':
                logdir = value
        print "running %s on %r into %s" % (test, machines, logdir)
        job.parallel_simple(run, machines)
    """)
    logdir = tmp_path / "logs"
    proc = run_autoserv(control, "-r", tmp_path / "r", *bed_args(testbed_loopback, 2),
                        "-a", f"-t sleeptest -l {logdir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for machine in testbed_loopback.machines[:2]:
        assert (logdir / machine / "sleeptest" / "keyval").exists()
        got = entries(tmp_path / "r" / machine / "status.log")
        assert (2, "GOOD", "sleeptest", "sleeptest") in got


def test_client_status_nests_under_server_groups(testbed_loopback: Testbed,
                                                 tmp_path: Path) -> None:
    control = write(tmp_path / "nest.control", """\
        h = hosts.create_host(machines[0])
        def body():
            autotest_remote.Autotest(h).run_test('sleeptest', seconds=0)
        job.run_group(body, tag='outer')
    """)
    results = tmp_path / "r"
    proc = run_autoserv(control, "-r", results, *bed_args(testbed_loopback, 1), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert entries(results / "status.log") == [
        (0, "START", None, "outer"),
        (1, "START", None, None),
        (2, "START", "sleeptest", "sleeptest"),
        (3, "GOOD", "sleeptest", "sleeptest"),
        (2, "END GOOD", "sleeptest", "sleeptest"),
        (1, "END GOOD", None, None),
        (0, "END GOOD", None, "outer"),
    ]
    client_lines = (results / "debug" / "client.0.log").read_text()
    assert "sleeptest" in client_lines
