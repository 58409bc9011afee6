"""Verify, repair, install hooks: pure parts from tables, then the CLI against real test bed hosts.

A full disk is a small tmpfs mounted over /tmp inside one test bed host's own mount namespace
(the host's sessions see it, nothing else does); /var/tmp gets an empty tmpfs there too, so that
nothing a test fills or repairs is outside that host.  A host shutting down is the test bed's
``stopping`` marker, which its runlevel / systemctl stubs report.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoserv import cli, crashinfo, hosts, lifecycle, status
from autoserv.errors import AutoservUsageError
from autoserv.lab.testbed import Testbed
from autoserv.lifecycle import Problem
from tests.cli_helpers import run_autoserv

# -- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("runlevel", "state", "reason"),
    [
        ("N 5", "running", None),
        ("5 6", "", "runlevel 6 (rebooting)"),
        ("3 0", "running", "runlevel 0 (halting)"),
        ("", "stopping", "systemd is stopping (is-system-running: stopping)"),
        ("unknown", "degraded", None),
        ("", "", None),
    ],
)
def test_shutdown_reason(runlevel: str, state: str, reason: str | None) -> None:
    assert lifecycle.shutdown_reason(runlevel, state) == reason


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("Filesystem 1024-blocks Used Available Capacity Mounted on\n"
         "/dev/vda 264212084 25334784 81056128 24% /\n", ("/", 81056128)),
        ("Filesystem 1024-blocks Used Available Capacity Mounted on\n"
         "tmpfs 4096 4096 0 100% /mnt/my disk\n", ("/mnt/my disk", 0)),
        ("df: /x: No such file or directory\n", None),
        ("", None),
    ],
)
def test_parse_df(text: str, parsed: tuple[str, int] | None) -> None:
    assert lifecycle.parse_df(text) == parsed


def test_verify_script_and_output() -> None:
    script = lifecycle.verify_script(["/tmp", "/a b"])
    assert "df -Pk -- '/a b'" in script and "[ -e /tmp ]" in script
    out = ("@@ runlevel\nN 5\n@@ state\nrunning\n@@ df /tmp\nFilesystem x\n"
           "tmpfs 4096 4096 0 100% /tmp\n")
    runlevel, state, df = lifecycle.parse_verify_output(out)
    assert (runlevel, state) == ("N 5", "running")
    assert list(df) == ["/tmp"]
    problem = lifecycle.disk_problem(df, 1.0)
    assert problem == Problem(
        "disk", "/tmp has 0.000 GB free (on /tmp), needs 1 GB (--min-disk-gb)", ("/tmp",))
    assert lifecycle.disk_problem(df, 0) is None


def test_tmp_cleanup_script() -> None:
    script = lifecycle.tmp_cleanup_script(["/tmp"], 1700000000)
    assert "find /tmp -xdev -mindepth 1 -depth ! -newermt @1700000000 -delete -print" in script


@pytest.mark.parametrize(
    ("text", "level"),
    [("NO_PROTECTION", "NO_PROTECTION"), ("filesystem-only", "FILESYSTEM_ONLY"),
     ("do_not_repair", "DO_NOT_REPAIR")],
)
def test_protection_levels(text: str, level: str) -> None:
    assert lifecycle.valid_protection(text) == level


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-v", "ctl"], "-v runs no control file: give none"),
        (["-m", "h"], "a control file is needed (or -v, -R, --collect-crashinfo)"),
        (["-v"], "-v, -R and --collect-crashinfo need machines (-m or -M)"),
        (["-i", "ctl", "-m", "h"], "-i needs an install hook: define install(host) in a hook file "
                                   "and pass --hooks FILE (or set AUTOSERV_HOOKS)"),
        (["-R", "--host-protection", "bogus", "-m", "h"], "argument --host-protection"),
        (["--collect-crashinfo", "-N", "-m", "h"], "--collect-crashinfo needs a results directory"),
        (["--cleanup=sideways", "ctl", "-m", "h"], "invalid choice: 'sideways'"),
        (["-v", "-m", "h", "--hooks", "/nonexistent/hooks.py"], "--hooks: no such file"),
    ],
)
def test_usage_errors(argv: list[str], message: str, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ctl").write_text("pass\n")
    monkeypatch.delenv("AUTOSERV_HOOKS", raising=False)
    with pytest.raises(AutoservUsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cli.parse_args(argv)


def test_cleanup_flag_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ctl").write_text("pass\n")
    assert cli.parse_args(["-C", "ctl", "-m", "h"]).plan.cleanup == "safe"
    assert cli.parse_args(["--cleanup", "ctl", "-m", "h"]).plan.cleanup == "safe"
    assert cli.parse_args(["ctl", "--cleanup=reboot", "-m", "h"]).plan.cleanup == "reboot"
    assert cli.parse_args(["ctl", "-m", "h"]).plan.cleanup is None


def test_hook_file_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "hooks.py"
    bad.write_text("def verify(host):\n    pass\nraise RuntimeError('no PDU here')\n")
    with pytest.raises(AutoservUsageError, match=rf"--hooks {bad}:3: RuntimeError: no PDU here"):
        cli.parse_args(["-v", "-m", "h", "--hooks", str(bad)])
    bad.write_text("install = 3\n")
    with pytest.raises(AutoservUsageError, match="install is not a function"):
        cli.parse_args(["-v", "-m", "h", "--hooks", str(bad)])


# -- against test bed hosts -------------------------------------------------------------------

pytestmark_slow = pytest.mark.slow


def bed(tb: Testbed, machines: list[str] | None = None) -> list[str]:
    return ["-m", ",".join(machines or tb.machines), "--ssh-config", str(tb.ssh_config)]


def on_host(tb: Testbed, machine: str, command: str) -> str:
    with hosts.SSHHost(machine, ssh_config=str(tb.ssh_config)) as h:
        return h.run(command, timeout=60, stdout_tee=None).stdout


@contextlib.contextmanager
def full_tmp(tb: Testbed, machine: str, size: str = "2m") -> Iterator[None]:
    """A full tmpfs over /tmp (and an empty one over /var/tmp) in ``machine``'s mount namespace.

    The test bed's own directory (under /tmp when pytest made it) is bound back into the
    tmpfs so the host's sshd still finds its keys; the real /tmp stays reachable through a
    bind mount in the host's private state dir.  The filler is an hour old (older than any
    job); ``/tmp/new`` is dated an hour ahead (newer than the job: repair must keep it);
    ``/var/tmp/old`` is old but on a mount with space (repair must keep it too).
    """
    real = "/var/lib/autoserv/.realtmp"  # the host's own state dir (testbed.REMOTE_STATE_DIR)
    steps = [f"mkdir -p {real}", f"mount --bind /tmp {real}",
             f"mount -t tmpfs -o size={size} autoserv-test-full /tmp"]
    tbdir = str(tb.dir.resolve())
    if tbdir.startswith("/tmp/"):
        steps += [f"mkdir -p {shlex.quote(tbdir)}",
                  f"mount --bind {shlex.quote(real + tbdir[4:])} {shlex.quote(tbdir)}"]
    steps += [
        "mount -t tmpfs -o size=1m autoserv-test-vartmp /var/tmp",
        "echo keep > /var/tmp/old", "touch -d '-1 hour' /var/tmp/old",
        "echo new > /tmp/new", "touch -d '+1 hour' /tmp/new",
        "mkdir /tmp/olddir", "(dd if=/dev/zero of=/tmp/olddir/fill bs=64k 2>/dev/null; true)",
        "touch -d '-1 hour' /tmp/olddir/fill /tmp/olddir",
    ]
    on_host(tb, machine, " && ".join(steps))
    try:
        yield
    finally:
        on_host(tb, machine, f"umount -l /tmp; umount -l /var/tmp; umount -l {real}; "
                f"rmdir {real}; true")


def entries(path: Path) -> list[tuple[str, str, str]]:
    return [(e.status_code, e.operation or "", e.message)
            for e in status.parse_file(str(path))]


@pytest.mark.slow
def test_verify_healthy_hosts(testbed: Testbed, tmp_path: Path) -> None:
    results = tmp_path / "r"
    start = time.monotonic()
    proc = run_autoserv("-v", "-r", results, *bed(testbed), cwd=tmp_path)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    top = entries(results / "status.log")
    assert [(c, o) for c, o, _ in top] == [("START", "verify"), ("END GOOD", "verify")]
    for machine in testbed.machines:
        assert entries(results / machine / "status.log") == [
            ("GOOD", "verify", f"{machine} verified")]
    assert not (results / "control.srv").exists()
    assert took < 30, took


@pytest.mark.slow
def test_verify_full_disk(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    full = tb.machines[1]
    with full_tmp(tb, full):
        proc = run_autoserv("-v", "-r", tmp_path / "r", *bed(tb), "--min-disk-gb", "0.5",
                            cwd=tmp_path)
    assert proc.returncode == 1
    assert f"{full}: 1 failure(s)" in proc.stderr
    (entry,) = entries(tmp_path / "r" / full / "status.log")
    assert entry[:2] == ("FAIL", "verify")
    assert entry[2] == (f"{full} failed verify: disk: /tmp has 0.000 GB free (on /tmp), "
                        "needs 0.5 GB (--min-disk-gb)")
    for machine in (tb.machines[0], tb.machines[2]):
        assert entries(tmp_path / "r" / machine / "status.log")[0][:2] == ("GOOD", "verify")
    top = entries(tmp_path / "r" / "status.log")
    assert top[-1][:2] == ("END FAIL", "verify") and full in top[-1][2]


@pytest.mark.slow
def test_verify_shutting_down(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    name = tb.machines[2]
    tb.set_stopping(name)
    try:
        proc = run_autoserv("-v", "-r", tmp_path / "r", *bed(tb, [name]), cwd=tmp_path)
    finally:
        tb.set_stopping(name, False)
    assert proc.returncode == 1
    top = entries(tmp_path / "r" / "status.log")  # one machine: recorded in the job's own log
    assert [(c, o) for c, o, _ in top] == [("START", "verify"), ("FAIL", "verify"),
                                           ("END FAIL", "verify")]
    assert top[1][2] == f"{name} failed verify: shutdown: shutting down: runlevel 0 (halting)"


@pytest.mark.slow
def test_verify_auth_refused(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    machine = tb.hosts[0].machine  # 127.0.0.1:PORT, not the ssh config's entry (and its key)
    proc = run_autoserv("-v", "-r", tmp_path / "r", "-m", machine, "--ssh-key", key,
                        "--known-hosts", tb.known_hosts, "--host-key-policy", "strict",
                        cwd=tmp_path)
    assert proc.returncode == 1
    top = entries(tmp_path / "r" / "status.log")
    assert top[1][:2] == ("FAIL", "verify")
    assert top[1][2].startswith("127.0.0.1 failed verify: auth: permission denied for root@")
    assert f"(tried key {key})" in top[1][2]


@pytest.mark.slow
def test_verify_unreachable(tmp_path: Path) -> None:
    proc = run_autoserv("-v", "-r", tmp_path / "r", "-m", "127.0.0.1:1", "--connect-timeout", "3",
                        cwd=tmp_path)
    assert proc.returncode == 1
    top = entries(tmp_path / "r" / "status.log")
    assert top[1] == ("FAIL", "verify", "127.0.0.1 failed verify: ssh: unreachable: "
                      "cannot connect to 127.0.0.1:1: connection refused")


HOOKS = """\
import os
def verify(host):
    if host.run("hostname").stdout.strip() == os.environ["BAD_HOST"]:
        raise RuntimeError("lab check: fan failure on " + host.hostname)
"""


@pytest.mark.slow
def test_verify_hook(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    hook_file = tmp_path / "hooks.py"
    hook_file.write_text(HOOKS)
    bad = tb.machines[0]
    proc = run_autoserv("-v", "-r", tmp_path / "r", *bed(tb), cwd=tmp_path,
                        AUTOSERV_HOOKS=str(hook_file), BAD_HOST=bad)
    assert proc.returncode == 1
    (entry,) = entries(tmp_path / "r" / bad / "status.log")
    assert entry == ("FAIL", "verify", f"{bad} failed verify: hook: verify hook ({hook_file}): "
                     f"RuntimeError: lab check: fan failure on {bad}")
    for machine in tb.machines[1:]:
        assert entries(tmp_path / "r" / machine / "status.log")[0][:2] == ("GOOD", "verify")


def test_control_file_lifecycle_calls(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    ctl = tmp_path / "c.control"
    ctl.write_text(textwrap.dedent("""\
        h = hosts.create_host(machines[0])
        h.verify()
        try:
            h.hardreset()
        except AutoservUnsupportedError as e:
            job.record("GOOD", None, "hardreset", str(e))
        """))
    proc = run_autoserv(ctl, "-r", tmp_path / "r", *bed(tb, tb.machines[:1]), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (entry,) = entries(tmp_path / "r" / "status.log")
    assert entry[2] == ("a hard reset needs the hook hardreset(host): define it in a hook file "
                        "and pass --hooks FILE (or set AUTOSERV_HOOKS)")


# -- hooks: install, hardreset ------------------------------------------------------------------

INSTALL_HOOKS = """\
import os
def install(host):
    name = host.run("hostname").stdout.strip()
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(f"install {host.hostname} {name} {os.getcwd()}\\n")
    if name == os.environ.get("FAIL_INSTALL"):
        raise RuntimeError("installer: no image for " + name)
"""

JOB = """\
def work(machine):
    job.record("GOOD", None, "job", "ran on " + machine)
parallel_simple(work, machines)
"""


def ops(path: Path) -> list[tuple[str, str]]:
    return [(c, o) for c, o, _ in entries(path)]


@pytest.mark.slow
def test_install_before_and_after(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    (tmp_path / "hooks.py").write_text(INSTALL_HOOKS)
    (tmp_path / "job.control").write_text(JOB)
    log = tmp_path / "hook.log"
    results = tmp_path / "r"
    proc = run_autoserv("-i", "-I", "-C", tmp_path / "job.control", "-r", results, *bed(tb),
                        "--hooks", tmp_path / "hooks.py", cwd=tmp_path, HOOK_LOG=str(log))
    assert proc.returncode == 0, proc.stderr
    assert ops(results / "status.log") == [
        ("START", "install"), ("END GOOD", "install"),
        ("START", "install_after"), ("END GOOD", "install_after"),
        ("START", "cleanup"), ("END GOOD", "cleanup")]
    for machine in tb.machines:
        assert entries(results / machine / "status.log") == [
            ("GOOD", "install", f"{machine} installed"), ("GOOD", "job", f"ran on {machine}"),
            ("GOOD", "install_after", f"{machine} installed"),
            ("GOOD", "cleanup", f"{machine} cleaned up: killed 0 process(es), "
             "removed 0 temp dir(s)")]
    calls = sorted(log.read_text().splitlines())
    # each hook ran with its own host (its hostname is its machine name), in its results dir
    assert calls == sorted(f"install {m} {m} {results / m}" for m in tb.machines for _ in "12")


@pytest.mark.slow
def test_install_failure_stops_the_job(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    (tmp_path / "hooks.py").write_text(INSTALL_HOOKS)
    (tmp_path / "job.control").write_text(JOB)
    bad = tb.machines[1]
    results = tmp_path / "r"
    proc = run_autoserv("-i", "-I", tmp_path / "job.control", "-r", results, *bed(tb), cwd=tmp_path,
                        AUTOSERV_HOOKS=str(tmp_path / "hooks.py"), HOOK_LOG=str(tmp_path / "log"),
                        FAIL_INSTALL=bad)
    assert proc.returncode == 1
    assert entries(results / bad / "status.log") == [
        ("FAIL", "install", f"RuntimeError: installer: no image for {bad}")]
    top = entries(results / "status.log")
    assert [(c, o) for c, o, _ in top] == [("START", "install"), ("END FAIL", "install")]
    assert top[-1][2] == f"{bad}: RuntimeError: installer: no image for {bad}"
    for machine in tb.machines:  # the job never ran
        assert ("GOOD", "job") not in ops(results / machine / "status.log")


@pytest.mark.slow
def test_hardreset_hook(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    hooks_file = tmp_path / "hooks.py"
    hooks_file.write_text(textwrap.dedent("""\
        import os
        def hardreset(host):
            with open(os.environ["HOOK_LOG"], "a") as f:
                f.write(host.hostname + "\\n")
            if host.hostname == os.environ["BROKEN_PDU"]:
                raise RuntimeError("PDU outlet 7 does not answer")
            host.run("( sleep 1; reboot ) </dev/null >/dev/null 2>&1 &")  # the test bed's power
        """))
    ctl = tmp_path / "reset.control"
    ctl.write_text(textwrap.dedent("""\
        def reset(machine):
            host = hosts.create_host(machine)
            old = host.get_boot_id()
            host.hardreset(timeout=120)
            assert host.get_boot_id() != old, "same boot id"
            job.record("GOOD", None, "hardreset", machine)
        parallel_simple(reset, machines)
        """))
    log = tmp_path / "hook.log"
    broken = tb.machines[2]
    proc = run_autoserv(ctl, "-r", tmp_path / "r", *bed(tb), "--hooks", hooks_file, cwd=tmp_path,
                        HOOK_LOG=str(log), BROKEN_PDU=broken)
    assert proc.returncode == 1
    assert sorted(log.read_text().split()) == sorted(tb.machines)
    for machine in tb.machines[:2]:
        assert entries(tmp_path / "r" / machine / "status.log") == [("GOOD", "hardreset", machine)]
    (entry,) = entries(tmp_path / "r" / broken / "status.log")
    assert entry[0] == "ERROR" and "RuntimeError: PDU outlet 7 does not answer" in entry[2]


@pytest.mark.slow
def test_lifecycle_example(testbed_loopback: Testbed, tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parent.parent / "control_examples"
    proc = run_autoserv(examples / "lifecycle.control", "-r", tmp_path / "r",
                        *bed(testbed_loopback), "--hooks", examples / "lab_hooks.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for machine in testbed_loopback.machines:
        assert entries(tmp_path / "r" / machine / "status.log") == [
            ("GOOD", "verify", f"{machine} is fit")]


# -- repair ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_repair_empties_a_full_disk(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    full = tb.machines[1]
    results = tmp_path / "r"
    with full_tmp(tb, full):
        proc = run_autoserv("-R", "-r", results, *bed(tb), "--min-disk-gb", "0.001", cwd=tmp_path)
        left = on_host(tb, full, "ls -A /tmp /var/tmp; df -Pk /tmp | tail -1")
    assert proc.returncode == 0, proc.stderr
    log = entries(results / full / "status.log")
    assert log[0][:2] == ("GOOD", "repair")
    assert log[0][2] == (
        f"{full} repaired: empty /tmp and /var/tmp of files older than the job on the full mount "
        "(/tmp: 2 entries): verified")
    assert log[1] == ("GOOD", "verify", f"{full} verified")
    # the old filler went; the file newer than the job, and /var/tmp (not full), stayed
    assert "olddir" not in left and "new" in left and "old" in left.split("/var/tmp:")[1]
    for machine in (tb.machines[0], tb.machines[2]):
        assert entries(results / machine / "status.log") == [
            ("GOOD", "repair", f"{machine} needed no repair"),
            ("GOOD", "verify", f"{machine} verified")]
    assert ops(results / "status.log") == [("START", "repair"), ("END GOOD", "repair"),
                                           ("START", "verify"), ("END GOOD", "verify")]
    (results / "status.log").read_text()  # shown in the report


@pytest.mark.slow
def test_repair_fails_listing_every_step(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    full = tb.machines[0]
    results = tmp_path / "r"
    with full_tmp(tb, full):
        # everything on the full disk is newer than the job: nothing may be deleted
        on_host(tb, full, "touch -d '+1 hour' /tmp/olddir/fill /tmp/olddir")
        proc = run_autoserv("-R", "-r", results, *bed(tb, [full]), "--min-disk-gb", "0.001",
                            "--host-protection", "filesystem_only", cwd=tmp_path)
        left = on_host(tb, full, "ls -A /tmp")
    assert proc.returncode == 1
    assert "olddir" in left
    top = entries(results / "status.log")
    assert [(c, o) for c, o, _ in top] == [
        ("START", "repair"),
        ("START", "reboot"), ("GOOD", "reboot.start"), ("GOOD", "reboot.verify"),
        ("END GOOD", "reboot"),  # the reboot step, as host.reboot() records it
        ("FAIL", "repair"), ("END FAIL", "repair")]
    top = [e for e in top if e[1] == "repair"]
    disk = "disk: /tmp has 0.000 GB free (on /tmp), needs 0.001 GB (--min-disk-gb)"
    assert top[1][2] == (
        f"{full} could not be repaired: {disk} (tried: empty /tmp and /var/tmp of files older "
        f"than the job on the full mount (/tmp: 0 entries): still {disk}; reboot: still {disk})")
    reboot_ops = [o for _, o, _ in entries(results / "status.log")]
    assert "verify" not in reboot_ops  # verify does not run after a failed repair


@pytest.mark.slow
def test_repair_do_not_repair(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    name = tb.machines[2]
    tb.set_stopping(name)
    try:
        proc = run_autoserv("-R", "-r", tmp_path / "r", *bed(tb, [name]),
                            "--host-protection", "DO_NOT_REPAIR", cwd=tmp_path)
    finally:
        tb.set_stopping(name, False)
    assert proc.returncode == 1
    assert entries(tmp_path / "r" / "status.log")[1] == (
        "FAIL", "repair", f"{name} could not be repaired: shutdown: shutting down: runlevel 0 "
        "(halting) (tried: none (--host-protection DO_NOT_REPAIR))")


@pytest.mark.slow
def test_repair_waits_for_a_host_shutting_down(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    name = tb.machines[2]
    tb.set_stopping(name)
    timer = threading.Timer(2.0, tb.set_stopping, (name, False))
    timer.start()
    try:
        start = time.monotonic()
        proc = run_autoserv("-R", "-r", tmp_path / "r", *bed(tb, [name]), cwd=tmp_path)
        took = time.monotonic() - start
    finally:
        timer.cancel()
        tb.set_stopping(name, False)
    assert proc.returncode == 0, proc.stderr
    assert entries(tmp_path / "r" / "status.log")[1] == (
        "GOOD", "repair", f"{name} repaired: wait up to 600 s for the host to finish shutting "
        "down or rebooting: verified")
    assert took < 30


REPAIR_HOOKS = """\
import os
def repair(host):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write("repair " + host.hostname + "\\n")
    raise RuntimeError("lab repair: no spare disk")
def hardreset(host):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write("hardreset " + host.hostname + "\\n")
    host.run("rm -f /tmp/olddir/fill")  # what a power cycle of this lab would do
    host.run("( sleep 1; reboot ) </dev/null >/dev/null 2>&1 &")
"""


@pytest.mark.slow
def test_repair_hooks(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    full = tb.machines[0]
    (tmp_path / "hooks.py").write_text(REPAIR_HOOKS)
    log = tmp_path / "hook.log"
    with full_tmp(tb, full):
        on_host(tb, full, "touch -d '+1 hour' /tmp/olddir/fill /tmp/olddir")
        proc = run_autoserv("-R", "-r", tmp_path / "r", *bed(tb, [full]), "--min-disk-gb", "0.001",
                            "--hooks", tmp_path / "hooks.py", cwd=tmp_path, HOOK_LOG=str(log))
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().split("\n")[:2] == [f"repair {full}", f"hardreset {full}"]
    (message,) = [m for c, o, m in entries(tmp_path / "r" / "status.log")
                  if (c, o) == ("GOOD", "repair")]
    assert message.startswith(f"{full} repaired: empty /tmp")
    assert "; reboot: still disk" in message
    assert "; repair hook failed (RuntimeError: lab repair: no spare disk): still disk" in message
    assert message.endswith("; hardreset hook: verified")


# -- cleanup --------------------------------------------------------------------------------------


def marked_processes(marker: str) -> dict[int, str]:
    """Processes on this machine (the test bed hosts share it) whose command line has ``marker``,
    with their AUTOSERV_JOB mark ('' if none)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if marker not in cmdline or "stat" in cmdline.split()[0]:
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        mark = next((e.decode() for e in env if e.startswith(b"AUTOSERV_JOB=")), "")
        found[int(entry.name)] = mark
    return found


CLEANUP_JOB = """\
import os, signal
secs = args[0]
def work(machine):
    host = hosts.create_host(machine)
    host.run("nohup sleep %s >/dev/null 2>&1 &" % secs)            # in the command's group
    host.run("setsid sleep %s.5 >/dev/null 2>&1 </dev/null &" % secs)  # a new session
    d = host.get_tmp_dir()
    host.run("echo x > %s/f" % d)
    job.record("GOOD", None, "work", d)
    os.kill(os.getpid(), signal.SIGKILL)  # a crashed worker: nothing of the above is undone
parallel_simple(work, machines)
"""


@pytest.mark.slow
def test_cleanup_leaves_nothing_of_the_job(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    secs = str(7000 + int(time.time()) % 1000)
    (tmp_path / "job.control").write_text(CLEANUP_JOB)
    bystander = subprocess.Popen(["sleep", f"{secs}.25"])  # not the job's: must survive
    results = tmp_path / "r"
    try:
        proc = run_autoserv(tmp_path / "job.control", "-C", "-r", results, *bed(tb), "-a", secs,
                            cwd=tmp_path)
        left = marked_processes(f"sleep {secs}")
        assert list(left) == [bystander.pid], left
    finally:
        bystander.kill()
        bystander.wait()
        for pid in marked_processes(f"sleep {secs}"):
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
    assert proc.returncode == 1  # the workers crashed
    tmp_dirs = []
    for machine in tb.machines:
        log = entries(results / machine / "status.log")
        assert log[0][:2] == ("GOOD", "work")
        tmp_dirs.append(log[0][2])
        assert log[-1] == ("GOOD", "cleanup",
                           f"{machine} cleaned up: killed 2 process(es), removed 1 temp dir(s)")
    assert all(not Path(d).exists() for d in tmp_dirs)  # the test bed shares this filesystem
    assert all(Path(d).name.startswith("autoserv-") for d in tmp_dirs)
    assert ops(results / "status.log")[-3:] == [
        ("START", "cleanup"), ("END GOOD", "cleanup"), ("ERROR", "")]


@pytest.mark.slow
def test_cleanup_reboot(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    machine = tb.machines[0]
    (tmp_path / "job.control").write_text(
        'job.record("GOOD", None, "boot", hosts.create_host(machines[0]).get_boot_id())\n')
    proc = run_autoserv(tmp_path / "job.control", "--cleanup=reboot", "-r", tmp_path / "r",
                        *bed(tb, [machine]), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    log = entries(tmp_path / "r" / "status.log")
    assert log[0][:2] == ("GOOD", "boot")
    assert ("GOOD", "cleanup", f"{machine} rebooted") in log
    assert ("END GOOD", "reboot") in [(c, o) for c, o, _ in log]
    assert on_host(tb, machine, "cat /proc/sys/kernel/random/boot_id").strip() != log[0][2]


def test_jobmark_names() -> None:
    from autoserv import jobmark
    from autoserv.hosts.ssh_exec import new_marker, wrap_command

    marker = new_marker()
    assert jobmark.current() is None and jobmark.export_command("h") == ""
    assert jobmark.tmp_prefix("h") == "autoserv-"
    assert wrap_command("true", marker, "h").startswith("AUTOSERV_RUN=")
    jobmark.start("abc123")
    try:
        assert jobmark.process_mark("h1") == "abc123@h1"
        assert jobmark.export_command("it's") == "export AUTOSERV_JOB='abc123@it'\"'\"'s'; "
        assert jobmark.tmp_prefix("h1").startswith("autoserv-abc123-")
        assert jobmark.tmp_prefix("h1") != jobmark.tmp_prefix("h2")
        assert wrap_command("true", marker, "h1").startswith("export AUTOSERV_JOB=abc123@h1; AUTOSERV_RUN=")
    finally:
        jobmark.stop()
    with pytest.raises(ValueError):
        jobmark.start("not hex; rm -rf /")


def test_kill_script_spares_its_own_session_and_others() -> None:
    """The kill script in a real local shell: it ends the marked processes only."""
    from autoserv import cleanup

    env = dict(os.environ, AUTOSERV_JOB="feed01@local")
    marked = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    other = subprocess.Popen(["sleep", "301"], env=dict(env, AUTOSERV_JOB="feed01@other"))
    try:
        # a session leader, as sshd makes the shell of every remote command
        out = subprocess.run(["sh", "-c", cleanup.kill_script("feed01@local")], env=env,
                             capture_output=True, text=True, timeout=30,
                             start_new_session=True).stdout
        assert out.split() == ["killed", "1"]
        assert marked.wait(5) == -15 and other.poll() is None
    finally:
        for p in (marked, other):
            p.kill()
            p.wait()


# -- crash collection --------------------------------------------------------------------------

FAILING_JOB = """\
secs = args[0]
def work(machine):
    host = hosts.create_host(machine)
    host.run("nohup sleep %s >/dev/null 2>&1 &" % secs)
    host.run("logger -t autoserv-test crash-marker-%s 2>/dev/null; true" % machine)
    raise TestFail("the test broke " + machine)
parallel_simple(work, machines)
"""


@pytest.mark.slow
def test_crashinfo_of_a_failed_job(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    secs = str(8000 + int(time.time()) % 1000)
    (tmp_path / "job.control").write_text(FAILING_JOB)
    (tmp_path / "hooks.py").write_text(textwrap.dedent("""\
        import os
        def collect_crashinfo(host, dest):
            with open(os.path.join(dest, "lab-notes"), "w") as f:
                f.write("lab notes of " + host.run("hostname").stdout)
        """))
    results = tmp_path / "r"
    try:
        start = time.monotonic()
        proc = run_autoserv(tmp_path / "job.control", "-r", results, *bed(tb), "-a", secs,
                            "--hooks", tmp_path / "hooks.py", cwd=tmp_path)
        took = time.monotonic() - start
    finally:
        for pid in marked_processes(f"sleep {secs}"):
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
    assert proc.returncode == 1
    assert took < 60, took
    for machine in tb.machines:
        info = results / machine / "crashinfo"
        names = sorted(p.name for p in info.iterdir())
        assert {"README", "dmesg", "messages", "uptime", "df", "ps", "journal",
                "lab-notes"} <= set(names), names
        assert "load average" in (info / "uptime").read_text()
        assert "Mounted on" in (info / "df").read_text()
        ps = (info / "ps").read_text()
        assert f"sleep {secs}" in ps, ps  # the job's leftover process, by its mark
        assert (info / "lab-notes").read_text() == f"lab notes of {machine}\n"
        readme = (info / "README").read_text()
        assert readme.startswith(f"Crash information collected by autoserv from {machine}: "
                                 "the job failed.")
        assert "at most 30 s and 1000000 bytes" in readme
        # a worker's status.log is the job's: crash collection adds nothing to it
        assert [o for _, o, _ in entries(results / machine / "status.log")] == [""]


@pytest.mark.parametrize(
    ("output", "since", "files"),
    [
        ("", None, {}),
        ("since 1764700000\nfile 12 340 /var/log/syslog\n", 1764700000,
         {"/var/log/syslog": (12, 340)}),
        ("file 7 0 /tmp/a log\nfile x 1 /bad\nnoise\nsince \nsince 12x\n", None,
         {"/tmp/a log": (7, 0)}),
    ],
)
def test_parse_marks(output: str, since: int | None, files: dict) -> None:
    assert crashinfo.parse_marks(output) == crashinfo.LogMarks(since, files)


@pytest.mark.parametrize(
    ("head", "text", "shell"),
    [
        (b"F\nsince 5\nF\n", "since 5\n", b""),
        (b"banner\nF\nsince 5\nF\nno newline ", "since 5\n", b"banner\nno newline "),
        (b"F\nF\n", "", b""),  # a host without marks: framed, nothing between
        (b"banner\n", None, b"banner\n"),  # no frame: all of it is the shell's
        (b"F\nsince 5\n", None, b"F\nsince 5\n"),  # cut after one frame
        (b"xF\nsince 5\nF\n", "since 5\n", b"x"),  # a banner without a final newline
    ],
)
def test_framed_parts_the_marks_from_what_the_login_shell_printed(
        head: bytes, text: str | None, shell: bytes) -> None:
    assert crashinfo.framed(head, "F") == (text, shell)


def test_commands_start_at_the_marks() -> None:
    marks = crashinfo.LogMarks(1764700123, {"/l/a": (5, 100)})
    cmds = crashinfo.commands(1000, None, marks, ["/l/a", "/l/b"])
    assert "journalctl --no-pager --since=@1764700123" in cmds["journal"]
    assert "tail -c +101 -- /l/a" in cmds["messages"]
    assert "tail -n 2000 -- /l/b" in cmds["messages"]  # no mark of this one: a tail
    unmarked = crashinfo.commands(1000, None, None, ["/l/a"])
    assert "--since=@1000" in unmarked["journal"] and "tail -c +" not in unmarked["messages"]
    assert "journal" not in crashinfo.commands(None, None)


def _sh(command: str) -> str:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout


def test_mark_and_read_from_it_in_a_real_shell(tmp_path: Path) -> None:
    """The builders run by sh on local files: marked, grown, replaced, grown past the bound."""
    log = tmp_path / "sys log"
    log.write_text("before 1\nbefore 2\n")
    before = int(time.time())
    marks = crashinfo.parse_marks(_sh(crashinfo.mark_command([str(log), str(tmp_path / "none")])))
    assert marks.files == {str(log): (log.stat().st_ino, len("before 1\nbefore 2\n"))}
    if any(os.path.isdir(d) for d in ("/run/log/journal", "/var/log/journal")):
        assert marks.since is not None and before <= marks.since <= time.time()
    else:
        assert marks.since is None
    with log.open("a") as f:
        f.write("after 1\n")
    out = _sh(crashinfo.commands(None, None, marks, [str(log)])["messages"])
    assert out == f"== {log} since the job started (from byte 18)\nafter 1\n"
    log.rename(tmp_path / "old")
    log.write_text("new file\n")
    out = _sh(crashinfo.commands(None, None, marks, [str(log)])["messages"])
    assert out.endswith("(rotated?): its end\nnew file\n"), out
    marks = crashinfo.parse_marks(_sh(crashinfo.mark_command([str(log)])))
    with log.open("a") as f:
        f.write("x" * (crashinfo.MAX_BYTES + 10))
    out = _sh(crashinfo.commands(None, None, marks, [str(log)])["messages"])
    assert len(out) <= crashinfo.MAX_BYTES and out.endswith("x" * 1000) and "new file" not in out


@pytest.mark.skipif(not any(os.path.isdir(d) for d in ("/run/log/journal", "/var/log/journal")),
                    reason="no journal directory here: the mark takes no time")
@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_the_journal_mark_is_the_shells_time_without_date_where_bash_knows_it(
        tmp_path: Path, shell: str) -> None:
    """bash tells the time itself ($EPOCHSECONDS: no ``date`` process on each host); sh
    (dash) runs ``date``.  bash runs here with no ``date`` on its PATH."""
    (tmp_path / "date").symlink_to(shutil.which("date") or "/bin/date")
    path = "/nonexistent" if shell == "bash" else str(tmp_path)
    before = int(time.time())
    out = subprocess.run([shutil.which(shell) or shell, "-c", crashinfo.mark_command([])],
                         capture_output=True, text=True, check=True, env={"PATH": path}).stdout
    since = crashinfo.parse_marks(out).since
    assert since is not None and before <= since <= time.time(), out


def test_marking_is_never_fatal(tmp_path: Path) -> None:
    host = hosts.SSHHost("127.0.0.1:1")
    host.close()  # every command now raises AutoservError
    assert crashinfo.mark_logs(host, str(tmp_path / "marks")) is None
    assert crashinfo.read_marks(str(tmp_path / "marks"), host) is None
    (tmp_path / "bad").mkdir()
    Path(crashinfo.mark_path(str(tmp_path / "bad"), host)).write_text("{not json")
    assert crashinfo.read_marks(str(tmp_path / "bad"), host) is None


def test_the_first_marks_of_a_host_are_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    host = hosts.SSHHost("127.0.0.1:1")
    directory = str(tmp_path / "r" / ".logmarks")  # made by the first marks
    first = crashinfo.LogMarks(1764700000, {"/var/log/syslog": (12, 340)})
    assert crashinfo.save_marks(host, directory, first) == first
    assert crashinfo.save_marks(host, directory, crashinfo.LogMarks(1764700999, {})) is None
    assert crashinfo.read_marks(directory, host) == first
    other = hosts.SSHHost("127.0.0.1:2")
    assert crashinfo.read_marks(directory, other) is None
    (tmp_path / "file").write_text("")  # a results dir that cannot hold them: logged, not raised
    assert crashinfo.save_marks(other, str(tmp_path / "file" / ".logmarks"), first) is None
    assert "could not keep the system logs' marks" in caplog.text


MARKED_JOB = """\
log = args[0]
host = hosts.create_host(machines[0])
# the marks are taken inside this first command's session: nothing of them in its result
out = host.run("echo after-the-mark-1 >> %s; echo first" % log).stdout
assert out == "first\\n", repr(out)
host.run("echo after-the-mark-2 >> %s" % log)
raise TestFail("the test broke")
"""


@pytest.mark.slow
def test_crashinfo_reads_the_system_log_from_the_jobs_mark(testbed_loopback: Testbed,
                                                           tmp_path: Path) -> None:
    """The log position is marked when the job first uses the host: crashinfo's 'messages'
    has the lines logged after it and none of those before (the file is in the host's own
    work dir, named by $AUTOSERV_CRASHINFO_SYSLOG)."""
    tb = testbed_loopback
    machine = tb.machines[0]
    log = Path(tb.hosts[0].workdir) / f"syslog.{tmp_path.name}.{os.getpid()}"
    before = "".join(f"before-the-job-{i}\n" for i in range(5))
    log.write_text(before)
    inode = log.stat().st_ino
    (tmp_path / "job.control").write_text(MARKED_JOB)
    results = tmp_path / "r"
    try:
        proc = run_autoserv(tmp_path / "job.control", "-r", results, *bed(tb, [machine]),
                            "-a", str(log), cwd=tmp_path, AUTOSERV_CRASHINFO_SYSLOG=str(log))
    finally:
        log.unlink()
    assert proc.returncode == 1, proc.stderr
    (mark,) = (results / ".logmarks").iterdir()  # taken before the job's first command
    assert json.loads(mark.read_text())["files"] == {str(log): [inode, len(before)]}
    # the marks are the job's own output, not the login shell's
    debug = (results / "debug" / "autoserv.DEBUG").read_text()
    assert "login shell printed" not in debug and "LOGMARKS" not in debug, debug
    info = results / machine / "crashinfo"
    messages = (info / "messages").read_text()
    assert messages == (f"== {log} since the job started (from byte {len(before)})\n"
                        "after-the-mark-1\nafter-the-mark-2\n"), messages
    readme = (info / "README").read_text()
    assert f"'messages' holds what was logged to {log} since the job started using the host " \
           f"({log} from byte {len(before)}" in readme, readme
    assert "at most 30 s and 1000000 bytes" in readme


@pytest.mark.slow
def test_a_noisy_login_shell_is_logged_without_the_marks(testbed_noisy: Testbed,
                                                         tmp_path: Path) -> None:
    """On a host whose rc files print banners, the first command's debug log names the
    banner as the login shell's, and neither the marks nor their frame."""
    tb = testbed_noisy
    machine = tb.machines[0]
    (tmp_path / "job.control").write_text(
        "h = hosts.create_host(machines[0])\nassert h.run('echo out').stdout == 'out\\n'\n")
    results = tmp_path / "r"
    proc = run_autoserv(tmp_path / "job.control", "-r", results, *bed(tb, [machine]), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(list((results / ".logmarks").iterdir())) == 1
    debug = (results / "debug" / "autoserv.DEBUG").read_text()
    out, err = [li for li in debug.splitlines() if "login shell printed" in li]  # its 2 streams
    assert "Welcome to a noisy test bed host" in out and "no newline on stdout" in out, out
    assert "Inappropriate ioctl" in err, err
    assert "LOGMARKS" not in debug and "since " not in out, debug


@pytest.mark.slow
def test_collect_crashinfo_only(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    results = tmp_path / "r"
    proc = run_autoserv("--collect-crashinfo", "-r", results,
                        *bed(tb, tb.machines[:2]), "-m", "127.0.0.1:1", "--connect-timeout", "3",
                        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # never fatal, even with a machine that is gone
    for machine in tb.machines[:2]:
        (entry,) = entries(results / machine / "status.log")
        assert entry[:2] == ("GOOD", "collect_crashinfo")
        assert (results / machine / "crashinfo" / "uptime").exists()
    (gone,) = entries(results / "127.0.0.1:1" / "status.log")
    assert gone == ("WARN", "collect_crashinfo", "nothing collected (see 127.0.0.1:1/crashinfo/README)")
    readme = (results / "127.0.0.1:1" / "crashinfo" / "README").read_text()
    assert "Note: the host did not answer: cannot connect to 127.0.0.1:1" in readme
    assert ops(results / "status.log") == [("START", "collect_crashinfo"),
                                           ("END GOOD", "collect_crashinfo")]


# -- odds and ends ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("kernel = deb_kernel.DEBKernel()", "deb_kernel.DEBKernel"),
        ("rpm_kernel.RPMKernel().install(h)", "rpm_kernel.RPMKernel"),
        ("git_kernel.GitKernel('git://x', 'l', 'r')", "git_kernel.GitKernel"),
        ("source_kernel.SourceKernel('k')", "source_kernel.SourceKernel"),
        ("source_kernel('k')", "source_kernel"),
        ("h.bootloader.set_default(0)", "host.bootloader"),
    ],
)
def test_kernel_helpers_raise_one_line(line: str, what: str, tmp_path: Path) -> None:
    ctl = tmp_path / "k.control"
    ctl.write_text(f"h = hosts.SSHHost('h.invalid')\n{line}\n")
    proc = run_autoserv(ctl, "-r", tmp_path / "r", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == (f"autoserv: {ctl}:2: AutoservUnsupportedError: {what}: not supported "
                           "by this autoserv: install kernels with an install hook (--hooks)\n")
