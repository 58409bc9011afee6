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

__all__ = ["SCHEMA_VERSION", "build", "dumps", "write", "node_dict"]

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


def dumps(doc: dict[str, Any]) -> str:
    """``doc`` as text: each top-level field on a line of its own, each machine on one line.

    Why not ``json.dump(doc, indent=1)``: with an indent, the json module encodes in
    Python, not in its C encoder; a 250-machine job's document took 11 ms that way
    against 3 ms here, at the end of the job, when nothing else runs (4 times that
    at 1000 machines).  A line per machine still reads and diffs well; ``jq .``
    pretty-prints it.
    """
    encode = json.JSONEncoder(ensure_ascii=True).encode
    lines = []
    for key, value in doc.items():
        if key == "machines" and value:
            inner = ",\n".join(f"  {encode(m)}" for m in value)
            lines.append(f" {encode(key)}: [\n{inner}\n ]")
        else:
            lines.append(f" {encode(key)}: {encode(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write(job: Job, path: str) -> None:
    """Write ``job``'s results.json to ``path`` (atomically)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(dumps(build(job)))
    os.replace(tmp, path)
