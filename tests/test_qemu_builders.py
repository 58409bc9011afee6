"""Pure builders of autoserv.virt (qemu argv, shell scripts, parsers), table-driven; the lease
script and the liveness check run for real under /bin/sh and flock on this machine (two processes
at once never get the same address; a zombie or a reused pid is not a live qemu)."""

from __future__ import annotations

import concurrent.futures
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from autoserv import localsys
from autoserv.errors import AutoservInstallError, AutoservVirtError
from autoserv.virt import leases, modules, qemu, scripts
from autoserv.virt.scripts import find_qemu_binary_script
from autoserv.virt.source import archive_tar_flag

PATHS = qemu.guest_paths("/var/lib/autoserv/kvm", "10.0.0.5")


@pytest.mark.parametrize(
    ("options", "argv"),
    [
        ("-m 256 -hda /var/local/vdisk.img -snapshot",
         ["-m", "256", "-hda", "/var/local/vdisk.img", "-snapshot"]),
        ("-hda '/images/my disk.img'", ["-hda", "/images/my disk.img"]),
        ('-append "console=ttyS0 quiet"', ["-append", "console=ttyS0 quiet"]),
        ("-name x; rm -rf /", ["-name", "x;", "rm", "-rf", "/"]),  # words, never a shell line
        ("-name $(reboot)", ["-name", "$(reboot)"]),
        ("", []),
        (["-m", "128", "-name", "a b"], ["-m", "128", "-name", "a b"]),
    ],
)
def test_split_options(options: str | list[str], argv: list[str]) -> None:
    assert qemu.split_options(options) == argv


@pytest.mark.parametrize("options", ["-daemonize", "-m 64 -pidfile /x", "--monitor stdio", "-serial stdio",
                                     "-nographic", "-display gtk"])
def test_managed_options_are_refused(options: str) -> None:
    with pytest.raises(AutoservVirtError, match="managed by autoserv"):
        qemu.split_options(options)


def test_unbalanced_quotes_are_an_error() -> None:
    with pytest.raises(AutoservVirtError, match="cannot parse"):
        qemu.split_options("-name 'oops")


def test_argv_with_tap() -> None:
    net = qemu.TapNetwork("kvm0a000005", "/s/qemu-ifup", "/s/qemu-ifdown")
    argv = qemu.qemu_argv("/t/qemu", ["-m", "256"], mac="02:00:00:00:00:05", paths=PATHS, network=net)
    assert argv[:3] == ["/t/qemu", "-m", "256"]
    joined = " ".join(argv)
    assert f"-pidfile {PATHS.pidfile}" in joined and "-daemonize" in argv
    assert f"unix:{PATHS.monitor},server=on,wait=off" in argv
    assert f"logfile={PATHS.serial_log}" in joined and "-serial chardev:console0" in joined
    assert "tap,id=n0,ifname=kvm0a000005,script=/s/qemu-ifup,downscript=/s/qemu-ifdown" in argv
    assert "virtio-net-pci,netdev=n0,mac=02:00:00:00:00:05" in argv
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert "virtio-rng-pci" in argv and argv[argv.index("-display") + 1] == "none"


def test_argv_with_user_networking() -> None:
    net = qemu.UserNetwork("10.0.0.5", 40022)
    argv = qemu.qemu_argv("q", [], mac="02:00:00:00:00:05", paths=PATHS, network=net, accel="kvm",
                          rng=False)
    assert "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:40022-10.0.0.5:22" in argv
    assert argv[argv.index("-accel") + 1] == "kvm" and "virtio-rng-pci" not in argv


@pytest.mark.parametrize(
    ("bios_dirs", "head"),
    [
        ((), ["q", "-m", "64", "-daemonize"]),
        (["/t/pc-bios"], ["q", "-L", "/t/pc-bios", "-m", "64", "-daemonize"]),
        (("/t/pc-bios", "/usr/share/qemu", "/usr/share/seabios"),
         ["q", "-L", "/t/pc-bios", "-L", "/usr/share/qemu", "-L", "/usr/share/seabios", "-m", "64",
          "-daemonize"]),
        (["/dir with space"], ["q", "-L", "/dir with space", "-m", "64", "-daemonize"]),
    ],
)
def test_argv_bios_dirs_follow_the_binary_in_order(bios_dirs: list[str], head: list[str]) -> None:
    argv = qemu.qemu_argv("q", ["-m", "64"], mac="02:00:00:00:00:05", paths=PATHS,
                          network=qemu.UserNetwork("10.0.0.5", 2222), bios_dirs=bios_dirs)
    assert argv[:len(head)] == head and argv.count("-L") == len(bios_dirs)


@pytest.mark.parametrize("options", [["-accel", "kvm"], ["-enable-kvm"], ["-machine", "pc,accel=tcg"]])
def test_user_accel_wins(options: list[str]) -> None:
    argv = qemu.qemu_argv("q", options, mac="02:00:00:00:00:05", paths=PATHS,
                          network=qemu.UserNetwork("10.0.0.5", 2222))
    assert argv.count("-accel") == (1 if "-accel" in options else 0)


@pytest.mark.parametrize(
    ("ip", "tap"),
    [("192.168.2.1", "kvmc0a80201"), ("10.231.7.100", "kvm0ae70764"), ("0.0.0.1", "kvm00000001")],
)
def test_tap_name(ip: str, tap: str) -> None:
    assert qemu.tap_name(ip) == tap and len(tap) <= 15


@pytest.mark.parametrize(
    ("cpuinfo", "vendor"),
    [
        ("processor\t: 0\nflags\t\t: fpu vme vmx sse\n", "intel"),
        ("flags\t: fpu svm lm\nflags\t: vmx\n", "amd"),  # the first flags line decides
        ("vendor_id: AuthenticAMD\nflags : fpu svm\n", "amd"),
    ],
)
def test_cpu_vendor(cpuinfo: str, vendor: str) -> None:
    assert modules.cpu_vendor(cpuinfo) == vendor


@pytest.mark.parametrize("cpuinfo", ["flags : fpu sse2 hypervisor\n", "", "flags: vmxx svmm\n"])
def test_cpu_without_virtualization(cpuinfo: str) -> None:
    with pytest.raises(AutoservVirtError, match="neither vmx nor svm"):
        modules.cpu_vendor(cpuinfo)


def test_parse_proc_modules() -> None:
    text = ("kvm_amd 155648 0 - Live 0x0000000000000000\n"
            "kvm 1146880 1 kvm_amd, Live 0x0000000000000000\n"
            "irqbypass 16384 1 kvm, Live 0x0000000000000000\n")
    assert modules.parse_proc_modules(text) == {"kvm_amd": 0, "kvm": 1, "irqbypass": 1}
    assert modules.vendor_module("amd") == "kvm_amd" and modules.vendor_module("intel") == "kvm_intel"


@pytest.mark.parametrize(
    ("name", "head", "flag"),
    [
        ("kvm-33.tar.gz", b"\x1f\x8b\x08", "z"),
        ("x.tgz", b"\x1f\x8b", "z"),
        ("x.tar.bz2", b"BZh91AY", "j"),
        ("x.tar.xz", b"\xfd7zXZ\x00\x00", "J"),
        ("x.tar", b"a" * 257 + b"ustar\x0000", ""),
        ("misnamed.tar.gz", b"\xfd7zXZ\x00", "J"),  # content wins over the name
        ("x.tar.xz", b"", "J"),
    ],
)
def test_archive_tar_flag(name: str, head: bytes, flag: str) -> None:
    assert archive_tar_flag(name, head) == flag


@pytest.mark.parametrize(("name", "head"), [("notes.txt", b"hello"), ("x.zip", b"PK\x03\x04")])
def test_archive_tar_flag_refuses_other_files(name: str, head: bytes) -> None:
    with pytest.raises(AutoservInstallError, match="not a source archive"):
        archive_tar_flag(name, head)


def test_parse_leases() -> None:
    text = "10.0.0.1 02:00:00:00:00:01 alive 123 ctl:42\n10.0.0.2 02:00:00:00:00:02 starting - ctl:43\n"
    got = leases.parse_leases(text)
    assert got[0] == leases.Lease("10.0.0.1", "02:00:00:00:00:01", "alive", 123, "ctl:42")
    assert got[1].pid is None and got[1].state == "starting" and got[1].owner == "ctl:43"


@pytest.mark.parametrize("bridge", ["br0", "lab-bridge", "x", "a" * 15, "br.lab_1", "..x", "br@0", "brü"])
def test_valid_bridge_names(bridge: str) -> None:
    assert scripts.check_bridge_name(bridge) == bridge
    for text in (scripts.ifup_script(bridge), scripts.ifdown_script(bridge)):
        assert text.startswith("#!/bin/sh\n")
        assert f"\nbridge={shlex.quote(bridge)}\n" in text
        assert bridge not in "".join(line for line in text.splitlines() if line.startswith("#"))
        subprocess.run(["sh", "-n"], input=text, text=True, check=True)


@pytest.mark.parametrize(
    ("bridge", "reason"),
    [
        ("", "empty"),
        ("a" * 16, "16 bytes long, at most 15"),
        ("brüüüüüüü", "16 bytes long"),  # bytes, not characters, count
        (".", "'.' and '..'"),
        ("..", "'.' and '..'"),
        ("br/0", "contains '/'"),
        ("br0:1", "contains ':'"),
        ("lab bridge", "whitespace"),
        ("br0\ntouch X #", "whitespace"),
        ("br\t0", "whitespace"),
        ("br\x0b0", "whitespace"),
        ("br\x0c0", "whitespace"),
        ("br\r0", "whitespace"),
        ("br\xa00", "whitespace"),  # the kernel's isspace() counts 0xa0
        ("br\x000", "NUL"),
        ("br\udc80", "UTF-8"),
    ],
)
def test_invalid_bridge_names(bridge: str, reason: str) -> None:
    for build in (scripts.check_bridge_name, scripts.ifup_script, scripts.ifdown_script):
        with pytest.raises(AutoservVirtError, match=re.escape(reason)) as err:
            build(bridge)
        text = str(err.value)
        assert "\n" not in text and text.startswith(f"bridge {bridge!r} is not a valid Linux interface name")


def test_bridge_name_of_another_type() -> None:
    with pytest.raises(AutoservVirtError, match="bridge name must be a string, not int"):
        scripts.check_bridge_name(0)


def test_ifup_script_for_br0() -> None:
    assert scripts.ifup_script("br0") == """#!/bin/sh
# autoserv qemu-ifup: attach the tap "$1" to the bridge "$bridge"
set -e
bridge=br0
if command -v ip >/dev/null 2>&1; then
    ip link set "$1" up
    ip link set "$1" master "$bridge"
else
    ifconfig "$1" 0.0.0.0 up
    brctl addif "$bridge" "$1"
fi
"""
    assert scripts.ifdown_script("br0") == """#!/bin/sh
# autoserv qemu-ifdown: detach the tap "$1" from the bridge "$bridge"
bridge=br0
if command -v ip >/dev/null 2>&1; then
    ip link set "$1" nomaster 2>/dev/null
    ip link set "$1" down 2>/dev/null
else
    brctl delif "$bridge" "$1" 2>/dev/null
fi
exit 0
"""


def test_ifup_script_runs_nothing_but_ip(tmp_path: Path) -> None:
    """The generated script, run for real with a fake `ip`: it attaches the tap and runs nothing else."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ip").write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(tmp_path / "calls"))}\n')
    (bindir / "ip").chmod(0o755)
    script = tmp_path / "qemu-ifup"
    script.write_text(scripts.ifup_script("br-lab.1"))
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    subprocess.run(["sh", str(script), "kvm0a000005"], env=env, check=True, cwd=tmp_path)
    assert (tmp_path / "calls").read_text().splitlines() == [
        "link set kvm0a000005 up", "link set kvm0a000005 master br-lab.1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "calls", "qemu-ifup"]


def test_kvm_refuses_a_bad_bridge_before_touching_the_host() -> None:
    from autoserv import hosts, kvm

    h = hosts.SSHHost("127.0.0.1", port=1)  # never connected
    try:
        with pytest.raises(AutoservVirtError, match=re.escape("bridge 'br0\\ntouch X #' is not a valid")):
            kvm.KVM(h, bridge="br0\ntouch X #")
    finally:
        h.close()


def test_shell_builders_parse() -> None:
    for text in (scripts.monitor_command("/x/monitor.sock", "system_reset"), scripts.console_command(PATHS),
                 scripts.accel_probe_command("/q b/qemu"), find_qemu_binary_script("/t/kvm 33"),
                 scripts.lease_command("/s", "list"), scripts.alive_command(1, "/p q/qemu.pid"),
                 scripts.stop_command(1, "/p q/qemu.pid", 0.5),
                 scripts.watch_command("M_1", [(1, "/p q/qemu.pid"), (2, "/x")]),
                 scripts.lease_command("/s", "reap", "10.0.0.1", "-", "o"),
                 scripts.install_command("/s/a.tgz", "/s/t", "z", ".m", build=True, patched_kernel=False,
                                         jobs=2, configure_args=["--x=a b"])):
        subprocess.run(["sh", "-n", "-c", text], check=True)


def test_describe_argv_is_copy_pasteable() -> None:
    argv = ["q", "-name", "a b", "-m", "256"]
    assert shlex.split(qemu.describe_argv(argv)) == argv


# --- the lease script, run for real (sh + flock) on this machine ---------------------------

POOL = [{"mac": f"02:00:00:00:01:{i:02x}", "ip": f"10.99.0.{i}"} for i in (1, 2, 3)]


def lease(state: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", scripts.lease_command(str(state), *args)], input=stdin,
                          capture_output=True, text=True)


def test_lease_acquire_commit_release(tmp_path: Path) -> None:
    pool = leases.pool_lines(POOL)
    first = lease(tmp_path, "acquire", "me:1", stdin=pool)
    assert first.returncode == 0 and first.stdout.split() == ["02:00:00:00:01:01", "10.99.0.1"]
    text = (tmp_path / "leases" / "10.99.0.1.lease").read_text()
    fields = dict(line.split("=", 1) for line in text.split("\n") if line)
    paths = qemu.guest_paths(str(tmp_path), "10.99.0.1")
    assert fields["pidfile"] == paths.pidfile and fields["monitor"] == paths.monitor
    assert fields["serial_log"] == paths.serial_log and fields["console"] == paths.console
    assert fields["tap"] == qemu.tap_name("10.99.0.1") and Path(paths.directory).is_dir()
    second = lease(tmp_path, "acquire", "me:1", stdin=pool)
    assert second.stdout.split()[1] == "10.99.0.2"
    # a live process whose command line names the pidfile holds its lease
    proc = subprocess.Popen(["sh", "-c", "sleep 30; :", "holder", paths.pidfile])
    try:
        assert lease(tmp_path, "commit", "10.99.0.1", str(proc.pid)).returncode == 0
        listing = leases.parse_leases(lease(tmp_path, "reclaim").stdout)
        assert {(x.ip, x.state) for x in listing} == {("10.99.0.1", "alive"), ("10.99.0.2", "starting")}
    finally:
        proc.kill()
        proc.wait()
    # its process is gone: reclaimed, and handed out again first
    listing = leases.parse_leases(lease(tmp_path, "reclaim").stdout)
    assert ("10.99.0.1", "reclaimed") in {(x.ip, x.state) for x in listing}
    assert not Path(paths.directory).exists()
    assert lease(tmp_path, "acquire", "me:2", stdin=pool).stdout.split()[1] == "10.99.0.1"
    assert lease(tmp_path, "release", "10.99.0.2").returncode == 0
    assert not (tmp_path / "leases" / "10.99.0.2.lease").exists()


def test_lease_pid_reuse_is_not_alive(tmp_path: Path) -> None:
    """A recorded pid now used by an unrelated process does not keep the lease."""
    pool = leases.pool_lines(POOL[:1])
    lease(tmp_path, "acquire", "me", stdin=pool)
    proc = subprocess.Popen(["sleep", "30"])
    try:
        lease(tmp_path, "commit", "10.99.0.1", str(proc.pid))
        assert leases.parse_leases(lease(tmp_path, "list").stdout)[0].state == "dead"
    finally:
        proc.kill()
        proc.wait()


def test_lease_pool_exhausted(tmp_path: Path) -> None:
    pool = leases.pool_lines(POOL[:1])
    assert lease(tmp_path, "acquire", "a", stdin=pool).returncode == 0
    res = lease(tmp_path, "acquire", "b", stdin=pool)
    assert res.returncode == 3 and "no free address" in res.stderr


def test_lease_refuses_a_mac_leased_under_another_ip(tmp_path: Path) -> None:
    lease(tmp_path, "acquire", "a", stdin="02:00:00:00:01:01 10.99.0.1 t1\n")
    res = lease(tmp_path, "acquire", "b", stdin="02:00:00:00:01:01 10.99.0.9 t9\n")
    assert res.returncode == 3


def test_stale_starting_lease_is_reclaimed(tmp_path: Path) -> None:
    lease(tmp_path, "acquire", "a", stdin=leases.pool_lines(POOL[:1]))
    f = tmp_path / "leases" / "10.99.0.1.lease"
    old = int(time.time()) - scripts.LEASE_START_GRACE - 5
    f.write_text(f.read_text().replace("created=", f"created={old}\nx=", 1))
    assert leases.parse_leases(lease(tmp_path, "list").stdout)[0].state == "dead"
    assert lease(tmp_path, "acquire", "b", stdin=leases.pool_lines(POOL[:1])).returncode == 0


def _acquire_many(state: str, tag: str, n: int) -> list[str]:
    pool = leases.pool_lines([{"mac": f"02:00:00:00:02:{i:02x}", "ip": f"10.98.0.{i}"} for i in range(1, 21)])
    got = []
    for _ in range(n):
        res = subprocess.run(["sh", "-c", scripts.lease_command(state, "acquire", tag)], input=pool,
                             capture_output=True, text=True)
        if res.returncode == 0:
            got.append(res.stdout.split()[1])
    return got


def test_two_processes_never_share_an_address(tmp_path: Path) -> None:
    with concurrent.futures.ProcessPoolExecutor(2) as ex:
        a, b = ex.map(_acquire_many, [str(tmp_path)] * 2, ["p1", "p2"], [12, 12])
    assert len(a) + len(b) == 20  # the pool, no more
    assert not set(a) & set(b)
    assert len(os.listdir(tmp_path / "leases")) == 20


@pytest.mark.parametrize(
    ("output", "reply"),
    [
        ("s\x1b[K\x1b[Dsy\x1b[K\x1b[D\x1b[Dsystem_reset\x1b[K\r\n", ""),
        ("info status\x1b[K\r\nVM status: running\r\n", "VM status: running"),
        ("bogus\r\nunknown command: 'bogus'\r\n", "unknown command: 'bogus'"),
    ],
)
def test_monitor_reply(output: str, reply: str) -> None:
    assert scripts.monitor_reply(output) == reply


def test_lock_without_flock_serializes(tmp_path: Path) -> None:
    """Hosts without flock(1) (busybox) get a mkdir lock; holders never overlap."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "mkdir", "cat", "rm", "sleep"):
        os.symlink(subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True)
                   .stdout.strip(), bindir / tool)
    log = tmp_path / "log"
    body = f"echo start >> {log}; sleep 0.2; echo end >> {log}"
    cmd = scripts.locked(str(tmp_path / "lock"), ["sh", "-c", body], wait=30)
    env = {"PATH": str(bindir)}
    procs = [subprocess.Popen(["sh", "-c", cmd], env=env) for _ in range(4)]
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    assert log.read_text().split() == ["start", "end"] * 4
    assert not (tmp_path / "lock.d").exists()


def test_kvm_accel_choice_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoserv import hosts, kvm

    h = hosts.SSHHost("127.0.0.1", port=1)  # never connected
    monkeypatch.delenv(kvm.ACCEL_ENV, raising=False)
    assert kvm.KVM(h).accel == "auto"
    monkeypatch.setenv(kvm.ACCEL_ENV, "tcg")
    assert kvm.KVM(h).accel == "tcg"
    assert kvm.KVM(h, accel="kvm").accel == "kvm"  # an argument beats the environment
    with pytest.raises(AutoservVirtError, match="accel must be"):
        kvm.KVM(h, accel="hvf")
    with pytest.raises(AutoservVirtError, match="network must be"):
        kvm.KVM(h, network="bridge")
    with pytest.raises(AutoservVirtError, match="install"):
        kvm.KVM(h).new_guest("-m 64")
    h.close()


def _sh(command: str) -> int:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30).returncode


def test_alive_command_is_zombie_and_pid_reuse_aware(tmp_path: Path) -> None:
    """The one liveness check (guests and leases): true only for a running process whose command
    line names the pidfile; a zombie, an unrelated process and a malformed pid are not alive."""
    pidfile = str(tmp_path / "qemu.pid")
    live = subprocess.Popen(["sh", "-c", "sleep 30; :", "qemu", pidfile])
    other = subprocess.Popen(["sleep", "30"])
    zombie = subprocess.Popen(["sh", "-c", "exit 0", "qemu", pidfile])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert _sh(scripts.alive_command(live.pid, pidfile)) == 0
        assert _sh(scripts.alive_command(zombie.pid, pidfile)) == 1
        assert _sh(scripts.alive_command(other.pid, pidfile)) == 1
        assert _sh(scripts.alive_command(live.pid, str(tmp_path / "other.pid"))) == 1
        assert _sh(localsys.ALIVE_SH + f'\nalive "1x" {shlex.quote(pidfile)}') == 1
    finally:
        for p in (live, other, zombie):
            p.kill()
            p.wait()


def test_stop_command_ends_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    pidfile = str(tmp_path / "qemu.pid")
    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done", "qemu", pidfile])
    try:
        t0 = time.monotonic()
        # the process is our child: it stays a zombie until waited for, which counts as gone
        assert _sh(scripts.stop_command(proc.pid, pidfile, grace=0.2)) == 0
        assert proc.wait(timeout=5) == -9 and time.monotonic() - t0 < 8
    finally:
        proc.kill()
        proc.wait()


def test_kvm_module_keeps_its_public_names() -> None:
    from autoserv import kvm

    for name in kvm.__all__:
        assert getattr(kvm, name) is not None, name
    assert kvm.archive_tar_flag is archive_tar_flag
    assert kvm.find_qemu_binary_script is find_qemu_binary_script
    assert kvm.GuestRecord.__module__ == "autoserv.virt.guests"


@pytest.mark.parametrize("name", ["addresses", "guests", "hypervisor", "install", "leases", "modules",
                                  "qemu", "scripts", "source"])
def test_virt_module_all_is_exact(name: str) -> None:
    """Each autoserv.virt module's __all__ names what exists and every public class and
    function it defines (so it cannot go stale as qemu.__all__ once did)."""
    import importlib

    mod = importlib.import_module(f"autoserv.virt.{name}")
    assert [n for n in mod.__all__ if not hasattr(mod, n)] == []
    defined = {n for n, obj in vars(mod).items() if not n.startswith("_")
               and getattr(obj, "__module__", None) == mod.__name__}
    assert defined - set(mod.__all__) == set()


# --- the guest watcher and the reaping of a dead owner's guest, run for real -----------------


def _fake_qemu(pidfile: str) -> subprocess.Popen[bytes]:
    """A process whose command line names ``pidfile``, as the guest's qemu does."""
    return subprocess.Popen(["sh", "-c", "sleep 60; :", "qemu", pidfile])


def test_watch_script_reports_each_qemu_that_ends_and_ends_with_its_stdin(tmp_path: Path) -> None:
    a, b = _fake_qemu(str(tmp_path / "a.pid")), _fake_qemu(str(tmp_path / "b.pid"))
    other = subprocess.Popen(["sleep", "60"])  # a pid whose command line lacks the pidfile
    cmd = scripts.watch_command("M_7", [(a.pid, str(tmp_path / "a.pid")), (b.pid, str(tmp_path / "b.pid")),
                                        (other.pid, str(tmp_path / "c.pid"))])
    watcher = subprocess.Popen(["sh", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               start_new_session=True)
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline() == f"M_7 {other.pid}\n".encode()  # not our qemu: ended
        a.kill()
        a.wait()
        assert watcher.stdout.readline() == f"M_7 {a.pid}\n".encode()
        assert _alive(b.pid)
        watcher.stdin.close()  # type: ignore[union-attr]  # the channel closed: the watcher ends
        assert watcher.wait(timeout=30) == 0
        deadline = time.monotonic() + 30
        while localsys.descendants(watcher.pid) or _group_alive(watcher.pid):
            assert time.monotonic() < deadline, "the watcher's loop outlived it"
            time.sleep(0.1)
    finally:
        for p in (a, b, other):
            p.kill()
            p.wait()
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()


def _alive(pid: int) -> bool:
    return localsys.pid_alive(pid)


def _group_alive(pgid: int) -> bool:
    return _sh(localsys.GROUP_ALIVE_SH + f"\ngroup_alive {pgid}") == 0


def test_watch_command_refuses_a_marker_that_needs_quoting() -> None:
    with pytest.raises(ValueError, match="marker"):
        scripts.watch_command("a b", [(1, "/p")])


def test_lease_reap_ends_only_the_named_owners_guest(tmp_path: Path) -> None:
    pool = leases.pool_lines(POOL[:2])
    assert lease(tmp_path, "acquire", "dead-owner", stdin=pool).returncode == 0
    paths = qemu.guest_paths(str(tmp_path), "10.99.0.1")
    proc = _fake_qemu(paths.pidfile)
    try:
        assert lease(tmp_path, "commit", "10.99.0.1", str(proc.pid)).returncode == 0
        assert lease(tmp_path, "reap", "10.99.0.1", str(proc.pid), "someone-else").stdout == "taken\n"
        assert lease(tmp_path, "reap", "10.99.0.1", "1", "dead-owner").stdout == "taken\n"  # other pid
        assert _alive(proc.pid) and (tmp_path / "leases" / "10.99.0.1.lease").exists()
        res = lease(tmp_path, "reap", "10.99.0.1", str(proc.pid), "dead-owner")
        assert (res.returncode, res.stdout) == (0, "killed\n"), res.stderr
        assert proc.wait(timeout=10) is not None
        assert not (tmp_path / "leases" / "10.99.0.1.lease").exists() and not Path(paths.directory).exists()
        assert lease(tmp_path, "reap", "10.99.0.1", str(proc.pid), "dead-owner").stdout == "gone\n"
    finally:
        proc.kill()
        proc.wait()
    # a lease taken but never committed (the owner died before qemu started): freed
    assert lease(tmp_path, "acquire", "dead-owner", stdin=pool).returncode == 0
    assert lease(tmp_path, "reap", "10.99.0.1", "-", "dead-owner").stdout == "freed\n"
    assert leases.parse_leases(lease(tmp_path, "list").stdout) == []


def test_owner_tags_name_a_process_and_only_a_dead_one_here_is_dead() -> None:
    me = leases.owner_tag()
    host, pid, start, ns, job = me.split(":")
    assert int(pid) == os.getpid() and int(start) == localsys.start_time(os.getpid())
    assert re.fullmatch(r"[0-9a-f]{12}", ns) and job == "-" and not any(c.isspace() for c in me)
    child = subprocess.Popen(["sleep", "60"])
    tag = leases.owner_tag(child.pid)
    assert not leases.owner_dead(tag)
    child.kill()
    child.wait()
    assert leases.owner_dead(tag)
    elsewhere = tag.replace(f":{ns}:", ":000000000000:")  # another machine or pid namespace
    for never in (me, elsewhere, f"{host}:{child.pid}", "", "garbage"):
        assert not leases.owner_dead(never), never
