"""status.log format: rendering, nesting and parsing (pure code)."""

from __future__ import annotations

import time

import pytest

from autoserv import status

T = 1190000000  # a fixed timestamp
LT = status.format_localtime(T)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("START", None, None), f"START\t----\t----\ttimestamp={T}\tlocaltime={LT}\t"),
        (
            ("GOOD", None, "reboot.start", "", None, 1),
            f"\tGOOD\t----\treboot.start\ttimestamp={T}\tlocaltime={LT}\t",
        ),
        (
            ("END GOOD", "sub", "reboot", "done", {"kernel": "6.1"}),
            f"END GOOD\tsub\treboot\ttimestamp={T}\tlocaltime={LT}\tkernel=6.1\tdone",
        ),
        (
            ("INFO", None, None, "Job aborted", {"job_abort_reason": "received SIGTERM"}),
            f"INFO\t----\t----\ttimestamp={T}\tlocaltime={LT}\t"
            "job_abort_reason=received SIGTERM\tJob aborted",
        ),
        (
            ("FAIL", None, "t", "line one\nline two\n\tindented", None, 2),
            f"\t\tFAIL\t----\tt\ttimestamp={T}\tlocaltime={LT}\tline one\n"
            "\t\t  line two\n"
            "\t\t          indented",
        ),
        (("TEST_NA", None, "x", "a\tb"), f"TEST_NA\t----\tx\ttimestamp={T}\tlocaltime={LT}\ta        b"),
    ],
)
def test_render(args: tuple, expected: str) -> None:
    assert status.render(*args, timestamp=T) == expected


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        ("START", True), ("INFO", True), ("GOOD", True), ("END GOOD", True), ("END ABORT", True),
        ("TEST_NA", True), ("END NOSTATUS", True), ("ALERT", True),
        ("END", False), ("END START", False), ("good", False), ("PASS", False), ("", False),
    ],
)
def test_status_words(code: str, valid: bool) -> None:
    assert status.is_valid_status(code) is valid


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"status_code": "BOGUS"}, "invalid status"),
        ({"status_code": "GOOD", "subdir": "a\tb"}, "subdir"),
        ({"status_code": "GOOD", "operation": "a\nb"}, "operation"),
        ({"status_code": "GOOD", "optional_fields": {"k": "v\tw"}}, "field k"),
        ({"status_code": "GOOD", "optional_fields": {"bad key": "v"}}, "field name"),
    ],
)
def test_render_rejects(kwargs: dict, what: str) -> None:
    with pytest.raises(ValueError, match=what):
        status.render(**kwargs)


def test_localtime_is_english_and_fixed_width() -> None:
    text = status.format_localtime(T)
    t = time.localtime(T)
    months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
    assert text == f"{months[t.tm_mon - 1]} {t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    assert len(text) == len("Sep 17 04:33:20")


def test_writer_nesting_and_parse_round_trip(tmp_path) -> None:
    path = tmp_path / "status.log"
    w = status.StatusLogWriter(str(path))
    assert path.exists() and path.read_text() == ""
    w.record("START", None, "outer", timestamp=T)
    w.record("START", None, "reboot", timestamp=T)
    w.record("GOOD", None, "reboot.start", timestamp=T)
    w.record("END GOOD", None, "reboot", optional_fields={"kernel": "6.1"}, timestamp=T)
    w.record("FAIL", "sub", "test", "two\nlines", timestamp=T)
    w.record("END FAIL", None, "outer", timestamp=T)
    text = path.read_text()
    lines = text.splitlines()
    assert [len(line) - len(line.lstrip("\t")) for line in lines] == [0, 1, 2, 1, 1, 1, 0]
    assert lines[5] == "\t  lines"
    entries = status.parse(text)
    assert [e.status_code for e in entries] == [
        "START", "START", "GOOD", "END GOOD", "FAIL", "END FAIL"
    ]
    assert [e.indent for e in entries] == [0, 1, 2, 1, 1, 0]
    assert entries[3].fields == {"timestamp": str(T), "localtime": LT, "kernel": "6.1"}
    assert entries[4].subdir == "sub" and entries[4].message == "two\nlines"
    assert entries[0].subdir is None and entries[0].operation == "outer"
    assert entries[5].is_end and entries[5].status == "FAIL"
    assert entries[0].timestamp == T
    assert [e.line_number for e in entries] == [1, 2, 3, 4, 5, 7]
    assert "\n".join(e.render() for e in entries) + "\n" == text
    assert [e.status_code for e in status.iter_failures(entries)] == ["FAIL", "END FAIL"]
    assert status.parse_file(str(path)) == entries


def test_writer_refuses_unbalanced_end() -> None:
    w = status.StatusLogWriter(None)
    with pytest.raises(ValueError, match="no open START"):
        w.record("END GOOD", None, "x")
    w.record("START", None, "x")
    assert w.open_groups == ["x"] and w.indent == 1


@pytest.mark.parametrize(
    ("line", "status_code", "fields", "message"),
    [
        # Autotest's own files: message last, maybe empty
        ("GOOD\t----\tt\ttimestamp=1\tlocaltime=Jan 01 00:00:00\tok", "GOOD",
         {"timestamp": "1", "localtime": "Jan 01 00:00:00"}, "ok"),
        ("GOOD\t----\tt\ttimestamp=1\t", "GOOD", {"timestamp": "1"}, ""),
        # a message that looks like a field is still the message
        ("GOOD\t----\tt\ttimestamp=1\tkernel=6.1", "GOOD", {"timestamp": "1"}, "kernel=6.1"),
        # foreign: message between fields (Autotest parser rule)
        ("ABORT\t----\t----\tnot a field\tx=1", "ABORT", {}, "not a field\tx=1"),
        ("INFO\t----\t----", "INFO", {}, ""),
    ],
)
def test_parse_line(line: str, status_code: str, fields: dict, message: str) -> None:
    entry = status.parse_line(line)
    assert entry is not None
    assert (entry.status_code, entry.fields, entry.message) == (status_code, fields, message)


@pytest.mark.parametrize("line", ["", "  continuation", "\t  continuation", "HELLO\tx\ty", "GOOD"])
def test_parse_line_not_an_entry(line: str) -> None:
    assert status.parse_line(line) is None


def test_parse_rejects_garbage_with_line_number() -> None:
    with pytest.raises(ValueError, match="line 2"):
        status.parse("GOOD\t----\t----\ttimestamp=1\t\nnonsense\n")


def test_append_creates_and_appends_each_text_whole_from_many_threads(tmp_path) -> None:
    """status.log and keyval lines go through ``results_disk.append``: a file made on first
    use, each call's text in one piece however many threads append at once."""
    import threading

    from autoserv import results_disk

    path = str(tmp_path / "status.log")
    results_disk.append(path, "")
    assert (tmp_path / "status.log").read_text() == ""

    def writer(n: int) -> None:
        for i in range(200):
            results_disk.append(path, f"{n:02d}:{i:03d}:" + chr(ord("a") + n) * 5000 + "é\n")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "status.log").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8 * 200
    for line in lines:
        n = int(line[:2])
        assert line == line[:7] + chr(ord("a") + n) * 5000 + "é"
    assert sorted(line[:6] for line in lines) == sorted(f"{n:02d}:{i:03d}" for n in range(8)
                                                       for i in range(200))


def test_append_of_text_that_cannot_be_encoded_touches_no_file(tmp_path) -> None:
    from autoserv import results_disk

    with pytest.raises(UnicodeEncodeError):
        results_disk.append(str(tmp_path / "keyval"), "bad=\udcff\n")
    assert not (tmp_path / "keyval").exists()
    with pytest.raises(FileNotFoundError):
        results_disk.append(str(tmp_path / "missing" / "keyval"), "a=1\n")
