"""``results.json``: a job's results in the versioned schema of docs/results-json.md.

The JSON Schema is ``results.schema.json`` beside this file.  Bump :data:`SCHEMA_VERSION`
(``MAJOR.MINOR``) with every change: MINOR for added fields, MAJOR for anything a reader
could trip on (a field removed, renamed or changing meaning).
"""

from __future__ import annotations

import json
import os
from typing import Any

from autoserv.report.model import Job, Machine, Node, outcome, testcase_names

__all__ = ["SCHEMA_VERSION", "build", "write", "node_dict"]

SCHEMA_VERSION = "1.0"


def node_dict(node: Node) -> dict[str, Any]:
    """A test / operation / entry as the schema's ``node``."""
    return {
        "name": node.name,
        "kind": "test" if node.is_test else ("operation" if node.group else "entry"),
        "status": node.status,
        "outcome": outcome(node) if node.status != "INFO" else "info",
        "ended": node.ended,
        "reason": node.reason,
        "subdir": node.subdir,
        "start": node.start,
        "end": node.end,
        "duration": round(node.duration, 3),
        "keyvals": dict(node.keyvals),
        "perf": dict(node.perf),
        "logs": list(node.logs),
        "status_log_line": node.line,
        "children": [node_dict(c) for c in node.children],
    }


def _machine(machine: Machine) -> dict[str, Any]:
    cases = machine.testcases()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for case in cases:
        counts[outcome(case)] += 1
    names = testcase_names(cases)
    return {
        "name": machine.name,
        "job_log": machine.is_job_log,
        "status": machine.status,
        "start": machine.start,
        "end": machine.end,
        "directory": machine.directory,
        "status_log": machine.status_log,
        "logs": list(machine.logs),
        "keyval": dict(machine.keyval),
        "totals": {"tests": len(cases), **counts},
        "testcases": [
            {"name": name, "status": c.status, "outcome": outcome(c), "path": _path_of(machine.nodes, c)}
            for c, name in zip(cases, names, strict=True)
        ],
        "nodes": [node_dict(n) for n in machine.nodes],
    }


def _path_of(nodes: list[Node], target: Node) -> list[int]:
    """Index path of ``target`` in the tree (``machines[i].nodes[a].children[b]``...)."""
    for index, node in enumerate(nodes):
        if node is target:
            return [index]
        sub = _path_of(node.children, target)
        if sub:
            return [index, *sub]
    return []


def build(job: Job) -> dict[str, Any]:
    """The results.json document of ``job``."""
    return {
        "schema": "autoserv-results",
        "schema_version": SCHEMA_VERSION,
        "job": {
            "label": job.label,
            "user": job.user,
            "args": job.args,
            "start": job.start,
            "end": job.end,
            "status": job.status,
            "exit_status": job.exit_status,
            "abort_reason": job.abort_reason,
            "resultdir": job.resultdir,
            "machines": list(job.machine_names),
            "keyval": dict(job.keyval),
        },
        "totals": job.totals(),
        "machines": [_machine(m) for m in job.machines],
    }


def write(job: Job, path: str) -> None:
    """Write ``job``'s results.json to ``path`` (atomically)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(build(job), f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
