"""The cached qemu guest of autoserv.lab.guest_image, built and booted for real (TCG).

One guest (``-cpu qemu64,+svm`` so the KVM modules load under TCG) serves the
SSH, SFTP, scp and module tests; a second one checks an unknown MAC, two NICs
and ``poweroff``.  SSH is key-only and the host key is pinned to the one the
build reported.  Guests are reached through user networking forwarded to a
loopback port and always killed in a finalizer.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from autoserv.errors import AutoservVirtError
from autoserv.hosts.sftp_client import close_sftp
from autoserv.lab.guest_image import (
    NOADDR_MARKER,
    READY_MARKER,
    CpioEntry,
    GuestImage,
    build_guest_image,
    builder,
    default_cache_dir,
    write_cpio,
)
from autoserv.localsys import free_port
from autoserv.virt.addresses import generate_addresses

log = logging.getLogger("tests.guest_image")

QEMU = shutil.which("qemu-system-x86_64")
BOOT_TIMEOUT = 120.0  # TCG on a loaded 2-core machine; a healthy boot takes ~3-5 s
POOL = generate_addresses()
GUEST = POOL[4]  # 02:00:00:00:00:05 → 192.168.2.5 (vhost5)


# --------------------------------------------------------------------------- helpers


@dataclass
class Guest:
    proc: subprocess.Popen[bytes]
    port: int
    serial_log: Path
    known_hosts: Path
    key_file: Path
    started: float
    ssh_ready: float = 0.0

    def serial(self) -> str:
        try:
            return self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def start_qemu(
    image: GuestImage, workdir: Path, nics: list[tuple[str, str | None]], cpu: str = "qemu64"
) -> Guest:
    """Start qemu; ``nics`` are (mac, guest ip to forward SSH to or None)."""
    assert QEMU is not None
    port = free_port()
    serial_log = workdir / "serial.log"
    argv = [
        QEMU, "-accel", "tcg", "-cpu", cpu, "-m", "256", "-smp", "1",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", image.append,
        "-display", "none", "-serial", f"file:{serial_log}", "-monitor", "none",
        "-no-reboot", "-device", "virtio-rng-pci",
    ]  # fmt: skip
    for n, (mac, ip) in enumerate(nics):
        netdev = f"user,id=n{n},restrict=on"
        if ip:
            netdev += f",hostfwd=tcp:127.0.0.1:{port}-{ip}:22"
        argv += ["-netdev", netdev, "-device", f"virtio-net-pci,netdev=n{n},mac={mac}"]
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(image.known_hosts_line("127.0.0.1", port))
    qemu_log = open(workdir / "qemu.log", "wb")  # closed below, qemu keeps its copy
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    qemu_log.close()
    return Guest(proc, port, serial_log, known_hosts, workdir / "unused", time.monotonic())


def stop_qemu(guest: Guest) -> None:
    """SIGTERM, wait, then SIGKILL: qemu can take over a second to die."""
    if guest.proc.poll() is None:
        guest.proc.send_signal(signal.SIGTERM)
        try:
            guest.proc.wait(5)
        except subprocess.TimeoutExpired:
            guest.proc.kill()
            guest.proc.wait(10)


def connect(guest: Guest, key: paramiko.PKey, banner_timeout: float = 10.0) -> paramiko.SSHClient:
    """Key-authenticated paramiko client; the host key must match the pinned one."""
    sock = socket.create_connection(("127.0.0.1", guest.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = paramiko.SSHClient()
    client.load_host_keys(str(guest.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            "127.0.0.1", guest.port, username="root", pkey=key, sock=sock,
            banner_timeout=banner_timeout, auth_timeout=15, timeout=5,
            look_for_keys=False, allow_agent=False,
        )  # fmt: skip
    except BaseException:
        client.close()
        sock.close()
        raise
    return client


def wait_for_ssh(guest: Guest, key: paramiko.PKey) -> paramiko.SSHClient:
    """Poll until SSH answers (user networking accepts TCP before the guest listens)."""
    deadline = guest.started + BOOT_TIMEOUT
    quiet = logging.getLogger("paramiko")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        while True:
            if guest.proc.poll() is not None:
                pytest.fail(f"qemu exited ({guest.proc.returncode}); console:\n{guest.serial()}")
            try:
                client = connect(guest, key, banner_timeout=1.0)
            except (OSError, paramiko.SSHException, EOFError):
                if time.monotonic() > deadline:
                    pytest.fail(f"no SSH after {BOOT_TIMEOUT} s; console:\n{guest.serial()}")
                time.sleep(0.05)
                continue
            guest.ssh_ready = time.monotonic() - guest.started
            log.info("guest SSH ready %.2f s after qemu start", guest.ssh_ready)
            return client
    finally:
        quiet.setLevel(level)


def ssh(client: paramiko.SSHClient, command: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run ``command``; always waits for the exit status (dropbear needs that)."""
    transport = client.get_transport()
    assert transport is not None
    chan = transport.open_session(timeout=timeout)
    chan.settimeout(timeout)
    chan.exec_command(command)
    stdout, stderr = chan.makefile("rb").read(), chan.makefile_stderr("rb").read()
    status = chan.recv_exit_status()
    chan.close()
    return status, stdout.decode(), stderr.decode()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[paramiko.PKey, Path]:
    """An ed25519 key generated for this test run (OpenSSH format for ssh/scp too)."""
    path = tmp_path_factory.mktemp("keys") / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "autoserv-test", "-f", str(path)],
        check=True,
    )
    return paramiko.Ed25519Key.from_private_key_file(str(path)), path


@pytest.fixture(scope="module")
def image(client_key: tuple[paramiko.PKey, Path]) -> Iterator[GuestImage]:
    """A guest image for this run's key, in the shared cache (debs and kernels are reused)."""
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 not installed")
    key, path = client_key
    pub = path.with_suffix(".pub").read_text()
    built = build_guest_image(authorized_keys=pub, addresses=POOL, gateway=None)
    log.info("image built in %.2f s: %s", built.build_seconds, built.directory)
    yield built
    # this run's key makes the directory unique: drop it, keep the downloads
    if built.directory and built.directory.parent == default_cache_dir() / "guest":
        shutil.rmtree(built.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def guest(
    image: GuestImage, client_key: tuple[paramiko.PKey, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Guest, paramiko.SSHClient]]:
    """One booted guest with SVM emulated, its MAC taken from the pool."""
    workdir = tmp_path_factory.mktemp("guest")
    g = start_qemu(image, workdir, [(GUEST.mac, GUEST.ip)], cpu="qemu64,+svm")
    g.key_file = client_key[1]
    client = None
    try:
        client = wait_for_ssh(g, client_key[0])
        yield g, client
    finally:
        if client is not None:
            client.close()
        stop_qemu(g)


# --------------------------------------------------------------------------- unit


def test_write_cpio_is_read_by_gnu_cpio(tmp_path: Path) -> None:
    if shutil.which("cpio") is None:
        pytest.skip("cpio not installed")
    entries = {
        "etc": CpioEntry(stat.S_IFDIR | 0o755),
        "etc/passwd": CpioEntry(stat.S_IFREG | 0o644, b"root:x:0:0::/root:/bin/sh\n"),
        "bin": CpioEntry(stat.S_IFDIR | 0o755),
        "bin/sh": CpioEntry(stat.S_IFLNK | 0o777, b"busybox"),
        "dev": CpioEntry(stat.S_IFDIR | 0o755),
        "dev/console": CpioEntry(stat.S_IFCHR | 0o600, rdev=(5, 1)),
        "odd": CpioEntry(stat.S_IFREG | 0o600, b"x" * 5),
    }
    buf = io.BytesIO()
    write_cpio(entries, buf)
    assert len(buf.getvalue()) % 4 == 0
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"], input=buf.getvalue(), capture_output=True, check=True
    ).stdout.decode()
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line
             for line in listing.splitlines()}  # fmt: skip
    assert sorted(lines) == sorted(entries)
    assert lines["bin/sh"].startswith("lrwxrwxrwx") and lines["bin/sh"].endswith("-> busybox")
    assert lines["dev/console"].startswith("crw-------")
    assert all(" root " in line for line in lines.values())
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=buf.getvalue(), cwd=out, check=True)
    assert (out / "etc" / "passwd").read_bytes() == entries["etc/passwd"].data
    assert (out / "odd").read_bytes() == b"xxxxx"


@pytest.mark.parametrize("name", ["rcS", "ready", "profile"])
def test_guest_scripts_are_package_data_in_valid_shell(name: str) -> None:
    text = builder.guest_file(name)
    assert text.strip()
    subprocess.run(["sh", "-n"], input=text, text=True, check=True)


def test_inittab_is_rendered_from_package_data() -> None:
    text = builder.inittab()
    assert "@" not in text
    assert "::respawn:/usr/sbin/dropbear -F -s -p 22 -r /etc/dropbear/dropbear_ed25519_host_key\n" in text
    assert text.startswith("# autoserv guest: busybox init\n::sysinit:/etc/init.d/rcS\n")
    assert "for m in @BOOT_MODULES@; do" in builder.guest_file("rcS")  # filled in by the builder


def test_private_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AutoservVirtError, match="private key"):
        build_guest_image(
            cache_dir=tmp_path,
            authorized_keys="-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n",
        )


def test_bad_addresses_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(AutoservVirtError, match="address 1: duplicate MAC"):
        build_guest_image(
            cache_dir=tmp_path,
            addresses=[{"mac": "02:00:00:00:00:01", "ip": "10.0.0.1"}] * 2,
        )
    assert not (tmp_path / "guest").exists()


# --------------------------------------------------------------------------- image


@pytest.mark.slow
@pytest.mark.qemu
def test_image_contents(image: GuestImage) -> None:
    assert image.kernel.is_file() and image.initrd.is_file()
    assert image.kernel_release.endswith("-cloud-amd64")
    assert image.host_public_key.startswith("ssh-ed25519 AAAA")
    assert len(image.host_public_key.split()) == 2
    assert image.append == "console=ttyS0 panic=-1 quiet"
    assert {"virtio_net", "virtio_pci", "kvm", "kvm_amd", "kvm_intel", "irqbypass"} <= set(image.modules)
    raw = gzip.decompress(image.initrd.read_bytes())
    assert raw.startswith(b"070701")
    for name in (
        b"init\0",
        b"bin/sh\0",
        b"usr/sbin/dropbear\0",
        b"usr/lib/openssh/sftp-server\0",
        b"usr/bin/scp\0",
        b"root/.ssh/authorized_keys\0",
        b"etc/autoserv/mac-table\0",
        f"lib/modules/{image.kernel_release}/modules.dep\0".encode(),
        f"lib/modules/{image.kernel_release}/kernel/arch/x86/kvm/kvm-amd.ko\0".encode(),
    ):
        assert name in raw, name


@pytest.mark.slow
@pytest.mark.qemu
def test_second_build_is_a_cache_hit(image: GuestImage, client_key: tuple[paramiko.PKey, Path]):
    pub = client_key[1].with_suffix(".pub").read_text()
    t0 = time.monotonic()
    again = build_guest_image(authorized_keys=pub, addresses=POOL, gateway=None)
    elapsed = time.monotonic() - t0
    assert again.directory == image.directory
    assert again.host_public_key == image.host_public_key
    assert elapsed < 0.5, elapsed


@pytest.mark.slow
@pytest.mark.qemu
def test_other_inputs_give_another_image(image: GuestImage, tmp_path: Path) -> None:
    """Another pool: a new image and host key, built from the cached .deb and kernel."""
    t0 = time.monotonic()
    other = build_guest_image(
        cache_dir=default_cache_dir(),
        authorized_keys="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOQ9l8Pf3X6FoLzvbnYvxtBmJ7ndRUfjY7ENhzJYqQmA x",
        addresses=POOL[:2],
        gateway="192.168.2.254",
    )
    elapsed = time.monotonic() - t0
    try:
        assert other.directory != image.directory
        assert other.host_public_key != image.host_public_key
        assert other.gateway == "192.168.2.254" and len(other.addresses) == 2
        raw = gzip.decompress(other.initrd.read_bytes())
        assert b"GATEWAY=192.168.2.254\n" in raw
        assert elapsed < 60, elapsed
    finally:
        if other.directory:
            shutil.rmtree(other.directory, ignore_errors=True)


# --------------------------------------------------------------------------- booted guest


@pytest.mark.slow
@pytest.mark.qemu
def test_boots_to_ssh_with_pinned_host_key(guest: tuple[Guest, paramiko.SSHClient]) -> None:
    g, client = guest
    assert f"{READY_MARKER} {GUEST.ip}" in g.serial()
    transport = client.get_transport()
    assert transport is not None
    assert transport.get_remote_server_key().get_name() == "ssh-ed25519"
    log.info("boot to SSH: %.2f s", g.ssh_ready)
    assert g.ssh_ready < BOOT_TIMEOUT


@pytest.mark.slow
@pytest.mark.qemu
def test_wrong_pinned_key_is_rejected(
    guest: tuple[Guest, paramiko.SSHClient], client_key: tuple[paramiko.PKey, Path], tmp_path: Path
) -> None:
    g, _ = guest
    other = paramiko.Ed25519Key.from_private_key_file(str(client_key[1]))  # any other ed25519 key
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{g.port} ssh-ed25519 {other.get_base64()}\n")
    pinned = Guest(g.proc, g.port, g.serial_log, wrong, g.key_file, g.started)
    with pytest.raises(paramiko.BadHostKeyException):
        connect(pinned, client_key[0]).close()


@pytest.mark.slow
@pytest.mark.qemu
def test_uname_shows_the_debian_kernel(guest: tuple[Guest, paramiko.SSHClient], image: GuestImage):
    _, client = guest
    status, out, _ = ssh(client, "uname -a")
    assert status == 0
    fields = out.split()
    assert fields[0] == "Linux"
    assert fields[1] == GUEST.name
    assert fields[2] == image.kernel_release
    assert "Debian" in out


@pytest.mark.slow
@pytest.mark.qemu
def test_address_comes_from_the_mac(guest: tuple[Guest, paramiko.SSHClient]) -> None:
    _, client = guest
    status, out, _ = ssh(client, "ip addr show eth0; hostname; cat /proc/cmdline; echo $SHELL")
    assert status == 0, out
    assert f"link/ether {GUEST.mac}" in out
    assert f"inet {GUEST.ip}/24" in out
    lines = out.splitlines()
    assert lines[-3] == GUEST.name
    assert lines[-1] == "/bin/sh"
    status, out, _ = ssh(client, "readlink /bin/sh; id -u; echo $HOME; ls -ld /tmp")
    assert status == 0
    assert out.split("\n")[:3] == ["busybox", "0", "/root"]
    assert out.split("\n")[3].startswith("drwxrwxrwt")


@pytest.mark.slow
@pytest.mark.qemu
def test_exit_status_and_stderr(guest: tuple[Guest, paramiko.SSHClient]) -> None:
    _, client = guest
    assert ssh(client, "echo out; echo err >&2; exit 3") == (3, "out\n", "err\n")


@pytest.mark.slow
@pytest.mark.qemu
def test_sftp(guest: tuple[Guest, paramiko.SSHClient]) -> None:
    _, client = guest
    payload = os.urandom(200_000)
    sftp = client.open_sftp()
    try:
        with sftp.open("/tmp/sftp-test.bin", "wb") as fh:
            fh.write(payload)
        assert sftp.stat("/tmp/sftp-test.bin").st_size == len(payload)
        with sftp.open("/tmp/sftp-test.bin", "rb") as fh:
            assert fh.read() == payload
        assert "sftp-test.bin" in sftp.listdir("/tmp")
    finally:
        close_sftp(sftp)  # waits for the exit status: dropbear needs that
    status, out, _ = ssh(client, "sha256sum /tmp/sftp-test.bin")
    assert out.split()[0] == hashlib.sha256(payload).hexdigest()


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("mode", ["sftp", "legacy-scp"])
def test_openssh_scp(guest: tuple[Guest, paramiko.SSHClient], tmp_path: Path, mode: str) -> None:
    """OpenSSH's scp (SFTP protocol by default, ``-O`` runs the guest's scp)."""
    g, client = guest
    scp = shutil.which("scp")
    if scp is None:
        pytest.skip("OpenSSH scp not installed")
    src = tmp_path / "up.txt"
    src.write_text(f"hello over {mode}\n")
    base = [
        scp, "-F", "/dev/null", "-q", "-B", "-P", str(g.port), "-i", str(g.key_file),
        "-o", f"UserKnownHostsFile={g.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
        "-o", "ConnectTimeout=10",
    ]  # fmt: skip
    if mode == "legacy-scp":
        base.append("-O")
    remote = f"/tmp/scp-{mode}.txt"
    up = subprocess.run([*base, str(src), f"root@127.0.0.1:{remote}"], capture_output=True,
                        text=True, timeout=60, check=False)  # fmt: skip
    assert up.returncode == 0, up.stderr
    assert ssh(client, f"cat {remote}")[1] == src.read_text()
    back = tmp_path / "down.txt"
    down = subprocess.run([*base, f"root@127.0.0.1:{remote}", str(back)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert back.read_text() == src.read_text()


@pytest.mark.slow
@pytest.mark.qemu
def test_kvm_modules_load_under_emulated_svm(guest: tuple[Guest, paramiko.SSHClient]) -> None:
    _, client = guest
    status, out, err = ssh(client, "grep -c -w svm /proc/cpuinfo; modprobe kvm_amd")
    assert status == 0, err
    status, out, _ = ssh(client, "lsmod; ls -l /dev/kvm")
    assert status == 0, out
    loaded = {line.split()[0] for line in out.splitlines()[1:] if line.strip()}
    assert {"kvm_amd", "kvm", "irqbypass"} <= loaded
    assert "/dev/kvm" in out
    status, _, err = ssh(client, "rmmod kvm_amd kvm")
    assert status == 0, err
    status, out, _ = ssh(client, "lsmod")
    loaded = {line.split()[0] for line in out.splitlines()[1:] if line.strip()}
    assert "kvm" not in loaded and "kvm_amd" not in loaded
    # kvm_intel needs VMX, which TCG does not offer: a clean failure, not a hang
    status, _, _ = ssh(client, "modprobe kvm_intel")
    assert status != 0


@pytest.mark.slow
@pytest.mark.qemu
def test_unknown_mac_two_nics_and_poweroff(
    image: GuestImage, client_key: tuple[paramiko.PKey, Path], tmp_path: Path
) -> None:
    """eth0 has a MAC outside the pool (reported, left down); eth1 gets its address; poweroff."""
    second = POOL[30]
    g = start_qemu(image, tmp_path, [("02:00:00:00:00:ee", None), (second.mac, second.ip)])
    g.key_file = client_key[1]
    client = None
    try:
        client = wait_for_ssh(g, client_key[0])
        assert f"{NOADDR_MARKER} eth0 02:00:00:00:00:ee" in g.serial()
        assert f"{READY_MARKER} {second.ip}" in g.serial()
        status, out, _ = ssh(client, "ip -4 addr show; hostname")
        assert status == 0
        assert f"inet {second.ip}/24" in out
        assert out.split()[-1] == second.name
        assert out.count("inet ") == 2  # lo and eth1 only
        chan = client.get_transport().open_session()  # type: ignore[union-attr]
        chan.exec_command("poweroff")
        with contextlib.suppress(Exception):
            chan.recv_exit_status()
        client.close()
        client = None
        t0 = time.monotonic()
        g.proc.wait(60)
        log.info("poweroff → qemu exit: %.2f s", time.monotonic() - t0)
    finally:
        if client is not None:
            client.close()
        stop_qemu(g)


@pytest.mark.slow
@pytest.mark.qemu
def test_cli_prints_the_cached_image(image: GuestImage, client_key: tuple[paramiko.PKey, Path]) -> None:
    """``python -m autoserv.guest_image`` (and its home, ``autoserv.lab.guest_image``) with the
    same inputs finds the same image."""
    pub = client_key[1].with_suffix(".pub")
    proc = subprocess.run(
        [sys.executable, "-m", "autoserv.guest_image", "--authorized-key", str(pub), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["kernel"] == str(image.kernel)
    assert data["initrd"] == str(image.initrd)
    assert data["host_public_key"] == image.host_public_key
    proc = subprocess.run(
        [sys.executable, "-m", "autoserv.lab.guest_image", "--authorized-key", str(pub)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"initrd: {image.initrd}\n" in proc.stdout
    assert f"host_public_key: {image.host_public_key}\n" in proc.stdout


def test_cli_reports_bad_addresses(tmp_path: Path) -> None:
    bad = tmp_path / "pool.json"
    bad.write_text('[{"mac": "02:00:00:00:00:01", "ip": "10.0.0.1"}, {"mac": "nope", "ip": "10.0.0.2"}]')
    proc = subprocess.run(
        [sys.executable, "-m", "autoserv.guest_image", "--cache", str(tmp_path), "--addresses", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "address 1: invalid MAC 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr
