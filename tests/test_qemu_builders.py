"""Pure builders of autoserv.qemu / autoserv.kvm, table-driven; the lease script runs for real
under /bin/sh and flock on this machine (two processes at once never get the same address)."""

from __future__ import annotations

import concurrent.futures
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from autoserv import qemu
from autoserv.errors import AutoservInstallError, AutoservVirtError
from autoserv.kvm import archive_tar_flag, find_qemu_binary_script

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
                          bios_dir="/b", rng=False)
    assert argv[1:3] == ["-L", "/b"]
    assert "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:40022-10.0.0.5:22" in argv
    assert argv[argv.index("-accel") + 1] == "kvm" and "virtio-rng-pci" not in argv


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
    assert qemu.cpu_vendor(cpuinfo) == vendor


@pytest.mark.parametrize("cpuinfo", ["flags : fpu sse2 hypervisor\n", "", "flags: vmxx svmm\n"])
def test_cpu_without_virtualization(cpuinfo: str) -> None:
    with pytest.raises(AutoservVirtError, match="neither vmx nor svm"):
        qemu.cpu_vendor(cpuinfo)


def test_parse_proc_modules() -> None:
    text = ("kvm_amd 155648 0 - Live 0x0000000000000000\n"
            "kvm 1146880 1 kvm_amd, Live 0x0000000000000000\n"
            "irqbypass 16384 1 kvm, Live 0x0000000000000000\n")
    assert qemu.parse_proc_modules(text) == {"kvm_amd": 0, "kvm": 1, "irqbypass": 1}
    assert qemu.vendor_module("amd") == "kvm_amd" and qemu.vendor_module("intel") == "kvm_intel"


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
    leases = qemu.parse_leases(text)
    assert leases[0] == qemu.Lease("10.0.0.1", "02:00:00:00:00:01", "alive", 123, "ctl:42")
    assert leases[1].pid is None and leases[1].state == "starting" and leases[1].owner == "ctl:43"


@pytest.mark.parametrize("bridge", ["br0", "lab bridge"])
def test_network_scripts_are_valid_sh(bridge: str) -> None:
    for text in (qemu.ifup_script(bridge), qemu.ifdown_script(bridge)):
        assert text.startswith("#!/bin/sh\n")
        assert shlex.quote(bridge) in text
        subprocess.run(["sh", "-n"], input=text, text=True, check=True)


def test_shell_builders_parse() -> None:
    for text in (qemu.monitor_command("/x/monitor.sock", "system_reset"), qemu.console_command(PATHS),
                 qemu.accel_probe_command("/q b/qemu"), find_qemu_binary_script("/t/kvm 33"),
                 qemu.lease_command("/s", "list")):
        subprocess.run(["sh", "-n", "-c", text], check=True)


def test_describe_argv_is_copy_pasteable() -> None:
    argv = ["q", "-name", "a b", "-m", "256"]
    assert shlex.split(qemu.describe_argv(argv)) == argv


# --- the lease script, run for real (sh + flock) on this machine ---------------------------

POOL = [{"mac": f"02:00:00:00:01:{i:02x}", "ip": f"10.99.0.{i}"} for i in (1, 2, 3)]


def lease(state: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", qemu.lease_command(str(state), *args)], input=stdin,
                          capture_output=True, text=True)


def test_lease_acquire_commit_release(tmp_path: Path) -> None:
    pool = qemu.pool_lines(POOL)
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
        listing = qemu.parse_leases(lease(tmp_path, "reclaim").stdout)
        assert {(x.ip, x.state) for x in listing} == {("10.99.0.1", "alive"), ("10.99.0.2", "starting")}
    finally:
        proc.kill()
        proc.wait()
    # its process is gone: reclaimed, and handed out again first
    listing = qemu.parse_leases(lease(tmp_path, "reclaim").stdout)
    assert ("10.99.0.1", "reclaimed") in {(x.ip, x.state) for x in listing}
    assert not Path(paths.directory).exists()
    assert lease(tmp_path, "acquire", "me:2", stdin=pool).stdout.split()[1] == "10.99.0.1"
    assert lease(tmp_path, "release", "10.99.0.2").returncode == 0
    assert not (tmp_path / "leases" / "10.99.0.2.lease").exists()


def test_lease_pid_reuse_is_not_alive(tmp_path: Path) -> None:
    """A recorded pid now used by an unrelated process does not keep the lease."""
    pool = qemu.pool_lines(POOL[:1])
    lease(tmp_path, "acquire", "me", stdin=pool)
    proc = subprocess.Popen(["sleep", "30"])
    try:
        lease(tmp_path, "commit", "10.99.0.1", str(proc.pid))
        assert qemu.parse_leases(lease(tmp_path, "list").stdout)[0].state == "dead"
    finally:
        proc.kill()
        proc.wait()


def test_lease_pool_exhausted(tmp_path: Path) -> None:
    pool = qemu.pool_lines(POOL[:1])
    assert lease(tmp_path, "acquire", "a", stdin=pool).returncode == 0
    res = lease(tmp_path, "acquire", "b", stdin=pool)
    assert res.returncode == 3 and "no free address" in res.stderr


def test_lease_refuses_a_mac_leased_under_another_ip(tmp_path: Path) -> None:
    lease(tmp_path, "acquire", "a", stdin="02:00:00:00:01:01 10.99.0.1 t1\n")
    res = lease(tmp_path, "acquire", "b", stdin="02:00:00:00:01:01 10.99.0.9 t9\n")
    assert res.returncode == 3


def test_stale_starting_lease_is_reclaimed(tmp_path: Path) -> None:
    lease(tmp_path, "acquire", "a", stdin=qemu.pool_lines(POOL[:1]))
    f = tmp_path / "leases" / "10.99.0.1.lease"
    old = int(time.time()) - qemu.LEASE_START_GRACE - 5
    f.write_text(f.read_text().replace("created=", f"created={old}\nx=", 1))
    assert qemu.parse_leases(lease(tmp_path, "list").stdout)[0].state == "dead"
    assert lease(tmp_path, "acquire", "b", stdin=qemu.pool_lines(POOL[:1])).returncode == 0


def _acquire_many(state: str, tag: str, n: int) -> list[str]:
    pool = qemu.pool_lines([{"mac": f"02:00:00:00:02:{i:02x}", "ip": f"10.98.0.{i}"} for i in range(1, 21)])
    got = []
    for _ in range(n):
        res = subprocess.run(["sh", "-c", qemu.lease_command(state, "acquire", tag)], input=pool,
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
    assert qemu.monitor_reply(output) == reply


def test_lock_without_flock_serializes(tmp_path: Path) -> None:
    """Hosts without flock(1) (busybox) get a mkdir lock; holders never overlap."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "mkdir", "cat", "rm", "sleep"):
        os.symlink(subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True)
                   .stdout.strip(), bindir / tool)
    log = tmp_path / "log"
    body = f"echo start >> {log}; sleep 0.2; echo end >> {log}"
    cmd = qemu.locked(str(tmp_path / "lock"), ["sh", "-c", body], wait=30)
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
