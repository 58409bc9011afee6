"""Issue 11's probe catalogue, rebuilt: the probes the filer ran were never committed.

Issue 11 ("Faults and hostile input") measured autoserv against a lab with three figures:
faults survived (x/39), bad inputs that got one clear line (x/132) and injection attempts
that held (x/23). Its scripts were lost, so the catalogue is rebuilt here from the issue's
own categories and items, and CI measures the figures on every run:

* every probe carries one marker, ``probe_fault``, ``probe_input`` or ``probe_injection``
  (registered in pyproject.toml); each parametrized case is one probe;
* the catalogue is the tests of tests/test_faults_hosts.py, test_faults_inputs.py and
  test_faults_runner.py that attack a running autoserv (their pure-function table tests,
  such as the status.log renderer's 40 line-break cases, are not probes: the end-to-end
  status.log forgery probe is), the fault, host-key and bad-input tests of other files
  that do the same (test_cli, test_runner_testbed, test_host_*, test_kvm_e2e's dead
  guests), 35 faults, 40 bad inputs and 19 injections in all, and this module, which adds
  what they lacked to reach the issue's sizes: 4 faults (39), 92 bad inputs (132) and 4
  injections (23), each from one of the issue's categories and items;
* tests/probe_summary.py prints, after every run that collected probes,
  ``issue 11 probes: faults survived 39/39, bad inputs one clear line 132/132, injections
  held 23/23`` and the node id of every probe that did not pass (failed, errored, xfailed,
  skipped or not run).

Run only the catalogue with ``pytest -m "probe_fault or probe_input or probe_injection"``.

Everything here runs the real thing: ``python -m autoserv`` subprocesses, the session's
test bed sshd hosts, real signals. The bad inputs of the CLI are one table
(:data:`BAD_INPUTS`) run as concurrent ``python -m autoserv`` processes once per module
(:func:`batch`); each case is one probe with the one rule: a non-zero exit (2 for usage
errors, 1 for errors of a control file or a host), exactly one line on stderr starting
``autoserv``, naming what and where, no traceback, no "internal error".
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from autoserv.lab.testbed import Testbed
from autoserv.localsys import proc_stat
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
from tests.conftest import TEST_PASSWORD
from tests.test_faults_hosts import _session_sshds


@dataclass(frozen=True)
class Bad:
    """One bad input: ``argv`` after ``autoserv`` (``{name}`` fields filled in by
    :func:`_fill`), the exit code, and texts the one line must hold."""

    id: str
    argv: list[str]
    code: int
    says: list[str]
    env: dict[str, str] = field(default_factory=dict)
    hosts: bool = False  # needs the loopback test bed


def _ctl(body: str) -> str:
    return textwrap.dedent(body)


#: control files the probes run, by name (written once per module)
CONTROLS = {
    "ok.control": "pass\n",
    "syntax.control": "x = (1,\n",
    "indent.control": "if True:\npass\n",
    "name.control": "x = 1\nundefined_name()\n",
    "host-empty.control": "hosts.create_host('')\n",
    "host-none.control": "hosts.create_host(None)\n",
    "host-port.control": "hosts.create_host('h1:99999')\n",
    "host-port-str.control": "hosts.SSHHost('127.0.0.1', port='ssh')\n",
    "host-unicode.control": "hosts.create_host('h\\u00f6st')\n",
    "host-dash.control": "hosts.create_host('-oProxyCommand=touch')\n",
    "parallel-none.control": "parallel_simple(lambda m: None, None)\n",
    "parallel-func.control": "parallel_simple(3, ['a', 'b'])\n",
    "record-status.control": "job.record('BOGUS', None, 't1')\n",
    "run-test.control": "job.run_test('no_such_test_autoserv')\n",
    "run-group.control": "job.run_group(5)\n",
    "run-timeout-neg.control": "h = hosts.create_host(machines[0])\nh.run('true', timeout=-1)\n",
    "run-not-str.control": "h = hosts.create_host(machines[0])\nh.run(['ls', '-l'])\n",
    "run-nul-arg.control": "h = hosts.create_host(machines[0])\nh.run('echo', args=['x', 'a\\0b'])\n",
    "send-missing.control": ("h = hosts.create_host(machines[0])\n"
                             "h.send_file('/nonexistent/autoserv-src', '/tmp/')\n"),
    "get-missing.control": ("h = hosts.create_host(machines[0])\n"
                            "h.get_file('/nonexistent/autoserv-remote\\nsecond line', 'here')\n"),
    "wait-up-str.control": "h = hosts.create_host(machines[0])\nh.wait_up(timeout='soon')\n",
    "host-run.control": "hosts.create_host(machines[0]).run('true')\n",
}


def _files(tmp: Path) -> None:
    """The files the probes name, made once in the module's directory."""
    for name, body in CONTROLS.items():
        (tmp / name).write_text(body)
    (tmp / "binary.control").write_bytes(bytes(range(256)) * 4)
    (tmp / "nul.control").write_bytes(b"pass\n\0\n")
    (tmp / "huge.control").write_bytes((b"#" * (1 << 20) + b"\n") * 16 + b"x = (\n")  # 16 MiB, broken
    os.mkfifo(tmp / "fifo")
    (tmp / "adir").mkdir()
    (tmp / "afile").write_text("x\n")
    (tmp / "empty").write_text("")
    (tmp / "machines-bin").write_bytes(b"host1\n\0\x01\x02\n")
    (tmp / "machines-huge").write_bytes(b"h1\n" * (6 << 20))
    (tmp / "machines-port").write_text("h1\nh2:0\n")
    (tmp / "not-a-key").write_text("this is not a private key\n")
    (tmp / "hooks-syntax.py").write_text("def verify(host):\n    return (\n")
    (tmp / "inuse").mkdir()
    (tmp / "inuse" / "status.log").write_text("")
    (tmp / "broken-journal").mkdir()
    (tmp / "broken-journal" / "journal").write_bytes(b"\x00\xff not json\n")
    (tmp / "latin1-config").write_bytes(b"Host x\n  HostName caf\xe9\n")
    cfg = _ctl("""\
        Host port0
            HostName 127.0.0.1
            Port 0
        Host porthigh
            HostName 127.0.0.1
            Port 65536
        Host alive-abc
            HostName 127.0.0.1
            ServerAliveInterval abc
        Host alive-count
            HostName 127.0.0.1
            ServerAliveInterval 1
            ServerAliveCountMax -1
        Host ctimeout0
            HostName 127.0.0.1
            ConnectTimeout 0
        Host nokey
            HostName 127.0.0.1
            Port 1
            IdentityFile /nonexistent/autoserv-key
            IdentitiesOnly yes
        Host proxyfail
            HostName 127.0.0.1
            ProxyCommand false
        Host jumpself
            ProxyJump jumpself
        """)
    (tmp / "ssh_config").write_text(cfg)
    for host in ("port0", "porthigh", "alive-abc", "alive-count", "ctimeout0", "nokey",
                 "proxyfail", "jumpself"):
        (tmp / f"cfg-{host}.control").write_text(f"hosts.create_host({host!r}).run('true')\n")
    long_name = "r" * 300
    (tmp / "long-name").write_text(long_name)


OK = ["ok.control"]
USAGE = "(see autoserv --help)"

#: Bad inputs of the CLI: flags with wrong values, control files, -m/-M entries, ssh config
#: entries, labels and results dirs, subcommands, bad API arguments from a control file,
#: wrong passwords and unreachable hosts.
BAD_INPUTS: list[Bad] = [
    # -- flags with wrong values
    Bad("ssh-port-high", [*OK, "-N", "--ssh-port", "70000"], 2, ["--ssh-port", "port out of range"]),
    Bad("ssh-port-negative", [*OK, "-N", "--ssh-port=-1"], 2, ["--ssh-port", "port out of range"]),
    Bad("ssh-port-word", [*OK, "-N", "--ssh-port", "22x"], 2, ["--ssh-port", "'22x'"]),
    Bad("max-parallel-zero", [*OK, "-N", "--max-parallel", "0"], 2, ["--max-parallel", "at least 1"]),
    Bad("connect-timeout-zero", [*OK, "-N", "--connect-timeout", "0"], 2, ["--connect-timeout"]),
    Bad("connect-timeout-word", [*OK, "-N", "--connect-timeout", "soon"], 2,
        ["--connect-timeout", "'soon'"]),
    Bad("host-key-policy", [*OK, "-N", "--host-key-policy", "yes"], 2,
        ["--host-key-policy", "invalid choice: 'yes'"]),
    Bad("host-protection", [*OK, "-N", "--host-protection", "ALL"],
        2, ["--host-protection", "'ALL' is not a level: must be one of"]),
    Bad("min-disk-negative", [*OK, "-N", "--min-disk-gb=-1"], 2, ["--min-disk-gb", "'-1'"]),
    Bad("min-disk-nan", [*OK, "-N", "--min-disk-gb", "nan"], 2, ["--min-disk-gb", "'nan'"]),
    Bad("min-disk-inf", [*OK, "-N", "--min-disk-gb", "inf"], 2, ["--min-disk-gb", "'inf'"]),
    Bad("shard-past-end", [*OK, "-N", "--shard", "3/2"], 2, ["--shard", "3/2"]),
    Bad("cleanup-mode", [*OK, "-N", "--cleanup=wipe"], 2, ["wipe"]),
    Bad("control-filename-status", [*OK, "-r", "res-cf", "--control-filename", "status.log"], 2,
        ["invalid --control-filename: 'status.log'"]),
    Bad("control-filename-slash", [*OK, "-r", "res-cf", "--control-filename", "a/b"], 2,
        ["invalid --control-filename: 'a/b'"]),
    Bad("pidfile-label-slash", [*OK, "-r", "res-pl", "-p", "--pidfile-label", "../x"], 2,
        ["invalid --pidfile-label: '../x'"]),
    Bad("ssh-config-missing", [*OK, "-N", "--ssh-config", "/nonexistent/ssh_config"], 2,
        ["--ssh-config: no such file: /nonexistent/ssh_config"]),
    Bad("ssh-config-directory", [*OK, "-N", "--ssh-config", "adir"],
        2, ["--ssh-config: no such file", "adir"]),
    Bad("ssh-config-env-missing", [*OK, "-N"], 2, ["--ssh-config: no such file: /nonexistent/env_config"],
        env={"AUTOSERV_SSH_CONFIG": "/nonexistent/env_config"}),
    Bad("client-tests-file", [*OK, "-N", "--client-tests", "afile"],
        2, ["--client-tests: no such directory"]),
    Bad("hooks-missing", [*OK, "-N", "--hooks", "/nonexistent/hooks.py"], 2, ["/nonexistent/hooks.py"]),
    Bad("hooks-syntax", [*OK, "-N", "--hooks", "hooks-syntax.py", "-i"], 2, ["hooks-syntax.py"]),
    Bad("workers-env", [*OK, "-N"],
        2, ["AUTOSERV_WORKERS", "'processes'"], env={"AUTOSERV_WORKERS": "processes"}),
    Bad("unsupported-parse-job", [*OK, "-N", "--parse-job"], 2, ["--parse-job", "not supported"]),
    Bad("verify-without-machines", ["-v"], 2, ["-v", "need machines"]),
    Bad("verify-with-control", [*OK, "-v", "-m", "h1"], 2, ["-v runs no control file"]),
    Bad("no-control-file", ["-N"], 2, ["control file"]),
    # -- labels, user, tag and results dirs
    Bad("label-escape", [*OK, "-r", "res-l", "-l", "a\x1b[2Jb"], 2, ["-l (label)", "\\x1b"]),
    Bad("label-line-separator", [*OK, "-r", "res-l2", "-l", "a\u2028b"], 2, ["-l (label)", "\\u2028"]),
    Bad("results-empty", [*OK, "-r", ""], 2, ["-r: the results directory name is empty"]),
    Bad("results-is-a-file", [*OK, "-r", "afile"], 2, ["-r afile: exists and is not a directory"]),
    Bad("results-under-dev-null", [*OK, "-r", "/dev/null/res"], 2, ["-r /dev/null/res"]),
    Bad("results-name-too-long", [*OK, "-r", "r" * 300], 2, ["-r r", "too long"]),
    Bad("results-newline", [*OK, "-r", "res\nx"], 2, ["-r (results directory)", "\\n"]),
    Bad("results-in-use", [*OK, "-r", "inuse"], 1, ["inuse", "already in use"]),
    # -- control files
    Bad("control-directory", ["adir", "-N"], 2, ["control file adir is not a file"]),
    Bad("control-fifo", ["fifo", "-N"], 2, ["control file fifo is not a file"]),
    Bad("control-newline-name", ["no\nsuch.control", "-N"],
        2, ["control file no\\nsuch.control does not exist"]),
    Bad("control-syntax", ["syntax.control", "-N"], 1, ["syntax.control:", "SyntaxError"]),
    Bad("control-indentation", ["indent.control", "-N"],
        1, ["indent.control:2", "expected an indented block"]),
    Bad("control-binary", ["binary.control", "-N"], 1, ["binary.control"]),
    Bad("control-nul", ["nul.control", "-N"], 1, ["nul.control", "null bytes"]),
    Bad("control-huge", ["huge.control", "-N"], 1, ["huge.control:17:", "SyntaxError"]),
    Bad("control-name-error", ["name.control", "-N"], 1, ["name.control:2:", "NameError"]),
    # -- machines: -m and -M
    Bad("m-port-zero", [*OK, "-N", "-m", "h1:0"], 2, ["-m: invalid machine 'h1:0'"]),
    Bad("m-empty-host", [*OK, "-N", "-m", "root@:22"], 2, ["-m: invalid machine"]),
    Bad("m-unclosed-bracket", [*OK, "-N", "-m", "[::1"], 2, ["-m: invalid machine '[::1'"]),
    Bad("m-bad-ipv6", [*OK, "-N", "-m", "[::g]:22"], 2, ["-m: invalid machine '[::g]:22'"]),
    Bad("m-leading-dash", [*OK, "-N", "--machines=-oProxyCommand=x"], 2, ["-m: invalid machine"]),
    Bad("m-shell-chars", [*OK, "-N", "-m", "h;id"], 2, ["-m: invalid machine 'h;id'"]),
    Bad("m-two-ports", [*OK, "-N", "-m", "h1:22:23"], 2, ["-m: invalid machine 'h1:22:23'"]),
    Bad("M-directory", [*OK, "-N", "-M", "adir"], 2, ["-M adir"]),
    Bad("M-binary", [*OK, "-N", "-M", "machines-bin"], 2, ["-M machines-bin"]),
    Bad("M-huge", [*OK, "-N", "-M", "machines-huge"], 2, ["-M machines-huge", "larger than 16 MiB"]),
    Bad("M-bad-port", [*OK, "-N", "-M", "machines-port"], 2, ["-M machines-port line 2", "'h2:0'"]),
    Bad("client-without-machines", [*OK, "-N", "-c", "-M", "empty"], 2, ["-c needs machines"]),
    # -- ssh config entries, from a control file: control file:line and the config's host
    Bad("cfg-port-zero", ["cfg-port0.control", "-N", "--ssh-config", "ssh_config"], 1,
        ["cfg-port0.control:1:", "port0", "Port"]),
    Bad("cfg-port-high", ["cfg-porthigh.control", "-N", "--ssh-config", "ssh_config"], 1,
        ["cfg-porthigh.control:1:", "porthigh", "Port"]),
    Bad("cfg-alive-interval", ["cfg-alive-abc.control", "-N", "--ssh-config", "ssh_config"], 1,
        ["cfg-alive-abc.control:1:", "alive-abc", "ServerAliveInterval"]),
    Bad("cfg-alive-count", ["cfg-alive-count.control", "-N", "--ssh-config", "ssh_config"], 1,
        ["cfg-alive-count.control:1:", "alive-count", "ServerAliveCountMax"]),
    Bad("cfg-connect-timeout-zero", ["cfg-ctimeout0.control", "-N", "--ssh-config", "ssh_config"], 1,
        ["cfg-ctimeout0.control:1:", "ctimeout0", "ConnectTimeout"]),
    Bad("cfg-proxy-command-fails", ["cfg-proxyfail.control", "-N", "--ssh-config", "ssh_config"], 1,
        ["cfg-proxyfail.control:1:", "proxyfail"]),
    Bad("cfg-jump-to-itself", ["cfg-jumpself.control", "-N", "--ssh-config", "ssh_config"], 1,
        ["cfg-jumpself.control:1:", "jumpself -> jumpself"]),
    Bad("cfg-not-utf8", ["host-run.control", "-N", "-m", "x", "--ssh-config", "latin1-config"], 1,
        ["latin1-config: line 2 is not UTF-8"]),
    # -- bad API arguments from a control file: control file:line
    Bad("api-create-host-empty", ["host-empty.control", "-N"], 1, ["host-empty.control:1:"]),
    Bad("api-create-host-none", ["host-none.control", "-N"], 1, ["host-none.control:1:"]),
    Bad("api-create-host-bad-port", ["host-port.control", "-N"], 1, ["host-port.control:1:", "99999"]),
    Bad("api-sshhost-port-word", ["host-port-str.control", "-N"], 1, ["host-port-str.control:1:", "'ssh'"]),
    Bad("api-create-host-non-ascii", ["host-unicode.control", "-N"], 1, ["host-unicode.control:1:"]),
    Bad("api-create-host-option", ["host-dash.control", "-N"], 1, ["host-dash.control:1:"]),
    Bad("api-parallel-none", ["parallel-none.control", "-N"], 1, ["parallel-none.control:1:"]),
    Bad("api-parallel-not-callable", ["parallel-func.control", "-N"], 1, ["parallel-func.control:1:"]),
    Bad("api-record-status", ["record-status.control", "-N"], 1, ["record-status.control:1:", "BOGUS"]),
    Bad("api-run-test-missing", ["run-test.control", "-N"], 1, ["no_such_test_autoserv"]),
    Bad("api-run-group-not-callable", ["run-group.control", "-N"], 1, ["run-group.control:1:"]),
    # -- ... and the same against a real host
    Bad("api-run-timeout-negative", ["run-timeout-neg.control", "-N", "{bed}"], 1,
        ["run-timeout-neg.control:2:", "timeout must be a number of seconds >= 0 or None, not -1"],
        hosts=True),
    Bad("api-run-list-command", ["run-not-str.control", "-N", "{bed}"], 1,
        ["run-not-str.control:2:"], hosts=True),
    Bad("api-run-nul-in-second-arg", ["run-nul-arg.control", "-N", "{bed}"], 1,
        ["run-nul-arg.control:2:", "argument 2", "NUL byte"], hosts=True),
    Bad("api-send-file-missing", ["send-missing.control", "-N", "{bed}"], 1,
        ["send-missing.control:2:", "/nonexistent/autoserv-src"], hosts=True),
    Bad("api-get-file-missing", ["get-missing.control", "-N", "{bed}"], 1,
        ["get-missing.control:2:", "'/nonexistent/autoserv-remote\\nsecond line' does not exist"],
        hosts=True),
    Bad("api-wait-up-word", ["wait-up-str.control", "-N", "{bed}"], 1,
        ["wait-up-str.control:2:", "timeout", "'soon'"], hosts=True),
    # -- wrong passwords, keys and host keys; unreachable hosts
    Bad("wrong-password-in-m", ["host-run.control", "-N", "-m", "root:wrong-pw-1@{addr0}",
                                "--known-hosts", "{kh}"], 1,
        ["host-run.control:1:", "permission denied"], hosts=True),
    Bad("wrong-ssh-pass", ["host-run.control", "-N", "-m", "root@{addr0}", "--ssh-pass", "wrong-pw-2",
                           "--known-hosts", "{kh}"], 1, ["host-run.control:1:", "permission denied"],
        hosts=True),
    Bad("wrong-user", ["host-run.control", "-N", "-m", "nobody@{addr0}", "--ssh-key", "{key}",
                       "--known-hosts", "{kh}"], 1, ["host-run.control:1:", "permission denied"], hosts=True),
    Bad("ssh-key-not-a-key", ["host-run.control", "-N", "-m", "{addr0}", "--ssh-key", "not-a-key",
                              "--known-hosts", "{kh}", "--ssh-config", "/dev/null"], 1,
        ["host-run.control:1:", "key file", "not-a-key cannot be loaded"], hosts=True),
    Bad("known-hosts-garbage", ["host-run.control", "-N", "-m", "{addr0}", "--ssh-key", "{key}",
                                "--known-hosts", "not-a-key", "--host-key-policy", "strict"], 1,
        ["host-run.control:1:", "not-a-key"], hosts=True),
    Bad("verify-unreachable", ["-v", "-r", "res-v", "-m", "127.0.0.1:1", "--connect-timeout", "2"], 1,
        ["FAIL verify", "res-v/status.log"]),
    # -- subcommands
    Bad("cleanup-missing-dir", ["cleanup", "/nonexistent/results"], 2, ["/nonexistent/results"]),
    Bad("cleanup-broken-journal", ["cleanup", "broken-journal"],
        1, ["broken-journal", "no line of it is a journal entry"]),
    Bad("report-missing-dir", ["report", "/nonexistent/results"], 1, ["/nonexistent/results"]),
    Bad("report-not-results", ["report", "adir"], 1, ["adir"]),
    Bad("check-missing-file", ["check", "/nonexistent/c.control"], 2, ["/nonexistent/c.control"]),
]


def _fill(arg: str, tb: Testbed | None, tmp: Path) -> list[str]:
    if tb is None:
        return [arg]
    if arg == "{bed}":
        return ["-m", tb.machines[0], "--ssh-config", str(tb.ssh_config)]
    th = tb.hosts[0]
    return [arg.format(addr0=f"{th.address}:{th.port}", kh=tb.known_hosts, key=tb.client_key)]


@pytest.fixture(scope="module")
def batch(testbed_loopback: Testbed, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """Every case of :data:`BAD_INPUTS`, run once as ``python -m autoserv``, four at a time."""
    tmp = tmp_path_factory.mktemp("bad-inputs")
    _files(tmp)

    def one(bad: Bad) -> subprocess.CompletedProcess[str]:
        argv = [a for arg in bad.argv for a in _fill(arg, testbed_loopback, tmp)]
        return subprocess.run(autoserv_argv(*argv), cwd=tmp, env=cli_env(**bad.env), text=True,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=120)

    with ThreadPoolExecutor(4) as pool:
        done = dict(zip([b.id for b in BAD_INPUTS], pool.map(one, BAD_INPUTS), strict=True))
    yield done


@pytest.mark.probe_input
@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b.id for b in BAD_INPUTS])
def test_bad_input_gets_one_clear_line(batch: dict[str, subprocess.CompletedProcess[str]], bad: Bad) -> None:
    proc = batch[bad.id]
    lines = stderr_lines(proc)
    shown = f"exit {proc.returncode}, stderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == bad.code, shown
    assert len(lines) == 1, shown
    assert lines[0].startswith("autoserv"), shown
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, shown
    for text in bad.says:
        assert text in lines[0], shown
    for secret in ("wrong-pw-", TEST_PASSWORD):
        assert secret not in proc.stdout + proc.stderr, shown
    if bad.code == 2:
        assert lines[0].endswith("--help)"), shown


# -- faults autoserv must survive, through the CLI -------------------------------------------


def _start(ctl: Path, *args: str | Path, cwd: Path) -> subprocess.Popen[str]:
    """``autoserv ctl args...`` in a session of its own (so a Ctrl-C can go to its group)."""
    return subprocess.Popen(autoserv_argv(ctl, *args), cwd=cwd, env=cli_env(), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def _finish(proc: subprocess.Popen[str], seconds: float = 60) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"autoserv did not end within {seconds} s:\n{out[-2000:]}\n{err}") from None


def _kill_local(pattern: str) -> None:
    """SIGKILL this test's own leftovers (loopback test bed hosts share our process table)."""
    for pid in subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def _remote_sleeps(tb: Testbed, pattern: str) -> list[str]:
    return [line for line in remote_processes(tb, pattern) if "pgrep" not in line]


@pytest.mark.probe_fault
def test_ctrl_c_to_the_process_group_on_noisy_hosts(testbed_noisy: Testbed, tmp_path: Path) -> None:
    """Ctrl-C as a terminal sends it (SIGINT to autoserv and its workers at once) while every
    noisy-login host runs a command: all killed, one line, exit 1."""
    tb = testbed_noisy
    base = 3700000 + secrets.randbelow(1000) * 10
    ctl = write(tmp_path / "c.control", f"""\
        def work(machine):
            hosts.create_host(machine).run("sleep %d" % ({base} + machines.index(machine)))
        parallel_simple(work, machines)
        """)
    proc = _start(ctl, "-r", tmp_path / "r", *bed_args(tb), cwd=tmp_path)
    wait_for(lambda: len(_remote_sleeps(tb, f"sleep {base // 10}")) >= len(tb.machines),
             "the remote commands", proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = _finish(proc)
    left = _remote_sleeps(tb, f"sleep {base // 10}")
    _kill_local(f"^sleep {base // 10}[0-9]$")  # a failed probe leaves nothing either
    assert proc.returncode == 1, err
    assert stderr_lines(subprocess.CompletedProcess([], 1, out, err)) == [
        "autoserv: job aborted: received SIGINT"], err
    assert left == []


@pytest.mark.probe_fault
def test_sigterm_while_connecting_to_a_silent_server(tmp_path: Path) -> None:
    """SIGTERM while the job waits for a host's SSH banner (connect timeout 600 s): the job
    ends within crash collection's own 10-s connect bound, not when the connect timeout runs
    out; the aborted connect's transport thread puts no traceback on the console."""
    ctl = write(tmp_path / "c.control", "hosts.create_host(machines[0]).run('true')\n")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        port = srv.getsockname()[1]
        proc = _start(ctl, "-r", tmp_path / "r", "-m", f"127.0.0.1:{port}", "--connect-timeout",
                      "600", cwd=tmp_path)
        conn, _ = srv.accept()  # autoserv is connecting now
        with conn:
            time.sleep(0.5)  # into the banner wait
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = _finish(proc, 30)
            took = time.monotonic() - start
    assert proc.returncode == 1, err
    assert err.strip() == "autoserv: job aborted: received SIGTERM", err
    assert "Traceback" not in out and "Exception (client)" not in out, out
    assert took < 15, took


@pytest.mark.probe_fault
def test_sigterm_during_a_file_transfer(testbed_loopback: Testbed, tmp_path: Path) -> None:
    """SIGTERM while send_file copies a large file: one line, exit 1, no scp left on the host."""
    tb = testbed_loopback
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(2 << 30)  # 2 GiB, sparse: longer to copy than the test waits
    dest = tmp_path / "dest"
    dest.mkdir()
    ctl = write(tmp_path / "c.control", f"""\
        h = hosts.create_host(machines[0])
        h.send_file({str(big)!r}, {str(dest)!r} + "/")
        """)
    proc = _start(ctl, "-r", tmp_path / "r", *bed_args(tb), cwd=tmp_path)
    copy = dest / "big.bin"
    wait_for(lambda: copy.exists() and copy.stat().st_size > 0, "the copy to start", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = _finish(proc)
    assert proc.returncode == 1, err
    assert err.strip() == "autoserv: job aborted: received SIGTERM", err
    assert _remote_sleeps(tb, str(dest)) == []  # no scp -t (or tar) still writing there


def _listener(pid: int) -> int:
    """The sshd listener above ``pid`` (a session's sshd)."""
    while b"[listener]" not in Path(f"/proc/{pid}/cmdline").read_bytes():
        pid = int(proc_stat(pid)[1])
        assert pid > 1, "no sshd listener"
    return pid


@pytest.mark.probe_fault
def test_session_sshd_killed_under_a_job(testbed_loopback: Testbed, tmp_path: Path) -> None:
    """The sshd of the job's session is killed while the host's sshd stalls for 7 s (a loaded
    host: the reconnect that would end the command fails): the job ends with one line naming
    the host, exit 1, and the command it left is still ended before the job ends."""
    tb = testbed_loopback
    n = 3610000 + secrets.randbelow(1000)
    ctl = write(tmp_path / "c.control", f"hosts.create_host(machines[0]).run('sleep {n}')\n")
    proc = _start(ctl, "-r", tmp_path / "r", "-m", tb.machines[0], "--ssh-config", tb.ssh_config,
                  cwd=tmp_path)
    pids: list[str] = []

    def started() -> bool:
        pids[:] = subprocess.run(["pgrep", "-f", f"^sleep {n}$"], capture_output=True,
                                 text=True).stdout.split()
        return bool(pids)

    wait_for(started, "the remote command", proc)
    sshds = _session_sshds(int(pids[0]))
    assert sshds, "no session sshd found"
    listener = _listener(sshds[-1])
    os.kill(listener, signal.SIGSTOP)
    resume = threading.Timer(7, os.kill, (listener, signal.SIGCONT))
    try:
        resume.start()
        for pid in sshds:
            os.kill(pid, signal.SIGKILL)
        out, err = _finish(proc)
    finally:
        resume.cancel()
        os.kill(listener, signal.SIGCONT)
    left = _remote_sleeps(tb, f"sleep {n}")
    _kill_local(f"^sleep {n}$")  # a failed probe leaves nothing either
    lines = stderr_lines(subprocess.CompletedProcess([], 1, out, err))
    assert proc.returncode == 1, err
    assert len(lines) == 1 and "c.control:1:" in lines[0] and tb.machines[0] in lines[0], err
    assert "lost" in lines[0], err
    assert left == []


# -- injections that must hold, through the CLI ------------------------------------------------

#: Words a shell would act on if autoserv pasted them into a command line unquoted.
HOSTILE = ["$(touch INJ1)", "`touch INJ2`", "a; touch INJ3", "b && touch INJ4", "c | touch INJ5",
           "-n", "--", "d\ntouch INJ6", "e'f\"g", "*", "~root", "${IFS}touch${IFS}INJ7"]


@pytest.mark.probe_injection
def test_shell_metacharacters_in_run_args_are_words(testbed_loopback: Testbed, tmp_path: Path) -> None:
    tb = testbed_loopback
    work = tmp_path / "work"
    work.mkdir()
    ctl = write(tmp_path / "c.control", f"""\
        h = hosts.create_host(machines[0])
        out = h.run("cd -- {shlex.quote(str(work))} && printf '<%s>'", args={HOSTILE!r}).stdout
        with open("out.txt", "w") as f:
            f.write(out)
        """)
    results = tmp_path / "r"
    proc = run_autoserv(ctl, "-r", results, *bed_args(tb), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (results / "out.txt").read_text() == "".join(f"<{w}>" for w in HOSTILE)
    assert list(work.iterdir()) == []  # nothing touched


@pytest.mark.probe_injection
@pytest.mark.parametrize("symlinks", [False, True], ids=["scp", "tar"])
def test_hostile_file_names_are_copied_as_names(testbed_loopback: Testbed, tmp_path: Path,
                                                symlinks: bool) -> None:
    tb = testbed_loopback
    names = ["$(touch INJ1)", "`touch INJ2`", "a;touch INJ3", "b\ntouch INJ4", "c d", "'q'", "-e"]
    src, there, back = tmp_path / "src", tmp_path / "there", tmp_path / "back"
    for d in (src, there, back):
        d.mkdir()
    for name in names:
        (src / name).write_text(name)
    ctl = write(tmp_path / "c.control", f"""\
        import os
        h = hosts.create_host(machines[0])
        src = {str(src)!r}
        h.send_file([os.path.join(src, n) for n in sorted(os.listdir(src))], {str(there)!r} + "/",
                    preserve_symlinks={symlinks!r})
        for n in sorted(os.listdir(src)):
            h.get_file(os.path.join({str(there)!r}, n), {str(back)!r} + "/",
                       preserve_symlinks={symlinks!r})
        """)
    proc = run_autoserv(ctl, "-r", tmp_path / "r", *bed_args(tb), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for d in (there, back):
        assert sorted(p.name for p in d.iterdir()) == sorted(names), d
        for name in names:
            assert (d / name).read_text() == name
    for where in (tmp_path, src, there, back, tmp_path / "r", Path.home()):
        assert not list(where.glob("INJ*")), where


@pytest.mark.probe_injection
def test_bridge_name_with_a_command_from_a_control_file(testbed_loopback: Testbed, tmp_path: Path) -> None:
    """KVM(host, bridge="br0\\ntouch X #"): refused before anything reaches the host, one line
    naming the control file's line, nothing run."""
    tb = testbed_loopback
    marker = tmp_path / "INJ-BRIDGE"
    ctl = write(tmp_path / "c.control", f"""\
        h = hosts.create_host(machines[0])
        h.run("true")
        k = kvm.KVM(h, bridge="br0\\ntouch {marker} #")
        """)
    proc = run_autoserv(ctl, "-r", tmp_path / "r", *bed_args(tb), cwd=tmp_path)
    lines = stderr_lines(proc)
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "c.control:3:" in lines[0] and "bridge 'br0\\ntouch" in lines[0], lines
    assert not marker.exists()
