"""``autoserv merge OUT DIR...``: shard results dirs merged into one results dir.

* each machine subdir of each shard is copied to ``OUT/<machine>/`` (a machine found in
  two shards is an error: shards are disjoint);
* ``OUT/status.log`` holds the top-level status.logs of the shards one after the other
  (each is a balanced sequence of groups, so their concatenation is one too);
* ``OUT/keyval``: ``label``/``user`` of the first shard, ``hostname`` every machine,
  ``job_started`` the earliest, ``job_finished`` the latest, ``job_exit_status`` the
  worst (largest), ``shards`` the number of shards;
* ``OUT/.machines``: every machine, one per line;
* everything else a shard holds at its top (control.srv, debug/, its own reports) goes to
  ``OUT/shards/<n>/``, so nothing is lost.

Then the reports are written for ``OUT``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

from autoserv.report import model

__all__ = ["merge", "MergeError"]

#: Top-level files merged into OUT rather than copied into OUT/shards/<n>/.
_MERGED = {"status.log", "keyval", ".machines"}


class MergeError(ValueError):
    """The shard dirs cannot be merged (one line saying why)."""


def merge(out: str, shard_dirs: Sequence[str]) -> model.Job:
    """Merge ``shard_dirs`` into the new (or empty) directory ``out``; return its model."""
    if not shard_dirs:
        raise MergeError("merge needs at least one shard results dir")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise MergeError(f"{out} exists and is not an empty directory")
    jobs = []
    for d in shard_dirs:
        try:
            jobs.append(model.load(d))
        except FileNotFoundError as exc:
            raise MergeError(str(exc)) from None
    owner: dict[str, str] = {}
    for d, job in zip(shard_dirs, jobs, strict=True):
        for m in job.machines:
            if m.directory == "" and not _in_process(job, m):
                continue
            if m.name in owner:
                raise MergeError(f"machine {m.name} is in two shards: {owner[m.name]} and {d}")
            owner[m.name] = d
    os.makedirs(out, exist_ok=True)
    machines: list[str] = []
    status_parts: list[str] = []
    for n, (d, job) in enumerate(zip(shard_dirs, jobs, strict=True), 1):
        subdirs = {m.directory for m in job.machines if m.directory}
        single = None
        for m in job.machines:
            if m.directory:
                machines.append(m.name)
                shutil.copytree(os.path.join(d, m.directory), os.path.join(out, m.directory),
                                symlinks=True)
            elif _in_process(job, m):
                single = m
        top_log = os.path.join(d, "status.log")
        if single is not None:
            # A one-machine shard ran it in-process: its top-level files are the machine's.
            machines.append(single.name)
            target = os.path.join(out, model.machine_subdir(single.name))
            os.makedirs(target)
            if os.path.isfile(top_log):
                shutil.copy2(top_log, os.path.join(target, "status.log"))
            if os.path.isdir(os.path.join(d, "debug")):
                shutil.copytree(os.path.join(d, "debug"), os.path.join(target, "debug"), symlinks=True)
            with open(os.path.join(target, "keyval"), "w", encoding="utf-8") as f:
                f.write(f"hostname={single.name}\nstatus_version=1\n")
        elif os.path.isfile(top_log):
            with open(top_log, encoding="utf-8", errors="replace") as f:
                text = f.read()
            if text.strip():
                status_parts.append(text if text.endswith("\n") else text + "\n")
        rest = [name for name in os.listdir(d) if name not in _MERGED and name not in subdirs]
        if rest:
            target = os.path.join(out, "shards", str(n))
            os.makedirs(target, exist_ok=True)
            for name in rest:
                src = os.path.join(d, name)
                if os.path.isdir(src) and not os.path.islink(src):
                    shutil.copytree(src, os.path.join(target, name), symlinks=True)
                else:
                    shutil.copy2(src, os.path.join(target, name), follow_symlinks=False)
    with open(os.path.join(out, "status.log"), "w", encoding="utf-8") as f:
        f.write("".join(status_parts))
    with open(os.path.join(out, ".machines"), "w", encoding="utf-8") as f:
        f.write("".join(f"{m}\n" for m in machines))
    with open(os.path.join(out, "keyval"), "w", encoding="utf-8") as f:
        f.write("".join(f"{k}={v}\n" for k, v in _merged_keyval(jobs, machines).items()))
    return model.load(out)


def _in_process(job: model.Job, machine: model.Machine) -> bool:
    return machine.directory == "" and machine.name in job.machine_names


def _merged_keyval(jobs: Sequence[model.Job], machines: Sequence[str]) -> dict[str, str]:
    first = jobs[0].keyval
    data: dict[str, str] = {k: first[k] for k in ("label", "user", "status_version") if k in first}
    data["hostname"] = ",".join(machines)
    starts = [float(j.keyval["job_started"]) for j in jobs if _num(j.keyval.get("job_started"))]
    ends = [float(j.keyval["job_finished"]) for j in jobs if _num(j.keyval.get("job_finished"))]
    if starts:
        data["job_started"] = str(int(min(starts)))
    if ends:
        data["job_finished"] = str(int(max(ends)))
    codes = [j.exit_status for j in jobs if j.exit_status is not None]
    if codes:
        data["job_exit_status"] = str(max(codes))
    args = [j.keyval["job_args"] for j in jobs if "job_args" in j.keyval]
    if args:
        data["job_args"] = args[0]
    data["shards"] = str(len(jobs))
    return data


def _num(text: str | None) -> bool:
    try:
        float(text or "")
    except ValueError:
        return False
    return True
