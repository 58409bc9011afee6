"""JUnit XML of a job, the subset Jenkins (junit-4.xsd) and GitLab both read.

Mapping (schema: ``junit.xsd`` beside this file):

* ``testsuites`` (``name`` = the job label or ``autoserv``) holds one ``testsuite`` per
  machine: ``name`` and ``hostname`` = the machine, ``tests``/``failures``/``errors``/
  ``skipped``, ``time`` (seconds), ``timestamp`` (UTC, ISO 8601 without zone);
* a ``testcase`` per test (per top-level operation for a machine without tests):
  ``classname`` = the machine, ``name`` = the test or operation (``.2``, ``.3``... added
  to repeats, so names are unique per machine), ``time`` from its START to its END;
* GOOD: no child; WARN: passed, the warnings in ``system-out``; FAIL: ``failure``;
  ERROR, ABORT, ALERT, NOSTATUS and never ended: ``error``; TEST_NA: ``skipped``.
  The reason is the ``message``; in ``system-out`` the tail of the test's debug log, or
  when the test has none, the lines of the machine's debug log written while it ran.
* Never a ``file`` attribute nor ``properties`` inside a ``testcase`` (Jenkins rejects
  both).

Only the standard library is used.
"""

from __future__ import annotations

import os
import re
import time
import xml.etree.ElementTree as ET

from autoserv.report.model import Job, Machine, Node, outcome, testcase_names

__all__ = [
    "build", "write", "testcase_names", "log_tail", "log_excerpt", "LOG_TAIL_LINES", "LOG_TAIL_CHARS",
]

#: At most this much of a debug log goes into a failed testcase's system-out.
LOG_TAIL_LINES = 100
LOG_TAIL_CHARS = 20_000
#: Characters XML 1.0 cannot hold at all.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: str) -> str:
    return _INVALID_XML.sub("?", text)


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def _timestamp(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))


def log_tail(path: str, lines: int = LOG_TAIL_LINES, chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``lines`` lines (at most ``chars`` characters) of a text file; '' if none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


_STAMP = re.compile(r"^(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{3}) ")


def _stamp(line: str, year: int) -> float | None:
    """The local time of a debug log line of autoserv (``%m/%d %H:%M:%S.mmm``), else None."""
    match = _STAMP.match(line)
    if match is None:
        return None
    mon, day, hour, minute, sec, ms = map(int, match.groups())
    try:
        return time.mktime((year, mon, day, hour, minute, sec, 0, 0, -1)) + ms / 1000
    except (OverflowError, ValueError):
        return None


def log_excerpt(path: str, start: float | None, end: float | None,
                lines: int = LOG_TAIL_LINES, chars: int = LOG_TAIL_CHARS) -> str:
    """The lines of a debug log written between ``start`` and ``end`` (its last ``lines``).

    Lines without a timestamp (tracebacks) go with the line before them.  When the log's
    lines carry no autoserv timestamps, or none falls in the window, its tail instead.
    """
    if start is None or end is None:
        return log_tail(path, lines, chars)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    year = time.localtime(start).tm_year
    picked: list[str] = []
    inside = False
    for line in text.splitlines():
        ts = _stamp(line, year)
        if ts is not None:
            inside = start - 1 <= ts <= end + 1  # status.log times are whole seconds
        if inside:
            picked.append(line)
    if not picked:
        return log_tail(path, lines, chars)
    return "\n".join(picked[-lines:])[-chars:]


def _debug_log(job: Job, machine: Machine, case: Node) -> str | None:
    for candidates in (case.logs, machine.logs):
        for suffix in (".DEBUG", "DEBUG", ""):
            for rel in candidates:
                if rel.endswith(suffix):
                    return os.path.join(job.resultdir, rel)
    return None


def _testcase(job: Job, machine: Machine, case: Node, name: str) -> ET.Element:
    el = ET.Element("testcase", {"name": _clean(name), "classname": _clean(machine.name),
                                 "time": _seconds(case.duration)})
    kind = outcome(case)
    message = _clean(case.reason.split("\n", 1)[0])
    if kind == "skipped":
        ET.SubElement(el, "skipped", {"message": message} if message else {})
    elif kind in ("failed", "errors"):
        tag = "failure" if kind == "failed" else "error"
        child = ET.SubElement(el, tag, {"type": case.status, "message": message})
        child.text = _clean(case.reason)
    out: list[str] = []
    if case.warnings:
        out += [f"WARN: {w}" for w in case.warnings]
    if kind in ("failed", "errors"):
        path = _debug_log(job, machine, case)
        if path is not None:
            own = case.logs and os.path.relpath(path, job.resultdir) in case.logs
            tail = log_tail(path) if own else log_excerpt(path, case.start, case.end)
            if tail:
                rel = os.path.relpath(path, job.resultdir)
                what = "tail of" if own else "from"
                out.append(f"--- {what} {rel} ---\n{tail}")
    if out:
        ET.SubElement(el, "system-out").text = _clean("\n".join(out))
    return el


def build(job: Job) -> ET.Element:
    """The ``testsuites`` element of ``job``."""
    root = ET.Element("testsuites", {"name": _clean(job.label or "autoserv")})
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    for machine in job.machines:
        cases = machine.testcases()
        counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        for case in cases:
            counts[outcome(case)] += 1
        start, end = machine.start, machine.end
        duration = (end - start) if start is not None and end is not None else 0.0
        attrs = {
            "name": _clean(machine.name),
            "tests": str(len(cases)),
            "failures": str(counts["failed"]),
            "errors": str(counts["errors"]),
            "skipped": str(counts["skipped"]),
            "time": _seconds(max(0.0, duration)),
            "hostname": _clean(machine.name),
        }
        stamp = _timestamp(start)
        if stamp is not None:
            attrs["timestamp"] = stamp
        suite = ET.SubElement(root, "testsuite", attrs)
        for case, name in zip(cases, testcase_names(cases), strict=True):
            suite.append(_testcase(job, machine, case, name))
        totals["tests"] += len(cases)
        totals["failures"] += counts["failed"]
        totals["errors"] += counts["errors"]
        total_time = max(total_time, duration)
    if job.start is not None and job.end is not None:
        total_time = max(total_time, job.end - job.start)
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", str(totals["errors"]))
    root.set("time", _seconds(max(0.0, total_time)))
    return root


def write(job: Job, path: str) -> None:
    """Write ``job``'s JUnit XML to ``path`` (atomically: a temp file renamed)."""
    tree = ET.ElementTree(build(job))
    ET.indent(tree)
    tmp = f"{path}.tmp{os.getpid()}"
    tree.write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)
