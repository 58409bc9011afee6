"""Pure planning of file copies with rsync semantics (used by send_file/get_file).

* a directory ``src`` is copied as ``dest/src`` (``dest`` created);
* ``src/`` (trailing slash) copies the directory's *contents* into ``dest``;
* a file goes into ``dest`` when ``dest`` is a directory (existing, ending in
  ``/``, or because there are several sources), otherwise it becomes ``dest``;
* ``deletes`` lists what ``delete_dest`` removes first so ``dest`` mirrors the source.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from autoserv.errors import AutoservError

_FORBIDDEN_DELETES = {"", "/", ".", "..", "~"}


@dataclass
class Plan:
    """What to create, delete and copy; targets are paths on the destination side."""

    mkdirs: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    into: list[tuple[str, str]] = field(default_factory=list)  # (source, target dir)
    renames: list[tuple[str, str]] = field(default_factory=list)  # (source, target path)
    dest_join: Callable[[str, str], str] = posixpath.join

    def by_target_dir(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for src, target in self.into:
            groups.setdefault(target, []).append(src)
        return groups

    def pairs(self) -> list[tuple[str, str]]:
        """Every copy as (source, full target path)."""
        out = [(s, self.dest_join(d, posixpath.basename(s.rstrip("/")))) for s, d in self.into]
        return out + list(self.renames)


def _add(seq: list[str], item: str) -> None:
    if item not in seq:
        seq.append(item)


def _delete(plan: Plan, path: str) -> None:
    if path.rstrip("/") in _FORBIDDEN_DELETES or path in _FORBIDDEN_DELETES:
        raise AutoservError(f"refusing to delete {path!r} for delete_dest")
    _add(plan.deletes, path)


def plan_send(
    sources: list[str],
    dest: str,
    dest_is_dir: bool,
    local_isdir: Callable[[str], bool],
    local_listdir: Callable[[str], list[str]],
    join: Callable[[str, str], str] = os.path.join,
    dest_join: Callable[[str, str], str] = posixpath.join,
) -> Plan:
    """Plan copying ``sources`` to ``dest`` (see the module docstring)."""
    if not sources:
        raise AutoservError("no source given to copy")
    plan = Plan(dest_join=dest_join)
    dir_mode = len(sources) > 1 or dest.endswith("/") or dest_is_dir
    dest_clean = dest.rstrip("/") or "/"
    for src in sources:
        base = src.rstrip("/") or "/"
        if local_isdir(base):
            if src.endswith("/"):
                _delete(plan, dest_clean)
                for entry in local_listdir(src):
                    plan.into.append((join(base, entry), dest_clean))
            else:
                _delete(plan, dest_join(dest_clean, posixpath.basename(base)))
                plan.into.append((base, dest_clean))
            _add(plan.mkdirs, dest_clean)
        elif dir_mode:
            if not dest_is_dir:
                _add(plan.mkdirs, dest_clean)
            plan.into.append((base, dest_clean))
        else:
            parent = posixpath.dirname(dest_clean)
            if parent and parent != "/":
                _add(plan.mkdirs, parent)
            plan.renames.append((base, dest_clean))
    return plan


#: errno values of a full disk (or quota).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def size_text(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``: a byte count for messages."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def local_free(path: str) -> int:
    """Bytes free for ``path``'s file system (of its nearest existing parent); -1 if unknown."""
    p = os.path.abspath(path)
    while p and not os.path.exists(p):
        p = os.path.dirname(p)
    try:
        return shutil.disk_usage(p or "/").free
    except OSError:
        return -1


def disk_full_message(where: str, path: str, free: int) -> str:
    """One line for a copy that filled a disk: which file, how much was free."""
    left = size_text(free) if free >= 0 else "unknown space"
    return f"{where} disk full writing {path} ({left} free there); the partial file was removed"


def remove_local(path: str) -> None:
    """Remove a local file or tree if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def reset_local_perms(path: str) -> None:
    """Give ``path`` (recursively) permissions masked by the umask, like rsync without -p."""
    umask = os.umask(0)
    os.umask(umask)
    for root, dirs, files in os.walk(path) if os.path.isdir(path) else [("", [], [path])]:
        for name in [*dirs, *files]:
            p = os.path.join(root, name) if root else name
            if not os.path.islink(p):
                os.chmod(p, stat.S_IMODE(os.stat(p).st_mode) & ~umask)
