"""``autoserv check``: findings on real control files, the CLI, and that nothing connects.

Pure checks run in-process (``check_file``, ``machine_findings``); the CLI runs both
in-process (``cli.main(["check", ...])``) and as a subprocess, and the no-network proof
runs the check in a subprocess whose audit hook kills it on any socket use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autoserv import check, cli, control
from autoserv.check import CLIENT, SERVER, Finding, check_file, known_tests, machine_findings
from autoserv.check.machines import offline_ssh_config
from autoserv.lab.testbed import Testbed
from bench.check_speed import make_control
from tests.cli_helpers import REPO, cli_env, run_autoserv, write

DATA = Path(__file__).resolve().parent / "data"
SEED = DATA / "kvm_seed_published.control"
EXAMPLES = sorted((REPO / "control_examples").glob("*.control"))
#: client-side examples say so in their header ("run it with -c"); the rest are server-side
CLIENT_EXAMPLES = [p for p in EXAMPLES if "run it with -c" in p.read_text()[:400]]
SERVER_EXAMPLES = [p for p in EXAMPLES if p not in CLIENT_EXAMPLES]




def brief(findings: list[Finding]) -> list[tuple[int, str, str]]:
    return [(f.line, f.severity, f.message) for f in findings]


# -- the seed's control file, as published --------------------------------------------


def test_seed_as_published_reports_addreses_on_line_6() -> None:
    assert SEED.read_text().splitlines()[5] == "kvm_on_remote_host.install(addreses)"
    findings = check_file(str(SEED))
    assert brief(findings) == [
        (6, "error", "undefined name 'addreses' (did you mean 'addresses'?)")
    ]
    assert findings[0].column == len("kvm_on_remote_host.install(") + 1


def test_seed_as_published_command_output() -> None:
    argv = [sys.executable, "-m", "autoserv", "check", "tests/data/kvm_seed_published.control"]
    proc = subprocess.run(argv, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == (
        "tests/data/kvm_seed_published.control:6:28: error: undefined name 'addreses' "
        "(did you mean 'addresses'?)\n"
    )
    assert proc.stderr == "autoserv check: 1 error in 1 file\n"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_control_example_checks_clean(path: Path) -> None:
    mode = CLIENT if path in CLIENT_EXAMPLES else SERVER
    assert check_file(str(path), mode, machines=["host1", "host2"]) == []


def test_control_examples_exist() -> None:
    assert len(SERVER_EXAMPLES) >= 6 and CLIENT_EXAMPLES  # the parametrized test is not vacuous


# -- syntax and names ------------------------------------------------------------------


def test_python2_file_reports_its_real_lines(tmp_path: Path) -> None:
    ctl = tmp_path / "legacy.control"
    ctl.write_text(
        "# Python 2: print statements, tabs, except E, e\n"
        "for machine in machines:\n"
        "\thost = hosts.create_host(machine)\n"
        "        print \"checking\", machine\n"
        "try:\n"
        "    host.run(\"true\")\n"
        "except AutoservRunError, e:\n"
        "    print >>sys.stderr, \"failed:\", e\n"
        "print \"done\", len(machnies)\n"
        "print xrange(3), `1`\n"
    )
    assert brief(check_file(str(ctl))) == [
        (9, "error", "undefined name 'machnies' (did you mean 'machines'?)")
    ]


def test_python2_syntax_error_at_its_real_line(tmp_path: Path) -> None:
    ctl = write(tmp_path / "broken.control", """\
        print "fine"
        x = 0777

        if x:
            print "unterminated
        """)
    [finding] = check_file(str(ctl))
    assert (finding.line, finding.severity, finding.code) == (5, "error", "syntax")
    assert finding.message.startswith("syntax error: ")


def test_py2_builtins_in_every_control_file(tmp_path: Path) -> None:
    # the runner defines them in every control file's namespace, translated or not
    py3 = write(tmp_path / "py3.control", "x = raw_input\nfor i in xrange(3):\n    print(i)\n")
    assert check_file(str(py3)) == []
    py2 = write(tmp_path / "py2.control", "for i in xrange(3):\n    print i\n")
    assert check_file(str(py2)) == []


def test_server_and_client_namespaces_differ(tmp_path: Path) -> None:
    ctl = write(tmp_path / "c.control", """\
        system("true")
        out = system_output("uname -r")
        host = hosts.create_host(machines[0])
        """)
    server = {(f.line, f.message) for f in check_file(str(ctl), SERVER)}
    client = {(f.line, f.message) for f in check_file(str(ctl), CLIENT)}
    assert (1, "undefined name 'system' (did you mean 'sys'?)") in server
    assert (2, "undefined name 'system_output'") in server
    assert client == {(3, "undefined name 'hosts' (did you mean 'host'?)"), (3, "undefined name 'machines'")}


def test_server_names_come_from_build_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctl = write(tmp_path / "new.control", "at = lab_power.Switch()\n")
    assert brief(check_file(str(ctl)))[0][2] == "undefined name 'lab_power'"
    real = control.build_namespace

    def with_autotest(job: object, cf: object = None, **extra: object) -> dict[str, object]:
        return real(job, cf, lab_power=object(), **extra)  # type: ignore[arg-type]

    monkeypatch.setattr(control, "build_namespace", with_autotest)
    assert check_file(str(ctl)) == []


# -- calls, attributes, tests ----------------------------------------------------------

CALLS = [
    ("parallel_simple(f)\n", "parallel_simple(): missing a required argument: 'arglist'"),
    ("hosts.create_host()\n", "hosts.create_host(): missing a required argument: 'hostname'"),
    ("job.record('GOOD')\n", "job.record(): missing a required argument: 'subdir'"),
    ("kvm.KVM()\n", "kvm.KVM(): missing a required argument: 'host'"),
    ("h = hosts.create_host('a')\nh.wait_up(1, 2)\n", "h.wait_up(): too many positional arguments"),
    ("r = run('true', bogus=1)\n", "run(): got an unexpected keyword argument 'bogus'"),
    ("parallel_simple(f, machines, tmeout=5)\n",
     "parallel_simple(): got an unexpected keyword argument 'tmeout'"),
]


@pytest.mark.parametrize(("source", "message"), CALLS)
def test_calls_namespace_functions_cannot_take(tmp_path: Path, source: str, message: str) -> None:
    ctl = write(tmp_path / "c.control", "def f(m):\n    pass\n" + source)
    findings = [f for f in check_file(str(ctl)) if f.code == "call"]
    assert [f.message for f in findings] == [message]
    assert findings[0].severity == "error"


def test_calls_that_fit_are_not_reported(tmp_path: Path) -> None:
    ctl = write(tmp_path / "ok.control", """\
        def f(m):
            h = hosts.create_host(m, user="root", port=22)
            h.run("true", timeout=5, ignore_status=True)
            h.run("ls", args=["a b"])
            return h.run_output("uname")
        parallel_simple(f, machines)
        parallel_simple(f, machines, timeout=10, return_results=True)
        job.record("GOOD", None, "x", "fine")
        job.run_group(f, "m", tag="t")
        extra = {"timeout": 1}
        parallel_simple(f, machines, **extra)
        parallel_simple(*[f, machines])
        raise TestFail("message")
        """)
    assert check_file(str(ctl)) == []


def test_attributes_no_host_has(tmp_path: Path) -> None:
    ctl = write(tmp_path / "a.control", """\
        def reboot(machine):
            host = hosts.create_host(machine)
            host.bootloader.boot_once("new")
            print(host.run("uname").stdoutt)

        def probe(h):
            h.rnu("true")
            h.split(":")
            h.items()

        guests = []
        guests.append(hosts.create_host("g1"))
        guests[0].wiat_up()
        for g in [hosts.SSHHost(m) for m in machines]:
            g.hostname
            g.wait_down(timeout=3)
        """)
    assert brief(check_file(str(ctl))) == [
        (3, "error", "'host.bootloader' is not supported by this autoserv: "
                     "install kernels with an install hook (--hooks)"),
        (4, "error", "'host.run('uname')' (a CmdResult) has no attribute 'stdoutt' (did you mean 'stdout'?)"),
        (7, "error", "'h' (a parameter named like a host): neither a host nor a machine name (str) "
                     "has attribute 'rnu' (did you mean 'run'?)"),
        (9, "warning", "'h' (a parameter named like a host): neither a host nor a machine name (str) "
                       "has attribute 'items'"),
        (13, "error",
         "'guests[0]' is a host: no host class has attribute 'wiat_up' (did you mean 'wait_up'?)"),
    ]


def test_attributes_of_namespace_modules_and_job(tmp_path: Path) -> None:
    ctl = write(tmp_path / "m.control", """\
        h = hosts.SSHHostt("x")
        job.recrod("GOOD", None, "x")
        os.path.joinn("a", "b")
        g = hosts.KVMGuest
        k = kvm.KVMM
        """)
    assert brief(check_file(str(ctl))) == [
        (1, "error", "'hosts' (a module) has no attribute 'SSHHostt' (did you mean 'SSHHost'?)"),
        (2, "error", "'job' (a ServerJob) has no attribute 'recrod' (did you mean 'record'?)"),
        (3, "error", "'os.path' (a module) has no attribute 'joinn' (did you mean 'join'?)"),
        (5, "error", "'kvm' (a module) has no attribute 'KVMM' (did you mean 'KVM'?)"),
    ]


def test_attributes_the_file_sets_or_tests_are_not_reported(tmp_path: Path) -> None:
    ctl = write(tmp_path / "s.control", """\
        host = hosts.create_host("a")
        host.label = "x"
        print(host.label)
        if hasattr(host, "bootloader"):
            host.bootloader.boot_once("k")
        hosts = None
        hosts.anything
        """)
    assert check_file(str(ctl)) == []


def test_unknown_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOSERV_CLIENT_TESTS", raising=False)
    ctl = write(tmp_path / "client.control", """\
        job.run_test('sleeptest', seconds=1)
        job.run_test('failtest')
        job.run_test(url='kernbnch', iterations=2)
        job.run_test('mytest')
        job.run_test('http://example.org/tests/x.tar.bz2')
        name = 'dynamic'
        job.run_test(name)
        """)
    findings = check_file(str(ctl), CLIENT)
    assert [(f.line, f.column, f.code) for f in findings] == [
        (3, 18, "unknown-test"), (4, 14, "unknown-test")
    ]
    assert findings[0].message.startswith("unknown test 'kernbnch': not built in (sleeptest, failtest)")
    # a test directory next to the control file, --client-tests, $AUTOSERV_CLIENT_TESTS
    (tmp_path / "tests" / "mytest").mkdir(parents=True)
    assert [f.line for f in check_file(str(ctl), CLIENT)] == [3]
    mine = tmp_path / "mine"
    (mine / "kernbnch").mkdir(parents=True)
    assert check_file(str(ctl), CLIENT, client_tests=[str(mine)]) == []
    monkeypatch.setenv("AUTOSERV_CLIENT_TESTS", str(mine))
    assert check_file(str(ctl), CLIENT) == []


def test_unknown_tests_of_autotest_and_hosts(tmp_path: Path) -> None:
    ctl = write(tmp_path / "srv.control", """\
        def run(machine):
            host = hosts.create_host(machine)
            at = autotest_remote.Autotest(host)
            at.run_test('sleeptest')
            at.run_test('sleeptst', '.', host)
            autotest.Autotest().run_test(test_name='nosuch', host=host)
            host.run_test('failtset')
        """)
    tests = [(f.line, f.message.split(":")[0]) for f in check_file(str(ctl)) if f.code == "unknown-test"]
    assert tests == [
        (5, "unknown test 'sleeptst' (did you mean 'sleeptest'?)"),
        (6, "unknown test 'nosuch'"),
        (7, "unknown test 'failtset' (did you mean 'failtest'?)"),
    ]


def test_test_dirs_in_order(tmp_path: Path) -> None:
    ctl = tmp_path / "job" / "x.control"
    for d in ("job/client/tests", "job/tests", "job/server/tests", "c1", "s1", "env"):
        (tmp_path / d).mkdir(parents=True)
    dirs = known_tests(str(ctl), [str(tmp_path / "c1"), str(tmp_path / "missing")], [str(tmp_path / "s1")],
                     environ={"AUTOSERV_CLIENT_TESTS": str(tmp_path / "env")})
    assert [os.path.relpath(d, tmp_path) for d in dirs.dirs][:6] == [
        "c1", "env", "job/client/tests", "job/tests", "s1", "job/server/tests"
    ]
    assert dirs.builtin == check.BUILTIN_TESTS == ("sleeptest", "failtest")


# -- machines and ssh config -------------------------------------------------------------


def test_machines_that_do_not_parse() -> None:
    findings = machine_findings(["good,h:ssh", "root:secret@[::1", ""])
    assert [(f.file, f.line, f.column, f.code) for f in findings] == [
        ("-m", 1, 6, "machine"), ("-m", 2, 1, "machine")
    ]
    assert "bad port 'ssh'" in findings[0].message
    assert "secret" not in findings[1].message and "***" in findings[1].message


def test_mlist_file_positions(tmp_path: Path) -> None:
    mlist = write(tmp_path / "machines", "# lab\nhost1\n  host2 bad:port  # comment\n")
    [finding] = machine_findings([], str(mlist))
    assert (finding.file, finding.line, finding.column) == (str(mlist), 3, 9)


def test_ssh_config_entries(tmp_path: Path) -> None:
    key = write(tmp_path / "id_test", "not really a key\n")
    cfg = write(tmp_path / "ssh_config", f"""\
        Host good
            HostName 127.0.0.1
            Port 2222
            IdentityFile {key}
            ProxyJump bastion.example.org
        Host badport
            Port ssh
        Host slow
            ConnectTimeout soon
        Host loop-a
            ProxyJump loop-b
        Host loop-b
            ProxyJump root@loop-a:22
        Host via-unknown
            ProxyJump nosuchalias
            IdentityFile ~/.ssh/autoserv-check-missing-key
        Host *
            User root
        """)
    specs = ["good badport slow", "root:pw@loop-a via-unknown 10.0.0.1"]
    missing = os.path.expanduser("~/.ssh/autoserv-check-missing-key")
    found = [(f.line, f.severity, f.message) for f in machine_findings(specs, None, str(cfg))]
    assert found == [
        (7, "error", "badport: Port 'ssh' is not a port number"),
        (9, "error", "slow: ConnectTimeout 'soon' is not a number"),
        (13, "error", "root:***@loop-a: ProxyJump loop: loop-a -> loop-b -> loop-a"),
        (16, "warning", f"via-unknown: IdentityFile {missing} does not exist"),
        (15, "warning", f"via-unknown: ProxyJump 'nosuchalias' is not a Host of {cfg}, nor an address, "
                        "a domain name or in /etc/hosts"),
    ]


def test_ssh_config_with_match_exec_is_not_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    cfg = write(tmp_path / "ssh_config", f"Match exec \"touch {marker}\"\n    Port 1\n")
    [finding] = machine_findings(["h1"], None, str(cfg))
    assert finding.severity == "warning" and "Match exec" in finding.message
    assert not marker.exists()


# -- nothing connects ----------------------------------------------------------------------

_NO_SOCKET = """\
import os, sys
def hook(event, args):
    if event.startswith("socket."):
        os.write(2, ("SOCKET USED: %s %r\\n" % (event, args)).encode())
        os._exit(97)
sys.addaudithook(hook)
{body}
"""


def _run_guarded(body: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _NO_SOCKET.format(body=body)], cwd=cwd,
                          env=cli_env(), capture_output=True, text=True, timeout=120)


def test_the_audit_hook_catches_a_socket(tmp_path: Path) -> None:
    proc = _run_guarded("import socket; socket.socket().close()", tmp_path)
    assert proc.returncode == 97 and "SOCKET USED: socket.__new__" in proc.stderr


def test_a_clean_check_opens_no_socket(tmp_path: Path) -> None:
    key = write(tmp_path / "id_test", "x\n")
    cfg = write(tmp_path / "ssh_config", f"""\
        Host tb1
            HostName 127.0.0.1
            Port 2222
            IdentityFile {key}
            ControlPath /tmp/%l-%h
            ProxyJump jump.example.org
        Host canon
            CanonicalizeHostname yes
            CanonicalDomains example.org
            AddressFamily inet
            IdentityFile {key}
        """)
    client = write(tmp_path / "client.control", "job.run_test('sleeptest', seconds=1)\n")
    files = [str(p) for p in SERVER_EXAMPLES]
    server = ["check", *files, "-m", "tb1,canon,root@h2:2222", "--ssh-config", str(cfg)]
    body = (f"from autoserv.cli import main\n"
            f"codes = (main({server!r}), main(['check', '-c', {str(client)!r}]), "
            f"main(['check', '--format', 'json', {str(SEED)!r}]))\n"
            f"print(codes, file=sys.stderr)")
    proc = _run_guarded(body, tmp_path)
    assert "SOCKET USED" not in proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.endswith("(0, 0, 1)\n")  # clean, clean, and the seed's typo
    [seed] = json.loads(proc.stdout)
    assert (seed["line"], seed["code"]) == (6, "undefined-name")


def test_offline_ssh_config_is_what_keeps_paramiko_off_the_network(tmp_path: Path) -> None:
    # paramiko's lookup asks socket.getfqdn() for IdentityFile tokens: a name-service query.
    # If a paramiko release stops going through paramiko.config.socket, this fails.
    cfg = write(tmp_path / "ssh_config", "Host *\n    IdentityFile ~/.ssh/id_%l\n")
    lookup = (f"import paramiko; c = paramiko.SSHConfig.from_path({str(cfg)!r})\n"
              "from autoserv.check.machines import offline_ssh_config\n")
    guarded = _run_guarded(lookup + "with offline_ssh_config():\n    print(c.lookup('x')['identityfile'])",
                           tmp_path)
    assert guarded.returncode == 0, guarded.stderr
    assert guarded.stdout.strip() == f"['{os.path.expanduser('~')}/.ssh/id_{os.uname().nodename}']"
    unguarded = _run_guarded(lookup + "c.lookup('x')", tmp_path)
    assert unguarded.returncode == 97 and "SOCKET USED" in unguarded.stderr
    with offline_ssh_config():
        pass  # restores paramiko's module
    import paramiko.config

    assert paramiko.config.socket.__name__ == "socket"  # type: ignore[attr-defined]


# -- the command ---------------------------------------------------------------------------


def test_exit_status_and_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = write(tmp_path / "ok.control", "job.record('GOOD', None, 'x')\n")
    warn = write(tmp_path / "warn.control", "def f(h):\n    h.items()\n")
    bad = write(tmp_path / "bad.control", "print(undefined_thing)\n")
    assert cli.main(["check", str(ok)]) == 0
    assert capsys.readouterr().out == ""
    assert cli.main(["check", str(warn)]) == 0
    assert cli.main(["check", "--strict", str(warn)]) == 1
    capsys.readouterr()
    assert cli.main(["check", "--format", "json", str(ok), str(bad), str(warn)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out == [
        {"file": str(bad), "line": 1, "column": 7, "severity": "error", "code": "undefined-name",
         "message": "undefined name 'undefined_thing'"},
        {"file": str(warn), "line": 2, "column": 7, "severity": "warning", "code": "attribute",
         "message": "'h' (a parameter named like a host): neither a host nor a machine name (str) "
                    "has attribute 'items'"},
    ]


@pytest.mark.parametrize("args", [
    ["check"],
    ["check", "/nonexistent.control"],
    ["check", "-c", "-s", "control_examples/uname.control"],
    ["check", "--format", "xml", "control_examples/uname.control"],
    ["check", "-M", "/nonexistent-mlist", "control_examples/uname.control"],
    ["check", "--ssh-config", "/nonexistent-config", "control_examples/uname.control"],
])
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autoserv check: error: ")


def test_run_with_check_refuses_to_start_on_an_error(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.control", """\
        open("started", "w").close()
        parallel_simple(f)
        """)
    proc = run_autoserv("--check", "-N", bad, cwd=tmp_path, timeout=60)
    assert proc.returncode == 1
    assert not (tmp_path / "started").exists()
    lines = proc.stderr.splitlines()
    assert f"{bad}:2:17: error: undefined name 'f'" in lines
    assert f"{bad}:2:1: error: parallel_simple(): missing a required argument: 'arglist'" in lines
    assert lines[-1] == f"autoserv: check of {bad}: 2 errors in 1 file; the job was not started"


def test_run_with_check_starts_when_clean_or_only_warnings(tmp_path: Path) -> None:
    ctl = write(tmp_path / "ok.control", """\
        def f(h):
            return h.items()
        open("started", "w").close()
        """)
    proc = run_autoserv("--check", "-N", ctl, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "started").exists()
    assert f"{ctl}:2:14: warning:" in proc.stderr


def test_thousand_line_file_finds_its_one_typo(tmp_path: Path) -> None:
    # Timing is measured by `python -m bench.check_speed`, not asserted here.
    ctl = tmp_path / "big.control"
    ctl.write_text(make_control(1000))
    assert len(ctl.read_text().splitlines()) >= 1000
    assert brief(check_file(str(ctl))) == [
        (len(ctl.read_text().splitlines()), "error", "undefined name 'nmaes' (did you mean 'names'?)")
    ]


def test_scopes_rebinding_and_classes_are_not_guessed(tmp_path: Path) -> None:
    ctl = write(tmp_path / "scopes.control", """\
        host = hosts.create_host("a")

        def swap():
            global host
            host = {"not": "a host"}

        def outer():
            h = hosts.create_host("b")
            def inner():
                nonlocal h
                h = "a string"
            inner()
            return h.upper()

        class Runner:
            def __init__(self, host):
                self.host = host
            def go(self):
                return self.host.anything()

        swap()
        host.keys()
        guests = []
        guests.append(hosts.create_host("g"))
        guests.append("not a host")
        guests[1].upper()
        """)
    assert check_file(str(ctl)) == []


def test_the_check_command_loads_no_invoke_and_leaves_it_importable(tmp_path: Path) -> None:
    body = textwrap.dedent(f"""\
        from autoserv.check import command
        code = command.main([{str(SEED)!r}])
        assert code == 1 and 'paramiko' in sys.modules and 'invoke' not in sys.modules
        import invoke  # importable again afterwards
        print('ok')
        """)
    proc = subprocess.run([sys.executable, "-c", "import sys\n" + body], cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.endswith("ok\n"), proc.stderr


@pytest.mark.slow
def test_check_then_run_on_the_test_bed(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    machines = ["-m", ",".join(tb.machines), "--ssh-config", str(tb.ssh_config)]
    uname = REPO / "control_examples" / "uname.control"
    assert cli.main(["check", str(uname), *machines]) == 0  # the bed's own ssh config is clean
    proc = run_autoserv("--check", uname, "-r", tmp_path / "r", *machines, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert ": error:" not in proc.stderr and ": warning:" not in proc.stderr
    for machine in tb.machines:
        assert "GOOD" in (tmp_path / "r" / machine / "status.log").read_text()


def test_unsupported_kernel_helpers_are_errors(tmp_path: Path) -> None:
    """The original's kernel helpers exist in the namespace only to raise: check says so first."""
    ctl = write(tmp_path / "kernel.control", """\
        kernel = deb_kernel.DEBKernel()
        host = hosts.create_host(machines[0])
        host.bootloader.add_args("quiet")
        """)
    message = "is not supported by this autoserv: install kernels with an install hook (--hooks)"
    assert brief(check_file(str(ctl), machines=["h1"])) == [
        (1, "error", f"'deb_kernel' {message}"),
        (3, "error", f"'host.bootloader' {message}"),
    ]
