"""Reports of a job's results: JUnit XML, results.json, report.html (and merging shards).

* :mod:`autoserv.report.model` reads a results dir (ours or the original Autotest's);
* :mod:`~autoserv.report.junit`, :mod:`~autoserv.report.jsonout`, :mod:`~autoserv.report.html`
  write the three reports from that model;
* :mod:`~autoserv.report.shard` picks a machine's shard, :mod:`~autoserv.report.merge`
  merges shard results dirs into one;
* :mod:`~autoserv.report.progress` is the live progress display of a running job.

:func:`write_reports` is what a job calls at its end and ``autoserv report`` calls on any
results dir.  Only the standard library is used here (``rich`` only by progress, lazily).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["write_reports", "ReportPaths", "DEFAULT_NAMES"]

#: The reports every results dir gets.
DEFAULT_NAMES = {"junit": "junit.xml", "json": "results.json", "html": "report.html"}


@dataclass
class ReportPaths:
    """Extra places to write the reports to (besides the results dir's own)."""

    junit: str | None = None
    json: str | None = None
    html: str | None = None


def write_reports(resultdir: str, extra: ReportPaths | None = None, in_resultdir: bool = True) -> list[str]:
    """Read ``resultdir`` and write its reports; return the paths written.

    ``in_resultdir``: also write ``junit.xml``, ``results.json`` and ``report.html`` into
    the results dir itself.  Raises :class:`FileNotFoundError` if it is no results dir,
    :class:`OSError` if a report cannot be written.
    """
    from autoserv.report import html, jsonout, junit, model

    job = model.load(resultdir)
    extra = extra or ReportPaths()
    writers = {"junit": junit.write, "json": jsonout.write, "html": html.write}
    written: list[str] = []
    for kind, writer in writers.items():
        targets = []
        if in_resultdir:
            targets.append(os.path.join(job.resultdir, DEFAULT_NAMES[kind]))
        chosen = getattr(extra, kind)
        if chosen is not None:
            targets.append(os.path.abspath(chosen))
        for target in dict.fromkeys(targets):
            writer(job, target)
            written.append(target)
    return written
