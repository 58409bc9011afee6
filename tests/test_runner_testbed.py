"""The autoserv CLI against real test bed hosts (sshd on loopback and in network namespaces).

Every test runs ``python -m autoserv`` as a subprocess, then reads status.log and keyval
with the parsers users have (autoserv.status, autoserv.job.read_keyval).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from autoserv import hosts, status
from autoserv.job import read_keyval
from autoserv.lab.testbed import Testbed
from tests.cli_helpers import (
    REPO,
    autoserv_argv,
    bed_args,
    cli_env,
    remote_processes,
    run_autoserv,
    stderr_lines,
    wait_for,
    write,
)

EXAMPLES = REPO / "control_examples"
pytestmark = pytest.mark.slow


def test_uname_on_every_machine(testbed: Testbed, tmp_path: Path) -> None:
    results = tmp_path / "r"
    proc = run_autoserv(
        EXAMPLES / "uname.control", "-r", results, "-l", "uname-label", *bed_args(testbed), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    keyval = read_keyval(str(results))
    assert keyval["hostname"] == ",".join(testbed.machines)
    assert keyval["label"] == "uname-label" and keyval["status_version"] == "1"
    assert {"job_started", "job_finished", "user"} <= set(keyval)
    assert status.parse_file(str(results / "status.log")) == []
    for machine in testbed.machines:
        sub = results / machine
        assert read_keyval(str(sub))["hostname"] == machine
        entries = status.parse_file(str(sub / "status.log"))
        assert [(e.status_code, e.operation) for e in entries] == [("GOOD", "uname")]
        assert entries[0].message.startswith("Linux ")
        assert (sub / "debug" / "autoserv.DEBUG").exists()
        prefixed = [line for line in proc.stdout.splitlines() if line.startswith(f"{machine} : ")]
        assert any("GOOD\t----\tuname" in line for line in prefixed), proc.stdout


@pytest.mark.parametrize("example", ["file_transfer", "legacy_py2", "error_handling", "reboot"])
def test_examples_run(testbed: Testbed, tmp_path: Path, example: str) -> None:
    results = tmp_path / "r"
    proc = run_autoserv(EXAMPLES / f"{example}.control", "-r", results, *bed_args(testbed), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert proc.stderr == ""
    all_entries = []
    for log in results.rglob("status.log"):
        all_entries += status.parse_file(str(log))
    assert not [e for e in all_entries if status.is_failure(e.status_code)]
    if example == "reboot":
        for machine in testbed.machines:
            ops = [
                (e.status_code, e.operation) for e in status.parse_file(str(results / machine / "status.log"))
            ]
            assert ops == [
                ("GOOD", "manual_reboot"),
                ("START", "reboot"),
                ("GOOD", "reboot.start"),
                ("GOOD", "reboot.verify"),
                ("END GOOD", "reboot"),
            ]
    if example == "legacy_py2":
        assert "translated" in proc.stdout and "octal 0755 is 493" in proc.stdout


@pytest.mark.probe_input
def test_unreachable_machine(testbed: Testbed, tmp_path: Path) -> None:
    ctl = write(
        tmp_path / "c.control",
        """\
        def check(machine):
            hosts.create_host(machine).run("true")
            job.record("GOOD", None, "reach")
        parallel_simple(check, machines)
        """,
    )
    results = tmp_path / "r"
    proc = run_autoserv(
        ctl,
        "-r",
        results,
        "-m",
        f"{testbed.machines[0]},127.0.0.1:1",
        "--ssh-config",
        testbed.ssh_config,
        "--connect-timeout",
        "5",
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    lines = stderr_lines(proc)
    assert len(lines) == 1, lines
    assert (
        f"{ctl}:4: SubcommandsFailed: One or more subcommands failed: "
        "127.0.0.1:1: AutoservSSHTimeout" in lines[0]
    )
    good = status.parse_file(str(results / testbed.machines[0] / "status.log"))
    assert [e.status_code for e in good] == ["GOOD"]
    bad = status.parse_file(str(results / "127.0.0.1:1" / "status.log"))
    assert [e.status_code for e in bad] == ["ERROR"]
    assert bad[0].message.startswith("AutoservSSHTimeout")


def test_ssh_flags_without_ssh_config(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    ctl = write(
        tmp_path / "c.control",
        """\
        for m in machines:
            print(m, hosts.create_host(m).run("whoami").stdout.strip())
        """,
    )
    machines = ",".join(h.machine for h in tb.hosts)
    proc = run_autoserv(
        ctl,
        "-r",
        tmp_path / "r",
        "-m",
        machines,
        "--ssh-user",
        "root",
        "--ssh-key",
        tb.client_key,
        "--known-hosts",
        tb.known_hosts,
        "--host-key-policy",
        "strict",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(" root\n") == 3
    # strict policy with a known_hosts that does not know the hosts: refused
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    proc = run_autoserv(
        ctl,
        "-r",
        tmp_path / "r2",
        "-m",
        tb.hosts[0].machine,
        "--ssh-key",
        tb.client_key,
        "--known-hosts",
        empty,
        "--host-key-policy",
        "strict",
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert len(stderr_lines(proc)) == 1 and "AutoservHostKeyError" in proc.stderr


def test_password_from_environment_never_written(testbed_loopback: Testbed, tmp_path: Path) -> None:
    from tests.conftest import TEST_PASSWORD

    tb = testbed_loopback
    th = tb.hosts[0]
    ctl = write(
        tmp_path / "c.control",
        """\
        h = hosts.create_host(machines[0])
        print("user is", h.run("whoami").stdout.strip(), "password", ssh_pass)
        """,
    )
    results = tmp_path / "r"
    proc = run_autoserv(
        ctl,
        "-r",
        results,
        "-m",
        f"root@{th.machine}",
        "--known-hosts",
        tb.known_hosts,
        cwd=tmp_path,
        AUTOSERV_SSH_PASS=TEST_PASSWORD,
    )
    assert proc.returncode == 0, proc.stderr
    assert "user is root password ***" in proc.stdout
    text = proc.stdout + proc.stderr
    text += "".join(p.read_text() for p in results.rglob("*") if p.is_file())
    assert TEST_PASSWORD not in text


@pytest.mark.probe_fault
def test_sigterm_mid_run(testbed: Testbed, tmp_path: Path) -> None:
    """SIGTERM while every host runs a long command: all stopped, all closed, logs complete."""
    ctl = write(
        tmp_path / "long.control",
        """\
        def work(machine):
            host = hosts.create_host(machine)
            tmp = host.get_tmp_dir()
            with open("remote_tmp", "w") as f:
                f.write(tmp)
            def body():
                try:
                    host.run("sleep %d" % (4700 + machines.index(machine)))
                except Exception:
                    logging.info("swallowed the abort")
            job.run_group(body, tag="long_command")
        job.record("START", None, "all_machines")
        parallel_simple(work, machines)
        """,
    )
    results = tmp_path / "r"
    sleeps = [f"sleep {4700 + i}" for i in range(len(testbed.machines))]
    proc = subprocess.Popen(
        autoserv_argv(ctl, "-r", results, *bed_args(testbed)),
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def all_running() -> bool:
            running = remote_processes(testbed, "sleep 47")
            return all(any(s in line for line in running) for s in sleeps)

        wait_for(all_running, "the remote commands to start", proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    assert err.strip() == "autoserv: job aborted: received SIGTERM"
    assert "swallowed" not in out
    assert remote_processes(testbed, "sleep 47") == []
    top = status.parse_file(str(results / "status.log"))
    assert [(e.status_code, e.operation) for e in top] == [
        ("START", "all_machines"),
        ("END ABORT", "all_machines"),
        ("INFO", None),
    ]
    assert top[2].fields["job_abort_reason"] == "received SIGTERM"
    for machine in testbed.machines:
        sub = results / machine
        entries = status.parse_file(str(sub / "status.log"))
        assert [(e.status_code, e.operation) for e in entries] == [
            ("START", "long_command"),
            ("END ABORT", "long_command"),
            ("INFO", None),
        ], machine
        assert entries[2].fields["job_abort_reason"] == "received SIGTERM"
        remote_tmp = (sub / "remote_tmp").read_text()
        with hosts.SSHHost(machine, ssh_config=str(testbed.ssh_config)) as h:
            assert h.run(f"test -e {remote_tmp}", ignore_status=True).exit_status == 1
    assert "job_finished" in read_keyval(str(results))


def test_parallel_timeout_ends_remote_stragglers(testbed: Testbed, tmp_path: Path) -> None:
    ctl = write(
        tmp_path / "t.control",
        """\
        def work(machine):
            host = hosts.create_host(machine)
            if machine != machines[0]:
                host.run("sleep 4790")
            job.record("GOOD", None, "quick")
        parallel_simple(work, machines, timeout=5)
        """,
    )
    results = tmp_path / "r"
    proc = run_autoserv(ctl, "-r", results, *bed_args(testbed), cwd=tmp_path)
    assert proc.returncode == 1
    lines = stderr_lines(proc)
    assert len(lines) == 1
    for machine in testbed.machines[1:]:
        assert f"{machine}: AutoservSubcommandError: Subcommand {machine} failed" in lines[0]
        entries = status.parse_file(str(results / machine / "status.log"))
        assert entries[-1].fields["job_abort_reason"] == "parallel timeout of 5 s expired"
    assert "timed out after 5 s and was terminated" in lines[0]
    first = status.parse_file(str(results / testbed.machines[0] / "status.log"))
    assert [e.status_code for e in first] == ["GOOD"]
    assert remote_processes(testbed, "sleep 4790") == []
