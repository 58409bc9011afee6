"""scripts/gen_interfaces.py as a subprocess (both input modes), checked with ifquery."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autoserv.virt.addresses import generate_addresses, render_interfaces

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gen_interfaces.py"
IFQUERY = shutil.which("ifquery") or next(
    (p for p in ("/usr/sbin/ifquery", "/sbin/ifquery") if Path(p).exists()), None
)
needs_ifquery = pytest.mark.skipif(IFQUERY is None, reason="ifquery (apt package ifupdown) missing")


def gen(*args: str, python_flags: tuple[str, ...] = (), cwd: Path | None = None):
    """Run the script with this interpreter; cwd outside the repository by default."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, *python_flags, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=cwd or "/",
        env=env,
        check=False,
        timeout=60,
    )


def ifquery_fields(path: Path, name: str) -> dict[str, str]:
    assert IFQUERY is not None
    proc = subprocess.run([IFQUERY, "-i", str(path), name], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)


def ifquery_list(path: Path) -> list[str]:
    assert IFQUERY is not None
    proc = subprocess.run([IFQUERY, "-i", str(path), "--list"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_defaults_are_the_seeds() -> None:
    proc = gen()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == render_interfaces(generate_addresses(), gateway="192.168.2.254")
    assert "map 02:00:00:00:00:1f vhost31" in proc.stdout
    assert "geteway" not in proc.stdout


@needs_ifquery
def test_cli_parameters_to_file(tmp_path: Path) -> None:
    out = tmp_path / "interfaces"
    proc = gen(
        "--first", "5", "--last", "7",
        "--mac-prefix", "52:54:00:AA:00",
        "--network", "10.0.0",
        "--netmask", "255.255.0.0",
        "--gateway", "10.0.255.254",
        "--script", "/usr/local/sbin/get-mac-address.sh",
        "-o", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    text = out.read_text()
    assert "    script /usr/local/sbin/get-mac-address.sh\n" in text
    assert [line.split()[1:] for line in text.splitlines() if line.strip().startswith("map ")] == [
        ["52:54:00:aa:00:05", "vhost5"],
        ["52:54:00:aa:00:06", "vhost6"],
        ["52:54:00:aa:00:07", "vhost7"],
    ]
    assert ifquery_list(out) == ["lo"]
    assert ifquery_fields(out, "vhost6") == {
        "address": "10.0.0.6",
        "netmask": "255.255.0.0",
        "gateway": "10.0.255.254",
        "broadcast": "10.0.255.255",
    }


@needs_ifquery
def test_addresses_json_as_given_to_install(tmp_path: Path) -> None:
    pool = tmp_path / "pool.json"
    pool.write_text(
        json.dumps(
            [
                {"mac": "02:00:00:00:00:0A", "ip": "192.168.7.10"},
                {"mac": "02:00:00:00:00:0B", "ip": "192.168.7.11"},
                {"mac": "02:00:00:00:00:0C", "ip": "192.168.7.12"},
            ]
        )
    )
    out = tmp_path / "interfaces"
    proc = gen("--addresses", str(pool), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "map 02:00:00:00:00:0b vhost2" in text
    # a plain list carries no gateway, and the seed's default one would be off-subnet
    assert ifquery_fields(out, "vhost3") == {
        "address": "192.168.7.12",
        "netmask": "255.255.255.0",
        "broadcast": "192.168.7.255",
    }
    proc = gen("--addresses", str(pool), "--gateway", "192.168.7.1", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert ifquery_fields(out, "vhost1")["gateway"] == "192.168.7.1"


@needs_ifquery
def test_addresses_json_object_with_network_settings(tmp_path: Path) -> None:
    pool = tmp_path / "pool.json"
    pool.write_text(
        json.dumps(
            {
                "addresses": [{"mac": "02:00:00:00:01:01", "ip": "10.5.1.1", "name": "g1"}],
                "netmask": "255.255.0.0",
                "gateway": "10.5.255.254",
            }
        )
    )
    proc = gen("--addresses", str(pool))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "interfaces"
    out.write_text(proc.stdout)
    assert ifquery_fields(out, "g1") == {
        "address": "10.5.1.1",
        "netmask": "255.255.0.0",
        "gateway": "10.5.255.254",
        "broadcast": "10.5.255.255",
    }
    proc = gen("--addresses", str(pool), "--gateway", "none")
    assert proc.returncode == 0, proc.stderr
    assert "gateway" not in proc.stdout


def test_other_formats(tmp_path: Path) -> None:
    proc = gen("--last", "2", "--format", "mac-table")
    assert proc.stdout == "02:00:00:00:00:01 192.168.2.1\n02:00:00:00:00:02 192.168.2.2\n"
    proc = gen("--last", "2", "--format", "json")
    data = json.loads(proc.stdout)
    assert data["gateway"] == "192.168.2.254"
    assert data["addresses"][1] == {"mac": "02:00:00:00:00:02", "ip": "192.168.2.2", "name": "vhost2"}
    # the JSON output is valid --addresses input
    pool = tmp_path / "pool.json"
    pool.write_text(proc.stdout)
    again = gen("--addresses", str(pool))
    assert again.returncode == 0, again.stderr
    assert again.stdout == gen("--last", "2").stdout


@pytest.mark.parametrize(
    ("args", "status", "fragment"),
    [
        (("--first", "0"), 1, "1 <= first <= last <= 254"),
        (("--mac-prefix", "02:00:00:00"), 1, "invalid MAC prefix"),
        (("--gateway", "10.0.0.1"), 1, "gateway 10.0.0.1 is not in the subnet"),
        (("--netmask", "255.0.255.0"), 1, "invalid netmask"),
        (("--addresses", "/nonexistent.json"), 1, "cannot read address file"),
        (("--addresses", "x.json", "--first", "2"), 2, "cannot be combined"),
        (("--first", "one"), 2, "invalid int value"),
    ],
)
def test_errors(args: tuple[str, ...], status: int, fragment: str) -> None:
    proc = gen(*args)
    assert proc.returncode == status
    assert fragment in proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr


def test_bad_json_entry_names_index(tmp_path: Path) -> None:
    pool = tmp_path / "pool.json"
    pool.write_text(
        json.dumps([{"mac": "02:00:00:00:00:01", "ip": "1.2.3.4"}, {"mac": "x", "ip": "1.2.3.5"}])
    )
    proc = gen("--addresses", str(pool))
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("address 1: invalid MAC 'x' (expected 6 hex octets separated by ':')")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_runs_from_a_checkout_without_install() -> None:
    """``-S`` hides site-packages, so ``import autoserv`` only works via the script's fallback."""
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import autoserv"], cwd="/", capture_output=True, check=False
    )
    assert probe.returncode != 0  # really not importable this way
    proc = gen("--last", "1", python_flags=("-S",))
    assert proc.returncode == 0, proc.stderr
    assert "map 02:00:00:00:00:01 vhost1" in proc.stdout


def test_is_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)
    proc = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert "--addresses" in proc.stdout


def test_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gen_interfaces
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert gen_interfaces.main(["--last", "3", "--format", "mac-table"]) == 0
    assert capsys.readouterr().out.count("\n") == 3
    assert gen_interfaces.main(["--network", "1.2"]) == 1
    assert "invalid network" in capsys.readouterr().err
