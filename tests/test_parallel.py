"""parallel_simple / parallel / subcommand with forked workers (no hosts needed)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from autoserv import parallel, status
from autoserv.errors import AutoservError, AutoservRunError, AutoservSubcommandError
from autoserv.job import read_keyval
from autoserv.result import CmdResult


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def whoami(arg: str) -> tuple[str, int]:
    return arg, os.getpid()


def test_each_arg_in_its_own_process_results_in_order() -> None:
    results = parallel.parallel_simple(whoami, ["a", "b", "c"], return_results=True)
    assert results is not None
    assert [r[0] for r in results] == ["a", "b", "c"]
    pids = {r[1] for r in results}
    assert len(pids) == 3 and os.getpid() not in pids
    assert parallel.parallel_simple(whoami, ["a", "b"]) is None


def test_single_arg_runs_in_process_with_exceptions_unchanged() -> None:
    assert parallel.parallel_simple(whoami, ["only"], return_results=True) == [
        ("only", os.getpid())
    ]
    marker = ValueError("same object")

    def boom(arg: str) -> None:
        raise marker

    with pytest.raises(ValueError) as info:
        parallel.parallel_simple(boom, ["x"])
    assert info.value is marker
    assert parallel.parallel_simple(boom, ["x"], return_results=True) == [marker]


def test_empty_arglist() -> None:
    assert parallel.parallel_simple(whoami, []) is None
    assert parallel.parallel_simple(whoami, [], return_results=True) == []


def fail_some(arg: str) -> str:
    if arg == "b":
        raise AutoservRunError("command failed on b", CmdResult("false", 1, hostname="b"))
    if arg == "c":
        raise KeyError("missing\nsecond line")
    return arg.upper()


def test_failures_aggregated_in_one_autoserv_error() -> None:
    with pytest.raises(AutoservError) as info:
        parallel.parallel_simple(fail_some, ["a", "b", "c"])
    err = info.value
    assert isinstance(err, parallel.SubcommandsFailed)
    text = str(err)
    assert text.startswith("One or more subcommands failed: ")
    assert "b: AutoservRunError: command failed on b" in text
    assert "c: KeyError: 'missing" in text
    assert "a:" not in text and "\n" not in text
    assert set(err.failures) == {"b", "c"}


def test_return_results_gives_values_and_exceptions() -> None:
    results = parallel.parallel_simple(fail_some, ["a", "b", "c"], return_results=True)
    assert results is not None
    assert results[0] == "A"
    assert isinstance(results[1], AutoservRunError)
    assert results[1].result_obj.exit_status == 1 and results[1].result_obj.hostname == "b"
    assert isinstance(results[2], KeyError)


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickling calls cls(*args): breaks
        super().__init__(f"{a}+{b}")


def raise_unpicklable(arg: str) -> None:
    raise Unpicklable(1, 2)


def return_unpicklable(arg: str) -> object:
    return threading.Lock()


def test_unpicklable_results_are_described() -> None:
    results = parallel.parallel_simple(raise_unpicklable, ["a", "b"], return_results=True)
    assert results is not None
    assert all(isinstance(r, AutoservSubcommandError) for r in results)
    assert "Unpicklable: 1+2" in str(results[0])
    values = parallel.parallel_simple(return_unpicklable, ["a", "b"], return_results=True)
    assert values is not None and all("lock" in v for v in values)


def write_pid_and_maybe_hang(arg: tuple[str, str]) -> str:
    name, directory = arg
    with open(os.path.join(directory, name), "w") as f:
        f.write(str(os.getpid()))
    if name == "slow":
        if os.environ.get("IGNORE_TERM"):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1000)
    return name


@pytest.mark.parametrize("ignore_term", [False, True], ids=["sigterm", "sigkill"])
def test_timeout_really_ends_stragglers(tmp_path, monkeypatch, ignore_term: bool) -> None:
    if ignore_term:
        monkeypatch.setenv("IGNORE_TERM", "1")
        monkeypatch.setattr(parallel, "TERMINATE_GRACE", 0.5)
    args = [("fast", str(tmp_path)), ("slow", str(tmp_path))]
    results = parallel.parallel_simple(
        write_pid_and_maybe_hang, args, timeout=2, return_results=True
    )
    assert results is not None
    assert results[0] == "fast"
    err = results[1]
    assert isinstance(err, AutoservSubcommandError)
    assert "timed out after 2 s" in str(err)
    assert err.exit_code == (-signal.SIGKILL if ignore_term else 1)
    slow_pid = int((tmp_path / "slow").read_text())
    assert not _pid_alive(slow_pid)


def test_timeout_single_arg_in_process() -> None:
    def hang(arg: str) -> None:
        while True:
            time.sleep(1000)

    with pytest.raises(AutoservSubcommandError, match="timed out after 0.5 s"):
        parallel.parallel_simple(hang, ["x"], timeout=0.5)


def test_subcommand_and_parallel() -> None:
    tasks = [parallel.subcommand(whoami, ["x"]), parallel.subcommand(fail_some, ["c"])]
    results = parallel.parallel(tasks, return_results=True)
    assert results is not None and results[0][0] == "x" and isinstance(results[1], KeyError)
    assert tasks[0].exit_status == 0 and tasks[1].exit_status == 1
    task = parallel.subcommand(whoami, ["y"])
    task.fork_start()
    assert task.fork_waitfor() == 0 and task.result[0] == "y"


@pytest.mark.parametrize(
    ("arg", "label"),
    [
        ("host1", "host1"),
        ("root@host1:22", "root@host1:22"),
        ("root:secret@host1", "root@host1"),
        ("u:p:w@[::1]:2222", "u@[::1]:2222"),
    ],
)
def test_arg_label_hides_passwords(arg: str, label: str) -> None:
    assert parallel.arg_label(arg) == label


def test_subdir_names_are_unique_and_safe() -> None:
    assert parallel._subdir_names(["a", "a", "x/y", ".."]) == ["a", "a.2", "x_y", "_.."]


def _abort_as_the_ending_begins(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM landing in the instant after a job's failure and before its ending defers
    aborts: the first ``abort.deferred()`` of the ending raises, as the signal would."""
    from autoserv import abort

    real = abort.deferred
    fired = []

    def deferred() -> Any:
        if not fired:
            fired.append(True)
            handlers = abort.current()
            assert handlers is not None
            handlers.aborting = True
            raise abort.JobAbort("received SIGTERM")
        return real()

    monkeypatch.setattr(abort, "deferred", deferred)


def test_an_abort_as_the_job_ends_is_recorded_after_its_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autoserv import abort
    from autoserv.job import ServerJob

    control = tmp_path / "c.control"
    control.write_text("raise ValueError('boom')\n")
    job = ServerJob(str(control), resultdir=str(tmp_path / "r"))
    _abort_as_the_ending_begins(monkeypatch)
    with pytest.raises(abort.JobAbort, match="received SIGTERM"):
        job.run()
    job.close(1)
    log = status.parse_file(str(tmp_path / "r" / "status.log"))
    assert [(e.status_code, e.message.splitlines()[0]) for e in log] == [
        ("ERROR", "ValueError: boom"), ("INFO", "Job aborted")]
    assert log[1].fields["job_abort_reason"] == "received SIGTERM"
    assert read_keyval(str(tmp_path / "r"))["job_finished"]  # the ending ran once, whole
