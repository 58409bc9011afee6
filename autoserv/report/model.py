"""A results directory read into one typed model: the job, its machines, their tests.

:func:`load` reads any results dir, ours or one written by the original Autotest:

* the job keyval (``label``, ``user``, ``job_started``, ``job_finished``, and the
  ``job_args`` / ``job_exit_status`` keys autoserv adds at the end of a job);
* the machine list: ``.machines``, then the keyval's ``hostname``, then every subdir
  holding a ``status.log``;
* each machine's ``status.log`` (the top-level one for a job without machine subdirs),
  parsed with :mod:`autoserv.status` into a tree of :class:`Node` (``START``/``END``
  groups with their entries nested), and the top-level ``status.log`` of a
  multi-machine job as a pseudo machine named ``job`` when it holds entries;
* per test (a node with a subdir): ``<machine>/<subdir>/keyval`` (keyvals) and
  ``<machine>/<subdir>/results/keyval`` (perf keyvals), and the debug logs.

Times: a group runs from its ``START`` to its ``END``; a lone entry from the entry
before it (or its group's start, or the job's start) to its own timestamp.  A group
never ended (an interrupted job) ends at the last timestamp the log holds, with status
``ABORT`` and ``ended`` False.

:meth:`Machine.testcases` is what reports list: every test (node with a subdir); for a
machine without tests, its top-level operations.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from autoserv import parallel
from autoserv import status as status_mod

__all__ = [
    "Node",
    "Machine",
    "Job",
    "load",
    "build_tree",
    "read_keyval_file",
    "SEVERITY",
    "worst",
    "JOB_PSEUDO_MACHINE",
    "machine_subdir",
    "load_machine",
    "outcome",
    "testcase_names",
    "parse_status_log",
]

#: How bad each status is; the worst one is a machine's (or the job's) verdict.
SEVERITY = {
    "GOOD": 0,
    "TEST_NA": 1,
    "WARN": 2,
    "FAIL": 3,
    "NOSTATUS": 4,
    "ERROR": 5,
    "ALERT": 6,
    "ABORT": 7,
}
#: The name of the suite that holds a multi-machine job's own top-level status.log.
JOB_PSEUDO_MACHINE = "job"
UNNAMED = "job"


def worst(statuses: list[str] | Iterator[str], default: str = "GOOD") -> str:
    """The most severe of ``statuses`` (``default`` when there are none)."""
    found = [s for s in statuses if s in SEVERITY]
    return max(found, key=SEVERITY.__getitem__) if found else default


@dataclass
class Node:
    """A test, an operation (START/END group) or one lone status entry."""

    name: str
    status: str
    subdir: str | None = None
    operation: str | None = None
    reason: str = ""
    start: float | None = None
    end: float | None = None
    ended: bool = True
    group: bool = False
    line: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    keyvals: dict[str, str] = field(default_factory=dict)
    perf: dict[str, str] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)  # paths relative to the results dir

    @property
    def is_test(self) -> bool:
        return self.subdir is not None

    @property
    def duration(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return max(0.0, self.end - self.start)

    def walk(self) -> Iterator[Node]:
        """This node and every node below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def warnings(self) -> list[str]:
        """Messages of the WARN entries in (or of) this node."""
        return [n.reason or n.name for n in self.walk() if n.status == "WARN"]


@dataclass
class Machine:
    """One machine's results: its status tree, keyval and logs."""

    name: str
    directory: str  # relative to the results dir ("" for the top-level one)
    nodes: list[Node] = field(default_factory=list)
    keyval: dict[str, str] = field(default_factory=dict)
    status_log: str | None = None  # relative path, None when missing
    logs: list[str] = field(default_factory=list)
    #: The top-level status.log of a multi-machine job (a pseudo machine named "job").
    is_job_log: bool = False

    def testcases(self) -> list[Node]:
        """The tests, or for a machine without tests its top-level operations."""
        return _testcases([n for n in self.nodes if n.status != "INFO"])

    @property
    def status(self) -> str:
        cases = self.testcases()
        if not cases:
            return "GOOD" if self.status_log else "NOSTATUS"
        return worst(c.status for c in cases)

    @property
    def start(self) -> float | None:
        times = [n.start for n in self.nodes if n.start is not None]
        return min(times) if times else None

    @property
    def end(self) -> float | None:
        times = [n.end for n in self.nodes if n.end is not None]
        return max(times) if times else None


@dataclass
class Job:
    """A whole results directory."""

    resultdir: str
    keyval: dict[str, str] = field(default_factory=dict)
    machines: list[Machine] = field(default_factory=list)
    machine_names: list[str] = field(default_factory=list)
    abort_reason: str | None = None
    exit_status: int | None = None

    @property
    def label(self) -> str:
        return self.keyval.get("label", "")

    @property
    def user(self) -> str:
        return self.keyval.get("user", "")

    @property
    def args(self) -> list[str]:
        text = self.keyval.get("job_args")
        if not text:
            return []
        try:
            return shlex.split(text)
        except ValueError:
            return [text]

    @property
    def start(self) -> float | None:
        return self._time("job_started", [m.start for m in self.machines], min)

    @property
    def end(self) -> float | None:
        return self._time("job_finished", [m.end for m in self.machines], max)

    def _time(self, key: str, machine_times: list[float | None],
              pick: Callable[[list[float]], float]) -> float | None:
        """The job's keyval ``key`` if it is a number, else ``pick`` of the machines' times."""
        value = _number(self.keyval.get(key))
        if value is not None:
            return value
        times = [t for t in machine_times if t is not None]
        return pick(times) if times else None

    @property
    def status(self) -> str:
        """The verdict: the worst machine status, ABORT for an aborted job."""
        if self.abort_reason:
            return "ABORT"
        verdict = worst(m.status for m in self.machines)
        if verdict == "GOOD" and self.exit_status not in (None, 0):
            return "ERROR"
        return verdict

    def totals(self) -> dict[str, int]:
        """Counts of testcases: tests, passed, failed, errors, skipped, warnings."""
        counts = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0, "warnings": 0}
        for machine in self.machines:
            for case in machine.testcases():
                counts["tests"] += 1
                counts[outcome(case)] += 1
                if case.warnings:
                    counts["warnings"] += 1
        real = [m for m in self.machines if not m.is_job_log]
        counts["machines"] = len(real)
        counts["machines_failed"] = sum(1 for m in real if SEVERITY.get(m.status, 0) >= SEVERITY["FAIL"])
        return counts


def testcase_names(cases: list[Node]) -> list[str]:
    """Names unique per machine: a repeated name gets ``.2``, ``.3``..."""
    return parallel.unique_names([c.name for c in cases])


def outcome(node: Node) -> str:
    """``passed``, ``failed``, ``errors`` or ``skipped`` (the JUnit class of a status)."""
    if node.status in ("GOOD", "WARN"):
        return "passed"
    if node.status == "FAIL":
        return "failed"
    if node.status == "TEST_NA":
        return "skipped"
    return "errors"


def _testcases(nodes: list[Node]) -> list[Node]:
    cases: list[Node] = []
    for node in nodes:
        has_tests = any(d.is_test for c in node.children for d in c.walk())
        if node.is_test or not has_tests:
            cases.append(node)
            continue
        inner = _testcases([c for c in node.children if c.status != "INFO"])
        cases += inner
        # A container's own failure that none of its tests shows is kept as a testcase.
        if SEVERITY.get(node.status, 0) >= SEVERITY["FAIL"] and not any(
            SEVERITY.get(c.status, 0) >= SEVERITY["FAIL"] for c in inner
        ):
            cases.append(node)
    return cases


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _name(entry: status_mod.StatusEntry) -> str:
    return entry.operation or entry.subdir or UNNAMED


def build_tree(entries: list[status_mod.StatusEntry], start: float | None = None) -> list[Node]:
    """The top-level nodes of a parsed status.log (see the module doc for times)."""
    roots: list[Node] = []
    stack: list[Node] = []
    previous = start
    last_time = start
    for entry in entries:
        ts = float(entry.timestamp) if entry.timestamp is not None else None
        if ts is not None:
            last_time = ts if last_time is None else max(last_time, ts)
        siblings = stack[-1].children if stack else roots
        if entry.is_start:
            node = Node(
                name=_name(entry),
                status="START",
                subdir=entry.subdir,
                operation=entry.operation,
                start=ts if ts is not None else previous,
                ended=False,
                group=True,
                line=entry.line_number,
                fields=dict(entry.fields),
            )
            siblings.append(node)
            stack.append(node)
        elif entry.is_end and stack:
            node = stack.pop()
            node.status = entry.status
            node.end = ts if ts is not None else last_time
            node.ended = True
            node.reason = entry.message
            node.fields.update(entry.fields)
            if entry.subdir and node.subdir is None:
                node.subdir = entry.subdir
        else:
            parent_start = stack[-1].start if stack else start
            begin = previous if previous is not None else parent_start
            siblings.append(
                Node(
                    name=_name(entry),
                    status=entry.status,
                    subdir=entry.subdir,
                    operation=entry.operation,
                    reason=entry.message,
                    start=begin if begin is not None else ts,
                    end=ts,
                    line=entry.line_number,
                    fields=dict(entry.fields),
                )
            )
        if ts is not None:
            previous = ts
    for node in stack:  # never ended: the job was interrupted
        node.ended = False
        node.status = "ABORT"
        node.end = last_time
    for root in roots:
        _finish(root)
    return roots


def _finish(node: Node) -> None:
    for child in node.children:
        _finish(child)
    if not node.group:
        return
    if not node.ended:
        inner = [c.reason for c in node.walk() if c is not node and c.reason]
        node.reason = "never ended (the job was interrupted)" + (f": {inner[-1]}" if inner else "")
    elif not node.reason and SEVERITY.get(node.status, 0) >= SEVERITY["WARN"]:
        bad = [
            c.reason
            for c in node.walk()
            if c is not node and c.reason and SEVERITY.get(c.status, 0) >= SEVERITY["WARN"]
        ]
        if bad:
            node.reason = bad[0]
    if not node.reason:
        same = [c.reason for c in node.children if c.name == node.name and c.reason]
        if same:
            node.reason = same[0]


def parse_status_log(path: str) -> list[status_mod.StatusEntry]:
    """The entries of a status.log, skipping stray lines (console noise in old logs).

    Raises :class:`ValueError` naming the first bad line when the file has text but no
    entry at all.
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = status_mod.split_lines(f.read())
    entries: list[status_mod.StatusEntry] = []
    first_bad: int | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        entry = status_mod.parse_line(line, number)
        if entry is not None:
            entries.append(entry)
            continue
        stripped = line.lstrip("\t")
        if stripped.startswith(status_mod.CONTINUATION) and entries:
            entries[-1].message += "\n" + stripped[len(status_mod.CONTINUATION):]
        elif first_bad is None:
            first_bad = number
    if not entries and first_bad is not None:
        raise ValueError(f"{path} line {first_bad} is not a status entry: {lines[first_bad - 1][:80]!r}")
    return entries


def _mark_abort(machine: Machine) -> None:
    """An abort that no testcase shows: its ``INFO ... job_abort_reason=`` entry reads as ABORT.

    (A job or worker aborted between operations leaves only that INFO entry; CI must still
    see an error.)
    """
    if any(SEVERITY.get(c.status, 0) >= SEVERITY["FAIL"] for c in machine.testcases()):
        return
    for node in machine.nodes:
        reason = node.fields.get("job_abort_reason")
        if node.status == "INFO" and reason:
            node.status = "ABORT"
            node.reason = f"aborted: {reason}"
            return


def read_keyval_file(path: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(keyvals, perf keyvals)`` of an Autotest keyval file (missing: empty).

    ``key{perf}=v`` is a perf keyval, ``key{attr}=v`` / ``key=v`` a keyval; in a
    ``results/keyval`` file (iterations separated by blank lines) plain keys are perf
    keyvals too.  The last iteration's value wins.
    """
    keyvals: dict[str, str] = {}
    perf: dict[str, str] = {}
    results_file = os.path.basename(os.path.dirname(path)) == "results"
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return keyvals, perf
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if key.endswith("{perf}"):
            perf[key[: -len("{perf}")]] = value
        elif key.endswith("{attr}"):
            keyvals[key[: -len("{attr}")]] = value
        elif results_file:
            perf[key] = value
        else:
            keyvals[key] = value
    return keyvals, perf


def _logs_under(resultdir: str, directory: str) -> list[str]:
    """Debug log files in ``<directory>/debug`` (relative to ``resultdir``), sorted."""
    debug = os.path.join(resultdir, directory, "debug")
    try:
        names = sorted(os.listdir(debug))
    except OSError:
        return []
    return [
        os.path.join(directory, "debug", n)
        for n in names
        if os.path.isfile(os.path.join(debug, n))
    ]


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def _load_machine(resultdir: str, name: str, directory: str, start: float | None,
                  details: bool = True) -> Machine:
    machine = Machine(name=name, directory=directory)
    base = os.path.join(resultdir, directory)
    if details and os.path.isfile(os.path.join(base, "keyval")):
        machine.keyval, _ = read_keyval_file(os.path.join(base, "keyval"))
    log_path = os.path.join(base, "status.log")
    if os.path.isfile(log_path):
        machine.status_log = os.path.join(directory, "status.log")
        machine.nodes = build_tree(parse_status_log(log_path), start)
        _mark_abort(machine)
    if not details:
        return machine
    machine.logs = _logs_under(resultdir, directory)
    seen: set[str] = set()  # a test's files belong to its outermost node (the group)
    for node in machine.nodes:
        for n in node.walk():
            if n.subdir is None or n.subdir in seen:
                continue
            seen.add(n.subdir)
            test_dir = os.path.join(base, n.subdir)
            if not os.path.isdir(test_dir):
                continue
            n.keyvals, perf = read_keyval_file(os.path.join(test_dir, "keyval"))
            more_kv, n.perf = read_keyval_file(os.path.join(test_dir, "results", "keyval"))
            n.perf.update(perf)
            n.keyvals.update(more_kv)
            n.logs = _logs_under(resultdir, os.path.join(directory, n.subdir))
    return machine


def load_machine(resultdir: str, name: str, directory: str, details: bool = True) -> Machine:
    """One machine's results (its subdir ``directory`` of ``resultdir``).

    ``details`` False reads its status.log only (the status tree: tests, outcomes, times),
    not its keyval, log listings or the tests' keyvals: what a summary line needs.
    """
    return _load_machine(os.path.abspath(resultdir), name, directory, None, details)


def _exit_status(resultdir: str, keyval: dict[str, str]) -> int | None:
    value = keyval.get("job_exit_status")
    if value is not None and value.lstrip("-").isdigit():
        return int(value)
    # The pidfile's line 2: the exit status as os.waitpid encodes it (or a plain code).
    for name in sorted(os.listdir(resultdir)):
        if name.startswith(".") and name.endswith("_execute"):
            lines = _read_lines(os.path.join(resultdir, name))
            if len(lines) >= 2 and lines[1].isdigit():
                raw = int(lines[1])
                return raw >> 8 if raw > 255 or (raw & 0xFF) == 0 else raw
    return None


def load(resultdir: str) -> Job:
    """Read the results dir at ``resultdir``; raises :class:`FileNotFoundError` if it is none."""
    resultdir = os.path.abspath(resultdir)
    if not os.path.isdir(resultdir):
        raise FileNotFoundError(f"results directory {resultdir} does not exist")
    top_log = os.path.join(resultdir, "status.log")
    has_keyval = os.path.isfile(os.path.join(resultdir, "keyval"))
    job = Job(resultdir=resultdir)
    if has_keyval:
        job.keyval, _ = read_keyval_file(os.path.join(resultdir, "keyval"))
    names = _read_lines(os.path.join(resultdir, ".machines"))
    names += [h for h in job.keyval.get("hostname", "").split(",") if h]
    subdirs = sorted(
        d
        for d in os.listdir(resultdir)
        if os.path.isfile(os.path.join(resultdir, d, "status.log"))
    )
    if not names:
        names = list(subdirs)
    names = list(dict.fromkeys(names))
    if not os.path.isfile(top_log) and not has_keyval and not subdirs:
        raise FileNotFoundError(f"{resultdir} is not a results directory (no status.log, no keyval)")
    job.machine_names = names
    start = _number(job.keyval.get("job_started"))
    # a machine subdir holds the machine's own status.log (crashinfo/ alone does not make one)
    with_dirs = [n for n in names if machine_subdir(n) in subdirs]
    if len(names) <= 1 and not with_dirs:
        # One machine (or none): the job ran it in-process, everything is in the top log.
        machine = _load_machine(resultdir, names[0] if names else JOB_PSEUDO_MACHINE, "", start)
        machine.logs = _logs_under(resultdir, "")
        job.machines.append(machine)
    else:
        top = _load_machine(resultdir, JOB_PSEUDO_MACHINE, "", start)
        top.is_job_log = True
        for name in names:
            job.machines.append(_load_machine(resultdir, name, machine_subdir(name), start))
        if top.nodes:
            job.machines.insert(0, top)
    for machine in job.machines:
        if machine.directory != "":
            continue  # a machine's own abort (a parallel timeout) is not the job's
        for node in machine.nodes:
            for n in node.walk():
                reason = n.fields.get("job_abort_reason")
                if reason and job.abort_reason is None:
                    job.abort_reason = reason
    job.exit_status = _exit_status(resultdir, job.keyval)
    return job


def machine_subdir(name: str) -> str:
    """The results subdir of a machine label (as autoserv.parallel names it)."""
    return parallel.subdir_name(name)
