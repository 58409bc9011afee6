"""Pure parts of the Autotest client path: command builders, parsers, test lookup."""

from __future__ import annotations

import io
import shlex
import subprocess
from pathlib import Path

import pytest

from autoserv import autotest_remote, client_install, client_session, client_tests
from autoserv.errors import AutoservError, AutoservInstallError


@pytest.mark.parametrize(
    ("args", "dargs", "expected"),
    [
        (("sleeptest",), {}, "job.run_test('sleeptest')\n"),
        (("sleeptest",), {"seconds": 1}, "job.run_test('sleeptest', seconds=1)\n"),
        (("kernbench", 2), {"tag": "x y", "threads": 5},
         "job.run_test('kernbench', 2, tag='x y', threads=5)\n"),
        (("t",), {"s": "it's"}, 'job.run_test(\'t\', s="it\'s")\n'),
    ],
)
def test_client_control_for_test(args: tuple, dargs: dict, expected: str) -> None:
    assert autotest_remote.client_control_for_test(*args, **dargs) == expected


@pytest.mark.parametrize(
    ("line", "finished", "rebooting"),
    [
        ("END GOOD\t----\t----\ttimestamp=1\tlocaltime=x\t", True, False),
        ("END ABORT\t----\t----\ttimestamp=1\tlocaltime=x\tboom", True, False),
        ("\tEND GOOD\t----\t----\ttimestamp=1\tlocaltime=x\t", False, False),
        ("\tEND GOOD\tsleeptest\tsleeptest\ttimestamp=1\t", False, False),
        ("\t\tGOOD\t----\treboot.start\ttimestamp=1\tlocaltime=x\t", False, True),
        ("GOOD\t----\treboot.start\ttimestamp=1\t", False, True),
        ("\tGOOD\t----\treboot.verify\ttimestamp=1\t", False, False),
        ("\tSTART\t----\treboot\ttimestamp=1\t", False, False),
    ],
)
def test_finished_and_rebooting(line: str, finished: bool, rebooting: bool) -> None:
    assert client_session.is_finished(line) is finished
    assert client_session.is_rebooting(line) is rebooting


def test_layout_paths() -> None:
    lay = client_session.RemoteLayout("/usr/local/autotest", "smoke")
    assert lay.results == "/usr/local/autotest/results/smoke"
    assert lay.run == "/usr/local/autotest/run/smoke"
    assert lay.control == "/usr/local/autotest/control.smoke.autoserv"


def test_launch_command_quotes_and_detaches(tmp_path: Path) -> None:
    lay = client_session.RemoteLayout(str(tmp_path / "a dir; rm -rf x"), "default")
    cmd = client_session.launch_command(lay, ["/t/tests one"], args=["a b", "$(x)"], tag="t1")
    assert "setsid sh -c" in cmd
    assert shlex.quote(lay.autodir) in cmd
    assert "--continue" not in cmd and "cat > " in cmd
    assert shlex.quote("$(x)") in cmd and "--tag t1" in cmd
    resumed = client_session.launch_command(client_session.RemoteLayout("/ad"), resume=True)
    assert "--continue" in resumed and "cat > " not in resumed and "rm -rf" not in resumed


def test_launch_command_really_detaches(tmp_path: Path) -> None:
    """Run the launcher locally with a stand-in python3 that reports its session."""
    autodir = tmp_path / "ad"
    autodir.mkdir()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\nps -o sid=,pgid= -p $$ > \"$PWD/ids\"\nexit 7\n")
    (fake / "python3").chmod(0o755)
    lay = client_session.RemoteLayout(str(autodir))
    cmd = client_session.launch_command(lay)
    out = subprocess.run(["sh", "-c", cmd], input="job.run_test('x')\n", text=True,
                         capture_output=True, env={"PATH": f"{fake}:/usr/bin:/bin"}, check=True)
    pgid, boot = client_session.parse_launch("h", out.stdout)
    exit_file = Path(lay.run) / "exit_code"
    for _ in range(100):
        if exit_file.exists():
            break
        subprocess.run(["sleep", "0.05"])
    assert exit_file.read_text().strip() == "7"
    sid, group = (int(x) for x in (autodir / "ids").read_text().split())
    assert sid == group == pgid  # its own session and process group
    assert Path(lay.control).read_text() == "job.run_test('x')\n"
    assert len(boot) > 0


def test_parse_launch_without_pgid() -> None:
    with pytest.raises(AutoservError, match="did not start"):
        client_session.parse_launch("h1", "PGID \nBOOT x\n")


@pytest.mark.parametrize(
    ("output", "autodir", "version"),
    [
        ("PYTHON /usr/bin/python3\nDIR /usr/local/autotest\nabc123\n\n", "/usr/local/autotest",
         "abc123"),
        ("PYTHON /usr/bin/python3\nDIR /home/autotest\n\n", "/home/autotest", ""),
    ],
)
def test_parse_probe(output: str, autodir: str, version: str) -> None:
    inst = client_install.parse_probe("h1", output)
    assert (inst.autodir, inst.version) == (autodir, version)


@pytest.mark.parametrize(
    ("output", "message"),
    [("NOPYTHON\n", "h1: python3 not found"), ("PYTHON /x\nNODIR\n", "h1: no writable autodir")],
)
def test_parse_probe_errors(output: str, message: str) -> None:
    with pytest.raises(AutoservInstallError, match=message):
        client_install.parse_probe("h1", output)


def test_probe_command_picks_installed_then_writable(tmp_path: Path) -> None:
    fresh, installed = tmp_path / "fresh", tmp_path / "installed"
    installed.mkdir()
    (installed / client_install.VERSION_FILE).write_text("v9\n")
    cmd = client_install.probe_command([str(fresh), str(installed)])
    out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True).stdout
    assert client_install.parse_probe("h", out).autodir == str(installed)
    cmd = client_install.probe_command([str(tmp_path / "f" / "g")])
    out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True).stdout
    assert client_install.parse_probe("h", out).autodir == str(tmp_path / "f" / "g")


def test_install_command_unpacks_tarball(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / "pkg" / "m.py").write_text("x = 1\n")
    (src / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"junk")
    data = client_install.make_tarball([("pkg", str(src / "pkg"))])
    dest = tmp_path / "dest dir"
    subprocess.run(["sh", "-c", client_install.install_command(str(dest), "v'1")], input=data,
                   check=True)
    assert (dest / "pkg" / "m.py").read_text() == "x = 1\n"
    assert not (dest / "pkg" / "__pycache__").exists()
    assert (dest / client_install.VERSION_FILE).read_text() == "v'1\n"


def _make_test(base: Path, name: str) -> Path:
    (base / name).mkdir(parents=True)
    (base / name / f"{name}.py").write_text("")
    return base / name


def test_search_path_order(tmp_path: Path) -> None:
    control = tmp_path / "job" / "x.control"
    control.parent.mkdir()
    settings = client_tests.TestSettings(client_tests=[str(tmp_path / "a")])
    path = client_tests.client_search_path(settings, [str(control)], env=str(tmp_path / "e"))
    assert path == [str(tmp_path / "a"), str(tmp_path / "e"),
                    str(control.parent / "client" / "tests"), str(control.parent / "tests")]
    assert client_tests.server_search_path(client_tests.TestSettings(server_tests=["/s"]),
                                           [str(control)]) == [
        "/s", str(control.parent / "server" / "tests")]


def test_tests_to_send_first_match_wins(tmp_path: Path) -> None:
    first = _make_test(tmp_path / "one", "mytest")
    _make_test(tmp_path / "two", "mytest")
    other = _make_test(tmp_path / "two", "other")
    (tmp_path / "two" / "notatest").mkdir()
    control = "job.run_test('mytest')\njob.run_test(\"other\", tag='sleeptest')\nx='notatest'"
    found = client_tests.tests_to_send(control, [str(tmp_path / "one"), str(tmp_path / "two")])
    assert found == {"mytest": str(first), "other": str(other)}
    assert client_tests.find_test("../etc", [str(tmp_path)]) is None


def test_read_control_shapes(tmp_path: Path) -> None:
    read = autotest_remote._read_control
    path = tmp_path / "client.control"
    path.write_text("job.run_test('sleeptest')\n")
    assert read(str(path), None) == ("job.run_test('sleeptest')\n", str(path))
    assert read("client.control", str(tmp_path))[0] == "job.run_test('sleeptest')\n"
    assert read("job.run_test('x')", None) == ("job.run_test('x')", None)
    assert read(io.StringIO("a = 1\n"), None) == ("a = 1\n", None)
    assert read(io.BytesIO(b"b = 2\n"), None) == ("b = 2\n", None)
    with pytest.raises(AutoservError, match="does not exist"):
        read(str(tmp_path / "missing.control"), None)


def test_read_control_from_a_url(tmp_path: Path) -> None:
    """A control file given as a URL is fetched (an HTTP server of the test's own, on loopback)."""
    import functools
    import http.server
    import threading

    (tmp_path / "client.control").write_text("job.run_test('sleeptest', seconds=1)\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/client.control"
        assert autotest_remote._read_control(url, str(tmp_path / "elsewhere")) == \
            ("job.run_test('sleeptest', seconds=1)\n", None)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killer_ends_group_and_descendants_in_other_sessions(tmp_path: Path) -> None:
    """A leader that ignores SIGTERM, with a child in a session of its own (as the client
    runtime runs each test): both are gone after the killer's grace."""
    pids = tmp_path / "pids"
    script = (f"trap '' TERM; setsid sh -c 'trap \"\" TERM; echo $$ >> {pids}; sleep 300' & "
              f"echo $$ >> {pids}; wait")
    leader = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    for _ in range(200):
        if pids.exists() and len(pids.read_text().split()) == 2:
            break
        subprocess.run(["sleep", "0.02"])
    started = [int(p) for p in pids.read_text().split()]
    assert all(_alive(p) for p in started)
    out = subprocess.run(["sh", "-c", client_session.kill_command(leader.pid, grace=0.5)],
                         capture_output=True, text=True, check=True).stdout
    leader.wait(timeout=10)
    assert out.startswith("KILLED ")
    for _ in range(100):
        if not any(_alive(p) for p in started):
            break
        subprocess.run(["sleep", "0.02"])
    assert not any(_alive(p) for p in started)
