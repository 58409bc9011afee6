"""The client runtime (autoserv/client/site) run for real: as a local subprocess, and on test-bed hosts.

Every behaviour test copies the runtime with :func:`autoserv.client.site_files` into a temp
autodir and runs ``python3 -m autotest.client.runner`` there, exactly as a host does.
Status logs are read back with autoserv's own parser (:mod:`autoserv.status`).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import autoserv.client as client_runtime
from autoserv import status as autoserv_status
from autoserv.deadline import Deadline
from tests.cli_helpers import run_autoserv

ROOT = Path(__file__).resolve().parent.parent
DATA_TESTS = Path(__file__).resolve().parent / "data" / "client_tests"
FINISHED = re.compile(r"^END .*\t----\t----\t.*$")
REBOOTING = re.compile(r"^\t*GOOD\t----\treboot\.start")


# -- helpers -------------------------------------------------------------------------------


def install_site(dest: Path) -> Path:
    """Copy the runtime into ``dest`` the way a server does, from site_files()."""
    for rel, local in client_runtime.site_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)
    return dest


@pytest.fixture
def autodir(tmp_path: Path) -> Path:
    return install_site(tmp_path / "autodir")


@pytest.fixture
def fake_reboot(tmp_path: Path) -> SimpleNamespace:
    """A ``reboot`` first on PATH that only writes a marker file (never reboots this machine)."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    marker = tmp_path / "reboot-called"
    script = bindir / "reboot"
    script.write_text(f"#!/bin/sh\necho \"reboot $*\" > {shlex.quote(str(marker))}\n")
    script.chmod(0o755)
    path = f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    assert shutil.which("reboot", path=path) == str(script)
    return SimpleNamespace(path=path, marker=marker)


def run_client(autodir: Path, control: str | Path, results: Path, *options: str,
               path_env: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the runtime in ``autodir`` on ``control`` (text or a file) into ``results``."""
    if isinstance(control, str):
        control_file = results.parent / f"control.{results.name}"
        control_file.write_text(control)
    else:
        control_file = control
    env = dict(os.environ, PYTHONPATH=str(autodir))
    if path_env is not None:
        env["PATH"] = path_env
    return subprocess.run(
        [sys.executable, "-m", "autotest.client.runner", str(control_file), "--results", str(results),
         *options],
        cwd=autodir, env=env, capture_output=True, text=True, timeout=timeout,
    )


def entries(results: Path) -> list[autoserv_status.StatusEntry]:
    return autoserv_status.parse_file(str(results / "status.log"))


def outcome(results: Path, operation: str) -> autoserv_status.StatusEntry:
    """The final (non-START, non-END) entry of a test's group."""
    found = [e for e in entries(results) if e.operation == operation and not e.is_start and not e.is_end]
    assert len(found) == 1, [e.render() for e in entries(results)]
    return found[0]


def check_grammar(results: Path) -> list[str]:
    """Every line re-renders identically, nesting is TAB-exact and START/END balance; return lines."""
    text = (results / "status.log").read_text()
    lines = text.splitlines()
    parsed = autoserv_status.parse(text)
    depth = 0
    stack: list[str | None] = []
    for entry in parsed:
        if entry.is_end:
            assert stack, f"END without START: {entry.render()}"
            assert stack.pop() == entry.operation
            depth -= 1
        assert entry.indent == depth, entry.render()
        assert set(entry.fields) >= {"timestamp", "localtime"}
        assert list(entry.fields)[:2] == ["timestamp", "localtime"]
        assert entry.render() == "\n".join(
            lines[entry.line_number - 1: entry.line_number + entry.message.count("\n")])
        if entry.is_start:
            stack.append(entry.operation)
            depth += 1
    return lines


def processes_with(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def no_leftovers(marker: str) -> list[str]:
    """The processes carrying ``marker`` (after up to 5 s); any found are killed by pid."""
    deadline = Deadline(5)
    while processes_with(marker) and not deadline.expired():
        time.sleep(0.05)
    found = processes_with(marker)
    for line in found:
        try:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        except OSError:
            pass
    return found


# -- packaging -----------------------------------------------------------------------------


def test_site_tree_holds_the_contract_files() -> None:
    rels = {rel for rel, _ in client_runtime.site_files()}
    for needed in (
        "autotest/__init__.py",
        "autotest/client/__init__.py",
        "autotest/client/runner.py",
        "autotest/client/shared/__init__.py",
        "autotest/client/shared/error.py",
        "autotest/client/shared/utils.py",
        "autotest_lib/__init__.py",
        "autotest/client/tests/sleeptest/sleeptest.py",
        "autotest/client/tests/sleeptest/control",
        "autotest/client/tests/failtest/failtest.py",
        "autotest/client/tests/failtest/control",
    ):
        assert needed in rels
    assert not [r for r in rels if "__pycache__" in r or r.endswith(".pyc")]
    shared = {rel: ROOT / "autoserv" / name for rel, name in client_runtime.SHARED_MODULES.items()}
    for rel, local in client_runtime.site_files():
        assert local == shared.get(rel, client_runtime.SITE_DIR / rel) and local.is_file()


def test_shared_modules_are_autoservs_own_and_stdlib_only() -> None:
    """The host gets autoserv's status/legacy/result modules themselves: they import no autoserv."""
    for rel, name in client_runtime.SHARED_MODULES.items():
        assert not (client_runtime.SITE_DIR / rel).exists(), f"a stale copy of autoserv/{name}"
        tree = ast.parse((ROOT / "autoserv" / name).read_text())
        imported = {a.name.split(".")[0]
                    for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
        assert imported <= set(sys.stdlib_module_names) | {"__future__"}, (name, imported)


def test_runtime_version_changes_with_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = install_site(tmp_path / "site")
    monkeypatch.setattr(client_runtime, "SITE_DIR", copy)
    before = client_runtime.runtime_version()
    assert before == client_runtime.RUNTIME_VERSION and re.fullmatch(r"[0-9a-f]{16}", before)
    (copy / "autotest/client/tests/sleeptest/control").write_text("job.run_test('sleeptest')\n")
    changed = client_runtime.runtime_version()
    (copy / "autotest/client/tests/newtest").mkdir()
    (copy / "autotest/client/tests/newtest/control").write_text("")
    added = client_runtime.runtime_version()
    assert len({before, changed, added}) == 3


# -- the runtime's pure helpers, imported in isolation from the site tree ------------------


@pytest.fixture
def runtime(autodir: Path) -> Iterator[SimpleNamespace]:
    """The runtime's modules imported from a temp autodir (sys.modules restored afterwards)."""
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in ("autotest", "autotest_lib")}
    for name in saved:
        del sys.modules[name]
    meta_path = list(sys.meta_path)
    sys.path.insert(0, str(autodir))
    try:
        import autotest.client.shared.error as error
        import autotest.client.shared.result as result
        import autotest.client.shared.utils as utils

        yield SimpleNamespace(error=error, utils=utils, result=result)
    finally:
        sys.path.remove(str(autodir))
        sys.meta_path[:] = meta_path
        for name in [k for k in sys.modules if k.split(".")[0] in ("autotest", "autotest_lib")]:
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.mark.parametrize(("text", "seconds"), [
    ("0.5", 0.5), ("12", 12.0), ("1:02.5", 62.5), ("1:00:00", 3600.0), ("0:00.01", 0.01),
])
def test_to_seconds(runtime: SimpleNamespace, text: str, seconds: float) -> None:
    assert runtime.utils.to_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("output", "expected"), [
    ("1.50user 0.25system 0:02.00elapsed 87%CPU", [(1.5, 0.25, 2.0)]),
    ("x\n10.00user 1.00system 1:05.50elapsed 99%CPU\n2.00user 0.50system 0:03.00elapsed\n",
     [(10.0, 1.0, 65.5), (2.0, 0.5, 3.0)]),
    ("no timings here", []),
])
def test_extract_all_time_results(runtime: SimpleNamespace, output: str, expected: list) -> None:
    assert runtime.utils.extract_all_time_results(output) == expected


@pytest.mark.parametrize(("values", "type_tag", "text"), [
    ({"b": 2, "a": "x y"}, None, "a=x y\nb=2\n"),
    ({"t{perf}": 1.5, "a-b.c{perf}": 3}, "perf", "a-b.c{perf}=3\nt{perf}=1.5\n"),
    ({"k{attr}": "v"}, "attr", "k{attr}=v\n"),
])
def test_write_keyval_format(runtime: SimpleNamespace, tmp_path: Path, values: dict, type_tag: str | None,
                             text: str) -> None:
    runtime.utils.write_keyval(str(tmp_path), values, type_tag)
    assert (tmp_path / "keyval").read_text() == text
    assert runtime.utils.read_keyval(str(tmp_path)) == {k: str(v) for k, v in values.items()}


@pytest.mark.parametrize(("values", "type_tag"), [
    ({"bad key": 1}, None), ({"t": 1}, "perf"), ({"t{attr}": 1}, "perf"), ({"k": "a\nb"}, None),
    ({"k{x}": 1}, "x"),
])
def test_write_keyval_refuses_bad_keys(runtime: SimpleNamespace, tmp_path: Path, values: dict,
                                       type_tag: str | None) -> None:
    with pytest.raises(ValueError):
        runtime.utils.write_keyval(str(tmp_path), values, type_tag)


def test_cmdresult_is_autoservs(runtime: SimpleNamespace) -> None:
    import dataclasses

    from autoserv.result import CmdResult

    assert [f.name for f in dataclasses.fields(runtime.result.CmdResult)] == [
        f.name for f in dataclasses.fields(CmdResult)]
    res = runtime.utils.run("echo out; echo err >&2; exit 3", ignore_status=True)
    assert (res.stdout, res.stderr, res.exit_status, res.timed_out) == ("out\n", "err\n", 3, False)
    assert res.command.startswith("echo out") and res.duration > 0
    assert runtime.utils.run("printf %s", args=["a b; rm -rf /"]).stdout == "a b; rm -rf /"
    assert runtime.utils.system_output("echo hi") == "hi"
    assert runtime.utils.system("true") == 0
    with pytest.raises(runtime.error.CmdError) as info:
        runtime.utils.system("exit 4")
    assert info.value.result_obj.exit_status == 4 and "rc=4" in str(info.value)
    assert info.value.exit_status == "ERROR"


def test_run_timeout_kills_the_commands_process_group(runtime: SimpleNamespace) -> None:
    marker = f"utils-timeout-{os.getpid()}"
    start = time.monotonic()
    with pytest.raises(runtime.error.CmdTimeoutError) as info:
        runtime.utils.run(f"sh -c 'sleep 60; true {marker}' & sleep 60", timeout=0.5)
    assert time.monotonic() - start < 5
    assert info.value.result_obj.timed_out
    assert no_leftovers(marker) == []


def test_extract_tarball_to_dir(runtime: SimpleNamespace, tmp_path: Path) -> None:
    import tarfile

    src = tmp_path / "pkg-1.0"
    src.mkdir()
    (src / "configure").write_text("#!/bin/sh\necho configured\n")
    single = tmp_path / "single.tar.gz"
    with tarfile.open(single, "w:gz") as tar:
        tar.add(src, arcname="pkg-1.0")
    flat = tmp_path / "flat.tar"
    with tarfile.open(flat, "w") as tar:
        tar.add(src / "configure", arcname="a")
        tar.add(src / "configure", arcname="b")
    dest = tmp_path / "work" / "src"
    dest.mkdir(parents=True)
    (dest / "old").write_text("stale")
    runtime.utils.extract_tarball_to_dir(str(single), str(dest))
    assert sorted(os.listdir(dest)) == ["configure"]
    runtime.utils.extract_tarball_to_dir(str(flat), str(dest))
    assert sorted(os.listdir(dest)) == ["a", "b"]
    assert sorted(os.listdir(dest.parent)) == ["src"]  # no staging dir left behind
    assert runtime.utils.unmap_url("/srv/tests", "pkg.tar.bz2") == "/srv/tests/pkg.tar.bz2"
    assert runtime.utils.is_url("http://example.invalid/x") and not runtime.utils.is_url("/x")


def test_error_tree_is_autoservs(runtime: SimpleNamespace) -> None:
    from autoserv import errors

    err = runtime.error
    for name in ("TestBaseException", "TestError", "TestFail", "TestNAError", "TestWarn", "CmdError"):
        ours, theirs = getattr(err, name), getattr(errors, name)
        # one definition: autoserv/outcomes.py, shipped to the host as shared/outcomes.py
        assert ours.__module__ == "autotest.client.shared.outcomes"
        assert theirs.__module__ == "autoserv.outcomes"
        assert ours.exit_status == theirs.exit_status
        assert [c.__name__ for c in ours.__mro__ if c.__name__ in errors.__all__] == [
            c.__name__ for c in theirs.__mro__ if c.__name__ in errors.__all__]
    assert err.UnhandledTestFail(ValueError("x")).exit_status == "FAIL"
    assert str(err.UnhandledTestFail(ValueError("x"))).startswith("Unhandled ValueError: x")


# -- running the runtime -------------------------------------------------------------------


def test_sleeptest_good_with_keyvals_and_logs(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    start = time.monotonic()
    proc = run_client(autodir, "job.run_test('sleeptest', seconds=0.2, iterations=2)\n", results)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == proc.stderr == ""  # everything went to debug/client.log
    assert elapsed >= 0.4
    lines = check_grammar(results)
    assert FINISHED.match(lines[-1]) and lines[-1].startswith("END GOOD\t")
    assert lines[0].startswith("START\t----\t----\ttimestamp=")
    good = outcome(results, "sleeptest")
    assert (good.status_code, good.subdir, good.indent, good.message) == (
        "GOOD", "sleeptest", 2, "completed successfully")
    keyval = (results / "sleeptest" / "keyval").read_text().splitlines()
    assert keyval == ["param-iterations=2", "param-seconds=0.2", "version=1"]
    for sub in ("results", "debug", "profiling"):
        assert (results / "sleeptest" / sub).is_dir()
    assert (results / "sleeptest" / "debug" / "sleeptest.DEBUG").read_text()
    client_log = (results / "debug" / "client.log").read_text()
    assert "Executing iteration 2 of 2" in client_log and "END GOOD\t----\t----" in client_log
    assert (results / "control.state").is_file()


def test_failtest_fails_and_the_job_goes_on(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    control = (
        "ok = job.run_test('failtest')\n"
        "detail = job.run_test_detail('failtest', tag='again')\n"
        "job.set_state('seen', [ok, detail, job.run_test('sleeptest', seconds=0)])\n"
    )
    proc = run_client(autodir, control, results)
    assert proc.returncode == 0, proc.stderr
    check_grammar(results)
    fail = outcome(results, "failtest")
    assert (fail.status_code, fail.message) == ("FAIL", "This test always fails.")
    assert outcome(results, "failtest.again").status_code == "FAIL"
    ends = [e.status_code for e in entries(results) if e.is_end]
    assert ends == ["END FAIL", "END FAIL", "END GOOD", "END GOOD"]
    import json

    assert json.loads((results / "control.state").read_text())["state"]["seen"] == [False, "FAIL", True]


def test_missing_test_is_an_error(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = run_client(autodir, "job.run_test('nosuchtest')\njob.run_test('sleeptest', seconds=0)\n", results)
    assert proc.returncode == 0, proc.stderr
    check_grammar(results)
    missing = outcome(results, "nosuchtest")
    assert (missing.status_code, missing.message) == ("ERROR", "nosuchtest: test does not exist")
    assert outcome(results, "sleeptest").status_code == "GOOD"


@pytest.mark.parametrize(("exc", "status_word", "message"), [
    ("none", "GOOD", "completed successfully"),
    ("TestFail", "FAIL", "raised TestFail"),
    ("TestError", "ERROR", "raised TestError"),
    ("TestNAError", "TEST_NA", "raised TestNAError"),
    ("TestWarn", "WARN", "raised TestWarn"),
    ("CmdError", "ERROR", "Command <raised CmdError> failed"),
    ("ValueError", "FAIL", "Unhandled ValueError: boom from run_once"),
    ("exit", "ERROR", "test process exited with status 7 without a result"),
    ("kill", "ERROR", "test process killed by signal 9"),
])
def test_exceptions_map_to_statuses(autodir: Path, tmp_path: Path, exc: str, status_word: str,
                                    message: str) -> None:
    results = tmp_path / "results"
    proc = run_client(autodir, f"job.run_test('raisetest', exc={exc!r})\n", results,
                      "--tests", str(DATA_TESTS))
    assert proc.returncode == 0, proc.stderr
    check_grammar(results)
    entry = outcome(results, "raisetest")
    assert entry.status_code == status_word
    assert entry.message.split("\n")[0] == message
    assert [e.status_code for e in entries(results) if e.is_end] == [f"END {status_word}", "END GOOD"]


def test_lifecycle_order_iterations_and_perf_keyvals(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    control = (
        "job.run_test('lifecycletest', iterations=2, rate=7)\n"
        "job.run_test('lifecycletest', iterations=3, fail_in='run_once', tag='broken')\n"
    )
    proc = run_client(autodir, control, results, "--tests", str(DATA_TESTS))
    assert proc.returncode == 0, proc.stderr
    calls = [c for c in (results / "lifecycletest" / "calls").read_text().splitlines() if "=" not in c]
    assert calls == ["initialize", "setup", "warmup", "run_once 1", "postprocess_iteration 1",
                     "run_once 2", "postprocess_iteration 2", "postprocess", "cleanup"]
    facts = [c for c in (results / "lifecycletest" / "calls").read_text().splitlines() if "=" in c]
    assert facts == ["outputdir=True", "resultsdir=True", "debugdir=True", "bindir=True",
                     "srcdir=False", "tmpdir=True", "tmpdir_in_job_tmpdir=True", "bindir_has_module=True"]
    cpus = len(os.sched_getaffinity(0))
    assert (results / "lifecycletest" / "results" / "keyval").read_text() == (
        f"latency_ms{{perf}}=1.5\nthroughput{{perf}}=7\n\ncpus{{attr}}={cpus}\n\n"
        f"latency_ms{{perf}}=1.5\nthroughput{{perf}}=14\n\ncpus{{attr}}={cpus}\n\n"
    )
    assert (results / "lifecycletest" / "keyval").read_text() == (
        "param-iterations=2\nparam-rate=7\nversion=3\n")
    broken_calls = (results / "lifecycletest.broken" / "calls").read_text().splitlines()
    broken = [c for c in broken_calls if "=" not in c]
    # setup already ran for version 3; cleanup still runs after the failure, postprocess does not
    assert broken == ["initialize", "warmup", "run_once 1", "postprocess_iteration 1", "run_once 2",
                      "cleanup"]
    entry = outcome(results, "lifecycletest.broken")
    assert (entry.status_code, entry.subdir, entry.message) == (
        "FAIL", "lifecycletest.broken", "failing in iteration 2")


def test_unknown_and_positional_arguments_are_errors(autodir: Path, tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    (tests / "strictexec").mkdir(parents=True)
    (tests / "strictexec" / "strictexec.py").write_text(
        "from autotest.client import test\n\n"
        "class strictexec(test.test):\n"
        "    def execute(self, n=1):\n"
        "        self.write_perf_keyval({'n': n})\n")
    results = tmp_path / "results"
    proc = run_client(autodir, "job.run_test('strictexec', colour='red')\n"
                               "job.run_test('strictexec', n=5, tag='ok')\n"
                               "job.run_test('failtest', 3, tag='pos')\n"
                               "job.run_test('sleeptest', seconds=0, ignored_as_in_autotest=1)\n",
                      results, "--tests", str(tests))
    assert proc.returncode == 0, proc.stderr
    assert (outcome(results, "strictexec").status_code, outcome(results, "strictexec").message) == (
        "ERROR", "Unknown parameter: colour")
    assert (results / "strictexec.ok" / "results" / "keyval").read_text() == "n{perf}=5\n\n"
    assert outcome(results, "failtest.pos").status_code == "ERROR"
    assert outcome(results, "failtest.pos").message.startswith("Unnamed arguments not accepted")
    # the base execute() takes **dargs, so a run_once test ignores unknown keywords (as Autotest did)
    assert outcome(results, "sleeptest").status_code == "GOOD"


def _write_setup_test(tests: Path, version: int) -> None:
    (tests / "setuptest").mkdir(parents=True, exist_ok=True)
    (tests / "setuptest" / "setuptest.py").write_text(
        "import os\n"
        "from autotest.client import test\n\n\n"
        "class setuptest(test.test):\n"
        f"    version = {version}\n\n"
        "    def setup(self, counter):\n"
        "        with open(counter, 'a') as f:\n"
        "            f.write('setup %s\\n' % self.version)\n"
        "        open(os.path.join(self.srcdir, 'built'), 'w').close()\n\n"
        "    def run_once(self, counter):\n"
        "        assert os.path.exists(os.path.join(self.srcdir, 'built'))\n"
    )


def test_setup_runs_once_per_version(autodir: Path, tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    counter = tmp_path / "counter"
    control = "".join(f"job.run_test('setuptest', counter={str(counter)!r}, tag='{t}')\n" for t in "abc")
    _write_setup_test(tests, 1)
    assert run_client(autodir, control, tmp_path / "r1", "--tests", str(tests)).returncode == 0
    assert counter.read_text() == "setup 1\n"
    assert run_client(autodir, control, tmp_path / "r2", "--tests", str(tests)).returncode == 0
    assert counter.read_text() == "setup 1\n"  # a later job on the same host: still done
    _write_setup_test(tests, 2)
    assert run_client(autodir, control, tmp_path / "r3", "--tests", str(tests)).returncode == 0
    assert counter.read_text() == "setup 1\nsetup 2\n"
    assert (autodir / "tmp" / "setuptest" / "src" / ".version").read_text() == "2"
    for run in ("r1", "r2", "r3"):
        assert [e.status_code for e in entries(tmp_path / run) if e.operation
                and e.operation.startswith("setuptest") and not e.is_start and not e.is_end] == ["GOOD"] * 3


def test_python2_test_module_runs(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    control = "job.run_test('py2test', count=4)\njob.run_test('py2test', fail=True, tag='f')\n"
    proc = run_client(autodir, control, results, "--tests", str(DATA_TESTS))
    assert proc.returncode == 0, proc.stderr
    check_grammar(results)
    assert outcome(results, "py2test").status_code == "GOOD"
    assert (results / "py2test" / "results" / "keyval").read_text() == (
        "total{perf}=12\n\necho{attr}=0777\noctal{attr}=511\n\n")
    assert (results / "py2test" / "results" / "caught").read_text() == "just a warning\n"
    debug = (results / "py2test" / "debug" / "py2test.DEBUG").read_text()
    assert "doubled [0, 2, 4, 6]" in debug and "total is 12" in debug
    failed = outcome(results, "py2test.f")
    source = (DATA_TESTS / "py2test" / "py2test.py").read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if "FAILS HERE" in text)
    assert failed.status_code == "FAIL"
    assert failed.message.startswith("Unhandled ZeroDivisionError")
    assert f'py2test.py", line {line}, in run_once' in failed.message


def test_python2_control_file_runs(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    control = (
        "import sys\n"
        "print 'py2 control', len(args)\n"
        "for i in xrange(2):\n"
        "    job.run_test('sleeptest', seconds=0, tag='t%d' % i)\n"
        "try:\n"
        "    raise ValueError, 'caught'\n"
        "except ValueError, e:\n"
        "    print >>sys.stderr, 'handled', e\n"
        "job.set_state('mode', 0755)\n"
    )
    proc = run_client(autodir, control, results, "--args", "a", "--b")
    assert proc.returncode == 0, proc.stderr
    check_grammar(results)
    assert outcome(results, "sleeptest.t0").status_code == "GOOD"
    assert outcome(results, "sleeptest.t1").status_code == "GOOD"
    log = (results / "debug" / "client.log").read_text()
    assert "py2 control 2" in log and "handled caught" in log and "is Python 2" in log


def test_python2_control_syntax_error_names_the_real_line(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    control = "print 'fine'\nx = 0777\n\nx = = 1\n"
    proc = run_client(autodir, control, results)
    assert proc.returncode == 1
    lines = check_grammar(results)
    last = autoserv_status.parse_line(lines[-1])
    assert last is not None and last.status_code == "END ERROR" and last.indent == 0
    assert re.search(r"control\.results:4: SyntaxError: ", last.message), last.message
    assert FINISHED.match(lines[-1])
    assert proc.stderr.count("\n") == 1 and ":4: SyntaxError" in proc.stderr


def test_control_file_raising_exits_1_with_the_reason(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    control = "job.run_test('sleeptest', seconds=0)\n\nraise RuntimeError('boom')\n"
    proc = run_client(autodir, control, results)
    assert proc.returncode == 1
    lines = check_grammar(results)
    last = autoserv_status.parse_line(lines[-1])
    assert last is not None and last.status_code == "END FAIL"
    assert last.message.endswith(":3: RuntimeError: boom")
    assert proc.stderr.strip().endswith("RuntimeError: boom") and proc.stderr.count("\n") == 1
    assert "Traceback" in (results / "debug" / "client.log").read_text()


@pytest.mark.parametrize(("argv", "message"), [
    ([], "the following arguments are required"),
    (["nosuch-control", "--results", "r"], "does not exist"),
    (["CONTROL", "--results", "r", "--tests", "/nonexistent-dir"], "is not a directory"),
    (["CONTROL", "--results", "r", "--continue"], "no saved job state"),
    (["CONTROL", "--results", "r", "--bogus"], "unrecognized arguments"),
])
def test_usage_errors_exit_2_with_one_line(autodir: Path, tmp_path: Path, argv: list[str],
                                           message: str) -> None:
    (tmp_path / "CONTROL").write_text("job.run_test('sleeptest')\n")
    argv = [str(tmp_path / a) if a in ("CONTROL", "r") else a for a in argv]
    proc = subprocess.run([sys.executable, "-m", "autotest.client.runner", *argv], cwd=autodir,
                          env=dict(os.environ, PYTHONPATH=str(autodir)), capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r" / "status.log").exists()


@pytest.mark.parametrize("via", ["popen", "utils"])
def test_timeout_kills_the_test_and_its_processes(autodir: Path, tmp_path: Path, via: str) -> None:
    results = tmp_path / "results"
    marker = f"hang-marker-{os.getpid()}-{time.monotonic_ns()}"
    start = time.monotonic()
    proc = run_client(autodir, f"job.run_test('hangtest', marker={marker!r}, via={via!r}, timeout=1)\n"
                               "job.run_test('sleeptest', seconds=0)\n", results, "--tests", str(DATA_TESTS))
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 20
    entry = outcome(results, "hangtest")
    assert (entry.status_code, entry.message) == (
        "ABORT", "timed out after 1 s: killed the test and its processes")
    assert outcome(results, "sleeptest").status_code == "GOOD"
    test_pid = int((results / "hangtest" / "pids").read_text())
    assert not Path(f"/proc/{test_pid}").exists()
    assert no_leftovers(marker) == []


def test_sigterm_kills_the_test_and_records_abort(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    marker = f"term-marker-{os.getpid()}-{time.monotonic_ns()}"
    control = tmp_path / "control"
    control.write_text(f"job.run_test('hangtest', marker={marker!r}, via='utils')\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotest.client.runner", str(control), "--results", str(results),
         "--tests", str(DATA_TESTS)],
        cwd=autodir, env=dict(os.environ, PYTHONPATH=str(autodir)), stderr=subprocess.PIPE, text=True)
    try:
        deadline = Deadline(30)
        while not processes_with(marker) and not deadline.expired():
            time.sleep(0.05)
        assert processes_with(marker)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = check_grammar(results)
    assert lines[-2].startswith("\tEND ABORT\thangtest\thangtest\t")
    assert lines[-2].endswith("client killed by SIGTERM")
    assert lines[-1].startswith("END ABORT\t----\t----\t")
    assert no_leftovers(marker) == []


def test_runner_killed_by_sigkill_takes_its_tests_along(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    marker = f"orphan-marker-{os.getpid()}-{time.monotonic_ns()}"
    control = tmp_path / "control"
    control.write_text(f"job.run_test('hangtest', marker={marker!r}, via='utils')\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotest.client.runner", str(control), "--results", str(results),
         "--tests", str(DATA_TESTS)],
        cwd=autodir, env=dict(os.environ, PYTHONPATH=str(autodir)))
    try:
        deadline = Deadline(30)
        while not processes_with(marker) and not deadline.expired():
            time.sleep(0.05)
        assert processes_with(marker)
    finally:
        proc.kill()  # SIGKILL: the runner records nothing and kills nothing itself
        proc.wait()
    assert no_leftovers(marker) == []
    test_pid = int((results / "hangtest" / "pids").read_text())
    deadline = Deadline(5)
    while Path(f"/proc/{test_pid}").exists() and not deadline.expired():
        time.sleep(0.05)
    stat = Path(f"/proc/{test_pid}/stat")
    assert not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] == "Z"


def test_job_api_groups_parallel_and_no_ops(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    control = (
        "import os\n"
        "import time\n"
        "def two(tag):\n"
        "    begin = time.time()\n"
        "    job.run_test('sleeptest', seconds=0.5, tag=tag)\n"
        "    with open(os.path.join(job.resultdir, tag + '.span'), 'w') as f:\n"
        "        f.write('%f %f' % (begin, time.time()))\n"
        "def grouped(x=1):\n"
        "    job.record('INFO', None, 'inside', 'x=%d' % x)\n"
        "    return x * 2\n"
        "assert job.run_group(grouped, x=4) == 8\n"
        "job.parallel([two, 'p1'], [two, 'p2'])\n"
        "job.profilers.add('oprofile')\n"
        "job.profilers.delete('oprofile')\n"
        "job.add_repository(['http://example.invalid/tests'])\n"
        "job.barrier('me', 'sync', 10).rendezvous('me')\n"  # alone: released at once
        "try:\n"
        "    job.barrier('me', 'sync', 10).rendezvous('a', 'b')\n"
        "except JobError as e:\n"
        "    job.record('INFO', None, 'barrier', '%s: %s' % (type(e).__name__, e))\n"
        "job.set_state('facts', [job.cpu_count(), os.path.isdir(job.tmpdir), job.resultdir, job.autodir,\n"
        "                        os.path.isdir(job.bindir)])\n"
        "job.record('WARN', None, 'custom', 'line one\\nline two', {'key': 'v'})\n"
    )
    proc = run_client(autodir, control, results)
    assert proc.returncode == 0, proc.stderr
    spans = [[float(x) for x in (results / f"{t}.span").read_text().split()] for t in ("p1", "p2")]
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1  # the two tasks ran at the same time
    check_grammar(results)
    parsed = entries(results)
    group = [e for e in parsed if e.operation == "grouped"]
    assert [(e.status_code, e.indent) for e in group] == [("START", 1), ("END GOOD", 1)]
    inside = next(e for e in parsed if e.operation == "inside")
    assert (inside.indent, inside.message) == (2, "x=4")
    assert outcome(results, "sleeptest.p1").status_code == "GOOD"
    assert outcome(results, "sleeptest.p2").status_code == "GOOD"
    info = {e.operation: e.message for e in parsed if e.status_code == "INFO"}
    assert "not collected" in info["profilers.add"]
    assert "ignored" in info["add_repository"]
    assert info["barrier"] == "BarrierError: barrier 'sync' (me): me is not one of the participants a, b"
    custom = next(e for e in parsed if e.operation == "custom")
    assert (custom.message, custom.fields["key"]) == ("line one\nline two", "v")
    import json

    facts = json.loads((results / "control.state").read_text())["state"]["facts"]
    assert facts == [len(os.sched_getaffinity(0)), True, str(results), str(autodir), True]


def test_parallel_failure_and_run_group_failure_stop_the_job(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    control = (
        "def bad():\n"
        "    raise TestFail('group failed')\n"
        "try:\n"
        "    job.run_group(bad)\n"
        "except TestFail:\n"
        "    pass\n"
        "def dies():\n"
        "    raise RuntimeError('task died')\n"
        "job.parallel([dies], [job.run_test, 'sleeptest'])\n"
    )
    proc = run_client(autodir, control, results)
    assert proc.returncode == 1
    lines = check_grammar(results)
    assert [(e.status_code, e.message) for e in entries(results) if e.operation == "bad"] == [
        ("START", ""), ("FAIL", "group failed"), ("END FAIL", "")]
    assert "JobError: 1 of 2 task(s) failed in job.parallel" in lines[-1]


STEP_CONTROL = """\
def step_init():
    job.set_state('phase', 1)
    job.next_step(step_two, 'word', n=2)
    job.run_test('sleeptest', seconds=0, tag='before')
    job.reboot()
    job.record('INFO', None, 'never', 'not reached')

def step_two(word, n):
    job.set_state('phase', job.get_state('phase') + n)
    job.run_test('sleeptest', seconds=0, tag='after')
    job.record('INFO', None, 'step_two', '%s %d phase=%d' % (word, n, job.get_state('phase')))
"""


def test_reboot_then_continue_runs_the_next_step(autodir: Path, tmp_path: Path,
                                                 fake_reboot: SimpleNamespace) -> None:
    import json

    results = tmp_path / "results"
    control = tmp_path / "control"
    control.write_text(STEP_CONTROL)
    proc = run_client(autodir, control, results, path_env=fake_reboot.path)
    assert proc.returncode == 3, proc.stderr
    lines = (results / "status.log").read_text().splitlines()
    assert REBOOTING.match(lines[-1]) and lines[-1].startswith("\t\tGOOD\t----\treboot.start\t")
    assert lines[-2].startswith("\tSTART\t----\treboot\t")
    assert not any(FINISHED.match(line) for line in lines)
    deadline = Deadline(10)
    while not fake_reboot.marker.exists() and not deadline.expired():
        time.sleep(0.05)
    assert fake_reboot.marker.read_text() == "reboot \n"  # `(sleep 1; reboot) &` ran the host's reboot
    state = json.loads((results / "control.state").read_text())
    assert state["steps"] == [["step_two", ["word"], {"n": 2}]]
    assert state["steps_done"] == [["step_init", [], {}]]
    assert state["state"] == {"phase": 1}
    assert state["groups"] == [[None, None], [None, "reboot"]]
    assert state["reboot"]["boot_id"] and state["finished"] is False

    size = (results / "status.log").stat().st_size
    proc = run_client(autodir, control, results, "--continue", path_env=fake_reboot.path)
    assert proc.returncode == 0, proc.stderr
    text = (results / "status.log").read_text()
    new = autoserv_status.parse(text[size:])
    assert [(e.status_code, e.operation, e.indent) for e in new] == [
        ("START", "sleeptest.after", 1), ("GOOD", "sleeptest.after", 2), ("END GOOD", "sleeptest.after", 1),
        ("INFO", "step_two", 1), ("END GOOD", None, 0)]
    assert new[3].message == "word 2 phase=3"
    assert FINISHED.match(text.splitlines()[-1])
    assert "not reached" not in text and text.count("START\t----\t----") == 1
    state = json.loads((results / "control.state").read_text())
    assert state["steps"] == [] and state["finished"] is True and state["reboot"] is None
    assert [s[0] for s in state["steps_done"]] == ["step_init", "step_two"]
    # the server's lines (reboot.verify, END GOOD reboot) spliced in give a balanced log
    server = text[:size] + (
        autoserv_status.render("GOOD", None, "reboot.verify", indent=2) + "\n"
        + autoserv_status.render("END GOOD", None, "reboot", indent=1) + "\n") + text[size:]
    (results / "status.log").write_text(server)
    check_grammar(results)
    again = run_client(autodir, control, results, "--continue", path_env=fake_reboot.path)
    assert again.returncode == 2 and "already finished" in again.stderr


def test_unexpected_reboot_is_recorded_and_the_job_goes_on(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    control = tmp_path / "control"
    marker = f"unexpected-{os.getpid()}-{time.monotonic_ns()}"
    control.write_text(
        "def step_init():\n"
        "    job.next_step(step_two)\n"
        f"    job.run_test('hangtest', marker={marker!r})\n"
        "def step_two():\n"
        "    job.run_test('sleeptest', seconds=0)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotest.client.runner", str(control), "--results", str(results),
         "--tests", str(DATA_TESTS)],
        cwd=autodir, env=dict(os.environ, PYTHONPATH=str(autodir)))
    try:
        deadline = Deadline(30)
        while not (results / "hangtest" / "pids").exists() and not deadline.expired():
            time.sleep(0.05)
        test_pid = int((results / "hangtest" / "pids").read_text())
    finally:
        proc.kill()  # the "power cut": no chance to record anything
        proc.wait()
    deadline = Deadline(5)  # the test's process follows its runner (parent-death signal)
    while Path(f"/proc/{test_pid}").exists() and not deadline.expired():
        time.sleep(0.05)
    size = (results / "status.log").stat().st_size
    proc2 = run_client(autodir, control, results, "--continue", "--tests", str(DATA_TESTS))
    assert proc2.returncode == 0, proc2.stderr
    new = autoserv_status.parse((results / "status.log").read_text()[size:])
    assert [(e.status_code, e.operation, e.indent, e.message) for e in new] == [
        ("END FAIL", "hangtest", 1, "unexpected reboot"),
        ("FAIL", "reboot", 1, "unexpected reboot"),
        ("START", "sleeptest", 1, ""), ("GOOD", "sleeptest", 2, "completed successfully"),
        ("END GOOD", "sleeptest", 1, ""), ("END GOOD", None, 0, "")]
    check_grammar(results)
    assert no_leftovers(marker) == []


def test_aliases_are_the_same_modules(autodir: Path) -> None:
    code = (
        "import autotest_lib.client.common_lib.error as e1\n"
        "from autotest.client.shared import error as e2\n"
        "from autotest_lib.client.bin import test, utils\n"
        "from autotest_lib.client.common_lib import utils as cu\n"
        "import autotest.client.test as t2, autotest.client.shared.utils as su\n"
        "assert e1 is e2 and test is t2 and cu is su and utils.system_output is su.system_output\n"
        "assert e2.__spec__.name == 'autotest.client.shared.error', e2.__spec__.name\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=autodir, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(autodir)))
    assert proc.stdout == "ok\n", proc.stderr


# -- on a real test-bed host, over SSH -----------------------------------------------------


@pytest.mark.slow
def test_runtime_runs_on_a_testbed_host(host, tmp_path: Path) -> None:
    local = install_site(tmp_path / "site")
    autodir = host.run("mktemp -d /tmp/autoserv-client-XXXXXX").stdout.strip()
    try:
        start = time.monotonic()
        host.send_file(str(local) + "/", autodir)
        host.send_file([str(DATA_TESTS / "py2test"), str(DATA_TESTS / "raisetest")], f"{autodir}/extra")
        control = tmp_path / "control"
        control.write_text(
            "job.run_test('sleeptest', seconds=0.5)\n"
            "job.run_test('failtest')\n"
            "job.run_test('nosuchtest')\n"
            "job.run_test('py2test')\n"
            "job.run_test('raisetest', exc='TestNAError')\n"
        )
        host.send_file(str(control), f"{autodir}/control.autoserv")
        res = host.run(
            f"cd {shlex.quote(autodir)} && PYTHONPATH={shlex.quote(autodir)} "
            "python3 -m autotest.client.runner control.autoserv --results results/default --tests extra",
            ignore_status=True)
        elapsed = time.monotonic() - start
        assert res.exit_status == 0, res.stderr
        text = host.run(f"cat {shlex.quote(autodir)}/results/default/status.log").stdout
        host.get_file(f"{autodir}/results/default", str(tmp_path / "collected"))
    finally:
        host.run(f"rm -rf -- {shlex.quote(autodir)}", ignore_status=True)
    parsed = autoserv_status.parse(text)
    finals = {e.operation: e.status_code for e in parsed if not e.is_start and not e.is_end}
    assert finals == {"sleeptest": "GOOD", "failtest": "FAIL", "nosuchtest": "ERROR", "py2test": "GOOD",
                      "raisetest": "TEST_NA"}
    assert FINISHED.match(text.splitlines()[-1])
    collected = tmp_path / "collected" / "default"
    assert (collected / "sleeptest" / "keyval").read_text() == "param-seconds=0.5\nversion=1\n"
    assert (collected / "py2test" / "results" / "keyval").read_text().startswith("total{perf}=6\n\n")
    print(f"install + run of 5 tests on {host.hostname}: {elapsed:.2f} s")


@pytest.mark.slow
def test_reboot_and_continue_on_a_testbed_host(host, tmp_path: Path) -> None:
    """job.reboot() on a host: exit 3, the host's (simulated) reboot happens, --continue finishes."""
    local = install_site(tmp_path / "site")
    autodir = host.run("mktemp -d /tmp/autoserv-client-XXXXXX").stdout.strip()
    quoted = shlex.quote(autodir)
    command = (f"cd {quoted} && PYTHONPATH={quoted} python3 -m autotest.client.runner control "
               "--results results/default")
    try:
        host.send_file(str(local) + "/", autodir)
        control = tmp_path / "control"
        control.write_text(STEP_CONTROL)
        host.send_file(str(control), f"{autodir}/control")
        old_boot = host.get_boot_id()
        start = time.monotonic()
        first = host.run(command, ignore_status=True)
        assert first.exit_status == 3, first.stderr
        before = host.run(f"cat {quoted}/results/default/status.log").stdout
        assert REBOOTING.match(before.splitlines()[-1])
        assert host.wait_down(timeout=60, old_boot_id=old_boot)
        assert host.wait_up(timeout=60)
        assert host.get_boot_id() != old_boot
        second = host.run(command + " --continue", ignore_status=True)
        elapsed = time.monotonic() - start
        assert second.exit_status == 0, second.stderr
        text = host.run(f"cat {quoted}/results/default/status.log").stdout
    finally:
        host.run(f"rm -rf -- {quoted}", ignore_status=True)
    assert text.startswith(before)
    new = autoserv_status.parse(text[len(before):])
    assert [(e.status_code, e.operation) for e in new] == [
        ("START", "sleeptest.after"), ("GOOD", "sleeptest.after"), ("END GOOD", "sleeptest.after"),
        ("INFO", "step_two"), ("END GOOD", None)]
    assert new[3].message == "word 2 phase=3"  # set_state survived the reboot
    assert FINISHED.match(text.splitlines()[-1])
    print(f"client job with a reboot on {host.hostname}: {elapsed:.2f} s")


# -- job.barrier: client jobs on netns test-bed hosts meet over TCP --------------------------

_barrier_port = iter(range(23000 + os.getpid() % 4000 * 5, 10**9))

#: The client control each machine runs (filled in by the server control below).
CLIENT_BARRIER = """\
import time
time.sleep(%(delay)r)
b = job.barrier(%(me)r, 'start', %(timeout)r, %(port)r)
job.record('INFO', None, 'arrived', '%%.3f' %% time.time())
%(call)s
job.record('GOOD', None, 'released', '%%.3f' %% time.time())
"""

#: args: port, timeout, rendezvous | rendezvous_servers, the absent id (or -), then
#: machine=address for each machine: the ids are the hosts' addresses on the lab bridge.
SERVER_BARRIER = """\
port, timeout, how, absent = int(args[0]), float(args[1]), args[2], args[3]
address = dict(a.split("=", 1) for a in args[4:])
everyone = sorted([address[m] for m in machines] + ([absent] if absent != "-" else []))
late = sorted(address[m] for m in machines)[-1]

def work(machine):
    me = address[machine]
    if how == "rendezvous":
        call = "b.rendezvous(*%r)" % (everyone,)
    else:  # the late one is the master: the others wait for it to listen
        call = "b.rendezvous_servers(%r, *%r)" % (late, [m for m in everyone if m != late])
    control = CLIENT % dict(me=me, timeout=timeout, port=port, call=call,
                             delay=1.5 if me == late else 0.0)
    autotest_remote.Autotest(hosts.create_host(machine)).run(control)

parallel_simple(work, machines)
"""


def _barrier_job(tb, tmp_path: Path, present: list, how: str, timeout: float,
                 absent: str = "-") -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run SERVER_BARRIER on the test-bed hosts ``present``."""
    control = tmp_path / "barrier.control"
    control.write_text(f"CLIENT = {CLIENT_BARRIER!r}\n" + SERVER_BARRIER)
    results = tmp_path / "r"
    proc = run_autoserv(control, "-r", results, "-m", ",".join(h.name for h in present),
                        "--ssh-config", str(tb.ssh_config), "--install-in-tmpdir", "-a",
                        f"{next(_barrier_port)} {timeout} {how} {absent} "
                        + " ".join(f"{h.name}={h.address}" for h in present), cwd=tmp_path)
    return proc, results


def _client_entries(results: Path, machine: str, operation: str) -> list[autoserv_status.StatusEntry]:
    return [e for e in autoserv_status.parse_file(str(results / machine / "status.log"))
            if e.operation == operation]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["rendezvous", "rendezvous_servers"])
def test_job_barrier_between_two_netns_hosts(testbed_netns, tmp_path: Path, how: str) -> None:
    tb = testbed_netns
    first, second = tb.hosts[:2]
    assert first.address != second.address  # each host its own address on the lab bridge ...
    with _ssh_host(tb, first.name) as h:  # ... and they reach each other (second's sshd)
        probe = ("import socket; "
                 f"print(socket.create_connection(({second.address!r}, 22), 5).recv(8).decode())")
        banner = h.run(f"python3 -c {shlex.quote(probe)}").stdout
    assert banner.startswith("SSH-"), banner
    start = time.time()
    proc, results = _barrier_job(tb, tmp_path, [first, second], how, 60)
    assert proc.returncode == 0, proc.stderr
    late = max([first, second], key=lambda h: h.address).name
    names = [first.name, second.name]
    arrived = {m: float(_client_entries(results, m, "arrived")[0].message) for m in names}
    released = {m: float(_client_entries(results, m, "released")[0].message) for m in names}
    assert arrived[late] - start >= 1.5
    for machine in names:  # nobody was released before the late one arrived
        assert released[machine] >= arrived[late], (arrived, released)
        assert _client_entries(results, machine, "released")[0].status_code == "GOOD"


@pytest.mark.slow
def test_job_barrier_timeout_names_who_never_arrived(testbed_netns, tmp_path: Path) -> None:
    tb = testbed_netns
    ordered = sorted(tb.hosts, key=lambda h: h.address)
    absent = ordered[-1].address  # a real host on the bridge whose client never runs (not the master)
    present = ordered[:-1]
    proc, results = _barrier_job(tb, tmp_path, present, "rendezvous", 3, absent)
    assert proc.returncode == 1
    for h in present:
        text = (results / h.name / "status.log").read_text()
        assert f"BarrierError: barrier 'start' ({h.address}): timed out after 3.0 s: " \
               f"never arrived: {absent}" in text, text
        assert not _client_entries(results, h.name, "released")


def _ssh_host(tb, machine: str):
    from autoserv import hosts

    return hosts.SSHHost(machine, ssh_config=str(tb.ssh_config))


def test_tests_dirs_come_before_the_builtin_tests(autodir: Path, tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    (tests / "sleeptest").mkdir(parents=True)
    (tests / "sleeptest" / "sleeptest.py").write_text(
        "from autotest.client import test\nfrom autotest.client.shared import error\n\n"
        "class sleeptest(test.test):\n"
        "    version = 9\n"
        "    def run_once(self, seconds=1):\n"
        "        raise error.TestNAError('the --tests sleeptest')\n")
    results = tmp_path / "results"
    builtin_control = autodir / "autotest" / "client" / "tests" / "sleeptest" / "control"
    proc = run_client(autodir, builtin_control, results, "--tests", str(tests))
    assert proc.returncode == 0, proc.stderr
    entry = outcome(results, "sleeptest")
    assert (entry.status_code, entry.message) == ("TEST_NA", "the --tests sleeptest")
    assert "version=9" in (results / "sleeptest" / "keyval").read_text()
    # the built-in test's own control file (with its metadata variables) runs as a control file
    results2 = tmp_path / "results2"
    assert run_client(autodir, builtin_control, results2).returncode == 0
    assert outcome(results2, "sleeptest").status_code == "GOOD"


def test_configure_make_and_unmap_url(runtime: SimpleNamespace, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server
    import threading

    if shutil.which("make") is None:
        pytest.fail("make is not installed (apt-get install make)")
    work = tmp_path / "build"
    work.mkdir()
    (work / "configure").write_text("#!/bin/sh\necho \"PREFIX=$1\" > config.mk\n")
    (work / "configure").chmod(0o755)
    (work / "Makefile").write_text("include config.mk\nall:\n\techo built $(PREFIX) > out\n")
    monkeypatch.chdir(work)
    assert runtime.utils.configure("/opt/x") == 0
    assert runtime.utils.make() == 0
    assert (work / "out").read_text() == "built /opt/x\n"
    with pytest.raises(runtime.error.CmdError):
        runtime.utils.make("no-such-target")
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "pkg.tar.bz2").write_bytes(b"payload")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "srv"))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/pkg.tar.bz2"
        got = runtime.utils.unmap_url("/unused", url, str(tmp_path))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert got == str(tmp_path / "pkg.tar.bz2")
    assert Path(got).read_bytes() == b"payload"


def test_continue_of_a_run_that_died_before_its_first_line(autodir: Path, tmp_path: Path) -> None:
    import json

    results = tmp_path / "results"
    control = tmp_path / "control"
    control.write_text("def step_init():\n    job.next_step(step_two)\n"
                       "def step_two():\n    job.run_test('sleeptest', seconds=0)\n")
    assert run_client(autodir, control, results).returncode == 0
    state = json.loads((results / "control.state").read_text())
    # as saved just before the first status line: nothing open, step_init queued
    state.update(groups=[], finished=False, steps=[["step_init", [], {}]], steps_done=[])
    (results / "control.state").write_text(json.dumps(state))
    (results / "status.log").write_text("")
    shutil.rmtree(results / "sleeptest")
    proc = run_client(autodir, control, results, "--continue")
    assert proc.returncode == 0, proc.stderr
    check_grammar(results)
    assert [(e.status_code, e.operation, e.indent) for e in entries(results)] == [
        ("START", None, 0), ("FAIL", "reboot", 1), ("START", "sleeptest", 1), ("GOOD", "sleeptest", 2),
        ("END GOOD", "sleeptest", 1), ("END GOOD", None, 0)]


def test_test_length_and_a_test_given_by_its_directory(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    control = (f"job.run_test({str(DATA_TESTS / 'lifecycletest')!r}, test_length=0.3, rate=1)\n"
               f"job.run_test({str(tmp_path / 'nowhere')!r})\n")
    start = time.monotonic()
    proc = run_client(autodir, control, results)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start >= 0.3
    assert outcome(results, "lifecycletest").status_code == "GOOD"
    calls = (results / "lifecycletest" / "calls").read_text().splitlines()
    runs = [c for c in calls if c.startswith("run_once")]
    assert len(runs) >= 1 and runs == [f"run_once {i}" for i in range(1, len(runs) + 1)]
    assert outcome(results, "nowhere").message == "nowhere: test does not exist"


def test_steps_order_subdir_tag_and_bad_state_values(autodir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    control = (
        "order = []\n"
        "def step_init():\n"
        "    job.next_step(second, 2)\n"
        "    job.next_step_prepend('first', n=1)\n"
        "    job.next_step([third, 3])\n"
        "def first(n):\n"
        "    job.set_state('order', job.get_state('order', []) + ['first %d' % n])\n"
        "def second(n):\n"
        "    job.set_state('order', job.get_state('order') + ['second %d' % n])\n"
        "def third(n):\n"
        "    job.set_state('order', job.get_state('order') + ['third %d' % n])\n"
        "    job.run_test('sleeptest', seconds=0, tag='t', subdir_tag='s')\n"
        "    try:\n"
        "        job.set_state('bad', object())\n"
        "    except TypeError as e:\n"
        "        job.record('INFO', None, 'bad_state', str(e))\n"
    )
    proc = run_client(autodir, control, results)
    assert proc.returncode == 0, proc.stderr
    import json

    state = json.loads((results / "control.state").read_text())
    assert state["state"]["order"] == ["first 1", "second 2", "third 3"]
    assert [s[0] for s in state["steps_done"]] == ["step_init", "first", "second", "third"]
    entry = outcome(results, "sleeptest.t")
    assert (entry.subdir, entry.operation) == ("sleeptest.t.s", "sleeptest.t")
    assert (results / "sleeptest.t.s" / "keyval").is_file()
    bad = next(e for e in entries(results) if e.operation == "bad_state")
    assert bad.message.startswith("job.set_state('bad'): not a JSON value")
