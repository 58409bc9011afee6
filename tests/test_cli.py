"""The autoserv CLI: flags, exit codes, one-line errors, results dir (no hosts needed).

Runs the CLI both in-process (``cli.main``) and as a subprocess (``python -m autoserv``).
Tests against real test bed hosts are in test_runner_testbed.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from autoserv import cli, status
from autoserv.errors import AutoservUsageError
from autoserv.hosts import context as hosts_context
from autoserv.job import read_keyval
from tests.cli_helpers import autoserv_argv, cli_env, run_autoserv, stderr_lines, write


@pytest.fixture
def ok_control(tmp_path: Path) -> Path:
    return write(tmp_path / "ok.control", "job.record('GOOD', None, 'noop', 'fine')\n")


# -- argument parsing (pure) -----------------------------------------------------------


def test_machines_split_deduplicated_in_order(ok_control: Path, tmp_path: Path) -> None:
    mlist = write(tmp_path / "machines", "# lab\nhostc  # third\n\nhosta\nroot@hostd:2222\n")
    opts = cli.parse_args(
        [str(ok_control), "-m", "hostb,hosta hostb", "-m", " hosta ,hostc", "-M", str(mlist)]
    )
    assert opts.machine_list == ["hostb", "hosta", "hostc", "root@hostd:2222"]


def test_args_positional_then_dash_a(ok_control: Path) -> None:
    opts = cli.parse_args(["-m", "h1", str(ok_control), "one", "two", "-a", "three  four"])
    assert opts.args == ["one", "two", "three", "four"]
    opts = cli.parse_args([str(ok_control), "-m", "h1", "--", "--not-a-flag"])
    assert opts.args == ["--not-a-flag"] and opts.machine_list == ["h1"]


def test_defaults(ok_control: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOSERV_SSH_PASS", raising=False)
    monkeypatch.delenv("AUTOSERV_SSH_CONFIG", raising=False)
    opts = cli.parse_args([str(ok_control)])
    assert opts.machine_list == [] and opts.args == [] and opts.label == "" and opts.tag == ""
    assert opts.ssh_user is None and opts.ssh_port is None and opts.ssh_pass is None
    assert opts.control_filename == "control.srv" and not opts.write_pidfile


def test_ssh_flags_and_environment(ok_control: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write(tmp_path / "ssh_config", "Host x\n  Port 2\n")
    monkeypatch.setenv("AUTOSERV_SSH_PASS", "from-env")
    monkeypatch.setenv("AUTOSERV_SSH_CONFIG", str(cfg))
    opts = cli.parse_args([str(ok_control), "--ssh-user", "me", "--ssh-port", "2222",
                           "--host-key-policy", "strict", "--connect-timeout", "2.5"])
    assert (opts.ssh_user, opts.ssh_port, opts.ssh_pass) == ("me", 2222, "from-env")
    assert opts.ssh_config == str(cfg) and opts.host_key_policy == "strict"
    assert opts.connect_timeout == 2.5
    opts = cli.parse_args([str(ok_control), "--ssh-pass", "flag"])
    assert opts.ssh_pass == "flag"


def test_job_settings_are_one_frozen_value_built_from_the_flags(
        ok_control: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOSERV_SSH_PASS", raising=False)
    known = tmp_path / "known_hosts"
    opts = cli.parse_args([str(ok_control), "-l", "lab", "-u", "me", "-P", "t1", "--ssh-user", "u",
                           "--ssh-port", "2222", "--ssh-pass", "pw", "--known-hosts", str(known),
                           "--host-key-policy", "off", "--connect-timeout", "2.5",
                           "--max-parallel", "3", "--use-existing-results", "-n", "-p",
                           "--pidfile-label", "x", "--client-tests", str(tmp_path), "--verbose"])
    settings = cli.job_settings(opts)
    assert (settings.label, settings.user, settings.tag) == ("lab", "me", "t1")
    ssh = settings.ssh
    assert ssh is not None and (ssh.user, ssh.port, ssh.known_hosts) == ("u", 2222, str(known))
    assert ssh.password is not None and ssh.password.reveal() == "pw" and "pw" not in repr(ssh)
    assert (ssh.host_key_policy, ssh.connect_timeout, ssh.key_file) == ("off", 2.5, None)
    assert (settings.max_parallel, settings.use_existing_results, settings.console) == (3, True, False)
    assert (settings.verbose, settings.pidfile_label, settings.control_filename) == (
        True, "x", "control.srv")
    assert settings.tests.client_tests == [str(tmp_path)]
    with pytest.raises(AttributeError):
        settings.label = "changed"  # type: ignore[misc]
    opts.results = str(tmp_path / "results")
    job = cli.make_job(opts)
    assert job.settings == settings
    assert (job.label, job.user, job.tag, job.max_parallel) == ("lab", "me", "t1", 3)
    defaults = cli.job_settings(cli.parse_args([str(ok_control)]))
    assert defaults.pidfile_label is None and defaults.console and defaults.ssh is not None
    assert defaults.ssh.user is None and defaults.ssh.password is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["-c", "-s"], "mutually exclusive"),
        (["-c"], "-c needs machines"),
        (["--client-tests", "/nonexistent/tests"], "--client-tests: no such directory"),
        (["--server-tests", "/nonexistent/tests"], "--server-tests: no such directory"),
        (["-N", "-r", "x"], "mutually exclusive"),
        (["-N", "-p"], "cannot be used with -N"),
        (["-b"], "-b (rebooting after the job) is not supported"),
        (["-i"], "-i needs an install hook"),
        (["-v"], "-v runs no control file"),
        (["-R", "-m", "h"], "-R runs no control file"),
        (["--collect-crashinfo"], "--collect-crashinfo runs no control file"),
        (["--ssh-port", "0"], "port out of range"),
        (["--ssh-port", "ssh"], "not a port number"),
        (["--connect-timeout", "-1"], "must be positive"),
        (["--host-key-policy", "maybe"], "invalid choice"),
        (["--ssh-key", "/nonexistent/key"], "no such file"),
        (["-m", "root@"], "invalid machine"),
        (["-m", "h:99999"], "bad port"),
        (["-M", "/nonexistent/list"], "-M /nonexistent/list"),
        (["--control-filename", "../x"], "invalid --control-filename"),
    ],
)
def test_usage_errors(ok_control: Path, argv: list[str], message: str) -> None:
    with pytest.raises(AutoservUsageError, match=re.escape(message)):
        cli.parse_args([str(ok_control), *argv])


def test_missing_control_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(AutoservUsageError, match="does not exist"):
        cli.parse_args([str(tmp_path / "nope")])
    with pytest.raises(AutoservUsageError, match="is not a file"):
        cli.parse_args([str(tmp_path)])


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (None, 0),
        (AutoservUsageError("x"), 2),
        (ValueError("x"), 1),
        (KeyboardInterrupt(), 1),
        (SystemExit(0), 0),
        (SystemExit(3), 1),
    ],
)
def test_exit_code_mapping(exc: BaseException | None, code: int) -> None:
    assert cli.exit_code_for(exc) == code


# -- in-process runs -------------------------------------------------------------------


def test_in_process_results_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctl = tmp_path / "ctl.control"
    ctl.write_bytes(
        b"import os\r\n"
        b"assert os.getcwd() == job.resultdir\r\n"
        b"job.record('START', None, 'group')\r\n"
        b"logging.debug('debug line')\r\n"
        b"logging.warning('warning line')\r\n"
        b"print('printed', args)\r\n"
        b"job.record('END GOOD', None, 'group')\r\n"
    )
    results = tmp_path / "res"
    code = cli.main([str(ctl), "-r", str(results), "-l", "mylabel", "-u", "me", "-P", "t1",
                     "-m", "h1,h2", "-p", "a1", "a2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    assert "printed ['a1', 'a2']" in out and "debug line" not in out
    assert (results / "control.srv").read_bytes() == ctl.read_bytes().replace(b"\r", b"")
    keyval = read_keyval(str(results))
    assert keyval["label"] == "mylabel" and keyval["user"] == "me"
    assert keyval["hostname"] == "h1,h2" and keyval["status_version"] == "1"
    assert int(keyval["job_started"]) <= int(keyval["job_finished"])
    entries = status.parse_file(str(results / "status.log"))
    assert [(e.status_code, e.operation, e.indent) for e in entries] == [
        ("START", "group", 0), ("END GOOD", "group", 0)
    ]
    debug = results / "debug"
    assert "debug line" in (debug / "autoserv.DEBUG").read_text()
    assert "debug line" not in (debug / "autoserv.INFO").read_text()
    assert "printed" in (debug / "autoserv.INFO").read_text()
    assert "warning line" in (debug / "autoserv.WARNING").read_text()
    assert "printed" not in (debug / "autoserv.WARNING").read_text()
    assert (debug / "autoserv.ERROR").read_text() == ""
    pid, exit_status, failed = (results / ".autoserv_execute").read_text().splitlines()
    assert int(pid) == os.getpid() and exit_status == "0" and failed == "0"


@pytest.mark.parametrize("model", ["fork", "threads"])
def test_machine_debug_files_are_made_by_their_first_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        model: str) -> None:
    monkeypatch.setenv("AUTOSERV_WORKERS", model)
    ctl = write(tmp_path / "ctl.control",
                "def machine(m):\n"
                "    logging.info('hello from %s', m)\n"
                "    if m == 'h2':\n"
                "        logging.warning('careful on %s', m)\n"
                "parallel_simple(machine, machines)\n")
    results = tmp_path / "res"
    assert cli.main([str(ctl), "-r", str(results), "-m", "h1,h2"]) == 0, capsys.readouterr().err
    # the job's own debug/ always has all four, the ones with nothing in them empty
    assert sorted(p.name for p in (results / "debug").iterdir()) == [
        "autoserv.DEBUG", "autoserv.ERROR", "autoserv.INFO", "autoserv.WARNING"]
    h1, h2 = results / "h1" / "debug", results / "h2" / "debug"
    assert sorted(p.name for p in h1.iterdir()) == ["autoserv.DEBUG", "autoserv.INFO"]
    assert sorted(p.name for p in h2.iterdir()) == [
        "autoserv.DEBUG", "autoserv.INFO", "autoserv.WARNING"]
    for level in ("DEBUG", "INFO"):  # each file holds its level and above, each line once
        text = (h2 / f"autoserv.{level}").read_text()
        assert text.count("hello from h2") == 1 and text.count("careful on h2") == 1, text
        assert "h1" not in text
    warning = (h2 / "autoserv.WARNING").read_text()
    assert "careful on h2" in warning and "hello" not in warning


def test_server_tests_without_results_leave_no_scratch_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    write(tmp_path / "srv" / "writes" / "writes.py", """\
        from autotest.server import test

        class writes(test.test):
            version = 1

            def run_once(self):
                with open(self.outputdir + '/out', 'w') as f:
                    f.write('x')
        """)
    ctl = write(tmp_path / "ctl.control", """\
        assert job.run_test('writes') is True
        assert job.run_test('no_such_test_here') is False
        """)
    code = cli.main([str(ctl), "-N", "--server-tests", str(tmp_path / "srv")])
    err = capsys.readouterr().err
    assert code == 1 and "job failed: ERROR no_such_test_here" in err, err  # the asserts held
    # -N: the tests' output went, with its scratch dir (the shared srcdir of server tests,
    # <tmp>/autoserv-server-tests, stays, as Autotest's srcdir does)
    assert list(scratch_root.glob("autoserv-server-test-*")) == []


def test_namespace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctl = write(
        tmp_path / "ns.control",
        """\
        import autoserv.errors
        names = ["job", "machines", "args", "ssh_user", "ssh_port", "ssh_pass", "os", "sys",
                 "logging", "hosts", "kvm", "parallel", "parallel_simple", "subcommand", "run",
                 "get_tmp_dir", "sh_escape", "parse_machine", "barrier"]
        names += autoserv.errors.__all__
        missing = [n for n in names if n not in globals()]
        assert not missing, missing
        assert machines == ["root@h1:2222", "h2"], machines
        assert (ssh_user, ssh_port) == ("me", 2200)
        assert hosts.__name__ == "autoserv.hosts" and kvm.__name__ == "autoserv.kvm"
        assert parse_machine("u@h:1") == ("h", "u", None, 1)
        assert run("echo hi").stdout == "hi\\n"
        assert (job.label, job.user, job.tag) == ("", "me2", "tagged")
        assert __file__.endswith("ns.control")
        barrier("a", "b", 5).rendezvous("a")
        print("barrier: alone, released")
        """,
    )
    code = cli.main([str(ctl), "-r", str(tmp_path / "r"), "-m", "root@h1:2222,h2,h2",
                     "--ssh-user", "me", "--ssh-port", "2200", "-u", "me2", "-P", "tagged"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "barrier: alone, released" in out


def test_kvm_is_imported_when_a_control_file_first_uses_it(tmp_path: Path) -> None:
    """``kvm`` (all of autoserv.virt, ~13 ms) is not paid by jobs that never use it, nor
    ``urllib.request`` (``autotest_remote`` fetches a control file given as a URL with it)."""
    ctl = write(
        tmp_path / "lazy.control",
        """\
        import sys
        assert "autoserv.kvm" not in sys.modules
        # nor an HTTP client (~8 ms), imported when a client control file is a URL
        assert "urllib.request" not in sys.modules
        assert kvm.__name__ == "autoserv.kvm" and "KVM on a remote host" in kvm.__doc__
        import autoserv.kvm
        assert kvm.KVM is autoserv.kvm.KVM and "KVM" in dir(kvm)
        print("kvm: loaded on first use")
        """,
    )
    proc = run_autoserv(ctl, "-r", tmp_path / "r", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "kvm: loaded on first use" in proc.stdout


def test_the_job_gives_hosts_its_context_while_it_runs(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ctl = write(
        tmp_path / "ctx.control",
        """\
        d = hosts.get_ssh_defaults()
        assert (d.user, d.port, d.host_key_policy, d.connect_timeout) == ("me", 2200, "off", 2.5), d
        assert d.password is not None and d.password.reveal() == "pw"
        ctx = hosts.context.current()
        assert ctx.resultdir == job.resultdir and ctx.record == job.record
        assert hosts.SSHHost("h9").params.connect_timeout == 2.5
        def work(machine):  # a worker's hosts see its own results subdir
            assert job.resultdir.endswith("/" + machine), job.resultdir
            assert hosts.context.current().resultdir == job.resultdir
            assert hosts.get_ssh_defaults().user == "me"
        parallel_simple(work, machines)
        """,
    )
    assert hosts_context.current() == hosts_context.JobContext()
    code = cli.main([str(ctl), "-r", str(tmp_path / "r"), "-m", "h1,h2", "--ssh-user", "me",
                     "--ssh-port", "2200", "--ssh-pass", "pw", "--host-key-policy", "off",
                     "--connect-timeout", "2.5"])
    assert code == 0, capsys.readouterr().err
    assert hosts_context.current() == hosts_context.JobContext()  # nothing outlives the job


def test_no_results_dir_and_no_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    ctl = write(tmp_path / "c.control", "print('hello')\nassert job.resultdir is None\n"
                "job.record('GOOD', None, 'x')\n")
    assert cli.main([str(ctl), "-N"]) == 0
    assert capsys.readouterr().out.count("hello") == 1
    assert sorted(os.listdir(tmp_path)) == ["c.control"]
    assert cli.main([str(ctl), "-N", "-n"]) == 0
    assert capsys.readouterr() == ("", "")


def test_default_results_dir_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  ok_control: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main([str(ok_control), "-n"]) == 0
    assert cli.main([str(ok_control), "-n"]) == 0
    made = sorted(p for p in os.listdir(tmp_path) if p.startswith("results."))
    assert len(made) == 2
    assert re.fullmatch(r"results\.\d{4}-\d\d-\d\d-\d\d\.\d\d\.\d\d", made[0])


def test_results_dir_in_use(tmp_path: Path, ok_control: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "r"
    assert cli.main([str(ok_control), "-r", str(results), "-n"]) == 0
    before = (results / "status.log").read_text()
    assert cli.main([str(ok_control), "-r", str(results), "-n"]) == 1
    err = capsys.readouterr().err
    assert err == (f"autoserv: results directory {results} is already in use (it has "
                   "control.srv); pass --use-existing-results to reuse it, or -r for another one\n")
    assert (results / "status.log").read_text() == before
    assert cli.main([str(ok_control), "-r", str(results), "-n", "--use-existing-results"]) == 0
    assert len(status.parse_file(str(results / "status.log"))) == 2
    # an empty existing directory is fine
    (tmp_path / "empty").mkdir()
    assert cli.main([str(ok_control), "-r", str(tmp_path / "empty"), "-n"]) == 0


def test_control_file_exception(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctl = write(tmp_path / "boom.control", """\
        def helper():
            raise ValueError("bad value\\nmore detail")

        job.record("START", None, "outer")
        helper()
        """)
    results = tmp_path / "r"
    assert cli.main([str(ctl), "-r", str(results)]) == 1
    out, err = capsys.readouterr()
    assert err == f"autoserv: {ctl}:2: ValueError: bad value\n"
    assert "Traceback" not in out
    entries = status.parse_file(str(results / "status.log"))
    assert [e.status_code for e in entries] == ["START", "END ABORT", "ERROR"]
    assert entries[2].message.startswith("ValueError: bad value")
    debug = (results / "debug" / "autoserv.DEBUG").read_text()
    assert "Traceback (most recent call last)" in debug
    assert f'File "{ctl}", line 5' in debug and f'File "{ctl}", line 2, in helper' in debug
    # --verbose: the traceback on the console too
    assert cli.main([str(ctl), "-r", str(tmp_path / "r2"), "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == f"autoserv: {ctl}:2: ValueError: bad value"


def test_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctl = write(tmp_path / "syntax.control", "x = 1\nif x\n    pass\n")
    assert cli.main([str(ctl), "-r", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(rf"autoserv: {re.escape(str(ctl))}:2:\d+: SyntaxError: .*\n", err)
    assert (tmp_path / "r" / "control.srv").exists()


def test_recorded_failure_gives_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctl = write(tmp_path / "f.control", """\
        def test():
            raise TestFail("expected 3, got 4")
        job.run_group(test)
        def na():
            raise TestNAError("not here")
        job.run_group(na, tag="optional")
        """)
    assert cli.main([str(ctl), "-r", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("autoserv: job failed: END FAIL test (see ")
    entries = status.parse_file(str(tmp_path / "r" / "status.log"))
    assert [(e.status_code, e.operation, e.message) for e in entries] == [
        ("START", "test", ""), ("END FAIL", "test", "expected 3, got 4"),
        ("START", "optional", ""), ("END TEST_NA", "optional", "not here"),
    ]


def test_run_group_reraises_other_exceptions(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    ctl = write(tmp_path / "g.control", """\
        def group():
            raise KeyError("k")
        try:
            job.run_group(group)
        except KeyError:
            job.record("INFO", None, None, "caught")
        """)
    assert cli.main([str(ctl), "-r", str(tmp_path / "r"), "-n"]) == 1
    entries = status.parse_file(str(tmp_path / "r" / "status.log"))
    assert [e.status_code for e in entries] == ["START", "END ABORT", "INFO"]
    assert entries[1].message.startswith("KeyError: 'k'")


def test_legacy_control_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctl = tmp_path / "py2.control"
    ctl.write_text('d = {"a": 1}\nfor k, v in d.iteritems():\n\tprint k, v,\nprint\n'
                   'if d.has_key("a"): print >>sys.stderr, "mode", 0755\n'
                   'for i in xrange(2): print `i`\n')
    assert cli.main([str(ctl), "-r", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "a 1 \n" in out or "| a 1" in out
    assert "mode 493" in out and "| 0" in out and "| 1" in out


def test_secrets_never_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    ctl = write(tmp_path / "s.control", """\
        logging.info("the password is %s", ssh_pass)
        print("machine:", machines)
        raise RuntimeError("failed with " + ssh_pass)
        """)
    results = tmp_path / "r"
    monkeypatch.setenv("AUTOSERV_SSH_PASS", "s3cr3t-pw")
    code = cli.main([str(ctl), "-r", str(results), "-m", "root:0th3r-pw@h1", "--verbose"])
    out, err = capsys.readouterr()
    assert code == 1
    everything = out + err
    for path in results.rglob("*"):
        if path.is_file():
            everything += path.read_text()
    assert "s3cr3t-pw" not in everything and "0th3r-pw" not in everything
    assert "the password is ***" in everything
    assert read_keyval(str(results))["hostname"] == "root@h1"


# -- as a subprocess -------------------------------------------------------------------


def test_subprocess_exit_codes_and_one_line_errors(tmp_path: Path, ok_control: Path) -> None:
    proc = run_autoserv(ok_control, "-r", tmp_path / "r", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    assert "GOOD\t----\tnoop" in proc.stdout
    cases = [
        ([ok_control, "--bogus"], 2, "autoserv: error: unrecognized arguments: --bogus"),
        ([tmp_path / "missing.control"], 2, "does not exist"),
        ([ok_control, "-c", "-s"], 2, "mutually exclusive"),
        ([ok_control, "-I"], 2, "-I needs an install hook"),
        ([ok_control, "-b"], 2, "is not supported"),
        ([ok_control, "-m", "a,b:ssh"], 2, "invalid machine 'b:ssh'"),
        ([ok_control, "-r", tmp_path / "r"], 1, "already in use"),
    ]
    for argv, code, text in cases:
        proc = run_autoserv(*argv, cwd=tmp_path)
        assert proc.returncode == code, (argv, proc.stderr)
        lines = stderr_lines(proc)
        assert len(lines) == 1 and lines[0].startswith("autoserv: ") and text in lines[0], lines
    syntax = write(tmp_path / "syntax.control", "print 'a' 'b' +\n")
    proc = run_autoserv(syntax, "-r", tmp_path / "s", cwd=tmp_path)
    assert proc.returncode == 1 and len(stderr_lines(proc)) == 1
    assert f"{syntax}:1" in proc.stderr and "SyntaxError" in proc.stderr


def test_help(tmp_path: Path) -> None:
    proc = run_autoserv("--help", cwd=tmp_path)
    assert proc.returncode == 0
    assert "Duplicate entries are dropped" in proc.stdout and "--ssh-config" in proc.stdout


@pytest.mark.probe_fault
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_mid_run_local(tmp_path: Path, signum: signal.Signals) -> None:
    """SIGTERM/SIGINT while workers run local commands: END ABORT everywhere, exit 1."""
    ctl = write(tmp_path / "hang.control", """\
        import time
        def work(name):
            def body():
                while True:
                    try:
                        run("touch started.%s; sleep 4711" % name)
                    except Exception:   # an abort must not be swallowed here
                        logging.info("swallowed")
            job.run_group(body, tag="hang")
        job.record("START", None, "outer")
        parallel_simple(work, ["w1", "w2", "w3"])
        """)
    results = tmp_path / "r"
    proc = subprocess.Popen(autoserv_argv(ctl, "-r", results), cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not all((results / w / f"started.{w}").exists() for w in ("w1", "w2", "w3")):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)  # polling for the workers to start, not a timed assertion
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reason = f"received {signum.name}"
    assert proc.returncode == 1
    assert err.strip() == f"autoserv: job aborted: {reason}"
    assert "swallowed" not in out
    top = status.parse_file(str(results / "status.log"))
    assert [e.status_code for e in top] == ["START", "END ABORT", "INFO"]
    assert top[2].fields["job_abort_reason"] == reason
    for w in ("w1", "w2", "w3"):
        entries = status.parse_file(str(results / w / "status.log"))
        assert [e.status_code for e in entries] == ["START", "END ABORT", "INFO"], w
        # a worker hears the parent's SIGTERM (after SIGINT: its own reason)
        assert entries[2].fields["job_abort_reason"] in (reason, "received SIGTERM")
    leftovers = subprocess.run(["pgrep", "-f", "sleep 4711"], capture_output=True, text=True)
    assert leftovers.stdout == ""


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (None, 0), (3, 1)])
def test_control_file_sys_exit(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               code: int | None, expected: int) -> None:
    ctl = write(tmp_path / "exit.control", f"import sys\nsys.exit({code})\nraise AssertionError\n")
    assert cli.main([str(ctl), "-r", str(tmp_path / "r"), "-n"]) == expected
    err = capsys.readouterr().err
    if expected:
        assert err == f"autoserv: {ctl}:2: control file called sys.exit(3)\n"
    else:
        assert err == ""


def test_console_reader_gone(tmp_path: Path) -> None:
    """Closed stdout (e.g. `| head -1`): the job still runs to the end, quietly."""
    ctl = write(tmp_path / "chatty.control", """\
        def talk(name):
            for i in range(2000):
                print(name, "line", i)
            job.record("GOOD", None, "talk")
        parallel_simple(talk, ["w1", "w2"])
        for i in range(2000):
            logging.info("main line %d", i)
        job.record("GOOD", None, "done")
        """)
    results = tmp_path / "r"
    proc = subprocess.Popen(autoserv_argv(ctl, "-r", results), cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""
    entries = status.parse_file(str(results / "status.log"))
    assert [e.operation for e in entries] == ["done"]
    for w in ("w1", "w2"):
        assert "line 1999" in (results / w / "debug" / "autoserv.INFO").read_text()
