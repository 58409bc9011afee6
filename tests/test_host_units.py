"""Fast unit tests for the pure pieces of the host layer: parsing, planning, quoting, output."""

from __future__ import annotations

import io
import logging
import os
import posixpath
import subprocess
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import paramiko
import pytest

from autoserv import hosts
from autoserv.deadline import Deadline, backoff
from autoserv.errors import (
    AutoservError,
    AutoservHostKeyError,
    AutoservRunError,
    AutoservUsageError,
    CmdError,
)
from autoserv.hosts import context, get_ssh_defaults, keepalive, parse_machine, set_ssh_defaults
from autoserv.hosts.defaults import SSHDefaults
from autoserv.hosts.known_hosts import HostKeyChecker, known_name, read_known_keys
from autoserv.hosts.machine import Machine, machine_label, mask_machine
from autoserv.hosts.ssh_connection import resolve
from autoserv.hosts.ssh_exec import MarkerFilter, kill_command, new_marker, wrap_command
from autoserv.hosts.transfer import plan_send
from autoserv.result import CmdResult
from autoserv.secret import Secret
from autoserv.streams import TEE_TO_LOGS, StreamCollector
from autoserv.utils import quote_args, run, sh_escape

# -- machine strings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host", ("host", None, None, None)),
        ("host:2222", ("host", None, None, 2222)),
        ("me@host", ("host", "me", None, None)),
        ("me:pw@host:22", ("host", "me", "pw", 22)),
        ("me:p@ss:w@host", ("host", "me", "p@ss:w", None)),
        ("[::1]:2200", ("::1", None, None, 2200)),
        ("::1", ("::1", None, None, None)),
        ("10.0.0.1", ("10.0.0.1", None, None, None)),
        (" spaced ", ("spaced", None, None, None)),
    ],
)
def test_parse_machine(text: str, expected: tuple[object, ...]) -> None:
    assert parse_machine(text) == expected


@pytest.mark.parametrize("text", ["", "host:0", "host:99999", "host:abc", "@host", "[::1", "bad host",
                                  "a;b", "me:pw@"])
def test_parse_machine_rejects(text: str) -> None:
    with pytest.raises(AutoservUsageError):
        parse_machine(text)


def test_parse_machine_error_masks_password() -> None:
    with pytest.raises(AutoservUsageError) as info:
        parse_machine("me:s3cret@host:notaport")
    assert "s3cret" not in str(info.value)
    assert mask_machine("me:s3cret@h") == "me:***@h"


def test_parse_machine_defaults() -> None:
    assert parse_machine("h", user="u", password="p", port=2) == ("h", "u", "p", 2)


@pytest.mark.parametrize(
    ("text", "host", "user", "password", "port", "label"),
    [
        ("host", "host", None, None, None, "host"),
        ("me@host:2222", "host", "me", None, 2222, "me@host:2222"),
        ("me:pw@host", "host", "me", "pw", None, "me@host"),
        ("u:p:w@[::1]:2222", "::1", "u", "p:w", 2222, "u@[::1]:2222"),
        ("me:p@ss@h", "h", "me", "p@ss", None, "me@h"),
        ("me:@h", "h", "me", None, None, "me@h"),
    ],
)
def test_machine_value(
    text: str, host: str, user: str | None, password: str | None, port: int | None, label: str
) -> None:
    m = Machine.parse(text)
    assert (m.host, m.user, m.port, m.label, str(m), m.spec) == (host, user, port, label, label, text)
    assert (m.password.reveal() if m.password else None) == password
    if password:
        assert password not in repr(m) and isinstance(m.password, Secret)


def test_hosts_take_the_parsed_machine() -> None:
    m = Machine.parse("me:pw@127.0.0.1:2222")
    for h in (hosts.create_host(m, ssh_config="/nonexistent"),
              hosts.SSHHost(m.spec, ssh_config="/nonexistent"),
              hosts.SSHHost(m, ssh_config="/nonexistent")):
        assert (h.hostname, h.user, h.port) == ("127.0.0.1", "me", 2222)
        assert h.password is not None and h.password.reveal() == "pw" and h.machine == m
        assert "pw" not in repr(h) and "pw" not in repr(h.machine)
        h.close()
    over = hosts.create_host(m, user="other", port=22, ssh_config="/nonexistent")
    assert (over.user, over.port) == ("other", 22)  # arguments win over the string
    over.close()
    with pytest.raises(AutoservUsageError, match="bad host name"):
        hosts.create_host("me:pw@bad host")


def test_machine_label_never_raises() -> None:
    assert machine_label("not a machine:pw") == "not a machine:pw"
    assert machine_label("u:pw@bad host") == "u@bad host"
    assert Machine.parse("odd#alias", check_host=False).host == "odd#alias"
    with pytest.raises(AutoservUsageError):
        Machine.parse("odd#alias")


# -- settings precedence -----------------------------------------------------------------


def test_resolve_precedence(tmp_path: Path, ssh_defaults: Callable[..., SSHDefaults]) -> None:
    cfg = tmp_path / "config"
    cfg.write_text("Host alias\n  HostName 10.1.2.3\n  User cfguser\n  Port 2022\n"
                   "  IdentityFile /k/from/config\n  StrictHostKeyChecking yes\n"
                   "  UserKnownHostsFile /kh/from/config\n")
    p = resolve("alias", ssh_config=str(cfg))
    assert (p.hostname, p.user, p.port, p.host_key_policy) == ("10.1.2.3", "cfguser", 2022, "strict")
    assert p.key_files == ("/k/from/config",) and p.known_hosts == "/kh/from/config"
    ssh_defaults(user="defuser", port=2200, host_key_policy="off")
    p = resolve("alias", ssh_config=str(cfg))
    assert (p.user, p.port, p.host_key_policy) == ("defuser", 2200, "off")
    p = resolve("alias", user="arg", port=1, ssh_config=str(cfg))
    assert (p.user, p.port) == ("arg", 1)
    p = resolve("plain", ssh_config=str(tmp_path / "missing"))
    assert (p.hostname, p.user, p.port) == ("plain", "defuser", 2200)


def test_job_context_blocks_restore_what_was_before() -> None:
    outer = context.current()
    assert outer == context.JobContext()
    with context.job_context(resultdir="/r1") as ctx:
        assert context.current() is ctx and context.current().resultdir == "/r1"
        set_ssh_defaults(user="inner")
        with context.job_context(ssh=SSHDefaults(port=2)):
            assert (get_ssh_defaults().user, get_ssh_defaults().port) == (None, 2)
            assert context.current().resultdir is None
        assert get_ssh_defaults().user == "inner" and context.current().resultdir == "/r1"
    assert context.current() is outer and get_ssh_defaults().user is None
    with pytest.raises(ValueError, match="host key policy"):
        SSHDefaults().updated(host_key_policy="sometimes")
    with pytest.raises(TypeError, match="unknown SSH default"):
        SSHDefaults().updated(colour="blue")


def test_password_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOSERV_SSH_PASS", "from-env")
    p = resolve("h", ssh_config="/nonexistent")
    assert isinstance(p.password, Secret) and p.password.reveal() == "from-env"
    assert "from-env" not in repr(p) and "from-env" not in str(p.password)


# -- known_hosts ---------------------------------------------------------------------


_KEY: list[paramiko.Ed25519Key] = []


def _key() -> paramiko.Ed25519Key:
    """One throw-away ed25519 key for this module."""
    if not _KEY:
        _KEY.append(_new_key())
    return _KEY[0]


def _new_key() -> paramiko.Ed25519Key:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        return paramiko.Ed25519Key.from_private_key_file(str(path))


def test_known_name() -> None:
    assert known_name("h", 22) == "h"
    assert known_name("h", 2222) == "[h]:2222"


def test_known_hosts_patterns_and_lines(tmp_path: Path) -> None:
    key = _key()
    kh = tmp_path / "kh"
    kh.write_text(f"# c\n\nother ssh-ed25519 AAAA\n*.lab,!bad.lab {key.get_name()} {key.get_base64()}\n")
    found = read_known_keys(str(kh), "x.lab")
    assert [(k.line, k.key_b64) for k in found] == [(4, key.get_base64())]
    assert read_known_keys(str(kh), "bad.lab") == []
    checker = HostKeyChecker("strict", str(kh), extra_files=())
    checker.check("x.lab", key)
    with pytest.raises(AutoservHostKeyError, match="strict"):
        checker.check("y.other", key)


def test_known_hosts_revoked(tmp_path: Path) -> None:
    key = _key()
    kh = tmp_path / "kh"
    kh.write_text(f"@revoked * {key.get_name()} {key.get_base64()}\nh {key.get_name()} {key.get_base64()}\n")
    with pytest.raises(AutoservHostKeyError, match="revoked .*kh:1"):
        HostKeyChecker("accept-new", str(kh), extra_files=()).check("h", key)


def test_known_hosts_lines_keep_file_order_across_literal_and_general_lines(tmp_path: Path) -> None:
    kh = tmp_path / "kh"
    kh.write_text("h,h2 t1 K1\n*.x t2 K2\nh t3 K3\n!h,* t4 K4\n@revoked h t5 K5\nh? t6 K6\n")
    assert [(k.line, k.key_type) for k in read_known_keys(str(kh), "h")] == [
        (1, "t1"), (3, "t3"), (5, "t5")]
    assert [k.line for k in read_known_keys(str(kh), "h2")] == [1, 4, 6]
    assert [k.line for k in read_known_keys(str(kh), "a.x")] == [2, 4]


@pytest.mark.parametrize("change", ["append", "replace-same-size"])
def test_known_hosts_changes_are_seen_by_the_next_lookup(tmp_path: Path, change: str) -> None:
    """The parsed file is kept between lookups; a changed file is read again."""
    kh = tmp_path / "kh"
    kh.write_text("h t1 K1\n")
    assert [k.key_b64 for k in read_known_keys(str(kh), "h")] == ["K1"]
    if change == "append":
        with kh.open("a") as f:
            f.write("h t2 K2\n")
        expected = ["K1", "K2"]
    else:  # e.g. ssh-keygen -R: a new file renamed over the old one
        new = tmp_path / "kh.new"
        new.write_text("h t1 K9\n")
        os.utime(new, ns=(kh.stat().st_atime_ns, kh.stat().st_mtime_ns))
        new.replace(kh)
        expected = ["K9"]
    assert [k.key_b64 for k in read_known_keys(str(kh), "h")] == expected


def test_an_unchanged_known_hosts_file_is_not_opened_again(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup in an unchanged file costs a stat; a file that went away has no keys."""
    import builtins

    kh = tmp_path / "kh"
    kh.write_text("h t1 K1\n")
    assert [k.key_b64 for k in read_known_keys(str(kh), "h")] == ["K1"]
    real_open = builtins.open
    opened: list[str] = []

    def counting_open(file: object, *args: object, **kwargs: object) -> object:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", counting_open)
    assert [k.key_b64 for k in read_known_keys(str(kh), "h")] == ["K1"]
    assert str(kh) not in opened
    kh.unlink()
    assert read_known_keys(str(kh), "h") == []


def _keygen(path: Path, kind: str = "ed25519", passphrase: str = "") -> None:
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-f", str(path)], check=True)


def test_key_files_are_loaded_once_per_change(tmp_path: Path) -> None:
    """A key file is loaded once while it stays the same (an RSA key's check costs 72-230 ms
    of CPU per load), again when it changes; an encrypted key is refused each time."""
    from autoserv.hosts.ssh_connection import _KeyFiles

    keys = _KeyFiles()
    path = tmp_path / "id"
    _keygen(path)
    first = keys.load(str(path))
    assert keys.load(str(path)) is first
    _keygen(path)  # a new key in the same place
    second = keys.load(str(path))
    assert second is not first and second.get_base64() != first.get_base64()
    _keygen(path, passphrase="s3cret-phrase")
    for _ in range(2):
        with pytest.raises(paramiko.PasswordRequiredException):
            keys.load(str(path))
    keys.warm([str(path), str(tmp_path / "none")])  # errors and missing files: ignored


def test_accept_new_appends(tmp_path: Path) -> None:
    key = _key()
    kh = tmp_path / "sub" / "kh"
    checker = HostKeyChecker("accept-new", str(kh), extra_files=())
    checker.check("[h]:2", key)
    checker.check("[h]:2", key)
    assert kh.read_text() == f"[h]:2 {key.get_name()} {key.get_base64()}\n"


# -- transfer planning -------------------------------------------------------------------

LOCAL = {"/s/d": ["x", "y"], "/s/d/": ["x", "y"]}


def _plan(sources: list[str], dest: str, dest_is_dir: bool = False):  # type: ignore[no-untyped-def]
    return plan_send(sources, dest, dest_is_dir, local_isdir=lambda p: p.rstrip("/") == "/s/d",
                     local_listdir=lambda p: LOCAL[p], join=posixpath.join)


@pytest.mark.parametrize(
    ("sources", "dest", "dest_is_dir", "pairs", "mkdirs"),
    [
        (["/s/f"], "/r/new", False, [("/s/f", "/r/new")], ["/r"]),
        (["/s/f"], "/r/dir", True, [("/s/f", "/r/dir/f")], []),
        (["/s/f"], "/r/dir/", False, [("/s/f", "/r/dir/f")], ["/r/dir"]),
        (["/s/d"], "/r/t", False, [("/s/d", "/r/t/d")], ["/r/t"]),
        (["/s/d/"], "/r/t", False, [("/s/d/x", "/r/t/x"), ("/s/d/y", "/r/t/y")], ["/r/t"]),
        (["/s/f", "/s/g"], "/r/m", False, [("/s/f", "/r/m/f"), ("/s/g", "/r/m/g")], ["/r/m"]),
    ],
)
def test_plan_send(sources: list[str], dest: str, dest_is_dir: bool,
                   pairs: list[tuple[str, str]], mkdirs: list[str]) -> None:
    plan = _plan(sources, dest, dest_is_dir)
    assert plan.pairs() == pairs
    assert plan.mkdirs == mkdirs


def test_plan_deletes_and_refuses_root() -> None:
    assert _plan(["/s/d/"], "/r/t").deletes == ["/r/t"]
    assert _plan(["/s/d"], "/r/t").deletes == ["/r/t/d"]
    with pytest.raises(AutoservError, match="refusing"):
        _plan(["/s/d/"], "/")


# -- remote command wrapping ---------------------------------------------------------------


@pytest.mark.parametrize("shell", ["sh", "bash", "dash"])
def test_wrap_command_reports_pid_and_keeps_output(shell: str) -> None:
    cmd = "echo \"$1-ok\" 'quoted $x'; echo err >&2; exit 4"
    marker = new_marker()
    proc = subprocess.run([shell, "-c", wrap_command(cmd, marker)], capture_output=True)
    assert proc.returncode == 4
    for stream, rest in ((proc.stdout, b"-ok quoted $x\n"), (proc.stderr, b"err\n")):
        first, tail = stream.split(b"\n", 1)
        assert first.startswith(marker) and first[len(marker):].isdigit()
        assert tail == rest


def test_wrap_command_execs_the_last_command_in_place_of_the_shell() -> None:
    marker = new_marker()  # bash 5.1+ (the test bed's login shell) execs a -c's last command
    proc = subprocess.run(["bash", "-c", wrap_command("cat /proc/self/stat", marker)],
                          capture_output=True, check=True)
    first, stat = proc.stdout.split(b"\n", 1)
    shell_pid = int(first[len(marker):])
    assert int(stat.split()[0]) == shell_pid  # no fork: the command is the shell's process


@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_wrap_command_reports_a_syntax_error_after_the_marker(shell: str) -> None:
    marker = new_marker()
    proc = subprocess.run([shell, "-c", wrap_command("if then", marker)], capture_output=True)
    assert proc.returncode == 2
    for stream in (proc.stdout, proc.stderr):
        assert stream.startswith(marker), stream
    assert b"then" in proc.stderr.split(b"\n", 1)[1]


def test_guarded_kill_command_spares_a_group_without_the_command_marker() -> None:
    marker = new_marker()
    token = marker.decode().split("_")[1]
    env = {**os.environ, "AUTOSERV_RUN": token}
    other = subprocess.Popen(["sleep", "3713"], start_new_session=True)
    try:
        mine = subprocess.Popen(["sleep", "3714"], start_new_session=True, env=env)
        for victim in (other, mine):
            subprocess.run(["sh", "-c", kill_command(victim.pid, grace=0.5, marker=marker)],
                           check=True)
        assert mine.wait(5) == -15
        assert other.poll() is None  # a reused pid is not the command's: left alone
    finally:
        other.kill()
        other.wait()


def test_kill_command_ends_a_process_group() -> None:
    victim = subprocess.Popen(["sh", "-c", "sleep 3611 & trap '' TERM; sleep 3612"], start_new_session=True)
    time.sleep(0.2)
    subprocess.run(["sh", "-c", kill_command(victim.pid, grace=0.5)], check=True)
    victim.wait(5)
    out = subprocess.run(["pgrep", "-f", "slee[p] 361"], capture_output=True, text=True).stdout
    assert out == ""


@pytest.mark.parametrize("chunks", [
    [b"AUTOSE", b"RV_x_PID=12", b"3\nreal ", b"error\n"],
    [b"banner\nstty: noise ", b"AUTOSERV_x_PID=123\nreal error\n"],
    [b"no newline noise AUTOSERV_x_PID=1", b"23", b"\n", b"real error\n"],
    [b"AUTOSERV_y_PID=9\nnoise AUTOSERV_x_PID=123\nreal error\n"],  # another marker is noise
])
def test_marker_filter_finds_the_marker_anywhere_and_drops_what_came_before(
        chunks: list[bytes]) -> None:
    sink = StreamCollector(None)
    f = MarkerFilter(sink, b"AUTOSERV_x_PID=")
    for chunk in chunks:
        f.feed(chunk)
    f.flush()
    assert f.pid == 123 and sink.finish() == "real error\n"


def test_marker_filter_without_marker_passes_everything() -> None:
    sink = StreamCollector(None)
    f = MarkerFilter(sink, b"AUTOSERV_x_PID=")
    f.feed(b"no marker here\n")
    assert sink.finish() == ""  # held until the marker or the end
    f.flush()
    assert f.pid is None and sink.finish() == "no marker here\n"


def test_new_markers_differ() -> None:
    assert len({new_marker() for _ in range(100)}) == 100


# -- output collection, quoting, errors, deadlines, local run ------------------------------


def test_stream_collector_utf8_split_and_tee(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("autoserv.host.unit")
    c = StreamCollector(TEE_TO_LOGS, log, prefix="[stdout] ")
    data = "héllo\nwörld".encode()
    with caplog.at_level(logging.DEBUG, logger="autoserv.host.unit"):
        for i in range(len(data)):
            c.feed(data[i : i + 1])
        assert c.finish() == "héllo\nwörld"
    assert [r.getMessage() for r in caplog.records] == ["[stdout] héllo", "[stdout] wörld"]
    tee = io.StringIO()
    c2 = StreamCollector(tee)
    c2.feed(b"\xffok")
    assert c2.finish() == "\ufffdok" and tee.getvalue() == "\ufffdok"


def test_quote_args_and_sh_escape() -> None:
    assert quote_args("ls", ["a b", "$x"]) == "ls 'a b' '$x'"
    assert quote_args("ls") == "ls"
    s = 'a"b$c`d\\e'
    assert subprocess.run(["sh", "-c", f'printf %s "{sh_escape(s)}"'], capture_output=True,
                          text=True).stdout == s


def test_run_error_str_shows_command_status_and_tails() -> None:
    r = CmdResult("false --x", 1, "\n".join(f"o{i}" for i in range(50)), "bad\n", 0.25, "h1")
    text = str(AutoservRunError("command failed", r))
    assert "Command on h1: false --x" in text and "Exit status: 1" in text
    assert "0.250 s" in text and "o49" in text and "o0\n" not in text and "bad" in text


def test_deadline_and_backoff() -> None:
    d = Deadline(0.2)
    assert 0 < d.remaining() <= 0.2 and d.remaining(0.05) == 0.05
    d.sleep(1.0)
    assert d.expired() and d.remaining() == 0
    assert Deadline(None).remaining() == float("inf")
    assert 0 < Deadline(Fraction(1, 2)).remaining() <= 0.5  # any real number of seconds
    with pytest.raises(TypeError, match="a timeout is a number of seconds or None, not '5'"):
        Deadline("5")  # type: ignore[arg-type]
    b = backoff(0.1, 2, 0.5)
    assert [next(b) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_local_run() -> None:
    r = run("echo hi; echo e >&2", stdout_tee=None)
    assert r.stdout == "hi\n" and r.stderr == "e\n" and r.exit_status == 0
    assert run("printf '%s|'", args=["a b", "$c"]).stdout == "a b|$c|"
    assert run("cat", stdin="x").stdout == "x"
    with pytest.raises(CmdError) as info:
        run("exit 3")
    assert info.value.result_obj is not None and info.value.result_obj.exit_status == 3
    assert run("exit 3", ignore_status=True).exit_status == 3
    with pytest.raises(CmdError, match="timed out"):
        run("sleep 3620 & sleep 3621", timeout=0.5, ignore_status=True)
    out = subprocess.run(["pgrep", "-f", "slee[p] 362"], capture_output=True, text=True).stdout
    assert out == ""
    killed = run("kill -9 $$", ignore_status=True)
    assert (killed.exit_status, killed.exit_signal) == (-9, 9)
    assert run("true").exit_signal is None


@pytest.mark.parametrize("config, arg, want", [
    ("", None, (15.0, 3)),
    ("ServerAliveInterval 4\n  ServerAliveCountMax 5\n", None, (4.0, 5)),
    ("ServerAliveInterval 4\n", 9.0, (9.0, 3)),
    ("ServerAliveInterval 0\n", None, (0.0, 3)),
])
def test_keepalive_honours_server_alive_options(
        tmp_path: Path, config: str, arg: float | None, want: tuple[float, int]) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host h\n  {config}")
    p = resolve("h", ssh_config=str(cfg), keepalive=arg)
    assert (p.keepalive, p.keepalive_count) == want


def test_watchdog_starter_wakes_only_for_a_start_due_first() -> None:
    """Starts run in time order; adding one due after those the thread sleeps for does not
    wake it (a fan-out's connections: one wake-up, not one each), one due first does."""
    starter = keepalive._WatchdogStarter()
    ran: list[str] = []
    early = threading.Event()
    now = time.monotonic()
    starter.at(now + 30, lambda: ran.append("late"))  # the thread starts, sleeps ~30 s
    notified: list[int] = []
    notify = starter._cond.notify

    def counted(n: int = 1) -> None:
        notified.append(n)
        notify(n)

    starter._cond.notify = counted  # type: ignore[method-assign]
    for i in range(20):
        starter.at(now + 31 + i, lambda: ran.append("later"))
    assert notified == []

    def first() -> None:
        ran.append("early")
        early.set()

    starter.at(now + 0.05, first)
    assert notified == [1]
    assert early.wait(10), "a start due first waited for the later ones"
    assert ran == ["early"]
    with starter._cond:  # let the thread sleep for good (a daemon: nothing is left to do)
        starter._due.clear()


def test_bad_server_alive_value_is_one_clear_line(tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host h\n  ServerAliveInterval soon\n")
    with pytest.raises(AutoservError, match=r"ssh_config: host h: ServerAliveInterval 'soon' is not"):
        resolve("h", ssh_config=str(cfg))


@pytest.mark.parametrize("value, want", [
    ('"/q d/kh" /other', "/q d/kh"),
    ("/plain/kh /second", "/plain/kh"),
    ("'/single q/kh'", "/single q/kh"),
])
def test_user_known_hosts_file_first_path_honours_quotes(
        tmp_path: Path, value: str, want: str) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host h\n  UserKnownHostsFile {value}\n")
    assert resolve("h", ssh_config=str(cfg)).known_hosts == want


def test_wrap_command_runs_a_prelude_before_the_marker_with_no_stdin() -> None:
    from autoserv.hosts.ssh_exec import wrap_command

    marker = b"AUTOSERV-M-test-"
    line = wrap_command("cat; echo done", marker, prelude="echo pre; cat; echo pre-err >&2")
    res = subprocess.run(["sh", "-c", line], input=b"in\n", capture_output=True, check=True)
    assert res.stdout.split(marker)[0] == b"pre\n"  # the prelude read no stdin
    assert res.stdout.endswith(b"in\ndone\n")
    assert b"pre-err" not in res.stderr
