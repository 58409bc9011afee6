"""1. Per-command latency on an open connection (``true``, exit status read), and the cost
of a new connection (TCP connect, key exchange, public-key auth).

Ours: ``SSHHost.run("true")`` (pooled transport, TCP_NODELAY, pid-reporting
wrapper, output teed to the host logger).  Peers: a raw paramiko exec on one
transport with and without TCP_NODELAY, Fabric ``Connection.run(hide=True)``,
a new OpenSSH ``ssh`` process per command, and ``ssh`` through a ControlMaster.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
from pathlib import Path

import paramiko

from autoserv.hosts import SSHHost
from autoserv.lab.testbed import Testbed
from bench.common import OURS, Comparison, Measurement, guarded, time_calls, time_interleaved

RAW_NODELAY = "paramiko raw (TCP_NODELAY)"
RAW_DEFAULT = "paramiko raw (default socket)"
FABRIC = "fabric Connection.run"
SSH = "ssh per command"
CONTROL_MASTER = "ssh ControlMaster"


def _raw_transport(tb: Testbed, nodelay: bool) -> paramiko.Transport:
    host = tb.hosts[0]
    sock = socket.create_connection((host.address, host.port), timeout=10)
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = paramiko.Transport(sock)
    t.start_client(timeout=10)
    t.auth_publickey("root", paramiko.PKey.from_path(str(tb.client_key)))
    return t


def _raw_true(t: paramiko.Transport) -> None:
    chan = t.open_session(timeout=10)
    chan.exec_command("true")
    chan.recv(1)  # EOF
    if chan.recv_exit_status() != 0:
        raise RuntimeError("true failed")
    chan.close()


def measure(tb: Testbed, trials: int, slow_trials: int) -> Comparison:
    """``trials`` commands per fast tool (interleaved), ``slow_trials`` for the 40-300 ms ones."""
    comp = Comparison("latency", "run `true` on an open connection", OURS)
    name = tb.machines[0]
    config = str(tb.ssh_config)
    ours = comp.add(Measurement(OURS))
    raw = comp.add(Measurement(RAW_NODELAY))
    master = comp.add(Measurement(CONTROL_MASTER, note="a new ssh client per command"))

    def fast_three(_: Measurement) -> None:
        """Ours, raw paramiko with TCP_NODELAY and ControlMaster, alternating blocks of calls."""
        with tempfile.TemporaryDirectory(prefix="bench-cm-") as tmp:
            path = str(Path(tmp) / "cm")
            base = ["ssh", "-F", config, "-o", "BatchMode=yes", "-o", f"ControlPath={path}"]
            subprocess.run([*base, "-o", "ControlMaster=yes", "-o", "ControlPersist=120", "-f", "-N", name],
                           check=True, timeout=30)
            t = _raw_transport(tb, nodelay=True)
            try:
                with SSHHost(name, ssh_config=config) as host:
                    times = time_interleaved({
                        OURS: lambda: host.run("true"),
                        RAW_NODELAY: lambda: _raw_true(t),
                        CONTROL_MASTER: lambda: subprocess.run([*base, name, "true"], check=True),
                    }, trials)
            finally:
                t.close()
                subprocess.run([*base, "-O", "exit", name], capture_output=True, timeout=30)
        ours.values, raw.values, master.values = times[OURS], times[RAW_NODELAY], times[CONTROL_MASTER]

    def raw_default(m: Measurement) -> None:
        t = _raw_transport(tb, nodelay=False)
        try:
            m.values = time_calls(lambda: _raw_true(t), slow_trials, warmup=3)
        finally:
            t.close()

    def fabric(m: Measurement) -> None:
        from fabric import Config, Connection

        cfg = Config(runtime_ssh_path=config)
        with Connection(name, config=cfg) as conn:
            m.values = time_calls(lambda: conn.run("true", hide=True), slow_trials, warmup=2)

    def ssh(m: Measurement) -> None:
        argv = ["ssh", "-F", config, "-o", "BatchMode=yes", name, "true"]
        m.values = time_calls(lambda: subprocess.run(argv, check=True), slow_trials, warmup=1)

    guarded(ours, fast_three)
    guarded(comp.add(Measurement(RAW_DEFAULT)), raw_default)
    guarded(comp.add(Measurement(FABRIC, note="hide=True; paramiko socket without TCP_NODELAY")), fabric)
    guarded(comp.add(Measurement(SSH, note="ssh -F cfg -o BatchMode=yes host true")), ssh)
    return comp


def measure_connect(tb: Testbed, trials: int) -> Comparison:
    """A new connection, TCP connect through authentication, then closed: ``SSHHost`` (ssh
    config resolution, host key policy, pool) against the same steps in raw paramiko."""
    comp = Comparison("latency", "connect + auth (new connection)", OURS)
    name = tb.machines[0]
    config = str(tb.ssh_config)

    def ours() -> None:
        with SSHHost(name, ssh_config=config) as host:
            host.transport()

    times = time_interleaved({
        OURS: ours,
        RAW_NODELAY: lambda: _raw_transport(tb, nodelay=True).close(),
        RAW_DEFAULT: lambda: _raw_transport(tb, nodelay=False).close(),
    }, trials, block=5)
    for tool, values in times.items():
        comp.add(Measurement(tool, values=values))
    return comp
