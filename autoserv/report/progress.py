"""Live progress of a running job, and the summary of each machine as it finishes.

Two modes, chosen by :func:`choose_mode`:

* ``live`` (a terminal, ``CI`` unset, no ``-n``; or ``--progress``): a status area at the
  bottom of the terminal, redrawn twice a second with ``rich`` (imported only then):
  machines done / running / failed, and each running machine's current operation (the
  innermost open group of its status.log) and elapsed time.  The usual prefixed output
  lines scroll above it: while the area is shown, file descriptor 1 (this process's and
  every worker's standard output) is a pipe whose lines the display prints above the area.
  At the end, a summary table: machine, status, tests passed / failed, duration,
  slowest test.
* ``plain`` (otherwise): no redrawing; the prefixed lines as always, plus one line per
  machine as it finishes (logged to ``autoserv.progress``, so ``-n`` silences it and the
  debug files keep it).

``--no-progress`` turns both off.  Machine starts and ends come from the workers
themselves (:func:`autoserv.parallel.watch`: the parent hears each worker start and each
worker's report arrive); the per-machine counts are read from its status.log then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from autoserv.report import model

__all__ = ["choose_mode", "MachineSummary", "summarize", "Progress", "running"]

log = logging.getLogger("autoserv.progress")

#: Running machines shown in the live area at most (the others are counted).
MAX_ROWS = 15
REFRESH_PER_SECOND = 2


def choose_mode(progress: bool | None, isatty: bool, environ: Mapping[str, str], no_tee: bool) -> str:
    """``"live"``, ``"plain"`` or ``"off"`` (pure: the flags and the environment decide)."""
    if progress is False:
        return "off"
    if no_tee:
        return "plain"
    if progress is True:
        return "live"
    if not isatty or environ.get("CI"):
        return "plain"
    return "live"


@dataclass
class MachineSummary:
    """What the summary line / table says about one finished machine."""

    name: str
    status: str
    tests: int = 0
    passed: int = 0
    failed: int = 0
    duration: float = 0.0
    slowest: str = ""
    slowest_time: float = 0.0
    reason: str = ""

    def line(self) -> str:
        text = (
            f"{self.name} : done {self.status} in {_dur(self.duration)}: {self.tests} test(s), "
            f"{self.passed} passed, {self.failed} failed"
        )
        if self.slowest:
            text += f"; slowest {self.slowest} ({_dur(self.slowest_time)})"
        if self.reason:
            text += f"; {self.reason}"
        return text


def _dur(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes} min {sec:02d} s"


def summarize(machine: model.Machine, status: str | None = None, duration: float | None = None,
              reason: str = "") -> MachineSummary:
    """The summary of a machine's results (``status``/``duration`` override the model's)."""
    cases = machine.testcases()
    kinds = [model.outcome(c) for c in cases]
    slow = max(cases, key=lambda c: c.duration, default=None)
    start, end = machine.start, machine.end
    return MachineSummary(
        name=machine.name,
        status=status or machine.status,
        tests=len(cases),
        passed=kinds.count("passed"),
        failed=len(cases) - kinds.count("passed") - kinds.count("skipped"),
        duration=duration if duration is not None else (end - start if start and end else 0.0),
        slowest=slow.name if slow is not None else "",
        slowest_time=slow.duration if slow is not None else 0.0,
        reason=reason,
    )


def _current_operation(path: str) -> str:
    """The innermost open group of a status.log (else its last entry), '' if none."""
    from autoserv import status

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = status.split_lines(f.read())
    except OSError:
        return ""

    stack: list[str] = []
    last = ""
    for line in lines:
        entry = status.parse_line(line)
        if entry is None:
            continue
        name = entry.operation or entry.subdir or "job"
        if entry.is_start:
            stack.append(name)
        elif entry.is_end:
            if stack:
                stack.pop()
            last = name
        else:
            last = name
    return stack[-1] if stack else last


@dataclass
class _Worker:
    label: str
    subdir: str | None
    started: float
    ended: float | None = None
    summary: MachineSummary | None = None


@dataclass
class Progress:
    """The display of one job (see the module doc).  :meth:`start` then :meth:`stop`."""

    resultdir: str | None
    mode: str
    stream: IO[str] | None = None  # where the live area goes (default: the real stdout)
    workers: dict[str, _Worker] = field(default_factory=dict)
    summaries: list[MachineSummary] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _live: Any = None
    _console: Any = None
    _saved_fd: int | None = None
    _pipe_read: int | None = None
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _started: float = field(default_factory=time.monotonic)

    # -- events (from autoserv.parallel, in the parent's main thread) --------------------

    def event(self, kind: str, sub: Any) -> None:
        """A worker started (``"start"``) or its report arrived (``"done"``)."""
        now = time.monotonic()
        with self._lock:
            if kind == "start":
                self.workers[sub.label] = _Worker(sub.label, sub.subdir, now)
                return
            worker = self.workers.setdefault(sub.label, _Worker(sub.label, sub.subdir, now))
            worker.ended = now
        summary = self._summary(sub, now - worker.started)
        with self._lock:
            worker.summary = summary
            self.summaries.append(summary)
        log.info("%s", summary.line())

    def _summary(self, sub: Any, duration: float) -> MachineSummary:
        if sub.timed_out:
            word = "ABORT"
        elif sub.exception is not None:
            word = "ERROR"
        elif sub.failures:
            word = "FAIL"
        else:
            word = "GOOD"
        reason = ""
        if sub.exception is not None:
            lines = str(sub.exception).strip().splitlines()
            reason = lines[0][:200] if lines else type(sub.exception).__name__
        machine = model.Machine(sub.label, sub.subdir or "")
        if self.resultdir is not None and sub.subdir is not None:
            with contextlib.suppress(OSError, ValueError):
                # its status.log only: this runs in the main thread for every machine
                machine = model.load_machine(self.resultdir, sub.label, sub.subdir, details=False)
        summary = summarize(machine, duration=duration, reason=reason)
        if model.SEVERITY.get(summary.status, 0) < model.SEVERITY[word]:
            summary.status = word
        return summary

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Progress:
        """Start listening to workers (and in live mode, show the area)."""
        from autoserv import parallel

        if self.mode == "off":
            return self
        parallel.watch(self.event)
        if self.mode == "live":
            self._start_live()
        return self

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        out = self.stream
        if out is None:
            self._saved_fd = os.dup(1)
            out = os.fdopen(os.dup(self._saved_fd), "w", encoding="utf-8", errors="replace",
                            buffering=1)
            read_fd, write_fd = os.pipe()
            os.dup2(write_fd, 1)  # our and every worker's stdout now reach _pump
            os.close(write_fd)
            self._pipe_read = read_fd
        self._console = Console(file=out, force_terminal=True, soft_wrap=True, highlight=False,
                                emoji=False, markup=False)
        self._live = Live(console=self._console, auto_refresh=False, get_renderable=self._render,
                          redirect_stdout=False, redirect_stderr=False, transient=True)
        self._live.start()
        if self._pipe_read is not None:
            self._threads.append(threading.Thread(target=self._pump, name="progress-pump", daemon=True))
        self._threads.append(threading.Thread(target=self._refresh, name="progress-refresh", daemon=True))
        for thread in self._threads:
            thread.start()

    def _pump(self) -> None:
        """Print the lines written to fd 1 above the live area."""
        assert self._pipe_read is not None
        pending = b""
        while True:
            try:
                chunk = os.read(self._pipe_read, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if lines:
                with contextlib.suppress(Exception):
                    self._live.refresh()  # the area under these lines shows the state now
            for line in lines:
                self._console.print(line.decode("utf-8", "replace"), markup=False, highlight=False)
        if pending:
            self._console.print(pending.decode("utf-8", "replace"), markup=False, highlight=False)

    def _refresh(self) -> None:
        while not self._stop.wait(1 / REFRESH_PER_SECOND):
            with contextlib.suppress(Exception):
                self._live.refresh()

    def _render(self) -> Any:
        from rich.table import Table

        now = time.monotonic()
        with self._lock:
            workers = list(self.workers.values())
        running = [w for w in workers if w.ended is None]
        done = [w for w in workers if w.ended is not None]
        failed = [w for w in done if w.summary and model.SEVERITY.get(w.summary.status, 0) >= 3]
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column("machine", no_wrap=True)
        table.add_column("operation", no_wrap=True, overflow="ellipsis", max_width=60)
        table.add_column("elapsed", justify="right", no_wrap=True)
        for w in running[:MAX_ROWS]:
            op = ""
            if self.resultdir is not None and w.subdir is not None:
                op = _current_operation(os.path.join(self.resultdir, w.subdir, "status.log"))
            table.add_row(w.label, op or "starting", _dur(now - w.started))
        if len(running) > MAX_ROWS:
            table.add_row(f"... {len(running) - MAX_ROWS} more running", "", "")
        title = (
            f"machines: {len(done)} done, {len(running)} running, {len(failed)} failed"
            f"   elapsed {_dur(now - self._started)}"
        )
        table.title = title
        table.title_justify = "left"
        return table

    def stop(self) -> None:
        """Remove the area (restoring fd 1) and, in live mode, print the summary table."""
        from autoserv import logging_setup, parallel

        if self.mode == "off":
            return
        parallel.watch(None)
        if self.mode != "live" or self._live is None:
            return
        self._stop.set()
        logging_setup.flush()
        job = None
        if self.resultdir is not None:
            with contextlib.suppress(OSError, ValueError):
                job = model.load(self.resultdir)
        if self._saved_fd is not None:
            with contextlib.suppress(OSError):
                os.dup2(self._saved_fd, 1)  # the pump sees EOF once the workers are gone
        for thread in self._threads:
            thread.join(timeout=2)
        with contextlib.suppress(Exception):
            self._live.stop()
        if self._pipe_read is not None:
            with contextlib.suppress(OSError):
                os.close(self._pipe_read)
            self._pipe_read = None
        with contextlib.suppress(Exception):
            self._console.print(self.summary_table(job))
        if self._saved_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._saved_fd)
            self._saved_fd = None
        self._live = None

    def summary_table(self, job: model.Job | None) -> Any:
        """The final table: from the results dir when there is one, else from the workers."""
        from rich.table import Table

        rows = self.summaries
        if job is not None:
            rows = [summarize(m) for m in job.machines if not m.is_job_log]
        table = Table(title="autoserv: summary", title_justify="left")
        for name, justify in [("machine", "left"), ("status", "left"), ("tests", "right"),
                              ("passed", "right"), ("failed", "right"), ("duration", "right"),
                              ("slowest test", "left")]:
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for s in rows:
            slowest = f"{s.slowest} ({_dur(s.slowest_time)})" if s.slowest else ""
            table.add_row(s.name, s.status, str(s.tests), str(s.passed), str(s.failed),
                          _dur(s.duration), slowest)
        return table


@contextlib.contextmanager
def running(resultdir: str | None, mode: str) -> Iterator[Progress]:
    """``with running(dir, mode) as p:`` around a job; ``p.stop`` is called at the end."""
    progress = Progress(resultdir, mode).start()
    try:
        yield progress
    finally:
        progress.stop()
