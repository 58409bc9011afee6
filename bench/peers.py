"""Fan-out peers as stand-alone programs: ``python -m bench.peers TOOL CONFIG HOSTS_FILE``.

Each peer runs in its own process, like ``autoserv`` does, so every tool pays
its own interpreter start-up and imports.  ``CONFIG`` is the test bed's
``ssh_config``; ``HOSTS_FILE`` lists ``name address port`` per line.  Each
prints ``<name>: <uname -a>`` per host and exits non-zero if any host failed.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

COMMAND = "uname -a"


def _hosts(path: str) -> list[tuple[str, str, int]]:
    rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    return [(name, address, int(port)) for name, address, port in rows]


def pssh(config: str, hosts: list[tuple[str, str, int]], key: str) -> int:
    """parallel-ssh (libssh2 + gevent): one ``ParallelSSHClient`` for all hosts."""
    from pssh.clients import ParallelSSHClient
    from pssh.config import HostConfig

    client = ParallelSSHClient(
        [address for _, address, _ in hosts],
        host_config=[HostConfig(port=port, user="root", private_key=key) for _, _, port in hosts],
        pool_size=len(hosts), num_retries=1, timeout=30,
    )
    output = client.run_command(COMMAND, stop_on_errors=False)
    client.join(output)
    failed = 0
    for (name, _, _), host_out in zip(hosts, output, strict=True):
        lines = list(host_out.stdout or [])
        if host_out.exception is not None or host_out.exit_code != 0:
            failed += 1
        print(f"{name}: {' '.join(lines)}")
    return 1 if failed else 0


def fabric(config: str, hosts: list[tuple[str, str, int]], key: str) -> int:
    """Fabric ``ThreadingGroup`` over the same ssh_config (one thread per host)."""
    from fabric import Config, ThreadingGroup
    from fabric.exceptions import GroupException

    group = ThreadingGroup(*[name for name, _, _ in hosts], config=Config(runtime_ssh_path=config))
    try:
        results = group.run(COMMAND, hide=True)
    except GroupException as exc:
        results = exc.result
    failed = 0
    for conn, res in results.items():
        if isinstance(res, Exception) or res.exited != 0:
            failed += 1
            continue
        print(f"{conn.host}: {res.stdout.strip()}")
    group.close()
    return 1 if failed else 0


def asyncssh_peer(config: str, hosts: list[tuple[str, str, int]], key: str) -> int:
    """asyncssh: one ``asyncio.gather`` of a connect+run per host, one event loop."""
    import asyncio

    import asyncssh

    async def one(name: str, address: str, port: int) -> tuple[str, object]:
        try:
            async with asyncssh.connect(address, port=port, username="root", client_keys=[key],
                                        known_hosts=None, config=[]) as conn:
                res = await conn.run(COMMAND, check=True)
                return name, str(res.stdout).strip()
        except Exception as exc:  # a failed host is counted, not fatal
            return name, exc

    async def everyone() -> list[tuple[str, object]]:
        return await asyncio.gather(*(one(*h) for h in hosts))

    failed = 0
    for name, out in asyncio.run(everyone()):
        if isinstance(out, Exception):
            failed += 1
            continue
        print(f"{name}: {out}")
    return 1 if failed else 0


def paramiko_peer(config: str, hosts: list[tuple[str, str, int]], key: str) -> int:
    """Raw paramiko, a thread per host: socket, ``Transport``, key auth, one ``exec``.

    Not a tool anyone would pick but the least any paramiko program pays (autoserv keeps
    paramiko): no ssh config, no host key check (as the asyncssh peer), no job around it.
    """
    import socket
    import threading

    import paramiko

    pkey = paramiko.PKey.from_path(key)
    outs: list[object] = [None] * len(hosts)

    def one(i: int, address: str, port: int) -> None:
        try:
            sock = socket.create_connection((address, port), timeout=30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = paramiko.Transport(sock)
            try:
                t.start_client(timeout=30)
                t.auth_publickey("root", pkey)
                chan = t.open_session(timeout=30)
                chan.exec_command(COMMAND)
                out = chan.makefile("rb").read()
                status = chan.recv_exit_status()
                if status != 0:
                    raise RuntimeError(f"exit status {status}")
                outs[i] = out.decode().strip()
            finally:
                t.close()
        except Exception as exc:  # a failed host is counted, not fatal
            outs[i] = exc

    threads = [threading.Thread(target=one, args=(i, address, port))
               for i, (_, address, port) in enumerate(hosts)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    failed: Counter[str] = Counter()
    for (name, _, _), out in zip(hosts, outs, strict=True):
        if not isinstance(out, str):
            failed[f"{type(out).__name__}: {out}"[:200]] += 1
            continue
        print(f"{name}: {out}")
    for why, count in failed.most_common():
        print(f"{count} host(s) failed: {why}", file=sys.stderr)
    return 1 if failed else 0


TOOLS = {"pssh": pssh, "fabric": fabric, "asyncssh": asyncssh_peer, "paramiko": paramiko_peer}


def main(argv: list[str]) -> int:
    tool, config, hosts_file, key = argv
    return TOOLS[tool](config, _hosts(hosts_file), key)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
