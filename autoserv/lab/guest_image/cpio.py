"""A cpio ``newc`` writer in pure Python: every member owned by root, mtime 0, no root needed.

:func:`write_cpio` writes a path → :class:`CpioEntry` mapping; :class:`CpioTree`
assembles one (parents made on the way) and gives the gzip'd archive the
kernel unpacks as its initramfs.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpioEntry", "CpioTree", "write_cpio"]


@dataclass
class CpioEntry:
    """One archive member: ``mode`` includes the file type bits (``stat.S_IFREG`` ...)."""

    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def write_cpio(entries: Mapping[str, CpioEntry], out: io.BufferedIOBase | io.BytesIO) -> None:
    """Write ``entries`` (path → entry) as a cpio ``newc`` archive, owner root, mtime 0.

    Paths are relative (no leading ``/``); members are written in sorted order
    so every directory precedes its contents and the archive is reproducible.
    """

    def pad(n: int) -> bytes:
        return b"\0" * ((4 - n % 4) % 4)

    def member(ino: int, name: str, entry: CpioEntry) -> None:
        raw = name.encode() + b"\0"
        fields = (
            ino,
            entry.mode,
            0,  # uid
            0,  # gid
            2 if stat.S_ISDIR(entry.mode) else 1,
            0,  # mtime
            len(entry.data),
            0,  # devmajor
            0,  # devminor
            entry.rdev[0],
            entry.rdev[1],
            len(raw),
            0,  # check
        )
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out.write(header + raw + pad(len(header) + len(raw)))
        out.write(entry.data + pad(len(entry.data)))

    for ino, name in enumerate(sorted(entries), start=1):
        member(ino, name, entries[name])
    member(0, "TRAILER!!!", CpioEntry(mode=0))


class CpioTree:
    """An archive being assembled in memory: directories, files, symlinks, device nodes."""

    def __init__(self) -> None:
        self.entries: dict[str, CpioEntry] = {}

    @staticmethod
    def _norm(path: str) -> str:
        return os.path.normpath(path).lstrip("/")

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        path = self._norm(path)
        if not path or path == ".":
            return
        parent = os.path.dirname(path)
        if parent and parent not in self.entries:
            self.mkdir(parent)
        self.entries[path] = CpioEntry(stat.S_IFDIR | mode)

    def _parent(self, path: str) -> str:
        path = self._norm(path)
        parent = os.path.dirname(path)
        if parent and parent not in self.entries:
            self.mkdir(parent)
        return path

    def file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.entries[self._parent(path)] = CpioEntry(stat.S_IFREG | mode, raw)

    def copy(self, path: str, source: str | os.PathLike[str], mode: int | None = None) -> None:
        """Add the contents of ``source`` (symlinks followed) at ``path``."""
        src = Path(source)
        st = src.stat()
        self.file(path, src.read_bytes(), stat.S_IMODE(st.st_mode) if mode is None else mode)

    def symlink(self, path: str, target: str) -> None:
        self.entries[self._parent(path)] = CpioEntry(stat.S_IFLNK | 0o777, target.encode())

    def node(self, path: str, kind: int, major: int, minor: int, mode: int = 0o600) -> None:
        self.entries[self._parent(path)] = CpioEntry(kind | mode, rdev=(major, minor))

    def add_tree(self, root: Path, prefix: str = "") -> None:
        """Add every file, directory and symlink under ``root`` at ``prefix``."""
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            base = os.path.join(prefix, rel) if rel != "." else prefix
            self.mkdir(base)
            for name in sorted(dirnames + filenames):
                full = os.path.join(dirpath, name)
                dest = os.path.join(base, name)
                if os.path.islink(full):
                    self.symlink(dest, os.readlink(full))
                elif os.path.isfile(full):
                    self.copy(dest, full)

    def to_gzip(self, level: int = 6) -> bytes:
        buf = io.BytesIO()
        write_cpio(self.entries, buf)
        return gzip.compress(buf.getvalue(), compresslevel=level, mtime=0)
