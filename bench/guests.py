"""4. Guests: qemu start → ``wait_up()`` returning, vs the guest's SSH port first answering.

``autoserv.kvm.KVMGuest`` is not written yet, so the bench boots the cached
image of :mod:`autoserv.lab.guest_image` itself (TCG, user networking with a
``hostfwd`` to the guest's port 22, as the test suite does) and points a
plain ``SSHHost`` at the forwarded port.  During each boot two pollers run
side by side from the moment qemu is started:

* a raw socket probe every 10 ms that waits at most 0.2 s for the
  ``SSH-`` banner (slirp accepts TCP before the guest listens, so a probe
  without a banner timeout would hang) — the moment SSH first answers;
* ``SSHHost.wait_up()`` — connect, key exchange, auth, ``true``.

The gap between them is our cost: polling intervals plus one SSH handshake
and command.  After ``wait_up`` one more ``is_up()`` on a fresh connection
gives the handshake + command part alone.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from autoserv.localsys import free_port, ssh_banner
from bench.common import OURS, Comparison, Measurement, log

QEMU = shutil.which("qemu-system-x86_64")
BOOT_TIMEOUT = 90.0
BANNER = "SSH banner (raw socket poll)"
HANDSHAKE = "fresh connect + true (is_up)"


def _banner_poller(port: int, started: float, stop: threading.Event, out: list[float]) -> None:
    # qemu's user network accepts at once and closes when the guest refuses;
    # once the guest accepts, its sshd (under TCG, on a busy machine) may take
    # well over 0.2 s to send the banner: wait for it instead of giving up
    # and reconnecting (which made this "ideal" poller later than wait_up).
    while not stop.is_set():
        if ssh_banner("127.0.0.1", port, timeout=3.0, connect_timeout=0.2):
            out.append(time.monotonic() - started)
            return
        stop.wait(0.01)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def measure(trials: int) -> Comparison | None:
    comp = Comparison("guest", "qemu start → SSH usable", OURS)
    if QEMU is None:
        log.warning("qemu-system-x86_64 not installed: no guest figures")
        return None
    from autoserv.hosts import SSHHost
    from autoserv.lab.guest_image import build_guest_image
    from autoserv.virt.addresses import generate_addresses

    ours = comp.add(Measurement(OURS, note="SSHHost.wait_up() returns, from qemu start"))
    banner = comp.add(Measurement(BANNER, note="first SSH banner, from qemu start"))
    gap = comp.add(Measurement("wait_up − banner", note="the cost of our polling + one handshake",
                                  context=True))
    handshake = comp.add(Measurement(HANDSHAKE, note="one is_up() on a fresh connection, guest already up",
                                        context=True))
    with tempfile.TemporaryDirectory(prefix="bench-guest-") as tmp:
        work = Path(tmp)
        key = work / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        pool = generate_addresses()
        addr = pool[0]
        image = build_guest_image(authorized_keys=key.with_suffix(".pub").read_text(), addresses=pool)
        log.info("guest image %s (build %.1f s)", image.directory, image.build_seconds)
        for trial in range(trials):
            port = free_port()
            known = work / f"known_hosts{trial}"
            known.write_text(image.known_hosts_line("127.0.0.1", port))
            argv = [
                QEMU, "-accel", "tcg", "-m", "256", "-smp", "1",
                "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", image.append,
                "-display", "none", "-serial", f"file:{work / f'serial{trial}.log'}", "-monitor", "none",
                "-no-reboot", "-device", "virtio-rng-pci",
                "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-{addr.ip}:22",
                "-device", f"virtio-net-pci,netdev=n0,mac={addr.mac}",
            ]  # fmt: skip
            stop = threading.Event()
            seen: list[float] = []
            started = time.monotonic()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            poller = threading.Thread(target=_banner_poller, args=(port, started, stop, seen), daemon=True)
            poller.start()
            try:
                host = SSHHost(f"root@127.0.0.1:{port}", key_file=str(key), known_hosts=str(known),
                               host_key_policy="strict")
                up = host.wait_up(timeout=BOOT_TIMEOUT)
                t_up = time.monotonic() - started
                host.close()
                poller.join(5)
                if not up or not seen:
                    raise RuntimeError(f"guest not up after {BOOT_TIMEOUT} s (wait_up={up}, banner={seen})")
                ours.values.append(t_up)
                banner.values.append(seen[0])
                gap.values.append(t_up - seen[0])
                with SSHHost(f"root@127.0.0.1:{port}", key_file=str(key), known_hosts=str(known),
                             host_key_policy="strict") as again:
                    t0 = time.monotonic()
                    again.is_up(timeout=10)
                    handshake.values.append(time.monotonic() - t0)
                log.info("guest boot %d: banner %.2f s, wait_up %.2f s", trial + 1, seen[0], t_up)
            except Exception as exc:
                log.exception("guest trial failed")
                ours.error = f"{type(exc).__name__}: {exc}"[:500]
                break
            finally:
                stop.set()
                _stop(proc)
    return comp
