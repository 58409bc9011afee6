"""3. Transfers: 100 files of 1 KiB and one 100 MiB file, both directions.

Ours: ``SSHHost.send_file``/``get_file`` (scp protocol over the pooled
paramiko transport, after one probe command for rsync semantics).  Peers:
OpenSSH ``scp -r`` (OpenSSH 9 speaks SFTP by default), ``scp -O`` (the
legacy scp protocol, what ours speaks) and paramiko SFTP (put/get per file on
a TCP_NODELAY transport).  Each trial copies into a fresh destination; the
copy is checked (file count / size) outside the timed part.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

from autoserv.hosts import SSHHost
from autoserv.lab.testbed import Testbed
from bench.common import OURS, Comparison, Measurement, log

SCP = "scp (SFTP protocol)"
SCP_LEGACY = "scp -O (scp protocol)"
SFTP = "paramiko SFTP"
SMALL_COUNT = 100
SMALL_SIZE = 1024
BIG_SIZE = 100 * 1024 * 1024
TOOLS = (OURS, SCP, SCP_LEGACY, SFTP)


def _make_sources(root: Path) -> tuple[Path, Path]:
    small = root / "small"
    small.mkdir()
    for i in range(SMALL_COUNT):
        (small / f"f{i:03d}").write_bytes(os.urandom(SMALL_SIZE))
    big = root / "big.bin"
    with open(big, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(BIG_SIZE >> 20):
            f.write(chunk)
    return small, big


class _Sftp:
    """One paramiko SFTP session on a TCP_NODELAY transport (the strongest plain-paramiko setup)."""

    def __init__(self, tb: Testbed) -> None:
        host = tb.hosts[0]
        sock = socket.create_connection((host.address, host.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = paramiko.Transport(sock)
        self.transport.start_client(timeout=10)
        self.transport.auth_publickey("root", paramiko.PKey.from_path(str(tb.client_key)))
        sftp = paramiko.SFTPClient.from_transport(self.transport)
        assert sftp is not None
        self.sftp = sftp

    def put_tree(self, local: Path, remote: str) -> None:
        if local.is_dir():
            self.sftp.mkdir(remote)
            for entry in os.listdir(local):
                self.sftp.put(str(local / entry), f"{remote}/{entry}")
        else:
            self.sftp.put(str(local), remote)

    def get_tree(self, remote: str, local: Path) -> None:
        if local.suffix == ".bin":
            self.sftp.get(remote, str(local))
            return
        local.mkdir()
        for entry in self.sftp.listdir(remote):
            self.sftp.get(f"{remote}/{entry}", str(local / entry))

    def close(self) -> None:
        self.sftp.close()
        self.transport.close()


def measure(tb: Testbed, small_trials: int, big_trials: int) -> list[Comparison]:
    name = tb.machines[0]
    config = str(tb.ssh_config)
    scp_base = ["scp", "-F", config, "-o", "BatchMode=yes", "-q", "-r"]
    host = SSHHost(name, ssh_config=config)
    sftp = _Sftp(tb)
    comps: list[Comparison] = []
    remote_root = f"{tb.hosts[0].workdir}/bench-xfer"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-xfer-") as tmp:
            small, big = _make_sources(Path(tmp))
            host.run(f"rm -rf {remote_root} && mkdir -p {remote_root}/src")
            subprocess.run([*scp_base, str(small), str(big), f"{name}:{remote_root}/src/"], check=True)
            host.run("sync")
            serial = 0

            def fresh() -> str:
                nonlocal serial
                serial += 1
                return f"{remote_root}/d{serial}"

            def send(tool: str, src: Path) -> str:
                dest = fresh()
                target = dest if src.is_dir() else f"{dest}.bin"
                calls: dict[str, Callable[[], object]] = {
                    # a trailing "/" copies a directory's contents into target (rsync semantics)
                    OURS: lambda: host.send_file(str(src) + ("/" if src.is_dir() else ""), target),
                    SCP: lambda: subprocess.run([*scp_base, str(src), f"{name}:{target}"], check=True),
                    SCP_LEGACY: lambda: subprocess.run([*scp_base, "-O", str(src), f"{name}:{target}"],
                                                       check=True),
                    SFTP: lambda: sftp.put_tree(src, target),
                }
                calls[tool]()
                return target

            def get(tool: str, src: str, local: Path) -> None:
                calls: dict[str, Callable[[], object]] = {
                    OURS: lambda: host.get_file(src + ("/" if local.suffix != ".bin" else ""), str(local)),
                    SCP: lambda: subprocess.run([*scp_base, f"{name}:{src}", str(local)], check=True),
                    SCP_LEGACY: lambda: subprocess.run([*scp_base, "-O", f"{name}:{src}", str(local)],
                                                       check=True),
                    SFTP: lambda: sftp.get_tree(src, local),
                }
                calls[tool]()

            def verify_remote(target: str, is_dir: bool) -> None:
                cmd = f"ls {target} | wc -l" if is_dir else f"stat -c %s {target}"
                want = SMALL_COUNT if is_dir else BIG_SIZE
                got = int(host.run(cmd).stdout.strip())
                if got != want:
                    raise RuntimeError(f"{target}: {got} != {want}")

            def verify_local(local: Path, is_dir: bool) -> None:
                got = len(os.listdir(local)) if is_dir else local.stat().st_size
                if got != (SMALL_COUNT if is_dir else BIG_SIZE):
                    raise RuntimeError(f"{local}: {got}")

            cases = (
                (f"{SMALL_COUNT} x 1 KiB", small, "small", small_trials, SMALL_COUNT * SMALL_SIZE),
                ("100 MiB", big, "big.bin", big_trials, BIG_SIZE),
            )
            for label, src, remote_name, trials, size in cases:
                rsrc = f"{remote_root}/src/{remote_name}"
                up = Comparison("transfer", f"send {label}", OURS)
                down = Comparison("transfer", f"get {label}", OURS)
                for comp in (up, down):
                    for tool in TOOLS:
                        comp.add(Measurement(tool, extra={"bytes": size}))
                is_dir = src.is_dir()
                for trial in range(trials):
                    order = TOOLS[trial % len(TOOLS):] + TOOLS[: trial % len(TOOLS)]
                    for tool in order:
                        m_up, m_down = up.get(tool), down.get(tool)
                        assert m_up is not None and m_down is not None
                        try:
                            t0 = time.perf_counter()
                            target = send(tool, src)
                            m_up.values.append(time.perf_counter() - t0)
                            verify_remote(target, is_dir)
                            host.run(f"rm -rf {target}")
                            local = Path(tmp) / f"got-{serial}{'' if is_dir else '.bin'}"
                            t0 = time.perf_counter()
                            get(tool, rsrc, local)
                            m_down.values.append(time.perf_counter() - t0)
                            verify_local(local, is_dir)
                            shutil.rmtree(local) if is_dir else local.unlink()
                        except Exception as exc:
                            log.exception("%s transfer failed", tool)
                            m_up.error = m_up.error or f"{type(exc).__name__}: {exc}"[:500]
                log.info("transfers %s done", label)
                comps += [up, down]
    finally:
        sftp.close()
        host.run(f"rm -rf {remote_root}", ignore_status=True)
        host.close()
    return comps
