"""The debug files of a results dir (``autoserv.logging_setup``): what each file holds,
what a record that cannot be written does, and what a handler keeps open."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from autoserv import logging_setup


def _record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("autoserv.test", level, __file__, 1, msg, None, None)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_debug_files_hold_their_level_and_above_and_close_what_they_opened(tmp_path: Path) -> None:
    before = _open_fds()
    handler = logging_setup._DebugFiles(str(tmp_path), lazy=True)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    assert list(tmp_path.iterdir()) == []  # lazy: a file is made by its first record
    handler.handle(_record(logging.INFO, "hello é"))
    handler.handle(_record(logging.WARNING, "careful"))
    handler.handle(_record(logging.DEBUG, "detail"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "autoserv.DEBUG", "autoserv.INFO", "autoserv.WARNING"]
    assert (tmp_path / "autoserv.DEBUG").read_text(encoding="utf-8") == \
        "INFO hello é\nWARNING careful\nDEBUG detail\n"
    assert (tmp_path / "autoserv.INFO").read_text(encoding="utf-8") == "INFO hello é\nWARNING careful\n"
    assert (tmp_path / "autoserv.WARNING").read_text() == "WARNING careful\n"
    assert len(_open_fds() - before) == 3  # one descriptor per file, kept while the job runs
    handler.close()
    assert _open_fds() - before == set()
    # a record that raced with close is still written, and nothing stays open for it
    handler.handle(_record(logging.ERROR, "late"))
    assert (tmp_path / "autoserv.ERROR").read_text() == "ERROR late\n"
    assert (tmp_path / "autoserv.DEBUG").read_text(encoding="utf-8").endswith("DEBUG detail\nERROR late\n")
    assert _open_fds() - before == set()


def test_a_record_utf8_cannot_take_is_reported_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    handler = logging_setup._DebugFiles(str(tmp_path), lazy=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(_record(logging.ERROR, "bad \udcff"))  # a lone surrogate
    handler.handle(_record(logging.ERROR, "good"))
    handler.close()
    for name in ("DEBUG", "INFO", "WARNING", "ERROR"):  # all four made at once (not lazy)
        assert (tmp_path / f"autoserv.{name}").read_text() == "good\n"
    assert "UnicodeEncodeError" in capsys.readouterr().err  # logging's own report
