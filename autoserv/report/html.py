"""``report.html``: one self-contained page a person opens (inline CSS and SVG, no script).

Top to bottom: the verdict and the totals; a timeline (one row per machine, a bar per
test or operation, coloured by status, its tooltip the name, status, duration and
reason); the failures with their reasons; per machine the status tree (reasons shown,
failed groups open), its perf keyvals as a table, and links to its status.log and debug
logs (relative links, so the page works from an unpacked CI artifact).
"""

from __future__ import annotations

import os
import time
from html import escape

from autoserv.report.model import SEVERITY, Job, Machine, Node, outcome

__all__ = ["render", "write", "COLOURS"]

COLOURS = {
    "GOOD": "#2e9d4f",
    "WARN": "#e0a100",
    "FAIL": "#d62828",
    "ERROR": "#8e1b1b",
    "ABORT": "#6a2c91",
    "ALERT": "#b5179e",
    "TEST_NA": "#9aa0a6",
    "NOSTATUS": "#6c757d",
    "INFO": "#4a90d9",
    "START": "#4a90d9",
}

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.verdict{display:inline-block;padding:.2em .7em;border-radius:4px;color:#fff;font-weight:bold}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.2em .6em;text-align:left}
th{background:#f4f4f4}.num{text-align:right}
.totals td{font-size:1.2em}
.s{display:inline-block;min-width:5em;padding:0 .4em;border-radius:3px;color:#fff;font-size:.85em;
text-align:center}
.reason{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:.9em;color:#555}
.reason.bad{color:#8e1b1b}
details{margin:.1em 0 .1em 1.2em}summary{cursor:pointer}
.leaf{margin:.1em 0 .1em 2.2em}
.meta{color:#666}
svg text{font:11px system-ui,sans-serif}
.machine{margin-bottom:1.2em}
"""


def _badge(status: str) -> str:
    colour = COLOURS.get(status, "#6c757d")
    return f'<span class="s" style="background:{colour}">{escape(status)}</span>'


def _fmt_time(epoch: float | None) -> str:
    if epoch is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _dur(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _totals(job: Job) -> str:
    t = job.totals()
    cells = [
        ("machines", t["machines"]),
        ("machines failed", t["machines_failed"]),
        ("tests", t["tests"]),
        ("passed", t["passed"]),
        ("failed", t["failed"]),
        ("errors", t["errors"]),
        ("skipped", t["skipped"]),
        ("warnings", t["warnings"]),
    ]
    head = "".join(f"<th>{escape(k)}</th>" for k, _ in cells)
    body = "".join(
        f'<td class="num" data-total="{escape(k.replace(" ", "_"))}">{v}</td>' for k, v in cells
    )
    return f'<table class="totals" id="totals"><tr>{head}</tr><tr>{body}</tr></table>'


def _timeline(job: Job, width: int = 1000) -> str:
    starts = [m.start for m in job.machines if m.start is not None]
    ends = [m.end for m in job.machines if m.end is not None]
    t0 = min([*starts, *([job.start] if job.start is not None else [])], default=None)
    t1 = max([*ends, *([job.end] if job.end is not None else [])], default=None)
    if t0 is None or t1 is None:
        return '<p id="timeline">No timestamps: no timeline.</p>'
    span = max(t1 - t0, 1.0)
    label_w, row_h, axis_h = 180, 18, 20
    plot_w = width - label_w - 10
    height = axis_h + row_h * len(job.machines) + 4
    parts = [
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline">'
    ]
    for i in range(6):  # axis: 5 intervals
        x = label_w + plot_w * i / 5
        parts.append(
            f'<line x1="{x:.1f}" y1="{axis_h - 4}" x2="{x:.1f}" y2="{height}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{axis_h - 7}" text-anchor="{"end" if i == 5 else "middle"}">'
            f"+{_dur(span * i / 5)}</text>"
        )
    # One row per machine; a multi-machine job's own status.log (class timeline-job) first.
    for row, machine in enumerate(job.machines):
        y = axis_h + row * row_h
        kind = "timeline-job" if machine.is_job_log else "timeline-row"
        parts.append(
            f'<g class="{kind}" data-machine="{escape(machine.name)}" '
            f'data-status="{escape(machine.status)}">'
            f'<text x="{label_w - 6}" y="{y + row_h - 5}" text-anchor="end">{escape(machine.name)}</text>'
        )
        for case in machine.testcases():
            if case.start is None or case.end is None:
                continue
            x = label_w + plot_w * (case.start - t0) / span
            w = max(plot_w * case.duration / span, 1.5)
            colour = COLOURS.get(case.status, "#6c757d")
            tip = f"{case.name}: {case.status}, {_dur(case.duration)}"
            if case.reason:
                tip += f"\n{case.reason.splitlines()[0][:300]}"
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                f'fill="{colour}" stroke="#fff" stroke-width="0.5" data-status="{escape(case.status)}">'
                f"<title>{escape(tip)}</title></rect>"
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _link(path: str) -> str:
    return f'<a href="{escape(path)}">{escape(path)}</a>'


def _node(node: Node, out: list[str]) -> None:
    line = (
        f'{_badge(node.status)} <b>{escape(node.name)}</b> '
        f'<span class="meta">{_dur(node.duration)}</span>'
    )
    bad = SEVERITY.get(node.status, 0) >= SEVERITY["WARN"]
    css = "reason bad" if bad else "reason"
    reason = f'<div class="{css}">{escape(node.reason)}</div>' if node.reason else ""
    logs = " ".join(_link(p) for p in node.logs)
    if node.children:
        out.append(f"<details{' open' if bad else ''}><summary>{line}</summary>{reason}{logs}")
        for child in node.children:
            _node(child, out)
        out.append("</details>")
    else:
        out.append(f'<div class="leaf">{line}{reason}{logs}</div>')


def _perf(machine: Machine) -> str:
    rows = []
    for case in machine.testcases():
        for n in case.walk():
            for key, value in sorted(n.perf.items()):
                rows.append(
                    f"<tr><td>{escape(n.name)}</td><td>{escape(key)}</td>"
                    f'<td class="num">{escape(value)}</td></tr>'
                )
    if not rows:
        return ""
    return (
        '<table class="perf"><tr><th>test</th><th>perf keyval</th><th>value</th></tr>'
        + "".join(rows)
        + "</table>"
    )


def _machine(machine: Machine) -> str:
    out = [
        f'<div class="machine" id="machine-{escape(machine.name)}">'
        f"<h3>{_badge(machine.status)} {escape(machine.name)}</h3>"
    ]
    links = []
    if machine.status_log:
        links.append(_link(machine.status_log))
    links += [_link(p) for p in machine.logs]
    if links:
        out.append(f'<p class="meta">logs: {" ".join(links)}</p>')
    if not machine.nodes:
        out.append('<p class="meta">no status entries</p>')
    for node in machine.nodes:
        _node(node, out)
    out.append(_perf(machine))
    out.append("</div>")
    return "".join(out)


def _failures(job: Job) -> str:
    rows = []
    for machine in job.machines:
        for case in machine.testcases():
            if outcome(case) in ("failed", "errors"):
                reason = case.reason.splitlines()[0] if case.reason else ""
                rows.append(
                    f"<tr><td>{escape(machine.name)}</td><td>{escape(case.name)}</td>"
                    f'<td>{_badge(case.status)}</td><td class="reason bad">{escape(reason)}</td></tr>'
                )
    if not rows:
        return ""
    return (
        '<h2>Failures</h2><table id="failures"><tr><th>machine</th><th>test / operation</th>'
        "<th>status</th><th>reason</th></tr>" + "".join(rows) + "</table>"
    )


def render(job: Job, links_from: str | None = None) -> str:
    """The page of ``job``, as text; ``links_from``: the directory the page will be in
    (links to logs are relative to it; default the results dir)."""
    verdict = job.status
    title = f"autoserv: {job.label or os.path.basename(job.resultdir)}: {verdict}"
    duration = _dur(job.end - job.start) if job.start is not None and job.end is not None else "?"
    meta = [
        f"user {escape(job.user or '?')}",
        f"started {_fmt_time(job.start)}",
        f"duration {duration}",
    ]
    if job.exit_status is not None:
        meta.append(f"exit status {job.exit_status}")
    if job.args:
        meta.append(f"args {escape(' '.join(job.args))}")
    abort = ""
    if job.abort_reason:
        abort = f'<p class="reason bad" id="abort">aborted: {escape(job.abort_reason)}</p>'
    top_links = [p for p in ("status.log", "keyval", "junit.xml", "results.json")
                 if os.path.exists(os.path.join(job.resultdir, p))]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>{_base(job, links_from)}<style>{CSS}</style></head><body>",
        f'<h1><span class="verdict" id="verdict" style="background:{COLOURS.get(verdict, "#666")}">'
        f"{escape(verdict)}</span> {escape(job.label or os.path.basename(job.resultdir))}</h1>",
        f'<p class="meta">{" · ".join(meta)}</p>',
        abort,
        _totals(job),
        _failures(job),
        "<h2>Timeline</h2>",
        _timeline(job),
        "<h2>Machines</h2>",
        f'<p class="meta">{" ".join(_link(p) for p in top_links)}</p>' if top_links else "",
        *(_machine(m) for m in job.machines),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _base(job: Job, links_from: str | None) -> str:
    if links_from is None or os.path.abspath(links_from) == job.resultdir:
        return ""
    rel = os.path.relpath(job.resultdir, os.path.abspath(links_from))
    return f'<base href="{escape(rel)}/">'


def write(job: Job, path: str) -> None:
    """Write ``job``'s report to ``path`` (atomically)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render(job, os.path.dirname(os.path.abspath(path))))
    os.replace(tmp, path)
