"""Bad input, injection and results Autotest's tools read (issue 11 items 11, 13, 15; issue 13 §1).

Every CLI behaviour is checked by running ``python -m autoserv`` as a subprocess; what
needs a host runs against the real test bed (sshd on loopback).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from autoserv import status
from autoserv.lab.testbed import Testbed
from autoserv.report import model
from tests.cli_helpers import autoserv_argv, cli_env, run_autoserv, stderr_lines, wait_for, write

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


@pytest.mark.probe_fault
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
        wait_for(lambda: marker.exists() and "reboot.start" in _text(results / "status.log"),
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


@pytest.mark.probe_injection
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


# -- issue 11 item 15: bad input is one line naming what and where, never "internal error" -----


def _bad_inputs(tmp: Path) -> None:
    """The files the probes name (made once per test in its tmp dir)."""
    write(tmp / "c.control", "pass\n")
    os.mkfifo(tmp / "fifo")
    (tmp / "latin1.txt").write_bytes(b"host1\nh\xf6st2\n")
    (tmp / "afile").write_text("")
    (tmp / "mlist.txt").write_text("host1\n# a comment\nb!  # bad\n")
    write(tmp / "ssh_config", """\
        Host badport
            HostName 127.0.0.1
            Port abc
        Host badtimeout
            ConnectTimeout soon
        Host loop1
            ProxyJump loop2
        Host loop2
            ProxyJump root@loop3:22
        Host loop3
            ProxyJump loop1
        """)
    long = "a" * 64
    bodies = {
        "port": 'h = hosts.create_host("badport")\nh.run("true")\n',
        "timeout": 'h = hosts.create_host("badtimeout")\nh.run("true")\n',
        "jump": 'h = hosts.create_host("loop1")\nh.run("true")\n',
        "badhost": 'x = 1\nh = hosts.create_host("bad host!")\n',
        "longlabel": f'h = hosts.create_host("{long}.example.org")\n',
        "nlhost": 'h = hosts.create_host("a\\nb")\n',
        "labels": 'def f(m):\n    raise RuntimeError("no")\nparallel_simple(f, ["a\\nb", "c\\td"])\n',
        "nul": 'h = hosts.create_host("127.0.0.1:1")\nh.run("echo a\\0b")\n',
        "nularg": 'h = hosts.create_host("127.0.0.1:1")\nh.run("echo", args=["a\\0b"])\n',
    }
    for name, body in bodies.items():
        (tmp / f"{name}.control").write_text(body)


#: (id, argv after the control file or a control file name, exit code, what the line says)
BAD_INPUTS = [
    ("M-dev-zero", ["c.control", "-N", "-M", "/dev/zero"], 2, ["-M /dev/zero: not a regular file"]),
    ("M-fifo", ["c.control", "-N", "-M", "fifo"], 2, ["-M fifo: not a regular file"]),
    ("M-not-utf8", ["c.control", "-N", "-M", "latin1.txt"], 2, ["-M latin1.txt: line 2 is not UTF-8"]),
    ("M-missing", ["c.control", "-N", "-M", "nothere"], 2, ["-M nothere: No such file"]),
    ("l-newline", ["c.control", "-r", "res", "-l", "a\nb"], 2, ["-l (label)", "\\n"]),
    ("l-tab", ["c.control", "-r", "res", "-l", "a\tb"], 2, ["-l (label)", "\\t"]),
    ("u-newline", ["c.control", "-r", "res", "-u", "me\nyou"], 2, ["-u (user)"]),
    ("P-newline", ["c.control", "-r", "res", "-P", "t\r"], 2, ["-P (tag)"]),
    ("r-under-file", ["c.control", "-r", "afile/res"], 2, ["-r afile/res", "Not a directory"]),
    ("r-in-proc", ["c.control", "-r", "/proc/autoserv-res"], 2, ["-r /proc/autoserv-res"]),
    ("timeout-inf", ["c.control", "-N", "--connect-timeout", "inf"], 2, ["--connect-timeout", "'inf'"]),
    ("timeout-1e300", ["c.control", "-N", "--connect-timeout", "1e300"], 2, ["--connect-timeout"]),
    ("timeout-nan", ["c.control", "-N", "--connect-timeout", "nan"], 2, ["--connect-timeout"]),
    ("m-label-64", ["c.control", "-N", "-m", "a" * 64 + ".example.org"], 2,
     ["-m: invalid machine", "longer than 63 characters"]),
    ("m-name-254", ["c.control", "-N", "-m", ".".join(["a" * 50] * 5) + ".org"], 2,
     ["longer than 253 characters"]),
    ("M-bad-line", ["c.control", "-N", "-M", "mlist.txt"], 2, ["-M mlist.txt line 3: invalid machine 'b!'"]),
    ("m-bad-entry", ["c.control", "-N", "-m", "ok1,x!"], 2, ["-m: invalid machine 'x!'"]),
    ("cfg-port-abc", ["port.control", "-N", "--ssh-config", "ssh_config"], 1,
     ["port.control:1:", "ssh_config: host badport: Port 'abc'"]),
    ("cfg-timeout", ["timeout.control", "-N", "--ssh-config", "ssh_config"], 1,
     ["timeout.control:1:", "host badtimeout: ConnectTimeout 'soon'"]),
    ("cfg-jump-loop", ["jump.control", "-N", "--ssh-config", "ssh_config"], 1,
     ["jump.control:1:", "ProxyJump loop: loop1 -> loop2 -> loop3 -> loop1"]),
    ("ctl-bad-host", ["badhost.control", "-N"], 1, ["badhost.control:2:", "'bad host!'"]),
    ("ctl-label-64", ["longlabel.control", "-N"], 1, ["longlabel.control:1:", "63 characters"]),
    ("ctl-newline-host", ["nlhost.control", "-N"], 1, ["nlhost.control:1:", "'a\\nb'"]),
    ("ctl-labels-newline-tab", ["labels.control", "-r", "res"], 1,
     ["labels.control:3:", "a\\nb: RuntimeError: no", "c\\td: RuntimeError: no"]),
    ("ctl-nul-command", ["nul.control", "-N"], 1, ["nul.control:2:", "contains a NUL byte"]),
    ("ctl-nul-argument", ["nularg.control", "-N"], 1, ["nularg.control:2:", "argument 1", "NUL byte"]),
]


@pytest.mark.parametrize(("argv", "code", "says"), [p[1:] for p in BAD_INPUTS],
                         ids=[p[0] for p in BAD_INPUTS])
@pytest.mark.probe_input
def test_bad_input_is_one_line(tmp_path: Path, argv: list[str], code: int, says: list[str]) -> None:
    _bad_inputs(tmp_path)
    proc = run_autoserv(*argv, cwd=tmp_path, timeout=60)
    lines = stderr_lines(proc)
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("autoserv: ")
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    for text in says:
        assert text in lines[0]
    if code == 2:
        assert lines[0].endswith("(see autoserv --help)")
    else:
        assert "see autoserv --help" not in lines[0]


@pytest.mark.probe_input
def test_rejected_label_leaves_no_half_made_results_dir(tmp_path: Path) -> None:
    _bad_inputs(tmp_path)
    assert run_autoserv("c.control", "-r", "res", "-l", "a\nb", cwd=tmp_path).returncode == 2
    assert not (tmp_path / "res").exists()
    proc = run_autoserv("c.control", "-r", "res", "-l", "ab", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # not "in use"


@pytest.mark.probe_input
def test_labels_with_newline_and_tab_make_plain_subdirs(tmp_path: Path) -> None:
    _bad_inputs(tmp_path)
    run_autoserv("labels.control", "-r", "res", cwd=tmp_path)
    names = sorted(p.name for p in (tmp_path / "res").iterdir() if p.is_dir() and p.name != "debug")
    assert names == ["a_nb", "c_td"]


@pytest.mark.probe_input
def test_read_only_results_dir(tmp_path: Path) -> None:
    _bad_inputs(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    for target in ("ro", "ro/res"):
        script = (f"mount --bind -o ro ro ro && exec {' '.join(autoserv_argv('c.control'))} "
                  f"-r {target}")
        proc = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=tmp_path, env=cli_env(),
                              capture_output=True, text=True, timeout=60)
        lines = stderr_lines(proc)
        assert proc.returncode == 2, proc.stderr
        assert lines == [f"autoserv: error: -r {target}: cannot write the results directory "
                         f"({target}: Read-only file system) (see autoserv --help)"]


@pytest.mark.probe_input
@pytest.mark.slow
def test_nul_byte_refused_before_sending(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    ctl = write(tmp_path / "c.control", """\
        h = hosts.create_host(machines[0])
        assert h.run("echo before").stdout == "before\\n"
        try:
            h.run("echo a\\0b")
        except AutoservUsageError as exc:
            print("refused:", exc)
        assert h.run("echo after").stdout == "after\\n"  # the shared connection still works
        h.run("printf 'x\\\\0y'")
        """)
    proc = run_autoserv(ctl, "-N", "-m", tb.machines[0], "--ssh-config", tb.ssh_config, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"refused: the command for {tb.machines[0]} contains a NUL byte (at 6)" in proc.stdout


@pytest.mark.probe_input
@pytest.mark.slow
def test_qemu_start_failure_says_why_on_its_first_line(testbed_loopback: Testbed, tmp_path: Path) -> None:
    from autoserv import hosts
    from autoserv.errors import AutoservVirtError
    from autoserv.virt import guests, qemu

    tb = testbed_loopback
    fake = tmp_path / "qemu-fails"
    fake.write_text("#!/bin/sh\necho \"qemu-system-x86_64: -drive file=x.img: Could not open 'x.img'\" >&2\n"
                    "echo 'second line' >&2\nexit 1\n")
    fake.chmod(0o755)
    state = tmp_path / "state"
    (state / "guests" / "10.0.0.5").mkdir(parents=True)
    import logging

    with hosts.SSHHost(tb.machines[0], ssh_config=str(tb.ssh_config)) as h:
        with pytest.raises(AutoservVirtError) as info:
            guests.launch(h, binary=str(fake), bios_dirs=[], accel="tcg", state_dir=str(state),
                          ip="10.0.0.5", mac="02:00:00:00:00:05", options=[],
                          network_for=lambda: qemu.TapNetwork("tap0", "/bin/true", "/bin/true"),
                          log=logging.getLogger("test"))
    first = str(info.value).split("\n")[0]
    assert first.endswith("(exit status 1): qemu-system-x86_64: -drive file=x.img: "
                          "Could not open 'x.img'")


# -- issue 11 item 13: passwords never in ps, never echoed --------------------------------------


@pytest.mark.parametrize(
    ("argv", "masked"),
    [
        (["-m", "root:pw@h1,root:pw2@h2"], ["-m", "***@h2"]),  # all up to the last '@' goes
        (["-m", "u@h1,root:pw2@h2"], ["-m", "u@h1,***@h2"]),
        (["-mroot:pw@h1"], ["-m***@h1"]),
        (["-Nmroot:pw@h1"], ["-Nm***@h1"]),
        (["--machines=root:p,w@h1"], ["--machines=***@h1"]),
        (["-m", "root:p@ss@h1"], ["-m", "***@h1"]),
        (["-m", "root:a b@h1"], ["-m", "***@h1"]),
        (["-m", "root@[::1]:22,h2:2222"], ["-m", "root@[::1]:22,h2:2222"]),
        (["--ssh-pass", "s3cret", "-r", "x"], ["--ssh-pass", "***", "-r", "x"]),
        (["--ssh-pass=s3cret"], ["--ssh-pass=***"]),
        (["--ssh-pa", "s3cret"], ["--ssh-pa", "***"]),
        (["--ssh-port", "22", "--ssh-user", "me"], ["--ssh-port", "22", "--ssh-user", "me"]),
    ],
)
def test_masked_argv(argv: list[str], masked: list[str]) -> None:
    from autoserv import inputs

    assert inputs.masked_argv(argv) == masked


def _end_tree(proc: subprocess.Popen) -> tuple[str, str]:  # type: ignore[type-arg]
    """SIGTERM autoserv and its workers (they clean up), SIGKILL what is left; its output."""
    pids = _tree(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        try:
            return proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            continue
    return proc.communicate(timeout=60)


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found = [pid]
    for p in found:
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        found += [int(c) for c in children]
    return found


@pytest.mark.probe_injection
@pytest.mark.slow
@pytest.mark.parametrize("how", ["in-m", "ssh-pass", "ssh-pass="])
def test_password_not_in_process_listing(testbed_loopback: Testbed, tmp_path: Path, how: str) -> None:
    from tests.conftest import TEST_PASSWORD

    tb = testbed_loopback
    started = tmp_path / "started"
    ctl = write(tmp_path / "c.control", f"""\
        def work(machine):
            h = hosts.create_host(machine)
            h.run("echo x >> {started}; sleep 3601")
        parallel_simple(work, machines)
        """)
    if how == "in-m":
        auth = ["-m", ",".join(f"root:{TEST_PASSWORD}@{h.machine}" for h in tb.hosts[:2])]
    else:
        machines = ["-m", ",".join(f"root@{h.machine}" for h in tb.hosts[:2])]
        auth = machines + (["--ssh-pass", TEST_PASSWORD] if how == "ssh-pass"
                           else [f"--ssh-pass={TEST_PASSWORD}"])
    argv = autoserv_argv(ctl, "-r", tmp_path / "r", *auth, "--known-hosts", tb.known_hosts)
    proc = subprocess.Popen(argv, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _text(started).count("x") == 2, "both remote sleeps", proc)
        pids = _tree(proc.pid)
        assert len(pids) >= 3  # autoserv and its two workers
        for pid in pids:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            assert TEST_PASSWORD not in cmdline, (pid, cmdline)
            assert "***" in cmdline and "autoserv" in cmdline
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert TEST_PASSWORD not in ps
    finally:
        out, err = _end_tree(proc)
    assert proc.returncode == 1
    assert TEST_PASSWORD not in out + err


@pytest.mark.parametrize(
    ("machines", "fragments"),
    [
        ("root:Frag1,Frag2@host1", ["Frag1", "Frag2"]),
        ("root:Frag1 Frag2@host1", ["Frag1", "Frag2"]),
        ("h0,root:Frag1,,Frag2 Frag3@host1", ["Frag1", "Frag2", "Frag3"]),
        ("root:ok@h1,root:Frag1,Frag2@host1", ["ok", "Frag1", "Frag2"]),
    ],
)
@pytest.mark.probe_injection
def test_password_with_separator_is_never_echoed(tmp_path: Path, machines: str, fragments: list[str]) -> None:
    write(tmp_path / "c.control", "pass\n")
    proc = run_autoserv("c.control", "-N", "-m", machines, cwd=tmp_path)
    lines = stderr_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "may hold a password" in lines[0] and "--ssh-pass" in lines[0]
    for fragment in fragments:
        assert fragment not in proc.stderr + proc.stdout


@pytest.mark.probe_injection
def test_password_with_hash_in_machine_file_is_never_echoed(tmp_path: Path) -> None:
    write(tmp_path / "c.control", "pass\n")
    (tmp_path / "ml").write_text("host0\nroot:Frag1#Frag2@host1\n")
    proc = run_autoserv("c.control", "-N", "-M", "ml", cwd=tmp_path)
    lines = stderr_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("autoserv: error: -M ml line 2: invalid machine entry (not shown")
    assert "Frag" not in proc.stderr
