"""KVM and KVMGuest end to end: real sshd hosts in network namespaces, real qemu guests (TCG).

The remote host is ``tb1`` of a one-host netns test bed: its ``eth0`` is on a bridge ``br0``
(as on a KVM host), guests get taps on that bridge and the seed's addresses
(``192.168.2.N``), which the controller reaches through an address on the lab link.
"""

from __future__ import annotations

import functools
import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoserv import hosts, kvm
from autoserv.deadline import Deadline
from autoserv.errors import (
    AutoservError,
    AutoservGuestDiedError,
    AutoservInstallError,
    AutoservVirtError,
)
from autoserv.lab.demo import (
    SEED_DISK,
    SEED_POOL,
    SEED_TARBALL,
    seed_command,
    seed_env,
    seed_environment,
)
from autoserv.lab.guest_image import READY_MARKER, GuestImage
from autoserv.lab.testbed import Testbed
from tests import kvm_helpers as kh

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

POOL2 = SEED_POOL[:2]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Testbed, GuestImage, Path]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, sshd, qemu)")
    with seed_environment(tmp_path_factory.mktemp("kvm-seed")) as env:
        yield env


@pytest.fixture
def host(seed: tuple[Testbed, GuestImage, Path]) -> Iterator[hosts.SSHHost]:
    tb, _image, config = seed
    h = hosts.SSHHost("tb1", ssh_config=str(config))
    yield h
    h.close()


def fast_boot(image: GuestImage, memory: int = 256) -> str:
    """qemu options booting the image's kernel directly (faster than the disk under TCG)."""
    return f"-m {memory} -kernel {image.kernel} -initrd {image.initrd} -append '{image.append}'"


def make_kvm(host: hosts.SSHHost, image: GuestImage, pool: list[dict[str, str]] = POOL2,
             **kwargs: object) -> kvm.KVM:
    k = kvm.KVM(host, accel="tcg", guest_host_keys=[image.host_public_key], powerdown_grace=1, **kwargs)
    k.get(SEED_TARBALL)
    k.install(pool, build=False, insert_modules=False)
    return k


@pytest.fixture
def k(host: hosts.SSHHost, seed: tuple[Testbed, GuestImage, Path]) -> Iterator[kvm.KVM]:
    tb, image, _ = seed
    obj = make_kvm(host, image)
    yield obj
    obj.deinitialize()
    assert_clean(tb)


def assert_clean(tb: Testbed) -> None:
    """No qemu, no lease, no tap left on tb1."""
    h = tb.hosts[0]
    deadline = time.monotonic() + 10
    while kh.qemu_pids(tb, h) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kh.qemu_pids(tb, h) == []
    assert kh.leases(h) == []
    assert kh.taps(h) == []


def run_autoserv(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run autoserv; past ``timeout`` it gets SIGTERM (so it still deletes its guests),
    and the result carries what it printed either way."""
    proc = subprocess.Popen(cmd, env=seed_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        err += f"\n[test] autoserv still running after {timeout} s: sent SIGTERM\n"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def results_story(results: Path) -> str:
    """The tail of a results dir's debug log and guest serial logs, for a failure message."""
    parts = []
    for path in [results / "debug" / "autoserv.DEBUG", *sorted(results.glob("guest-*.serial.log"))]:
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-40:]
            parts.append(f"\n--- {path.name} (tail) ---\n" + "\n".join(tail))
    return "".join(parts)


# --- a: the seed control file through the autoserv CLI ------------------------------------


def test_seed_control_file_end_to_end(seed: tuple[Testbed, GuestImage, Path], tmp_path: Path) -> None:
    tb, image, config = seed
    assert SEED_DISK.exists() and SEED_TARBALL.exists()
    text = (ROOT / "control_examples" / "kvm_seed.control").read_text()
    assert 'print g.run("uname -a").stdout.strip()' in text  # Python 2, as the seed has it
    t0 = time.monotonic()
    proc = run_autoserv(seed_command(config, tmp_path / "results"), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr + results_story(tmp_path / "results")
    uname = [line for line in proc.stdout.splitlines() if "Linux vhost1 " in line]
    assert uname and image.kernel_release in uname[0], proc.stdout
    serial = (tmp_path / "results" / "guest-192.168.2.1.serial.log").read_text()
    assert f"{READY_MARKER} 192.168.2.1" in serial
    debug = (tmp_path / "results" / "debug" / "autoserv.DEBUG").read_text()
    assert "prebuilt tree: configured with:" in debug and "make install" not in debug
    print(f"seed control file: {time.monotonic() - t0:.1f} s")
    assert_clean(tb)


# --- get() ---------------------------------------------------------------------------------


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "www").mkdir()
    os.link(SEED_TARBALL, tmp_path / "www" / "kvm-33.tar.gz")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_get_sources(host: hosts.SSHHost, http_server: str, tmp_path: Path) -> None:
    k = kvm.KVM(host)
    with pytest.raises(AutoservError, match="does not exist"):
        k.get("/var/local/src/no-such-kvm.tar.gz")
    with pytest.raises(AutoservError, match="cannot download .*404"):
        k.get(f"{http_server}/missing.tar.gz")
    with pytest.raises(AutoservError, match="cannot download"):
        k.get("http://127.0.0.1:1/kvm.tar.gz")
    with pytest.raises(AutoservInstallError, match="not a source archive"):
        (tmp_path / "notes.txt").write_text("not an archive")
        k.get(str(tmp_path / "notes.txt"))
    path = k.get(f"{http_server}/kvm-33.tar.gz")
    assert Path(path).read_bytes() == SEED_TARBALL.read_bytes()
    with open(SEED_TARBALL, "rb") as f:
        path = k.get(f)
    assert Path(path).read_bytes() == SEED_TARBALL.read_bytes()
    assert k.get(tmp_path) == str(tmp_path)  # a directory
    k.deinitialize()


def test_install_validates_addresses_before_touching_the_host() -> None:
    k = kvm.KVM(hosts.SSHHost("127.0.0.1", port=1, connect_timeout=2))
    k._source = str(SEED_TARBALL)
    for bad, match in (([{"mac": "02:00:00:00:00:01", "ip": "10.0.0.1"},
                         {"mac": "02:00:00:00:00:01", "ip": "10.0.0.2"}], "duplicate MAC"),
                       ([{"mac": "zz", "ip": "10.0.0.1"}], "MAC"),
                       ([{"mac": "02:00:00:00:00:01", "ip": "10.0.0.300"}], "IP"),
                       ([], "empty")):
        with pytest.raises(AutoservVirtError, match=match):
            k.install(bad)


def test_module_step_on_a_kernel_without_modules(host: hosts.SSHHost, seed: tuple) -> None:
    k = kvm.KVM(host, accel="tcg")
    k.get(SEED_TARBALL)
    with pytest.raises(AutoservVirtError, match="no loadable module support"):
        k.install(POOL2, build=False, insert_modules=True)
    k.install(POOL2, build=False, insert_modules=True, skip_unsupported_modules=True)
    assert k.qemu_binary and k.qemu_binary.endswith("/build/qemu-system-x86_64")
    assert any(d.endswith("/pc-bios") for d in k.bios_dirs)


# --- guests ----------------------------------------------------------------------------------


def test_two_guests_then_the_pool_is_exhausted(k: kvm.KVM, seed: tuple, host: hosts.SSHHost) -> None:
    from autoserv.virt.qemu import tap_name

    tb, image, config = seed
    t0 = time.monotonic()
    g1 = hosts.KVMGuest(k, fast_boot(image), ssh_config=str(config))
    g2 = hosts.KVMGuest(k, fast_boot(image), ssh_config=str(config))
    assert g1.wait_up(timeout=120) and g2.wait_up(timeout=120)
    print(f"two guests: start -> both wait_up {time.monotonic() - t0:.1f} s")
    assert {g1.hostname, g2.hostname} == {"192.168.2.1", "192.168.2.2"}
    for g, addr in ((g1, SEED_POOL[0]), (g2, SEED_POOL[1])):
        assert g.run("cat /sys/class/net/eth0/address").stdout.strip() == addr["mac"]
        assert f"inet {addr['ip']}/" in g.run("ip -4 addr show eth0").stdout
    assert sorted(kh.taps(tb.hosts[0])) == sorted(tap_name(a["ip"]) for a in POOL2)
    assert len(kh.qemu_pids(tb, tb.hosts[0])) == 2
    with pytest.raises(AutoservVirtError, match="no free guest address"):
        hosts.KVMGuest(k, fast_boot(image))
    assert [x.state for x in k.leases()] == ["alive", "alive"]
    g1.close()
    g1.close()  # idempotent
    assert [x.ip for x in k.leases()] == ["192.168.2.2"]
    g2.close()


def test_single_guest_wait_up_time(k: kvm.KVM, seed: tuple) -> None:
    _tb, image, config = seed
    t0 = time.monotonic()
    with hosts.KVMGuest(k, fast_boot(image), ssh_config=str(config)) as g:
        assert g.wait_up(timeout=120)
        elapsed = time.monotonic() - t0
        print(f"guest start -> wait_up: {elapsed:.1f} s (kernel boot)")
        assert elapsed < 60
    t0 = time.monotonic()
    with hosts.KVMGuest(k, f"-m 256 -hda {SEED_DISK} -snapshot", ssh_config=str(config)) as g:
        assert g.wait_up(timeout=120)
        print(f"guest start -> wait_up: {time.monotonic() - t0:.1f} s (disk boot)")


def test_reset_console_and_reclaim(k: kvm.KVM, seed: tuple, host: hosts.SSHHost) -> None:
    tb, image, config = seed
    g = hosts.KVMGuest(k, fast_boot(image), ssh_config=str(config))
    try:
        g.console.expect(f"{READY_MARKER} 192.168.2.1", timeout=120)
        assert g.wait_up(timeout=60)
        boot_id = g.get_boot_id()
        k.reset_guest(g.ip)
        assert g.wait_down(timeout=60, old_boot_id=boot_id)
        assert g.wait_up(timeout=120)
        assert g.get_boot_id() != boot_id  # a real reset: a new boot
        g.console.expect(f"{READY_MARKER} 192.168.2.1", timeout=60)  # the second boot's marker
        g.console.sendline("")  # the console takes input too
        pid = k.guest(g.ip).pid
    finally:
        g.disconnect()
    # qemu killed behind autoserv's back: refresh_guests frees its lease
    host.run("kill -9", args=[pid])
    deadline = Deadline(30)
    while k.guest_running(g.ip) and not deadline.expired():
        deadline.sleep(0.1)
    assert k.refresh_guests() == []
    assert kh.leases(tb.hosts[0]) == []
    g2 = hosts.KVMGuest(k, fast_boot(image), ssh_config=str(config))
    assert g2.hostname == "192.168.2.1"  # the reclaimed address is handed out again
    g2.close()
    g.close()  # its guest is already gone: close stays quiet


def test_qemu_exiting_at_once_shows_its_stderr(k: kvm.KVM, seed: tuple) -> None:
    tb, _image, _ = seed
    with pytest.raises(AutoservVirtError, match="(?s)failed to start.*no-such-disk.img"):
        hosts.KVMGuest(k, "-m 256 -hda /var/local/no-such-disk.img")
    with pytest.raises(AutoservVirtError, match="managed by autoserv"):
        hosts.KVMGuest(k, "-m 256 -daemonize")
    assert kh.leases(tb.hosts[0]) == []


@pytest.mark.probe_fault
def test_wait_up_on_a_guest_that_died_is_a_clear_error(k: kvm.KVM, seed: tuple,
                                                        host: hosts.SSHHost) -> None:
    _tb, image, config = seed
    g = hosts.KVMGuest(k, "-S " + fast_boot(image), ssh_config=str(config))  # -S: never boots
    try:
        host.run("kill -9", args=[k.guest(g.ip).pid])
        t0 = time.monotonic()
        with pytest.raises(AutoservVirtError, match=f"guest {g.ip} on tb1 died while waiting"):
            g.wait_up()  # no timeout: without the liveness check this would never return
        print(f"dead guest noticed by wait_up after {time.monotonic() - t0:.1f} s")
    finally:
        g.close()


@pytest.mark.probe_fault
def test_run_in_a_guest_whose_qemu_dies_ends_at_once(k: kvm.KVM, seed: tuple) -> None:
    tb, image, config = seed
    with hosts.KVMGuest(k, fast_boot(image), ssh_config=str(config)) as g:
        assert g.wait_up(timeout=120)
        (pid,) = kh.qemu_pids(tb, tb.hosts[0])
        assert pid == k.guest(g.ip).pid
        killer = threading.Timer(2.0, os.kill, (pid, signal.SIGKILL))  # qemu dies mid-command
        killer.start()
        t0 = time.monotonic()
        try:
            with pytest.raises(AutoservGuestDiedError,
                               match=f"guest {g.ip} on tb1 died while running a command"):
                g.run("sleep 3600", timeout=600, ignore_status=True)
        finally:
            killer.cancel()
        elapsed = time.monotonic() - t0
        print(f"run() in a guest whose qemu was killed ended {elapsed - 2:.1f} s after the kill")
        assert elapsed < 30  # generous (keepalives would take 45 s); the timeout is 600 s
        t0 = time.monotonic()
        with pytest.raises(AutoservGuestDiedError, match="before the command could start"):
            g.run("true")
        assert time.monotonic() - t0 < 30


_HOLDER = textwrap.dedent("""
    import sys
    from autoserv import hosts, kvm
    h = hosts.SSHHost("tb1", ssh_config=sys.argv[1])
    k = kvm.KVM(h, accel="tcg", powerdown_grace=0.5)
    k.get(sys.argv[2])
    k.install({pool!r}, build=False, insert_modules=False)
    try:
        ip = k.new_guest("-S -m 64")
    except kvm.AutoservVirtError as exc:
        ip = "none:" + str(exc).splitlines()[0]
    print(ip, flush=True)
    sys.stdin.readline()
    k.deinitialize()
    h.close()
""")


def test_two_autoserv_processes_never_collide(seed: tuple, tmp_path: Path) -> None:
    tb, _image, config = seed
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER.format(pool=POOL2))
    procs = [subprocess.Popen([sys.executable, str(script), str(config), str(SEED_TARBALL)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT)
             for _ in range(3)]
    errors = []
    try:
        got = sorted(p.stdout.readline().strip() for p in procs)  # type: ignore[union-attr]
    finally:
        for p in procs:
            errors.append(p.communicate("\n", timeout=60)[1])
    assert all(p.returncode == 0 for p in procs), errors
    assert got[:2] == ["192.168.2.1", "192.168.2.2"], got
    assert got[2].startswith("none:no free guest address"), got
    assert_clean(tb)


# --- e: SIGTERM to autoserv while a guest runs ------------------------------------------------


@pytest.mark.probe_fault
def test_sigterm_leaves_no_qemu_lease_or_tap(seed: tuple, tmp_path: Path) -> None:
    tb, image, config = seed
    control = tmp_path / "guest_then_sleep.control"
    control.write_text(textwrap.dedent(f"""
        import time
        k = kvm.KVM(hosts.SSHHost("tb1"), accel="tcg", powerdown_grace=1)
        k.get({str(SEED_TARBALL)!r})
        k.install({POOL2!r}, build=False, insert_modules=False)
        g = hosts.KVMGuest(k, {fast_boot(image)!r})
        g.wait_up(timeout=120)
        print("GUEST-UP", g.hostname, flush=True)
        time.sleep(600)
    """))
    proc = subprocess.Popen(seed_command(config, tmp_path / "results", control), env=seed_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "GUEST-UP 192.168.2.1" in line:
                break
        assert kh.qemu_pids(tb, tb.hosts[0]) and kh.leases(tb.hosts[0]) and kh.taps(tb.hosts[0])
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, "".join(lines)
    assert (tmp_path / "results" / "guest-192.168.2.1.serial.log").exists()
    assert_clean(tb)


def test_job_end_deletes_guests_started_with_new_guest(seed: tuple, tmp_path: Path) -> None:
    # no KVMGuest object: the job must still delete the guest its KVM object started
    tb, image, config = seed
    control = tmp_path / "new_guest.control"
    control.write_text(textwrap.dedent(f"""
        k = kvm.KVM(hosts.SSHHost("tb1"), accel="tcg", powerdown_grace=1)
        k.get({str(SEED_TARBALL)!r})
        k.install({POOL2!r}, build=False, insert_modules=False)
        print("STARTED", k.new_guest({fast_boot(image)!r}), flush=True)
    """))
    res = run_autoserv(seed_command(config, tmp_path / "results", control), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "STARTED 192.168.2.1" in res.stdout + res.stderr
    assert_clean(tb)


# --- c: the module path on a guest acting as the remote host ------------------------------------


def test_modules_in_a_guest_acting_as_the_kvm_host(k: kvm.KVM, seed: tuple, tmp_path: Path) -> None:
    from autoserv.virt.modules import parse_proc_modules

    _tb, image, config = seed
    with hosts.KVMGuest(k, fast_boot(image) + " -cpu qemu64,+svm", ssh_config=str(config)) as g:
        assert g.wait_up(timeout=120)
        assert "kvm" not in g.run("cat /proc/modules").stdout
        # the guest (busybox, no libraries) cannot run this machine's qemu: its "tree" holds a
        # stand-in binary so install() reaches the module step, which is what this test is about
        tree = tmp_path / "kvm-guest-tree"
        (tree / "build").mkdir(parents=True)
        (tree / "build" / "qemu-system-x86_64").write_text("#!/bin/sh\necho 'QEMU stand-in 0.0'\n")
        (tree / "build" / "qemu-system-x86_64").chmod(0o755)
        inner = kvm.KVM(g, accel="tcg", state_dir="/tmp/autoserv-kvm")
        inner.get(str(tree))
        inner.install(POOL2, build=False, insert_modules=True)
        loaded = parse_proc_modules(g.run("cat /proc/modules").stdout)
        assert {"kvm", "kvm_amd"} <= set(loaded)
        assert g.run("test -c /dev/kvm", ignore_status=True).exit_status == 0
        assert set(inner.inserted_modules) >= {"kvm", "kvm_amd"}
        inner.deinitialize()
        loaded = parse_proc_modules(g.run("cat /proc/modules").stdout)
        assert "kvm_amd" not in loaded and "kvm" not in loaded
        # without svm/vmx the vendor check refuses
        with hosts.KVMGuest(k, fast_boot(image) + " -cpu qemu64,-svm", ssh_config=str(config)) as plain:
            assert plain.wait_up(timeout=120)
            other = kvm.KVM(plain, accel="tcg", state_dir="/tmp/autoserv-kvm")
            other.get(str(tree))
            with pytest.raises(AutoservVirtError, match="neither vmx nor svm"):
                other.install(POOL2, build=False, insert_modules=True)


# --- b: build=True with a real autotools tree ----------------------------------------------


def test_build_runs_configure_and_make_remotely_never_make_install(
    host: hosts.SSHHost, seed: tuple, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tb, _image, _ = seed
    tarball = kh.orig_tarball("hello")
    prefix = "/var/lib/autoserv/hello-prefix"
    k = kvm.KVM(host, accel="tcg")
    k.get(tarball)
    caplog.set_level("DEBUG", logger="autoserv.host.tb1")
    with pytest.raises(AutoservInstallError, match="no qemu-system-x86_64"):
        k.install(POOL2, build=True, insert_modules=False, configure_args=[f"--prefix={prefix}"])
    state = kh.host_state(tb.hosts[0])
    (tree,) = (state / "kvm" / "trees").glob("hello_2.10.orig-*/hello-2.10")
    assert (tree / "config.status").exists() and (tree / "hello").exists()  # configured + built there
    assert f"--prefix={prefix}" in (tree / "config.log").read_text()
    assert not (state / "hello-prefix").exists() and not Path(prefix).exists()  # never installed
    assert not list(Path("/var/lib/autoserv/kvm/trees").glob("hello*"))  # not on the controller
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "checking for gcc" in messages  # configure output streamed to the host's debug log
    assert "make install" not in messages
    assert "--with-patched-kernel" in messages  # noted as not known to this configure

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "configure").write_text("#!/bin/sh\necho 'checking everything... no'\nexit 7\n")
    (broken / "configure").chmod(0o755)
    k.get(broken)
    expected = r"(?s)configure failed.*exit status 7.*checking everything"
    with pytest.raises(AutoservInstallError, match=expected):
        k.install(POOL2, build=True, insert_modules=False)


# --- f: a real QEMU built from Debian's source by install(build=True) -------------------------

# Only what the test guests use (the pc machine with its default VGA and parallel port,
# virtio NIC and RNG), no debug info: the build took 589 s with the default devices and -g,
# 237 s so (2-core machine, 2026-12-02); the guest boots the same.
QEMU_DEVICES = """\
CONFIG_I440FX=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_NET=y
CONFIG_VIRTIO_RNG=y
CONFIG_VGA_PCI=y
CONFIG_PARALLEL=y
"""
QEMU_CONFIGURE = ["--target-list=x86_64-softmmu", "--disable-docs", "--disable-werror", "--enable-slirp",
                  "--disable-tools", "--disable-install-blobs", "--disable-debug-info",
                  "--disable-plugins", "--without-default-devices", "--with-devices-x86_64=autoserv"]


# The suite's 600 s per test is too tight for a build on a slow 2-core machine.
@pytest.mark.timeout(1800)
def test_build_real_qemu_and_boot_a_guest_with_it(host: hosts.SSHHost, seed: tuple, tmp_path: Path) -> None:
    tb, image, config = seed
    src = tmp_path / "src"
    src.mkdir()
    subprocess.run(["tar", "-xJf", str(kh.orig_tarball("qemu")), "-C", str(src)], check=True)
    (tree,) = list(src.iterdir())
    meson = tree / "meson.build"
    text = meson.read_text()
    # the Debian (dfsg) tarball has no edk2 firmware blobs: do not unpack them
    assert "    unpack_edk2_blobs = bzip2.found()\n" in text
    meson.write_text(text.replace("    unpack_edk2_blobs = bzip2.found()\n",
                                  "    unpack_edk2_blobs = false\n"))
    (tree / "configs" / "devices" / "x86_64-softmmu" / "autoserv.mak").write_text(QEMU_DEVICES)
    tarball = kh.retar(tree, tmp_path / "qemu-7.2.tar.gz", tree.name)
    k = kvm.KVM(host, accel="tcg", guest_host_keys=[image.host_public_key], powerdown_grace=1)
    k.get(tarball)
    t0 = time.monotonic()
    k.install(POOL2, build=True, insert_modules=False, configure_args=QEMU_CONFIGURE)
    print(f"QEMU build (send, unpack, configure, make): {time.monotonic() - t0:.0f} s")
    assert k.qemu_binary and k.qemu_binary.endswith("/build/qemu-system-x86_64")
    assert "/kvm/trees/" in k.qemu_binary
    with hosts.KVMGuest(k, fast_boot(image), ssh_config=str(config)) as g:
        assert g.wait_up(timeout=120)
        assert g.run("uname -r").stdout.strip() == image.kernel_release
    k.deinitialize()
    assert_clean(tb)


# --- user-mode networking: SSH through the KVM host's connection --------------------------


def test_ssh_via_another_hosts_connection(host: hosts.SSHHost, seed: tuple) -> None:
    tb, _image, _ = seed
    key = (Path(tb.hosts[0].workdir) / "ssh_host_ed25519_key.pub").read_text().split()
    inner = hosts.SSHHost("tb1-loopback", via=host, via_target=("127.0.0.1", 22),
                          key_file=str(tb.client_key), pinned_host_keys=[" ".join(key[:2])])
    assert inner.run("hostname").stdout.strip() == "tb1"
    assert inner.params.where == "tb1-loopback:22"
    bad = hosts.SSHHost("tb1-nothing", via=host, via_target=("127.0.0.1", 1), connect_timeout=5,
                        key_file=str(tb.client_key), pinned_host_keys=[" ".join(key[:2])])
    with pytest.raises(AutoservError, match="could not open a channel to 127.0.0.1:1"):
        bad.run("true")


def test_user_mode_networking_guest(host: hosts.SSHHost, seed: tuple) -> None:
    tb, image, config = seed
    k = make_kvm(host, image, network="user")
    try:
        with hosts.KVMGuest(k, fast_boot(image), ssh_config=str(config)) as g:
            assert g.wait_up(timeout=120)
            assert g.hostname == "192.168.2.1"
            assert g.run("cat /sys/class/net/eth0/address").stdout.strip() == SEED_POOL[0]["mac"]
            assert kh.taps(tb.hosts[0]) == []  # no tap: user-mode networking
            assert "restrict=on" in " ".join(k.guest(g.ip).argv)
    finally:
        k.deinitialize()
    assert_clean(tb)


# --- SIGKILL of autoserv: its guests are ended by cleanup or by the next job -----------------


def start_and_sigkill(seed: tuple, tmp_path: Path, name: str) -> tuple[Path, int]:
    """An autoserv job that starts a guest (``-S``: it never boots, qemu just runs) and is then
    SIGKILLed with everything it started locally; returns its results dir and the qemu pid."""
    tb, _image, config = seed
    control = tmp_path / f"{name}.control"
    control.write_text(textwrap.dedent(f"""
        import time
        k = kvm.KVM(hosts.SSHHost("tb1"), accel="tcg", powerdown_grace=1)
        k.get({str(SEED_TARBALL)!r})
        k.install({SEED_POOL[:1]!r}, build=False, insert_modules=False)
        print("STARTED", k.new_guest("-S -m 64"), k.guest("192.168.2.1").pid, flush=True)
        time.sleep(600)
    """))
    results = tmp_path / f"{name}-results"
    proc = subprocess.Popen(seed_command(config, results, control), env=seed_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "STARTED " in line:  # (after the console's time and level)
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # autoserv and all it forked: nothing cleans up
        proc.communicate(timeout=60)
    started = [line.split("STARTED ", 1)[1].split() for line in lines if "STARTED " in line]
    assert started and started[0][0] == "192.168.2.1", "".join(lines)
    pid = int(started[0][1])
    assert kh.qemu_pids(tb, tb.hosts[0]) == [pid] and kh.leases(tb.hosts[0]) == ["192.168.2.1.lease"]
    assert len(kh.taps(tb.hosts[0])) == 1
    return results, pid


@pytest.mark.probe_fault
def test_cleanup_ends_the_guests_of_a_sigkilled_job(seed: tuple, tmp_path: Path) -> None:
    tb, _image, _ = seed
    results, pid = start_and_sigkill(seed, tmp_path, "killed")
    entries = [e for e in (results / "journal").read_text().splitlines() if '"kind":"guest"' in e]
    assert len(entries) == 1 and f'"qemu_pid":{pid}' in entries[0] and '"tap":"kvmc0a80201"' in entries[0]
    cleanup = subprocess.run([sys.executable, "-m", "autoserv", "cleanup", str(results)], env=seed_env(),
                             capture_output=True, text=True, timeout=120)
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    assert f"tb1: killed guest 192.168.2.1 (qemu {pid}), freed its lease" in cleanup.stdout, cleanup.stdout
    assert_clean(tb)
    again = subprocess.run([sys.executable, "-m", "autoserv", "cleanup", str(results)], env=seed_env(),
                           capture_output=True, text=True, timeout=120)
    assert again.stdout == f"nothing left to clean up in {results}\n", again.stdout + again.stderr


def test_the_next_job_reclaims_the_guests_of_a_sigkilled_one(seed: tuple, tmp_path: Path,
                                                             host: hosts.SSHHost) -> None:
    tb, image, config = seed
    k = make_kvm(host, image, pool=SEED_POOL[:1])
    try:
        # refresh_guests() reaps a guest whose owner died, though its qemu still runs
        _results, pid = start_and_sigkill(seed, tmp_path, "first")
        assert [(x.ip, x.state, x.pid) for x in k.leases()] == [("192.168.2.1", "alive", pid)]
        assert k.refresh_guests() == []
        assert_clean(tb)
        # and so does the next guest start: the one address of the pool is free again
        _results, pid = start_and_sigkill(seed, tmp_path, "second")
        ip = k.new_guest("-S -m 64")
        assert ip == "192.168.2.1" and kh.qemu_pids(tb, tb.hosts[0]) == [k.guest(ip).pid] != [pid]
    finally:
        k.deinitialize()
    assert_clean(tb)
