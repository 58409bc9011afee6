"""Reports of real jobs: the autoserv CLI against the test bed's sshd hosts.

A 3-machine job with a failure and a timeout, its report loaded in headless Chromium
(the DOM checked, a screenshot kept as an artifact); an aborted job (SIGTERM); a job whose
control file raised; a job run as 2 shards and merged.  Every JUnit / JSON report is
validated against the package's schema files.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from autoserv.deadline import Deadline
from autoserv.lab.testbed import Testbed
from autoserv.report import model
from tests.cli_helpers import REPO, autoserv_argv, bed_args, cli_env, run_autoserv, stderr_lines, write
from tests.report_helpers import check_reports

pytestmark = pytest.mark.slow

#: Where the browser test leaves its screenshot and report for CI to keep.
ARTIFACTS = Path(os.environ.get("AUTOSERV_TEST_ARTIFACTS", REPO / "test-artifacts"))

FAIL_AND_TIMEOUT = """\
def work(machine):
    host = hosts.create_host(machine)
    job.record("GOOD", None, "uname", host.run("uname -sr").stdout.strip())
    role = machines.index(machine)
    def read_config():
        result = host.run("cat /etc/autoserv-missing.conf", ignore_status=True)
        if role == 1 and result.exit_status:
            raise TestFail("cat /etc/autoserv-missing.conf exited %d" % result.exit_status)
    job.run_group(read_config, tag="read_config")
    def soak():
        host.run("sleep %d" % (1 if role != 2 else 6913))
    job.run_group(soak, tag="soak")
parallel_simple(work, machines, timeout=TIMEOUT)
"""






class _Dom(HTMLParser):
    """What the test reads from the DOM Chromium dumps: totals, timeline rows, texts."""

    def __init__(self) -> None:
        super().__init__()
        self.totals: dict[str, int] = {}
        self.rows: list[str] = []
        self.text: list[str] = []
        self._total: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and a.get("data-total"):
            self._total = a["data-total"]
        if tag == "g" and a.get("class") == "timeline-row":
            self.rows.append(a.get("data-machine") or "")

    def handle_data(self, data: str) -> None:
        if self._total is not None:
            self.totals[self._total] = int(data)
            self._total = None
        self.text.append(data)


def test_real_job_report_in_browser(testbed_loopback: Testbed, tmp_path: Path) -> None:
    """3 machines: one passes, one fails a test, one times out; JUnit, JSON, and the page in Chromium."""
    tb = testbed_loopback
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed (dev.sh installs Debian's chromium)")
    ctl = write(tmp_path / "mixed.control", FAIL_AND_TIMEOUT.replace("TIMEOUT", "8"))
    results = tmp_path / "r"
    junit_copy = tmp_path / "ci" / "junit.xml"
    junit_copy.parent.mkdir()
    started = time.time()
    proc = run_autoserv(ctl, "-r", results, "-l", "nightly", "--junit", junit_copy, *bed_args(tb),
                        "extra-arg", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    root, doc, _ = check_reports(results)
    assert junit_copy.read_bytes() == (results / "junit.xml").read_bytes()
    m0, m1, m2 = tb.machines
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    for machine in tb.machines:
        assert [n for (cls, n) in cases if cls == machine] == ["uname", "read_config", "soak"]
    assert all(len(cases[(m0, n)]) == 0 for n in ("uname", "read_config", "soak"))
    failure = cases[(m1, "read_config")].find("failure")
    assert failure is not None and failure.get("message") == "cat /etc/autoserv-missing.conf exited 1"
    excerpt = cases[(m1, "read_config")].findtext("system-out") or ""
    assert excerpt.startswith(f"--- from {m1}/debug/autoserv.DEBUG ---")
    assert "cat /etc/autoserv-missing.conf" in excerpt  # the lines logged while the test ran
    error = cases[(m2, "soak")].find("error")
    assert error is not None and error.get("type") == "ABORT"
    assert "parallel timeout of 8 s expired" in (error.get("message") or "")
    assert 6 < float(cases[(m2, "soak")].get("time") or 0) < 60
    suite = root.find(f"testsuite[@name='{m1}']")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("3", "1")
    # results.json: the job, and the timed-out machine's tree
    job = doc["job"]
    assert (job["label"], job["args"], job["exit_status"]) == ("nightly", ["extra-arg"], 1)
    assert job["abort_reason"] is None  # a machine timed out; the job itself was not aborted
    assert started - 1 <= job["start"] <= job["end"] <= time.time() + 1
    assert job["machines"] == tb.machines
    by_name = {m["name"]: m for m in doc["machines"]}
    assert by_name[m1]["status"] == "FAIL" and by_name[m2]["status"] == "ABORT"
    assert by_name[m0]["status"] == "GOOD" and by_name[m0]["totals"]["passed"] == 3
    assert by_name[m2]["status_log"] == f"{m2}/status.log"
    assert f"{m2}/debug/autoserv.DEBUG" in by_name[m2]["logs"]
    # the page in a real browser
    page = results / "report.html"
    dom_text = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert dom_text.returncode == 0, dom_text.stderr[-2000:]
    dom = _Dom()
    dom.feed(dom_text.stdout)
    assert dom.totals["machines"] == 3 and dom.totals["tests"] == 9 + 1  # +1: the job's own error
    assert (dom.totals["passed"], dom.totals["failed"], dom.totals["errors"]) == (7, 1, 2)
    assert dom.rows == tb.machines
    text = " ".join(dom.text)
    assert "cat /etc/autoserv-missing.conf exited 1" in text
    assert "parallel timeout of 8 s expired" in text
    shot = results / "report.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1100,900", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report-3-machines.png")
    shutil.copy(page, ARTIFACTS / "report-3-machines.html")


def test_aborted_job_still_gets_reports(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    ctl = write(
        tmp_path / "long.control",
        """\
        def work(machine):
            host = hosts.create_host(machine)
            job.run_group(lambda: host.run("sleep 6914"), tag="long_command")
        parallel_simple(work, machines)
        """,
    )
    results = tmp_path / "r"
    proc = subprocess.Popen(autoserv_argv(ctl, "-r", results, *bed_args(tb)), cwd=tmp_path, env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = Deadline(120)

        def started(machine: str) -> bool:
            log = results / machine / "status.log"
            return log.exists() and "long_command" in log.read_text()

        while not all(started(m) for m in tb.machines):
            assert proc.poll() is None, proc.communicate()
            assert not deadline.expired(), "the workers never started"
            time.sleep(0.1)  # polling, not a timed assertion
        time.sleep(1)  # the remote sleeps are running by now (their START is written first)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    assert err.strip() == "autoserv: job aborted: received SIGTERM"
    root, doc, page = check_reports(results)
    assert doc["job"]["abort_reason"] == "received SIGTERM" and doc["job"]["status"] == "ABORT"
    assert doc["job"]["exit_status"] == 1
    errors = [c for c in root.iter("testcase") if c.get("name") == "long_command"]
    assert len(errors) == 3
    assert all(c[0].tag == "error" and c[0].get("message") == "aborted: received SIGTERM" for c in errors)
    assert "aborted: received SIGTERM" in page


def test_control_file_raised_gets_reports(testbed_loopback: Testbed, tmp_path: Path) -> None:
    """One machine (run in-process): the control file raises after an operation."""
    tb = testbed_loopback
    ctl = write(
        tmp_path / "raise.control",
        """\
        host = hosts.create_host(machines[0])
        job.record("GOOD", None, "uname", host.run("uname").stdout.strip())
        raise ValueError("the control file gave up")
        """,
    )
    results = tmp_path / "r"
    json_copy = tmp_path / "out.json"
    proc = run_autoserv(ctl, "-r", results, "--json", json_copy, "-m", tb.machines[0],
                        "--ssh-config", tb.ssh_config, cwd=tmp_path)
    assert proc.returncode == 1
    assert stderr_lines(proc) == [f"autoserv: {ctl}:3: ValueError: the control file gave up"]
    root, doc, _ = check_reports(results)
    assert json_copy.read_text() == (results / "results.json").read_text()
    got = [(c.get("classname"), c.get("name"), [x.tag for x in c]) for c in root.iter("testcase")]
    assert got == [(tb.machines[0], "uname", []), (tb.machines[0], "job", ["error", "system-out"])]
    error = root.find(".//error")
    assert error is not None and error.get("message") == "ValueError: the control file gave up"
    assert doc["job"]["status"] == "ERROR"


def test_two_shards_merged(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    ctl = write(
        tmp_path / "uname.control",
        """\
        def work(machine):
            job.record("GOOD", None, "uname", hosts.create_host(machine).run("uname").stdout.strip())
        job.record("GOOD", None, "shard_machines", " ".join(machines))
        parallel_simple(work, machines)
        """,
    )
    shard_dirs = []
    seen: list[str] = []
    for index in (1, 2):
        results = tmp_path / f"shard{index}"
        proc = run_autoserv(ctl, "-r", results, "--shard", f"{index}/2", *bed_args(tb), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        check_reports(results)
        assert model.read_keyval_file(str(results / "keyval"))[0]["shard"] == f"{index}/2"
        top = (results / "status.log").read_text()
        match = re.search(r"shard_machines\ttimestamp=\d+\tlocaltime=[^\t]*\t(.*)", top)
        assert match is not None, top
        seen += match.group(1).split()
        shard_dirs.append(results)
    assert sorted(seen) == sorted(tb.machines)  # disjoint and complete
    out = tmp_path / "merged"
    html = tmp_path / "merged.html"
    proc = run_autoserv("merge", out, *shard_dirs, "--html", html, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    root, doc, page = check_reports(out)
    assert html.exists()
    assert sorted((out / ".machines").read_text().split()) == sorted(tb.machines)
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(tb.machines) <= set(suites)
    for machine in tb.machines:
        names = [c.get("name") for c in suites[machine].iter("testcase")]
        assert names == ["uname"]
    assert doc["totals"]["machines_failed"] == 0 and doc["job"]["status"] == "GOOD"
    assert page.count('class="timeline-row"') == 3


def test_shard_flag_errors(tmp_path: Path) -> None:
    ctl = write(tmp_path / "c.control", "pass\n")
    for args, line in [
        (["--shard", "3/2"], "autoserv: error: --shard 3/2: I must be between 1 and N"),
        (["--shard", "x"], "autoserv: error: --shard wants I/N"),
        (["-N", "--junit", "j.xml"], "autoserv: error: --junit needs a results directory"),
        (["--html", "/nonexistent-dir/r.html"], "autoserv: error: --html /nonexistent-dir/r.html: no such"),
    ]:
        proc = run_autoserv(ctl, *args, cwd=tmp_path, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert stderr_lines(proc)[0].startswith(line), proc.stderr


def test_live_progress_on_a_terminal(testbed_loopback: Testbed, tmp_path: Path) -> None:
    """On a terminal: the live area while machines run, prefixed lines, the summary table."""
    import pexpect

    tb = testbed_loopback
    ctl = write(
        tmp_path / "p.control",
        """\
        def work(machine):
            host = hosts.create_host(machine)
            def warm_up():
                host.run("sleep %d" % (1 + 2 * machines.index(machine)))
            job.run_group(warm_up, tag="warm_up")
            if machine == machines[1]:
                job.record("FAIL", None, "check", "wrong answer")
            logging.info("finished work")
        parallel_simple(work, machines, return_results=True)
        """,
    )
    results = tmp_path / "r"
    env = cli_env(COLUMNS="120", LINES="40", TERM="xterm")
    env.pop("CI", None)
    argv = autoserv_argv(ctl, "-r", results, *bed_args(tb))
    child = pexpect.spawn(argv[0], argv[1:], cwd=str(tmp_path), env=env, encoding="utf-8",
                          timeout=120, dimensions=(40, 120))
    child.expect(r"machines: \d+ done, \d+ running, \d+ failed")
    child.expect("warm_up")  # a running machine's current operation
    child.expect(pexpect.EOF)
    child.close()
    out = child.before or ""
    assert child.exitstatus == 1, out[-3000:]  # tb2 recorded a failure
    assert "autoserv: job failed: " in out
    for machine in tb.machines:
        assert f"{machine} : " in out  # the workers' prefixed lines scrolled above the area
        assert re.search(rf"{re.escape(machine)} : done (GOOD|FAIL) in", out), out[-3000:]
    table = out[out.index("autoserv: summary"):]
    for machine in tb.machines:
        assert machine in table
    assert "slowest test" in table and "warm_up" in table
    assert re.search(rf"{re.escape(tb.machines[1])}\s*│\s*FAIL\s*│\s*2\s*│\s*1\s*│\s*1", table), table


def test_plain_progress_lines(testbed_loopback: Testbed, tmp_path: Path) -> None:
    """Not a terminal: no redrawing, one summary line per machine as it finishes."""
    tb = testbed_loopback
    ctl = write(
        tmp_path / "p.control",
        """\
        def work(machine):
            job.record("GOOD", None, "uname", hosts.create_host(machine).run("uname").stdout.strip())
        parallel_simple(work, machines)
        """,
    )
    proc = run_autoserv(ctl, "-r", tmp_path / "r", *bed_args(tb), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stdout
    for machine in tb.machines:
        lines = [line for line in proc.stdout.splitlines() if f"{machine} : done GOOD in" in line]
        assert len(lines) == 1 and "1 test(s), 1 passed, 0 failed; slowest uname" in lines[0], proc.stdout
    quiet = run_autoserv(ctl, "-r", tmp_path / "q", "--no-progress", *bed_args(tb), cwd=tmp_path)
    assert quiet.returncode == 0 and " : done " not in quiet.stdout


def test_report_of_a_killed_job(testbed_loopback: Testbed, tmp_path: Path) -> None:
    """SIGKILL to the whole job (no cleanup at all): `autoserv report` still reads what is there."""
    tb = testbed_loopback
    ctl = write(
        tmp_path / "k.control",
        """\
        def work(machine):
            host = hosts.create_host(machine)
            job.record("GOOD", None, "uname", host.run("uname").stdout.strip())
            job.run_group(lambda: host.run("sleep 2.6913"), tag="short_soak")
        parallel_simple(work, machines)
        """,
    )
    results = tmp_path / "r"
    proc = subprocess.Popen(autoserv_argv(ctl, "-r", results, *bed_args(tb)), cwd=tmp_path, env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = Deadline(120)
        logs = [results / m / "status.log" for m in tb.machines]
        while not all(p.exists() and "short_soak" in p.read_text() for p in logs):
            assert proc.poll() is None and not deadline.expired(), "the workers never started"
            time.sleep(0.1)  # polling, not a timed assertion
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (results / "junit.xml").exists()
    proc2 = run_autoserv("report", results, cwd=tmp_path, timeout=60)
    assert proc2.returncode == 0, proc2.stderr
    root, doc, page = check_reports(results)
    for machine in tb.machines:
        cases = root.findall(f".//testcase[@classname='{machine}']")
        assert [c.get("name") for c in cases] == ["uname", "short_soak"]
        assert len(cases[0]) == 0
        error = cases[1].find("error")
        assert error is not None and error.get("message") == "never ended (the job was interrupted)"
    assert "job_finished" not in doc["job"]["keyval"]
    assert doc["job"]["exit_status"] is None and doc["job"]["status"] == "ABORT"
    # The killed job could not stop its remote commands: let them end on their own.
    deadline = Deadline(60)
    while subprocess.run(["pgrep", "-f", "sleep 2.6913"], capture_output=True).returncode == 0:
        assert not deadline.expired(), "the remote sleeps did not end"
        time.sleep(0.2)  # polling, not a timed assertion
