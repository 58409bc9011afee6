"""Reports of results dirs (autoserv.report): the model, JUnit/JSON/HTML mapping, shards, merge.

Pure code is tested from tables; ``autoserv report`` / ``autoserv merge`` run as the real
CLI (a subprocess) on results dirs written here or on tests/data/autotest_results, a
results dir in the original Autotest's format (nested client test groups, an
interrupted machine, perf keyvals in both formats).  Every JUnit and JSON report is
checked against the schema files shipped in the package.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from autoserv import status
from autoserv.hosts import Machine
from autoserv.report import ReportPaths, html, jsonout, junit, model, shard, write_reports
from autoserv.report.merge import MergeError, merge
from tests.cli_helpers import REPO, cli_env, run_autoserv, stderr_lines
from tests.report_helpers import check_json, check_junit, check_reports

AUTOTEST_DIR = REPO / "tests" / "data" / "autotest_results"
T0 = 1_700_000_000


def log_text(rows: list[tuple]) -> str:
    """A status.log from rows (status, subdir, operation, seconds after T0, message[, fields])."""
    writer = status.StatusLogWriter(None)
    lines = []
    for row in rows:
        code, subdir, op, t, msg, *fields = row
        lines.append(writer.record(code, subdir, op, msg, fields[0] if fields else None, timestamp=T0 + t))
    return "\n".join(lines) + "\n"


def make_dir(root: Path, machines: dict[str, list[tuple]], top: list[tuple] | None = None,
             keyval: dict[str, object] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    kv = {"label": "lbl", "user": "me", "hostname": ",".join(machines), "status_version": 1,
          "job_started": T0, "job_finished": T0 + 100, **(keyval or {})}
    (root / "keyval").write_text("".join(f"{k}={v}\n" for k, v in kv.items()))
    (root / "status.log").write_text(log_text(top or []))
    if len(machines) > 1:
        (root / ".machines").write_text("".join(f"{m}\n" for m in machines))
    for name, rows in machines.items():
        sub = root / name
        sub.mkdir()
        (sub / "keyval").write_text(f"hostname={name}\n")
        (sub / "status.log").write_text(log_text(rows))
        (sub / "debug").mkdir()
        (sub / "debug" / "autoserv.DEBUG").write_text(f"line 1 of {name}\nlast line of {name}\n")
    return root


def tree(rows: list[tuple]) -> list[model.Node]:
    return model.build_tree(status.parse(log_text(rows)), T0)


# -- the model -------------------------------------------------------------------------------

def flat(nodes: list[model.Node]) -> list[tuple]:
    return [(n.name, n.status, n.start, n.end, n.ended) for top in nodes for n in top.walk()]


@pytest.mark.parametrize(
    "rows, expected",
    [
        # lone entries run from the entry before them (the first from the job start)
        ([("GOOD", None, "uname", 5, "Linux"), ("FAIL", None, "df", 9, "full")],
         [("uname", "GOOD", T0, T0 + 5, True), ("df", "FAIL", T0 + 5, T0 + 9, True)]),
        # a group from START to END, its entries inside
        ([("START", None, "reboot", 2, ""), ("GOOD", None, "reboot.start", 3, ""),
          ("END GOOD", None, "reboot", 8, "")],
         [("reboot", "GOOD", T0 + 2, T0 + 8, True), ("reboot.start", "GOOD", T0 + 2, T0 + 3, True)]),
        # never ended: ABORT at the last timestamp of the log
        ([("START", None, "long", 1, ""), ("INFO", None, "note", 30, "still going")],
         [("long", "ABORT", T0 + 1, T0 + 30, False), ("note", "INFO", T0 + 1, T0 + 30, True)]),
        # an unnamed group is "job"
        ([("START", None, None, 0, ""), ("END ERROR", None, None, 4, "boom")],
         [("job", "ERROR", T0, T0 + 4, True)]),
    ],
)
def test_build_tree(rows: list[tuple], expected: list[tuple]) -> None:
    assert flat(tree(rows)) == expected


@pytest.mark.parametrize(
    "rows, reason",
    [
        ([("START", "t", "t", 0, ""), ("FAIL", "t", "t", 1, "bad value"), ("END FAIL", "t", "t", 2, "")],
         "bad value"),
        ([("START", "t", "t", 0, ""), ("FAIL", "t", "t", 1, "inner"), ("END FAIL", "t", "t", 2, "outer")],
         "outer"),
        ([("START", "t", "t", 0, ""), ("GOOD", "t", "t", 1, "completed successfully"),
          ("END GOOD", "t", "t", 2, "")], "completed successfully"),
        ([("START", "t", "t", 0, ""), ("INFO", "t", "t", 1, "step 1")],
         "never ended (the job was interrupted): step 1"),
    ],
)
def test_group_reason(rows: list[tuple], reason: str) -> None:
    assert tree(rows)[0].reason == reason


@pytest.mark.parametrize(
    "rows, cases",
    [
        # no tests: a testcase per top-level operation, INFO entries left out
        ([("GOOD", None, "uname", 1, ""), ("INFO", None, None, 2, "x"),
          ("START", None, "reboot", 3, ""), ("GOOD", None, "reboot.start", 4, ""),
          ("END GOOD", None, "reboot", 5, "")], ["uname", "reboot"]),
        # a client job's container: its tests are the testcases
        ([("START", None, None, 0, ""), ("START", "a", "a", 1, ""), ("END GOOD", "a", "a", 2, ""),
          ("START", "b.tag", "b.tag", 3, ""), ("END FAIL", "b.tag", "b.tag", 4, "x"),
          ("END FAIL", None, None, 5, "")], ["a", "b.tag"]),
        # the container's own failure that no test shows is kept
        ([("START", None, "client", 0, ""), ("START", "a", "a", 1, ""), ("END GOOD", "a", "a", 2, ""),
          ("END ABORT", None, "client", 5, "client died")], ["a", "client"]),
        # operations beside tests stay testcases
        ([("START", None, "reboot", 0, ""), ("END GOOD", None, "reboot", 1, ""),
          ("START", None, None, 2, ""), ("START", "a", "a", 3, ""), ("END GOOD", "a", "a", 4, ""),
          ("END GOOD", None, None, 5, "")], ["reboot", "a"]),
    ],
)
def test_testcases(rows: list[tuple], cases: list[str]) -> None:
    machine = model.Machine("m", "m", nodes=tree(rows))
    assert [c.name for c in machine.testcases()] == cases


@pytest.mark.parametrize(
    "lines, results_file, keyvals, perf",
    [
        (["version=1", "a{attr}=x"], False, {"version": "1", "a": "x"}, {}),
        (["t{perf}=1", "", "t{perf}=2", "n{perf}=3"], True, {}, {"t": "2", "n": "3"}),
        (["seqout=512"], True, {}, {"seqout": "512"}),  # 2008: plain keys in results/keyval
        (["# c", "junk", "k=v=w"], False, {"k": "v=w"}, {}),
    ],
)
def test_read_keyval_file(tmp_path: Path, lines: list[str], results_file: bool,
                          keyvals: dict, perf: dict) -> None:
    d = tmp_path / ("results" if results_file else "t")
    d.mkdir()
    (d / "keyval").write_text("\n".join(lines) + "\n")
    assert model.read_keyval_file(str(d / "keyval")) == (keyvals, perf)


def test_stray_lines_are_skipped(tmp_path: Path) -> None:
    text = log_text([("START", "t", "t", 1, ""), ("END FAIL", "t", "t", 2, "first\nsecond")])
    lines = text.splitlines()
    (tmp_path / "status.log").write_text("\n".join(["console noise", *lines, "more noise"]) + "\n")
    entries = model.parse_status_log(str(tmp_path / "status.log"))
    assert [(e.status_code, e.message, e.line_number) for e in entries] == [
        ("START", "", 2), ("END FAIL", "first\nsecond", 3)]


def test_load_machine_without_details_reads_its_status_log_only(tmp_path: Path) -> None:
    """What the live progress reads for each machine's summary line (in the main thread)."""
    m = tmp_path / "m1"
    (m / "debug").mkdir(parents=True)
    (m / "debug" / "autoserv.DEBUG").write_text("x\n")
    (m / "keyval").write_text("hostname=m1\n")
    (m / "t").mkdir()
    (m / "t" / "keyval").write_text("k=v\n")
    (m / "status.log").write_text(log_text([("START", "t", "t", 1, ""), ("END FAIL", "t", "t", 2, "no")]))
    full = model.load_machine(str(tmp_path), "m1", "m1")
    brief = model.load_machine(str(tmp_path), "m1", "m1", details=False)
    assert full.keyval == {"hostname": "m1"} and full.logs == ["m1/debug/autoserv.DEBUG"]
    assert brief.keyval == {} and brief.logs == [] and brief.testcases()[0].keyvals == {}
    assert [(c.name, c.status, c.duration) for c in brief.testcases()] == \
        [(c.name, c.status, c.duration) for c in full.testcases()] == [("t", "FAIL", 1.0)]
    assert (brief.status, brief.start, brief.end) == (full.status, full.start, full.end)


def test_missing_dir_and_not_a_results_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.load(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="not a results directory"):
        model.load(str(tmp_path))


# -- JUnit -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "code, message, child, child_type",
    [
        ("GOOD", "", None, None),
        ("WARN", "dmesg noise", "system-out", None),
        ("FAIL", "wrong answer", "failure", "FAIL"),
        ("ERROR", "exception", "error", "ERROR"),
        ("ABORT", "aborted", "error", "ABORT"),
        ("ALERT", "alert", "error", "ALERT"),
        ("NOSTATUS", "no status", "error", "NOSTATUS"),
        ("TEST_NA", "not here", "skipped", None),
    ],
)
def test_junit_status_mapping(tmp_path: Path, code: str, message: str, child: str | None,
                              child_type: str | None) -> None:
    d = make_dir(tmp_path / "r", {"m1": [("START", "t", "t", 1, ""), (f"END {code}", "t", "t", 3, message)],
                                  "m2": [("GOOD", None, "x", 1, "")]})
    write_reports(str(d))
    root = check_junit(d / "junit.xml")
    suite = root.find("testsuite[@name='m1']")
    assert suite is not None and suite.get("hostname") == "m1" and suite.get("tests") == "1"
    case = suite.find("testcase")
    assert case is not None
    assert (case.get("name"), case.get("classname"), case.get("time")) == ("t", "m1", "2.000")
    tags = [c.tag for c in case]
    if child is None:
        assert tags == []
    elif child == "system-out":
        assert tags == ["system-out"] and f"WARN: {message}" in (case[0].text or "")
    else:
        assert tags[0] == child
        if child_type:
            assert case[0].get("type") == child_type and case[0].get("message") == message
        if child in ("failure", "error"):
            assert tags == [child, "system-out"]
            assert "last line of m1" in (case[1].text or "")
        else:
            assert case[0].get("message") == message
    counts = {k: suite.get(k) for k in ("failures", "errors", "skipped")}
    expected = {"failures": "0", "errors": "0", "skipped": "0"}
    key = {"failure": "failures", "error": "errors", "skipped": "skipped"}.get(child or "")
    if key:
        expected[key] = "1"
    assert counts == expected


@pytest.mark.parametrize(
    "names, unique",
    [
        (["a", "b"], ["a", "b"]),
        (["a", "a", "a"], ["a", "a.2", "a.3"]),
        (["a", "a", "a.2"], ["a", "a.3", "a.2"]),
    ],
)
def test_unique_names(names: list[str], unique: list[str]) -> None:
    assert junit.testcase_names([model.Node(n, "GOOD") for n in names]) == unique


def test_junit_no_tests_and_awkward_text(tmp_path: Path) -> None:
    """Operations become testcases; control characters and markup survive as valid XML."""
    d = make_dir(tmp_path / "r", {"m1": [("GOOD", None, "op", 1, "<b>&\x1b[0m"),
                                         ("GOOD", None, "op", 2, ""), ("FAIL", None, "op", 3, "x\x07")],
                                  "m2": []})
    write_reports(str(d))
    root = check_junit(d / "junit.xml")
    names = [c.get("name") for c in root.iter("testcase")]
    assert names == ["op", "op.2", "op.3"]
    assert root.find("testsuite[@name='m2']").get("tests") == "0"  # type: ignore[union-attr]
    assert root.get("tests") == "3" and root.get("failures") == "1"


# -- JSON ------------------------------------------------------------------------------------

def test_json_fields(tmp_path: Path) -> None:
    d = make_dir(
        tmp_path / "r",
        {"m1": [("START", "bench", "bench", 1, ""), ("END GOOD", "bench", "bench", 9, "")],
         "m2": [("START", None, "w", 2, ""), ("END ABORT", None, "w", 5, "aborted: received SIGTERM"),
                ("INFO", None, None, 5, "Job aborted", {"job_abort_reason": "received SIGTERM"})]},
        top=[("INFO", None, None, 6, "Job aborted", {"job_abort_reason": "received SIGTERM"})],
        keyval={"job_args": "a 'b c'", "job_exit_status": 1},
    )
    (d / "m1" / "bench" / "results").mkdir(parents=True)
    (d / "m1" / "bench" / "results" / "keyval").write_text("ops{perf}=42\n")
    (d / "m1" / "bench" / "keyval").write_text("version=3\n")
    write_reports(str(d))
    doc = check_json(d / "results.json")
    assert doc["schema_version"] == jsonout.SCHEMA_VERSION
    job = doc["job"]
    assert (job["label"], job["user"], job["args"], job["exit_status"]) == ("lbl", "me", ["a", "b c"], 1)
    assert (job["start"], job["end"], job["abort_reason"], job["status"]) == (
        T0, T0 + 100, "received SIGTERM", "ABORT")
    top, m1, m2 = doc["machines"]
    assert (top["name"], top["job_log"], m1["job_log"]) == ("job", True, False)
    # an abort no testcase shows: its INFO entry reads as ABORT
    assert top["testcases"] == [{"name": "job", "status": "ABORT", "outcome": "errors", "path": [0]}]
    assert top["nodes"][0]["reason"] == "aborted: received SIGTERM"
    assert m2["nodes"][1]["status"] == "INFO"  # m2's END ABORT already shows it
    bench = m1["nodes"][0]
    assert (bench["kind"], bench["status"], bench["duration"], bench["perf"], bench["keyvals"]) == (
        "test", "GOOD", 8, {"ops": "42"}, {"version": "3"})
    assert m1["status_log"] == "m1/status.log" and m1["logs"] == ["m1/debug/autoserv.DEBUG"]
    assert m2["testcases"] == [{"name": "w", "status": "ABORT", "outcome": "errors", "path": [0]}]
    assert doc["totals"] == {"tests": 3, "passed": 1, "failed": 0, "errors": 2, "skipped": 0,
                             "warnings": 0, "machines": 2, "machines_failed": 1}
    # one line per top-level field and per machine (job, m1, m2)
    lines = (d / "results.json").read_text().splitlines()
    assert [line.split('"name": ')[1].split(",")[0] for line in lines if line.startswith('  {"name": ')] == [
        '"job"', '"m1"', '"m2"']


@pytest.mark.parametrize("doc", [
    {"machines": []},
    {"a": None, "machines": [{"name": "m\u00e9\u2028\n", "x": [1.5, True, {"\t": "\"\\"}]}], "z": {}},
    {"schema": "s", "job": {"machines": ["a", "b"]}, "totals": {"tests": 0},
     "machines": [{"name": "a"}, {"name": "b", "nodes": [{"children": []}]}]},
])
def test_json_dumps_is_the_document(doc: dict) -> None:
    text = jsonout.dumps(doc)
    assert json.loads(text) == doc
    assert text.isascii() and text.endswith("}\n")
    assert len(text.splitlines()) == 2 + len(doc) + (1 if doc["machines"] else 0) + len(doc["machines"])


# -- the original Autotest's results dir ------------------------------------------------------

def test_autoserv_report_on_autotest_results(tmp_path: Path) -> None:
    d = tmp_path / "old"
    shutil.copytree(AUTOTEST_DIR, d)
    out = tmp_path / "ci" / "TEST-old.xml"
    out.parent.mkdir()
    proc = run_autoserv("report", d, "--junit", out, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(d / "junit.xml"), str(out), str(d / "results.json"),
                                   str(d / "report.html")]
    assert out.read_bytes() == (d / "junit.xml").read_bytes()
    root, doc, page = check_reports(d)
    got = [(c.get("classname"), c.get("name"), c[0].tag if len(c) else "pass", c.get("time"))
           for c in root.iter("testcase")]
    assert got == [
        ("host1", "reboot", "pass", "55.000"),
        ("host1", "sleeptest", "pass", "60.000"),
        ("host1", "dbench.quick", "failure", "169.000"),
        ("host1", "kvmtest", "skipped", "1.000"),
        ("host2", "sleeptest", "pass", "60.000"),
        ("host2", "dbench.quick", "error", "331.000"),
        ("host3", "bonnie", "system-out", "490.000"),
    ]
    failure = root.find(".//testcase[@name='dbench.quick']/failure")
    assert failure is not None
    assert failure.get("message") == "throughput 12.5 MB/s below the 50 MB/s floor"
    assert failure.text == "throughput 12.5 MB/s below the 50 MB/s floor\n(iteration 3 of 3)"
    out_text = root.find(".//testcase[@name='dbench.quick']/system-out").text  # type: ignore[union-attr]
    assert "Throughput 12.5 MB/sec" in (out_text or "")  # the tail of the test's own debug log
    assert doc["job"]["label"] == "nightly-kernel" and doc["job"]["status"] == "ABORT"
    host1 = doc["machines"][0]
    dbench = host1["nodes"][0]["children"][2]
    assert dbench["perf"] == {"throughput": "12.5", "procs": "4"}
    assert dbench["keyvals"] == {"version": "2", "sysinfo-kernel": "2.6.18"}
    assert doc["machines"][2]["nodes"][0]["children"][0]["perf"] == {"seqout_kbps": "51234",
                                                                    "seqin_kbps": "60321"}
    assert doc["machines"][1]["nodes"][0]["ended"] is False
    assert "throughput 12.5 MB/s below the 50 MB/s floor" in page
    assert page.count('class="timeline-row"') == 3


@pytest.mark.parametrize(
    "args, code, line",
    [
        (["report", "{tmp}/nope"], 1, "autoserv report: results directory {tmp}/nope does not exist"),
        (["report", "{tmp}/empty"], 1, "autoserv report: {tmp}/empty is not a results directory"),
        (["report"], 2, "autoserv report: error: the following arguments are required: RESULTS_DIR"),
        (["report", "{tmp}/bad"], 1, "autoserv report: {tmp}/bad/status.log line 1 is not a status entry"),
        (["merge", "{tmp}/out"], 2, "autoserv merge: error: the following arguments are required: DIR"),
        (["merge", "{tmp}/out", "{tmp}/nope"], 1, "autoserv merge: results directory {tmp}/nope"),
    ],
)
def test_report_command_errors(tmp_path: Path, args: list[str], code: int, line: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "status.log").write_text("garbage\n")
    proc = run_autoserv(*[a.format(tmp=tmp_path) for a in args], cwd=tmp_path, timeout=60)
    assert proc.returncode == code
    lines = stderr_lines(proc)
    assert len(lines) == 1 and lines[0].startswith(line.format(tmp=tmp_path)), proc.stderr


# -- shards and merge -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, parsed",
    [("1/1", (1, 1)), ("2/4", (2, 4)), (" 3 / 3 ", (3, 3)),
     ("0/2", None), ("3/2", None), ("1/0", None), ("a/b", None), ("2", None), ("-1/2", None)],
)
def test_parse_shard(text: str, parsed: tuple[int, int] | None) -> None:
    if parsed is None:
        with pytest.raises(ValueError, match="--shard"):
            shard.parse_shard(text)
    else:
        assert shard.parse_shard(text) == parsed


def test_shards_are_stable_and_disjoint() -> None:
    machines = [Machine.parse(f"host{i}.lab") for i in range(200)]
    parts = [shard.select(machines, i, 4) for i in range(1, 5)]
    assert sorted(m.label for m in sum(parts, [])) == sorted(m.label for m in machines)
    assert all(30 < len(p) < 70 for p in parts), [len(p) for p in parts]
    more = [*machines, *(Machine.parse(f"new{i}") for i in range(50))]
    for i in range(1, 5):
        assert set(parts[i - 1]) <= set(shard.select(more, i, 4))
    # the password is not part of the name hashed
    pw1, pw2 = Machine.parse("root:pw1@h:22"), Machine.parse("root:other@h:22")
    assert shard.select([pw1], shard.shard_of("root@h:22", 7), 7) == [pw1]
    assert shard.select([pw2], shard.shard_of("root@h:22", 7), 7) == [pw2]
    assert shard.shard_of("h", 7) == shard.shard_of("h", 7) == 1 + int(
        __import__("hashlib").sha256(b"h").hexdigest()[:16], 16) % 7


def test_merge_shards(tmp_path: Path) -> None:
    a = make_dir(tmp_path / "a", {"m1": [("GOOD", None, "x", 1, "")], "m2": [("FAIL", None, "x", 2, "no")]},
                 top=[("START", None, "all", 0, ""), ("END GOOD", None, "all", 3, "")],
                 keyval={"job_exit_status": 1})
    b = make_dir(tmp_path / "b", {"m3": [("GOOD", None, "x", 5, "")]}, keyval={"job_started": T0 - 10,
                                                                           "job_finished": T0 + 200,
                                                                           "job_exit_status": 0})
    (b / "debug").mkdir()
    (b / "debug" / "autoserv.DEBUG").write_text("shard b\n")
    (b / "control.srv").write_text("pass\n")
    job = merge(str(tmp_path / "out"), [str(a), str(b)])
    out = tmp_path / "out"
    assert (out / ".machines").read_text() == "m1\nm2\nm3\n"
    kv = model.read_keyval_file(str(out / "keyval"))[0]
    assert (kv["hostname"], kv["job_started"], kv["job_finished"], kv["job_exit_status"], kv["shards"]) == (
        "m1,m2,m3", str(T0 - 10), str(T0 + 200), "1", "2")
    assert [e.operation for e in status.parse_file(str(out / "status.log"))] == ["all", "all"]
    assert (out / "m3" / "status.log").read_text() == (b / "m3" / "status.log").read_text()
    assert (out / "shards" / "2" / "control.srv").exists()
    assert (out / "shards" / "2" / "debug" / "autoserv.DEBUG").exists()
    assert [m.name for m in job.machines] == ["job", "m1", "m2", "m3"]
    with pytest.raises(MergeError, match="machine m1 is in two shards"):
        merge(str(tmp_path / "out2"), [str(a), str(a)])
    with pytest.raises(MergeError, match="not an empty directory"):
        merge(str(out), [str(a)])


def test_merge_one_machine_shard(tmp_path: Path) -> None:
    """A shard of one machine ran it in-process: its top-level files become the machine's."""
    one = tmp_path / "one"
    one.mkdir()
    (one / "keyval").write_text(f"label=l\nuser=u\nhostname=solo\njob_started={T0}\njob_finished={T0 + 9}\n")
    (one / "status.log").write_text(log_text([("GOOD", None, "uname", 3, "Linux")]))
    two = make_dir(tmp_path / "two", {"m1": [("GOOD", None, "uname", 1, "")],
                                      "m2": [("GOOD", None, "uname", 1, "")]})
    job = merge(str(tmp_path / "out"), [str(one), str(two)])
    assert [m.name for m in job.machines] == ["solo", "m1", "m2"]
    assert [c.name for c in job.machines[0].testcases()] == ["uname"]
    assert (tmp_path / "out" / "solo" / "keyval").read_text().startswith("hostname=solo\n")


# -- HTML ------------------------------------------------------------------------------------

def test_html_report_1000_machines(tmp_path: Path) -> None:
    """1000 machines x 10 tests: loaded and rendered in seconds (the time is printed)."""
    machines = {}
    for m in range(1000):
        rows: list[tuple] = []
        t = 0
        for i in range(10):
            rows.append(("START", f"test{i}", f"test{i}", t, ""))
            t += 1 + (m + i) % 7
            code = "FAIL" if (m, i) == (7, 3) else "GOOD"
            rows.append((f"END {code}", f"test{i}", f"test{i}", t, "wrong" if code == "FAIL" else ""))
        machines[f"host{m:04d}"] = rows
    d = make_dir(tmp_path / "big", machines)
    started = time.monotonic()
    job = model.load(str(d))
    loaded = time.monotonic()
    html.write(job, str(d / "report.html"))
    rendered = time.monotonic()
    print(f"\n1000 machines x 10 tests: load {loaded - started:.2f} s, "
          f"report.html {rendered - loaded:.2f} s, {(d / 'report.html').stat().st_size // 1024} KiB")
    page = (d / "report.html").read_text()
    assert page.count('class="timeline-row"') == 1000
    assert page.count('class="bar"') == 10000
    assert job.totals()["tests"] == 10000 and job.totals()["failed"] == 1
    assert rendered - started < 30


def test_html_links_relative_to_where_it_is(tmp_path: Path) -> None:
    d = make_dir(tmp_path / "r", {"m1": [("GOOD", None, "x", 1, "")], "m2": [("GOOD", None, "x", 1, "")]})
    (tmp_path / "pub").mkdir()
    write_reports(str(d), ReportPaths(html=str(tmp_path / "pub" / "r.html")), in_resultdir=False)
    page = (tmp_path / "pub" / "r.html").read_text()
    assert '<base href="../r/">' in page and 'href="m1/status.log"' in page
    assert not (d / "report.html").exists()
    ET.fromstring(page.split("<h2>Timeline</h2>\n", 1)[1].split("\n", 1)[0])  # the SVG is well-formed



# -- progress --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "progress, isatty, env, no_tee, mode",
    [
        (None, True, {}, False, "live"),
        (None, False, {}, False, "plain"),
        (None, True, {"CI": "true"}, False, "plain"),
        (None, True, {}, True, "plain"),
        (True, False, {"CI": "1"}, False, "live"),
        (True, True, {}, True, "plain"),  # -n: nothing is drawn
        (False, True, {}, False, "off"),
        (False, False, {"CI": "1"}, True, "off"),
    ],
)
def test_progress_mode(progress: bool | None, isatty: bool, env: dict, no_tee: bool, mode: str) -> None:
    from autoserv.report import progress as progress_mod

    assert progress_mod.choose_mode(progress, isatty, env, no_tee) == mode


def test_machine_summary_line() -> None:
    from autoserv.report import progress as progress_mod

    machine = model.Machine("m1", "m1", nodes=tree([
        ("START", "a", "a", 0, ""), ("END GOOD", "a", "a", 5, ""),
        ("START", "b", "b", 5, ""), ("END FAIL", "b", "b", 30, "x"),
        ("START", "c", "c", 30, ""), ("END TEST_NA", "c", "c", 31, "n/a"),
    ]))
    summary = progress_mod.summarize(machine)
    assert summary.line() == (
        "m1 : done FAIL in 31.0 s: 3 test(s), 1 passed, 1 failed; slowest b (25.0 s)")


def test_help_does_not_import_rich() -> None:
    code = "import sys, autoserv.cli; print('rich' in sys.modules, 'autoserv.report.html' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=cli_env())
    assert out.stdout.split() == ["False", "False"]


def test_log_excerpt_picks_the_testcase_window(tmp_path: Path) -> None:
    def stamp(t: float) -> str:
        return time.strftime("%m/%d %H:%M:%S", time.localtime(t)) + ".250"

    log = tmp_path / "autoserv.DEBUG"
    log.write_text("\n".join([
        f"{stamp(T0)} INFO | before",
        f"{stamp(T0 + 10)} INFO | during 1",
        "Traceback (most recent call last):",
        f"{stamp(T0 + 20)} ERROR| during 2",
        f"{stamp(T0 + 40)} INFO | after",
    ]) + "\n")
    assert junit.log_excerpt(str(log), T0 + 8, T0 + 20).splitlines() == [
        f"{stamp(T0 + 10)} INFO | during 1", "Traceback (most recent call last):",
        f"{stamp(T0 + 20)} ERROR| during 2"]
    assert junit.log_excerpt(str(log), T0 + 100, T0 + 200).endswith("after")  # none inside: the tail
    assert junit.log_excerpt(str(log), None, None, lines=2).splitlines()[0].endswith("during 2")
    assert junit.log_excerpt(str(tmp_path / "missing"), T0, T0 + 1) == ""
