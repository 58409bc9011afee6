"""Control files: read, copy to the results dir, compile (translating Python 2), execute.

The code is compiled under the user's own (absolute) file name, and the Python 2
translation keeps every line where it was, so tracebacks and syntax errors name the
user's file and its real line numbers, even though the job runs with the results
directory as its working directory.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tokenize
import traceback
from dataclasses import dataclass, field
from types import CodeType, ModuleType, TracebackType
from typing import Any

from autoserv import errors, legacy

__all__ = [
    "ControlFile",
    "ControlFileSyntaxError",
    "read_source",
    "load",
    "copy_to_results",
    "build_namespace",
    "execute",
    "control_frame",
]

log = logging.getLogger("autoserv.control")


class ControlFileSyntaxError(errors.AutoservError):
    """The control file is neither Python 3 nor translatable Python 2."""

    def __init__(
        self, filename: str, lineno: int | None, offset: int | None, msg: str, note: str = ""
    ) -> None:
        super().__init__(filename, lineno, offset, msg, note)
        self.filename = filename
        self.lineno = lineno
        self.offset = offset
        self.msg = msg
        self.note = note

    def __str__(self) -> str:
        where = self.filename
        if self.lineno:
            where += f":{self.lineno}"
            if self.offset:
                where += f":{self.offset}"
        text = f"{where}: SyntaxError: {self.msg}"
        return f"{text} ({self.note})" if self.note else text


@dataclass
class ControlFile:
    """A loaded control file, ready to execute."""

    path: str  # absolute path of the user's file
    text: str  # the text as copied to the results dir (CRs removed)
    code: CodeType
    translated: bool = False
    changes: list[tuple[int, str]] = field(default_factory=list)
    #: the Python 3 source that was compiled: the translation of a Python 2 file, else ``text``
    source: str = ""

    def __post_init__(self) -> None:
        if not self.source:
            self.source = self.text


def read_source(path: str) -> str:
    """Read a control file as text (PEP 263 encoding), with CR and CRLF turned into LF."""
    with open(path, "rb") as f:
        data = f.read()
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    try:
        encoding, _ = tokenize.detect_encoding(iter(data.splitlines(keepends=True)).__next__)
    except SyntaxError:
        encoding = "utf-8"
    return data.decode(encoding, errors="replace")


def _syntax_error(exc: SyntaxError, path: str, note: str = "") -> ControlFileSyntaxError:
    return ControlFileSyntaxError(path, exc.lineno, exc.offset, exc.msg or str(exc), note)


def load(path: str, text: str | None = None) -> ControlFile:
    """Compile the control file at ``path`` (``text``: its source, if already read).

    Python 3 source is compiled as is.  Source that does not compile is translated
    from Python 2 (:mod:`autoserv.legacy`) and compiled again; if that fails too,
    :class:`ControlFileSyntaxError` names the file, line and column.
    """
    path = os.path.abspath(path)
    if text is None:
        text = read_source(path)
    try:
        return ControlFile(path, text, compile(text, path, "exec", dont_inherit=True))
    except SyntaxError as exc:
        py3_error = exc
    except ValueError as exc:  # e.g. NUL bytes
        raise ControlFileSyntaxError(path, None, None, str(exc)) from None
    try:
        translation = legacy.translate(text, path)
    except SyntaxError:
        # Not even Python 2 tokens: Python 3's own message is the precise one.
        raise _syntax_error(py3_error, path) from None
    if not translation.changed:
        raise _syntax_error(py3_error, path) from None
    try:
        code = compile(translation.source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise _syntax_error(
            exc, path, "not Python 3, and still invalid after Python 2 translation"
        ) from None
    log.info("%s is Python 2: translated %d construct(s) to Python 3", path, len(translation.changes))
    for line, what in translation.changes:
        log.debug("  line %s: %s", line or "*", what)
    return ControlFile(path, text, code, True, translation.changes, translation.source)


def copy_to_results(text: str, resultdir: str, name: str = "control.srv") -> str:
    """Write the control file's ``text`` (CRs removed) to ``<resultdir>/<name>``; return the path."""
    dest = os.path.join(resultdir, name)
    with open(dest, "w", encoding="utf-8") as f:
        f.write(text)
    return dest


class LazyModule(ModuleType):
    # A module of the control-file namespace that is imported when first used.  Why:
    # ``kvm`` pulls in all of autoserv.virt (~13 ms of CPU), paid by every job, while most
    # control files never touch it.  Every attribute (``kvm.KVM``, ``kvm.__doc__``,
    # ``dir(kvm)``) comes from the real module; setting one sets it there.

    def _real(self) -> ModuleType:
        return importlib.import_module(self.__name__)

    @property  # type: ignore[override]
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self._real().__doc__

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._real(), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._real(), attr, value)

    def __dir__(self) -> list[str]:
        return dir(self._real())

    def __repr__(self) -> str:
        return repr(self._real())


def build_namespace(job: Any, control: ControlFile | None = None, **extra: Any) -> dict[str, Any]:
    """The globals a control file runs with (see docs/runner.md)."""
    from autoserv import barrier, hosts, parallel, unsupported, utils

    ssh = job.ssh
    namespace: dict[str, Any] = {
        "__name__": "__main__",
        "job": job,
        "machines": list(job.machines),
        "args": list(job.args),
        "ssh_user": ssh.user,
        "ssh_port": ssh.port,
        "ssh_pass": ssh.password.reveal() if ssh.password is not None else None,
        "os": os,
        "sys": sys,
        "logging": logging,
        "hosts": hosts,
        "kvm": LazyModule("autoserv.kvm"),
        "parallel": parallel.parallel,
        "parallel_simple": job.parallel_simple,
        "subcommand": parallel.subcommand,
        "run": utils.run,
        "get_tmp_dir": utils.get_tmp_dir,
        "sh_escape": utils.sh_escape,
        "parse_machine": hosts.parse_machine,
        "barrier": barrier.barrier,
    }
    namespace.update(unsupported.namespace())  # deb_kernel, ...: one line, not a NameError
    if control is not None:
        namespace["__file__"] = control.path
    namespace.update(legacy.PY2_BUILTINS)  # in every control file, translated or not
    for name in errors.__all__:
        namespace[name] = getattr(errors, name)
    from autoserv import autotest_remote  # Autotest client jobs: autotest_remote, autotest

    namespace.update(autotest_remote.namespace_for(job))
    namespace.update(extra)
    return namespace


def execute(control: ControlFile, namespace: dict[str, Any]) -> None:
    """Run the control file's code in ``namespace`` (in the current directory)."""
    exec(control.code, namespace)  # running the user's control file is the job


def control_frame(exc: BaseException, path: str) -> int | None:
    """The line of the control file ``path`` nearest to where ``exc`` was raised, if any."""
    tb: TracebackType | None = exc.__traceback__
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == path:
            line = lineno
    return line
