"""autoserv.cmdline: the parser class, flag value types and -m/-M machine entries (pure, from tables)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from autoserv.cmdline import MLIST_DISPLAY, MachineEntry, UsageParser, machine_entries, port, positive_float
from autoserv.errors import AutoservUsageError


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("22", 22), ("65535", 65535)])
def test_port_accepts(text: str, value: int) -> None:
    assert port(text) == value


@pytest.mark.parametrize(("text", "message"), [
    ("0", "port out of range: 0"), ("65536", "port out of range: 65536"),
    ("x", "not a port number: 'x'"), ("2.5", "not a port number: '2.5'"), ("", "not a port number: ''"),
])
def test_port_rejects(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{message}$"):
        port(text)


@pytest.mark.parametrize(("text", "value"), [("1", 1.0), ("0.25", 0.25), ("1e3", 1000.0)])
def test_positive_float_accepts(text: str, value: float) -> None:
    assert positive_float(text) == value


@pytest.mark.parametrize(("text", "message"), [
    ("0", "must be positive: '0'"), ("-1", "must be positive: '-1'"), ("nan", "must be positive: 'nan'"),
    ("soon", "not a number: 'soon'"),
])
def test_positive_float_rejects(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{message}$"):
        positive_float(text)


def test_usage_parser_raises_instead_of_exiting() -> None:
    p = UsageParser(prog="x")
    p.add_argument("--n", type=port)
    assert p.parse_args(["--n", "80"]).n == 80
    with pytest.raises(AutoservUsageError, match="argument --n: port out of range: 0"):
        p.parse_args(["--n", "0"])
    with pytest.raises(AutoservUsageError, match="unrecognized arguments: --nope"):
        p.parse_args(["--nope"])


def test_machine_entries_with_where_each_stands(tmp_path: Path) -> None:
    mlist = tmp_path / "machines"
    mlist.write_text("# lab\nh3  h4,h5 # rack 2\n\n  root@h6:2222\n")
    entries = machine_entries(["h1,h2", " a@b  ,c"], str(mlist))
    assert [e.source for e in entries[:4]] == ["h1,h2", "h1,h2", " a@b  ,c", " a@b  ,c"]
    assert entries[4].source == "h3  h4,h5 # rack 2"
    assert [MachineEntry(*e[:4]) for e in entries] == [
        MachineEntry(MLIST_DISPLAY, 1, 1, "h1"), MachineEntry(MLIST_DISPLAY, 1, 4, "h2"),
        MachineEntry(MLIST_DISPLAY, 2, 2, "a@b"), MachineEntry(MLIST_DISPLAY, 2, 8, "c"),
        MachineEntry(str(mlist), 2, 1, "h3"), MachineEntry(str(mlist), 2, 5, "h4"),
        MachineEntry(str(mlist), 2, 8, "h5"), MachineEntry(str(mlist), 4, 3, "root@h6:2222"),
    ]
    assert machine_entries([]) == [] and machine_entries(["", " , "]) == []


def test_machine_entries_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(AutoservUsageError, match=r"^-M .*/missing: No such file or directory$"):
        machine_entries([], str(tmp_path / "missing"))
