"""Bad input, injection and results Autotest's tools read (issue 11 items 11, 13, 15; issue 13 §1).

Every CLI behaviour is checked by running ``python -m autoserv`` as a subprocess; what
needs a host runs against the real test bed (sshd on loopback).
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from autoserv import status
from autoserv.deadline import Deadline
from autoserv.lab.testbed import Testbed
from autoserv.report import model

try:
    from tests.cli_helpers import autoserv_argv, cli_env, run_autoserv, stderr_lines
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from cli_helpers import autoserv_argv, cli_env, run_autoserv, stderr_lines  # type: ignore


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _wait_for(predicate, what: str, proc: subprocess.Popen, seconds: float = 120) -> None:  # type: ignore[type-arg]
    deadline = Deadline(seconds)
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"autoserv ended before {what}:\n{out}\n{err}")
        if deadline.expired():
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)  # polling, not a timed assertion


# -- issue 13 §1: results Autotest's parser reads ------------------------------------------


def test_machines_file_written_for_more_than_one_machine(tmp_path: Path) -> None:
    ctl = write(tmp_path / "c.control", "pass\n")
    proc = run_autoserv(ctl, "-r", tmp_path / "two", "-m", "root:s3cret@hosta,hostb:2222",
                        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "two" / ".machines").read_text() == "root@hosta\nhostb:2222\n"
    proc = run_autoserv(ctl, "-r", tmp_path / "one", "-m", "hosta", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "one" / ".machines").exists()


@pytest.mark.parametrize(
    ("body", "code", "failed"),
    [
        ("pass\n", 0, 0),
        ("job.record('FAIL', None, 't1', 'no')\njob.record('FAIL', None, 't2', 'no')\n", 1, 2),
        ("raise RuntimeError('boom')\n", 1, 1),
        ("import sys\nsys.exit(3)\n", 1, 1),
    ],
    ids=["good", "two-failed", "raised", "sys-exit"],
)
def test_pidfile_exit_status_as_waitpid(tmp_path: Path, body: str, code: int, failed: int) -> None:
    ctl = write(tmp_path / "c.control", body)
    results = tmp_path / "r"
    proc = run_autoserv(ctl, "-r", results, "-p", cwd=tmp_path)
    assert proc.returncode == code, proc.stderr
    lines = (results / ".autoserv_execute").read_text().splitlines()
    assert len(lines) == 3
    assert int(lines[0]) > 0
    assert int(lines[1]) == code << 8
    assert os.waitstatus_to_exitcode(int(lines[1])) == code  # what os.waitpid gives back
    assert int(lines[2]) == failed
    assert model.load(str(results)).exit_status == code  # autoserv report reads it the same


def test_failed_worker_error_points_at_its_status_log(tmp_path: Path) -> None:
    ctl = write(tmp_path / "c.control", """\
        def work(machine):
            if machine == "hostb":
                job.record("FAIL", None, "mytest", "it broke")
        parallel_simple(work, machines)
        """)
    results = tmp_path / "r"
    proc = run_autoserv(ctl, "-r", results, "-m", "hosta,hostb", cwd=tmp_path)
    assert proc.returncode == 1
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert f"(see {results / 'hostb' / 'status.log'})" in lines[0]
    assert str(results / "status.log") not in lines[0]
    assert str(results / "hosta") not in lines[0]


def test_py2_builtins_in_every_control_file(tmp_path: Path) -> None:
    ctl = write(tmp_path / "c.control", """\
        x = raw_input
        assert list(xrange(2)) == [0, 1] and unicode is str and long is int
        assert reduce(lambda a, b: a + b, [1, 2]) == 3
        """)
    proc = run_autoserv(ctl, "-N", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    check = run_autoserv("check", ctl, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.slow
def test_reboot_interrupted_by_abort_ends_abort(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    marker = tmp_path / "rebooting"
    ctl = write(tmp_path / "c.control", f"""\
        h = hosts.create_host(machines[0])
        open({str(marker)!r}, "w").close()
        h.reboot(timeout=600, reboot_cmd="true")  # never goes down: waits until aborted
        """)
    results = tmp_path / "r"
    proc = subprocess.Popen(
        autoserv_argv(ctl, "-r", results, "-m", tb.machines[0], "--ssh-config", tb.ssh_config),
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: marker.exists() and "reboot.start" in _text(results / "status.log"),
                  "the reboot to start", proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    entries = status.parse_file(str(results / "status.log"))
    ends = [e for e in entries if e.is_end and e.operation == "reboot"]
    assert [e.status_code for e in ends] == ["END ABORT"], [e.render() for e in entries]


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


# -- issue 11 item 11: line boundaries inside status.log fields ----------------------------

#: Every character str.splitlines() breaks at besides \n and \r.
LINE_BREAKS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
FORGE = "END GOOD\t----\tforged\ttimestamp=1\tlocaltime=Jan 01 00:00:00\t"


def test_line_breaks_table_is_complete() -> None:
    breaks = {chr(c) for c in range(0x110000) if len(f"a{chr(c)}b".splitlines()) == 2}
    assert breaks == set(LINE_BREAKS) | {"\n", "\r"}


@pytest.mark.parametrize("char", LINE_BREAKS, ids=[f"U+{ord(c):04X}" for c in LINE_BREAKS])
@pytest.mark.parametrize("where", ["message", "message-line-2", "subdir", "operation", "field"])
def test_line_break_in_a_field_forges_no_line(char: str, where: str) -> None:
    text = f"x{char}{FORGE.replace(chr(9), ' ')}" if where != "message" else f"x{char}{FORGE}"
    args = {"subdir": "sub", "operation": "op", "message": "msg", "optional_fields": {"k": "v"}}
    if where == "message":
        args["message"] = text
    elif where == "message-line-2":
        args["message"] = f"first\n{text}"
    elif where == "field":
        args["optional_fields"] = {"k": text}
    else:
        args[where] = text
    writer = status.StatusLogWriter(None)
    writer.record("START", None, "group")
    rendered = [writer.record("GOOD", **args), writer.record("END GOOD", None, "group")]
    log = "START\t----\tgroup\ttimestamp=1\tlocaltime=x\t\n" + "\n".join(rendered[:1]) + "\n"
    log += rendered[1] + "\n"
    # every reader sees the same lines: str.splitlines(), a file iterator, our parser
    expected_lines = 4 if where == "message-line-2" else 3
    assert len(log.splitlines()) == expected_lines
    entries = status.parse(log)
    assert [(e.status_code, e.indent) for e in entries] == [("START", 0), ("GOOD", 1), ("END GOOD", 0)]
    good = entries[1]
    escaped = ascii(char)[1:-1]
    value = {"message": good.message, "message-line-2": good.message, "subdir": good.subdir,
             "operation": good.operation, "field": good.fields.get("k")}[where]
    assert value is not None and escaped in value and char not in value
    assert value.replace(escaped, char) == (args["message"] if where.startswith("message")
                                            else text).replace("\t", " " * 8)
    assert [e.operation for e in entries if e.status_code == "END GOOD"] == ["group"]


@pytest.mark.parametrize("char", LINE_BREAKS, ids=[f"U+{ord(c):04X}" for c in LINE_BREAKS])
def test_parse_breaks_lines_at_newline_only(char: str) -> None:
    # a foreign writer left the character in: still one entry, nothing forged
    log = f"GOOD\t----\top\ttimestamp=1\tmsg{char}{FORGE}\r\n"
    entries = status.parse(log)
    assert len(entries) == 1 and entries[0].status_code == "GOOD"
    assert status.split_lines(log) == [log[:-2]]


def test_control_file_line_breaks_reach_status_log_as_one_entry(tmp_path: Path) -> None:
    ctl = write(tmp_path / "c.control", """\
        job.record("START", None, "t\\x0c1")
        job.record("GOOD", "s\\u2028", "t\\x1c", "msg\\x0cEND GOOD", {"k": "v\\x85"})
        job.record("END GOOD", None, "t\\x0c1", "done\\u2029END FAIL")
        """)
    results = tmp_path / "r"
    proc = run_autoserv(ctl, "-r", results, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (results / "status.log").read_text()
    assert len(text.splitlines()) == 3
    entries = status.parse(text)
    assert [e.status_code for e in entries] == ["START", "GOOD", "END GOOD"]
    assert entries[1].message == "msg\\x0cEND GOOD" and entries[1].fields["k"] == "v\\x85"
    assert model.load(str(results)).exit_status == 0
