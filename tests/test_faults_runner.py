"""Runner-side faults (issue 11, items 5, 6, 9), on real test bed hosts through the real CLI.

* SIGHUP aborts a job like SIGTERM: ``END ABORT`` with the reason, remote commands killed,
  remote temp dirs removed, one line on stderr, exit 1.
* A full results disk (a small tmpfs) is one line on stderr naming the directory and its
  free space, the job aborts, exit 1 (no logging tracebacks).
* SIGKILL of autoserv: the workers die with it; ``autoserv cleanup RESULTS`` reads the job's
  journal and kills the remote commands and removes the remote temp dirs it left; run again,
  it has nothing left to do.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from autoserv import hosts, status
from autoserv.deadline import Deadline
from autoserv.lab.testbed import Testbed
from tests.cli_helpers import (
    autoserv_argv,
    bed_args,
    cli_env,
    remote_processes,
    run_autoserv,
    stderr_lines,
    wait_for,
    write,
)

pytestmark = pytest.mark.slow








def remote_exists(tb: Testbed, machine: str, path: str) -> bool:
    with hosts.SSHHost(machine, ssh_config=str(tb.ssh_config)) as h:
        return h.run("test -e", args=[path], ignore_status=True, verbose=False).exit_status == 0




#: Each machine: a remote temp dir (its path written to the worker's results dir), then a
#: long remote sleep (``args[0]`` + the machine's index) in a group.
LONG_CONTROL = """\
    def work(machine):
        host = hosts.create_host(machine)
        tmp = host.get_tmp_dir()
        with open("remote_tmp", "w") as f:
            f.write(tmp)
        def body():
            host.run("sleep %d" % (int(args[0]) + machines.index(machine)))
        job.run_group(body, tag="long_command")
    job.record("START", None, "all_machines")
    parallel_simple(work, machines)
    """


@pytest.fixture
def long_job(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start LONG_CONTROL on a test bed and wait until every remote sleep runs."""
    started: list[tuple[subprocess.Popen[str], Path, dict[str, str]]] = []

    def start(tb: Testbed, results: Path, machine_args: list[str] | None = None,
              **env: str) -> subprocess.Popen[str]:
        ctl = write(tmp_path / "long.control", LONG_CONTROL)
        args = bed_args(tb) if machine_args is None else machine_args
        # sleeps of this job only (48NNN00 + index): the test bed hosts share one process
        # table with every other test, so a leftover elsewhere can never pass for this job's
        base = 4800000 + secrets.randbelow(1000) * 100
        proc = subprocess.Popen(
            autoserv_argv(ctl, "-r", results, *args, "--", str(base)), cwd=tmp_path,
            env=cli_env(**env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        started.append((proc, results, env))
        count = len(tb.machines) if machine_args is None else 1
        sleeps = [f"sleep {base + i}" for i in range(count)]
        proc.sleeps = f"sleep {base // 100}"  # type: ignore[attr-defined]  # what this job runs

        def all_running() -> bool:
            running = remote_processes(tb, proc.sleeps)  # type: ignore[attr-defined]
            # one machine runs in the job's own process: no subdir
            return all(any(s in line for line in running) for s in sleeps) and len(
                list(results.glob("**/remote_tmp"))) == count

        wait_for(all_running, "the remote commands to start", proc)
        return proc

    yield start
    for proc, results, env in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        if (results / "journal").exists():  # whatever a failed test left on the hosts
            run_autoserv("cleanup", results, cwd=tmp_path, timeout=120, **env)


@pytest.mark.probe_fault
def test_sighup_aborts_like_sigterm(testbed: Testbed, tmp_path: Path,
                                    long_job: Callable[..., subprocess.Popen[str]]) -> None:
    """SIGHUP mid-run: END ABORT with the reason, remote sleeps killed, temp dirs removed."""
    results = tmp_path / "r"
    proc = long_job(testbed, results)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert err.strip() == "autoserv: job aborted: received SIGHUP"
    assert remote_processes(testbed, proc.sleeps) == []
    top = status.parse_file(str(results / "status.log"))
    assert [(e.status_code, e.operation) for e in top] == [
        ("START", "all_machines"), ("END ABORT", "all_machines"), ("INFO", None)]
    assert top[1].message == "aborted: received SIGHUP"
    assert top[2].fields["job_abort_reason"] == "received SIGHUP"
    for machine in testbed.machines:
        sub = results / machine
        entries = status.parse_file(str(sub / "status.log"))
        assert [e.status_code for e in entries] == ["START", "END ABORT", "INFO"], machine
        assert not remote_exists(testbed, machine, (sub / "remote_tmp").read_text())


@pytest.mark.probe_fault
def test_sighup_ignored_under_nohup(testbed_loopback: Testbed, tmp_path: Path) -> None:
    """Started with SIGHUP ignored (nohup), the job keeps ignoring it and completes."""
    ctl = write(tmp_path / "hup.control", """\
        import os, signal
        os.kill(os.getpid(), signal.SIGHUP)
        job.record("GOOD", None, "after_hup")
        """)
    proc = subprocess.run(["nohup", *autoserv_argv(ctl, "-r", tmp_path / "r")], cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    entries = status.parse_file(str(tmp_path / "r" / "status.log"))
    assert [(e.status_code, e.operation) for e in entries] == [("GOOD", "after_hup")]
    assert not [line for line in stderr_lines(proc) if not line.startswith("nohup:")]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs under the test's tmp dir (unmounted after the test)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0755", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


#: Prints and logs without end, locally and in two parallel workers on the test bed.
CHATTY_CONTROL = """\
    import logging
    def talk(machine):
        host = hosts.create_host(machine)
        host.run("true")
        def body():
            for i in range(10 ** 7):
                print("worker line", i, "x" * 200)
                logging.info("worker log line %d %s", i, "y" * 200)
        job.run_group(body, tag="chatty")
    job.record("START", None, "all")
    parallel_simple(talk, machines[:2])
    for i in range(10 ** 7):
        print("line", i, "x" * 200)
    """


@pytest.mark.probe_fault
def test_full_results_disk_is_one_line(testbed_loopback: Testbed, tmp_path: Path,
                                       small_disk: Path) -> None:
    """A full results disk: one line naming the dir and the free space, abort, exit 1."""
    ctl = write(tmp_path / "chatty.control", CHATTY_CONTROL)
    results = small_disk / "r"
    proc = subprocess.run(
        autoserv_argv(ctl, "-r", results, *bed_args(testbed_loopback)), cwd=tmp_path,
        env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, timeout=300,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert len(lines) == 1, lines[:20]
    assert lines[0].startswith(
        f"autoserv: job aborted: cannot write the results directory {results}"), lines
    assert "No space left on device" in lines[0] and " free" in lines[0], lines
    # no worker left running
    leftover = subprocess.run(["pgrep", "-f", str(ctl)], capture_output=True, text=True)
    assert leftover.stdout == ""


def test_format_size() -> None:
    from autoserv.results_disk import format_size

    cases = [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
             (5 * 1024 ** 2, "5.0 MiB"), (3 * 1024 ** 4, "3.0 TiB"), (2 * 1024 ** 5, "2048.0 TiB")]
    for n, text in cases:
        assert format_size(n) == text, n


def children(pid: int) -> dict[int, int]:
    """The child processes of ``pid``: pid -> start time (clock ticks after boot)."""
    from autoserv.journal import process_start

    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            start = process_start(int(entry))
            if start is not None:
                found[int(entry)] = start
    return found


def gone(procs: dict[int, int]) -> bool:
    from autoserv.journal import process_start

    return all(process_start(pid) != start for pid, start in procs.items())


@pytest.mark.probe_fault
def test_sigkill_workers_die_with_autoserv(testbed_loopback: Testbed, tmp_path: Path,
                                           long_job: Callable[..., subprocess.Popen[str]]) -> None:
    """SIGKILL of autoserv alone: its workers get SIGTERM and run their abort path."""
    tb = testbed_loopback
    results = tmp_path / "r"
    proc = long_job(tb, results)
    workers = children(proc.pid)
    assert len(workers) == len(tb.machines), workers
    proc.kill()
    proc.communicate(timeout=60)
    deadline = Deadline(60)
    while not gone(workers):
        assert not deadline.expired(), f"workers still running: {workers}"
        time.sleep(0.1)  # polling, not a timed assertion
    assert remote_processes(tb, proc.sleeps) == []
    for machine in tb.machines:
        sub = results / machine
        entries = status.parse_file(str(sub / "status.log"))
        assert [e.status_code for e in entries] == ["START", "END ABORT", "INFO"], machine
        assert entries[2].fields["job_abort_reason"] == "received SIGTERM"
        assert not remote_exists(tb, machine, (sub / "remote_tmp").read_text())


@pytest.mark.probe_fault
def test_cleanup_after_sigkill_of_the_whole_job(testbed_loopback: Testbed, tmp_path: Path,
                                                long_job: Callable[..., subprocess.Popen[str]]
                                                ) -> None:
    """SIGKILL of autoserv and its workers at once: ``autoserv cleanup`` ends what they left."""
    tb = testbed_loopback
    results = tmp_path / "r"
    proc = long_job(tb, results)
    workers = children(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)  # the job's own session: autoserv and its workers
    proc.communicate(timeout=60)
    deadline = Deadline(30)
    while not gone(workers):
        assert not deadline.expired(), f"workers still running: {workers}"
        time.sleep(0.1)  # polling, not a timed assertion
    tmps = {m: (results / m / "remote_tmp").read_text() for m in tb.machines}
    assert len(remote_processes(tb, proc.sleeps)) >= len(tb.machines)  # left behind
    assert all(remote_exists(tb, m, t) for m, t in tmps.items())
    journal_text = (results / "journal").read_text()
    assert "autoserv-test-pw" not in journal_text

    first = run_autoserv("cleanup", results, cwd=tmp_path, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stderr == ""
    lines = first.stdout.splitlines()
    for machine, tmp in tmps.items():
        assert f"{machine}: removed temp dir {tmp}" in lines, lines
        assert any(line.startswith(f"{machine}: killed 1 process group(s) left by ")
                   for line in lines), lines
    assert remote_processes(tb, proc.sleeps) == []
    assert not any(remote_exists(tb, m, t) for m, t in tmps.items())

    second = run_autoserv("cleanup", results, cwd=tmp_path, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout == f"nothing left to clean up in {results}\n"


def test_cleanup_of_a_job_that_ended_itself(testbed_loopback: Testbed, tmp_path: Path) -> None:
    """A job that closed its hosts itself leaves nothing for cleanup; bad dirs are one line."""
    ctl = write(tmp_path / "tmp.control", """\
        host = hosts.create_host(machines[0])
        host.get_tmp_dir()
        host.run("true")
        """)
    results = tmp_path / "r"
    proc = run_autoserv(ctl, "-r", results, *bed_args(testbed_loopback), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    kinds = [line.split('"kind":"')[1].split('"')[0]
             for line in (results / "journal").read_text().splitlines()]
    assert kinds[0] == "job" and kinds[-1] == "end" and {"tmpdir", "command"} <= set(kinds)
    out = run_autoserv("cleanup", results, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    m = testbed_loopback.machines[0]
    assert out.stdout.startswith(f"{m}: already gone: temp dir "), out.stdout
    assert len(out.stdout.splitlines()) == 1
    bad = run_autoserv("cleanup", tmp_path, cwd=tmp_path)
    assert bad.returncode == 2 and len(stderr_lines(bad)) == 1, bad.stderr
    assert "has no journal" in bad.stderr


def test_cleanup_command_builders() -> None:
    from autoserv.orphans import kill_connection_command, remove_dir_command

    assert "'SSH_CONNECTION=127.0.0.1 40000 127.0.0.1 22'" in kill_connection_command(
        "127.0.0.1 40000 127.0.0.1 22")
    assert "SSH_CONNECTION=fe80::1%eth0 5 ::1 22" in kill_connection_command(
        "fe80::1%eth0 5 ::1 22")
    for bad in ["1.2.3.4 5 6.7.8.9", "1.2.3.4 5 6.7.8.9 22; rm -rf /", "a b c d", ""]:
        with pytest.raises(ValueError):
            kill_connection_command(bad)
    assert remove_dir_command("/tmp/autoserv-AbC123") == (
        "if [ -e /tmp/autoserv-AbC123 ]; then rm -rf -- /tmp/autoserv-AbC123 && echo removed; "
        "else echo gone; fi")
    for bad in ["/", "/tmp", "/tmp/autoserv-", "/tmp/autoserv-abc", "tmp/autoserv-abc123",
                "/tmp/autoserv-abc123/..", "/tmp/x/../autoserv-abc12'", "/etc/passwd"]:
        with pytest.raises(ValueError):
            remove_dir_command(bad)


def test_journal_skips_a_torn_line(tmp_path: Path) -> None:
    from autoserv import journal

    path = journal.open_journal(str(tmp_path))
    try:
        journal.record("tmpdir", "not-a-host", path="/tmp/autoserv-abcdef")
    finally:
        journal.close_journal(ended=True)
    with open(path, "a") as f:
        f.write('{"v":1,"kind":"tmpdir","path":"/tmp/autoserv-zzzzzz"')  # killed mid-write
    kinds = [(e["kind"], e.get("path")) for e in journal.read(path)]
    assert kinds == [("job", None), ("tmpdir", "/tmp/autoserv-abcdef"), ("end", None)]
    journal.record("tmpdir", "x", path="/y")  # no journal open: nothing, no error


def test_journal_lines_written_at_once_share_fsyncs_and_each_is_durable_on_return(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: a line's writer returns only after an fsync that began after its write;
    writers arriving while an fsync runs share the next one (os.write/os.fsync are wrapped to
    watch the order and to make each fsync take 20 ms, as on a slow disk)."""
    from autoserv import journal

    events: list[tuple[str, object]] = []
    lock = threading.Lock()
    real_write, real_fsync = os.write, os.fsync
    path = journal.open_journal(str(tmp_path))

    journal_fd = journal._fd

    def write(fd: int, data: bytes) -> int:
        with lock:
            n = real_write(fd, data)
            if fd == journal_fd:
                events.append(("write", threading.current_thread().name))
        return n

    def fsync(fd: int) -> None:
        assert fd == journal_fd
        with lock:
            events.append(("fsync-begin", 0))
        time.sleep(0.02)
        real_fsync(fd)
        with lock:
            events.append(("fsync-end", 0))

    def one(i: int) -> None:
        journal.record("tmpdir", "not-a-host", path=f"/tmp/autoserv-{i:06d}")
        with lock:
            events.append(("return", threading.current_thread().name))

    monkeypatch.setattr(journal.os, "write", write)
    monkeypatch.setattr(journal.os, "fsync", fsync)
    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        monkeypatch.undo()
        journal.close_journal(ended=True)
    paths = sorted(e["path"] for e in journal.read(path) if e["kind"] == "tmpdir")
    assert paths == [f"/tmp/autoserv-{i:06d}" for i in range(40)]
    fsyncs = sum(1 for kind, _ in events if kind == "fsync-begin")
    assert 1 <= fsyncs < 40, f"{fsyncs} fsyncs for 40 lines written at once"
    for ident in {who for kind, who in events if kind == "return"}:
        wrote = next(i for i, e in enumerate(events) if e == ("write", ident))
        returned = next(i for i, e in enumerate(events) if e == ("return", ident))
        begun = [i for i in range(wrote, returned) if events[i][0] == "fsync-begin"]
        assert begun and any(events[i][0] == "fsync-end" for i in range(begun[0], returned)), \
            "a writer returned before an fsync begun after its write had ended"


@pytest.mark.probe_fault
def test_cleanup_with_a_password_from_the_environment(testbed_loopback: Testbed, tmp_path: Path,
                                                      long_job: Callable[..., subprocess.Popen[str]]
                                                      ) -> None:
    """A host reached with a password: the journal says so (never the password itself), and
    cleanup takes it from AUTOSERV_SSH_PASS again."""
    from tests.conftest import TEST_PASSWORD

    tb = testbed_loopback
    th = tb.hosts[0]
    results = tmp_path / "r"
    machine = f"root@{th.machine}"
    proc = long_job(tb, results, ["-m", machine, "--known-hosts", str(tb.known_hosts)],
                    AUTOSERV_SSH_PASS=TEST_PASSWORD)
    workers = children(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    deadline = Deadline(30)
    while not gone(workers):
        assert not deadline.expired(), f"workers still running: {workers}"
        time.sleep(0.1)  # polling, not a timed assertion
    assert TEST_PASSWORD not in (results / "journal").read_text()
    assert '"password":true' in (results / "journal").read_text()
    tmp = (results / "remote_tmp").read_text()  # one machine: in the job's own process

    without = run_autoserv("cleanup", results, cwd=tmp_path, timeout=120)
    assert without.returncode == 1
    assert without.stdout == (f"{th.address}: needs a password (--ssh-pass or "
                              "AUTOSERV_SSH_PASS): skipped\n")
    assert len(remote_processes(tb, proc.sleeps)) >= 1  # untouched

    done = run_autoserv("cleanup", results, cwd=tmp_path, timeout=120,
                        AUTOSERV_SSH_PASS=TEST_PASSWORD)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{th.address}: removed temp dir {tmp}" in done.stdout.splitlines()
    assert remote_processes(tb, proc.sleeps) == []
    assert TEST_PASSWORD not in done.stdout + done.stderr
