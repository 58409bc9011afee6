"""The KVM/QEMU source on the controller: fetched, checked, packed for sending.

:class:`Source` is what ``kvm.get(location)`` fills: a local archive or
directory, a downloaded URL, or a copy of a file object, and then, for
``kvm.install``, one archive with its ``tar`` flag and a content key (a
directory is tarred first).  Temporary copies live in one directory that
:meth:`Source.drop` removes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import IO

from autoserv.errors import AutoservError, AutoservInstallError

__all__ = ["ARCHIVE_SUFFIXES", "archive_tar_flag", "archive_stem", "Source"]

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar")
"""The archive names autoserv can unpack."""


def archive_tar_flag(name: str, head: bytes = b"") -> str:
    """The ``tar -x`` compression flag for an archive: ``z``, ``j``, ``J`` or ``""``.

    Judged by the file's magic bytes (``head``, the first 512 bytes) and, when
    those are absent, by its name; anything else is an :class:`AutoservInstallError`.
    """
    if head.startswith(b"\x1f\x8b"):
        return "z"
    if head.startswith(b"BZh"):
        return "j"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "J"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return ""
    lower = name.lower()
    for suffixes, flag in (((".tar.gz", ".tgz"), "z"), ((".tar.bz2", ".tbz2"), "j"),
                           ((".tar.xz", ".txz"), "J"), ((".tar",), "")):
        if lower.endswith(suffixes) and not head:
            return flag
    raise AutoservInstallError(
        f"{name}: not a source archive autoserv can unpack ({', '.join(ARCHIVE_SUFFIXES)})"
    )


def archive_stem(name: str) -> str:
    """``name`` without its archive suffix (``kvm-33.tar.gz`` → ``kvm-33``)."""
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


class Source:
    """The source given to ``kvm.get``, held on the controller until :meth:`drop`."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.path: str | None = None  # local path (file or directory)
        self._tmp: str | None = None

    def get(self, location: str | os.PathLike[str] | IO[bytes] | IO[str]) -> str:
        """Fetch the source to the controller; returns the local path.

        ``location``: a local file or directory, an ``http://``, ``https://``
        or ``ftp://`` URL (downloaded, progress in the log), or a readable file
        object.  A missing path or a failed download is an :class:`AutoservError`.
        """
        self.drop()
        if hasattr(location, "read"):
            name = os.path.basename(str(getattr(location, "name", "") or "")) or "source.tar"
            self._tmp = tempfile.mkdtemp(prefix="autoserv-kvm-src-")
            path = os.path.join(self._tmp, name)
            with open(path, "wb") as out:
                while True:
                    chunk = location.read(1 << 20)  # type: ignore[union-attr]
                    if not chunk:
                        break
                    out.write(chunk.encode() if isinstance(chunk, str) else chunk)
            self.path = path
            self.log.info("kvm source from a file object: %s (%d bytes)", name, os.path.getsize(path))
            return path
        loc = os.fspath(location)  # type: ignore[arg-type]
        scheme = urllib.parse.urlsplit(loc).scheme.lower()
        if scheme in ("http", "https", "ftp"):
            self.path = self._download(loc)
            return self.path
        if scheme == "file":
            loc = urllib.parse.unquote(urllib.parse.urlsplit(loc).path)
        elif scheme and len(scheme) > 1:
            raise AutoservError(f"kvm.get: unsupported URL scheme {scheme!r} in {loc!r}")
        if not os.path.exists(loc):
            raise AutoservError(f"kvm.get: {loc} does not exist (expected a file, a directory or a URL)")
        if os.path.isfile(loc):
            with open(loc, "rb") as f:
                archive_tar_flag(loc, f.read(512))
        self.path = os.path.abspath(loc)
        self.log.info("kvm source: %s", self.path)
        return self.path

    def _download(self, url: str) -> str:
        name = os.path.basename(urllib.parse.urlsplit(url).path) or "source.tar.gz"
        self._tmp = tempfile.mkdtemp(prefix="autoserv-kvm-src-")
        path = os.path.join(self._tmp, name)
        self.log.info("downloading %s", url)
        start = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(path, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0)
                done = 0
                last = start
                while True:
                    chunk = resp.read(1 << 18)
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    now = time.monotonic()
                    if now - last >= 2.0:
                        last = now
                        pct = f" ({100 * done // total}%)" if total else ""
                        self.log.info("downloaded %d of %s bytes%s", done, total or "?", pct)
                if total and done != total:
                    raise AutoservError(f"kvm.get: download of {url} truncated ({done} of {total} bytes)")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.drop()
            if isinstance(exc, urllib.error.HTTPError):
                reason: object = f"HTTP {exc.code} {exc.reason}"
            else:
                reason = getattr(exc, "reason", None) or exc
            raise AutoservError(f"kvm.get: cannot download {url}: {reason}") from None
        except BaseException:
            self.drop()
            raise
        self.log.info("downloaded %s: %d bytes in %.1f s", url, done, time.monotonic() - start)
        with open(path, "rb") as f:
            archive_tar_flag(name, f.read(512))
        return path

    def archive(self) -> tuple[str, str, str]:
        """(local archive path, tar flag, content key); a directory is tarred first."""
        if self.path is None:
            raise AutoservInstallError("kvm.install: call get(location) first to fetch the source")
        src = self.path
        if os.path.isdir(src):
            name = os.path.basename(src.rstrip("/")) or "tree"
            self._tmp = self._tmp or tempfile.mkdtemp(prefix="autoserv-kvm-src-")
            path = os.path.join(self._tmp, f"{name}.tar")
            with tarfile.open(path, "w") as tar:
                tar.add(src, arcname=name)
            src = path
        with open(src, "rb") as f:
            flag = archive_tar_flag(src, f.read(512))
            digest = hashlib.sha256()
            f.seek(0)
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return src, flag, digest.hexdigest()[:16]

    def drop(self) -> None:
        """Remove the temporary copies (idempotent); the source is kept if it was local."""
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
