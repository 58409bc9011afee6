"""Server-side Autotest tests: the ``test`` base class and ``job.run_test`` on the controller.

A server test is ``<dir>/<name>/<name>.py`` defining ``class <name>(test.test)``, found in
every ``--server-tests DIR`` and then in ``server/tests`` next to the control file.  It
imports its base class as ``from autotest.server import test`` (or
``from autotest_lib.server import test``): :func:`install_aliases` makes those names (and
``...client.shared.error`` / ``...client.common_lib.error``, ``utils``) importable on the
controller while a control file runs.  Python 2 test files are translated like control
files.

Lifecycle, as Autotest's: ``initialize`` -> ``setup`` (once per ``version`` in this job)
-> ``warmup`` -> ``execute(iterations=None, test_length=None, ...)`` (by default
``run_once`` per iteration, each followed by ``postprocess_iteration``) -> ``postprocess``
-> ``cleanup`` (also after a failure).  Keyword arguments go to each method that takes
them.  ``job.run_test`` records ``START <subdir> <name>``, then ``GOOD ... completed
successfully`` or the failure status (``TestFail`` -> FAIL, ``TestError`` -> ERROR,
``TestNAError`` -> TEST_NA, ``TestWarn`` -> WARN, any other exception -> FAIL), then
``END <status>``, and returns True or False: a failed test never raises.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import shutil
import sys
import tempfile
import traceback
import types
from collections.abc import Callable, Mapping
from typing import Any

from autoserv import client_tests, errors, legacy
from autoserv import control as control_mod

__all__ = ["test", "run_test", "install_aliases", "load_test_class", "write_keyval_file"]

log = logging.getLogger("autoserv.server_test")

_setup_done: dict[str, Any] = {}  # test name -> version set up in this process


def write_keyval_file(path: str, data: Mapping[str, object], suffix: str = "") -> None:
    """Append ``key[{suffix}]=value`` lines to the keyval file ``path``."""
    lines = []
    for key, value in data.items():
        text = str(value)
        if "\n" in text or not key or any(c in key for c in "=\n"):
            raise ValueError(f"invalid keyval {key!r}={text!r}")
        lines.append(f"{key}{{{suffix}}}={text}\n" if suffix else f"{key}={text}\n")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(lines))


class test:
    """Base class of server-side tests (``autotest.server.test.test``)."""

    version = 0
    preserve_srcdir = False

    def __init__(self, job: Any, bindir: str, outputdir: str) -> None:
        self.job = job
        self.bindir = bindir
        self.outputdir = outputdir
        self.tagged_testname = os.path.basename(outputdir)
        self.resultsdir = os.path.join(outputdir, "results")
        self.debugdir = os.path.join(outputdir, "debug")
        self.profdir = os.path.join(outputdir, "profiling")
        self.autodir = getattr(job, "autodir", "")
        name = type(self).__name__
        self.tmpdir = tempfile.mkdtemp(prefix=f"autoserv-{name}-")
        self.srcdir = os.path.join(tempfile.gettempdir(), "autoserv-server-tests", name, "src")
        self.iteration = 0
        self._new_iteration = True
        for d in (self.resultsdir, self.debugdir, self.srcdir):
            os.makedirs(d, exist_ok=True)

    # -- what tests override -------------------------------------------------------------
    def _step(self) -> None:
        """A step of the lifecycle that a test may override; by default it does nothing."""

    initialize = setup = warmup = run_once = _step
    postprocess_iteration = postprocess = cleanup = _step

    def execute(self, iterations: int | None = None, test_length: float | None = None,
                *args: Any, **dargs: Any) -> None:
        """Run ``run_once`` ``iterations`` times (default 1), each followed by
        ``postprocess_iteration``, then ``postprocess``."""
        count = 1 if iterations is None else int(iterations)
        for i in range(count):
            self.iteration = i + 1
            self._new_iteration = True
            _call(self.run_once, args, dargs)
            self.postprocess_iteration()
        self.postprocess()

    # -- keyvals ---------------------------------------------------------------------------
    def _keyval_path(self) -> str:
        return os.path.join(self.resultsdir, "keyval")

    def _iteration_break(self) -> None:
        path = self._keyval_path()
        if self._new_iteration and os.path.exists(path) and os.path.getsize(path):
            with open(path, "a", encoding="utf-8") as f:
                f.write("\n")
        self._new_iteration = False

    def write_perf_keyval(self, perf_dict: Mapping[str, object]) -> None:
        self._iteration_break()
        write_keyval_file(self._keyval_path(), perf_dict, "perf")

    def write_attr_keyval(self, attr_dict: Mapping[str, object]) -> None:
        self._iteration_break()
        write_keyval_file(self._keyval_path(), attr_dict, "attr")

    def write_iteration_keyval(self, attr_dict: Mapping[str, object],
                               perf_dict: Mapping[str, object]) -> None:
        self._iteration_break()
        if attr_dict:
            write_keyval_file(self._keyval_path(), attr_dict, "attr")
        if perf_dict:
            write_keyval_file(self._keyval_path(), perf_dict, "perf")

    def write_test_keyval(self, attr_dict: Mapping[str, object]) -> None:
        write_keyval_file(os.path.join(self.outputdir, "keyval"), attr_dict)

    # -- the lifecycle -----------------------------------------------------------------------
    def _run_lifecycle(self, args: tuple[Any, ...], dargs: dict[str, Any]) -> None:
        keyvals: dict[str, object] = {"version": self.version}
        keyvals.update({f"param-{i}": repr(a) for i, a in enumerate(args)})
        keyvals.update({f"param-{k}": repr(v) for k, v in dargs.items()})
        self.write_test_keyval(keyvals)
        try:
            _call(self.initialize, (), dargs)
            name = type(self).__name__
            if _setup_done.get(name, object()) != self.version:
                _call(self.setup, (), dargs)
                _setup_done[name] = self.version
            _call(self.warmup, (), dargs)
            _call(self.execute, args, dargs)
        finally:
            try:
                _call(self.cleanup, (), dargs)
            finally:
                shutil.rmtree(self.tmpdir, ignore_errors=True)


def _call(method: Callable[..., Any], args: tuple[Any, ...], dargs: Mapping[str, Any]) -> Any:
    """Call ``method`` with the keyword arguments its signature accepts."""
    sig = inspect.signature(method)
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return method(*args, **dargs)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return method(*args, **{k: v for k, v in dargs.items() if k in names})


def load_test_class(name: str, directory: str) -> type:
    """Import ``<directory>/<name>.py`` (Python 2 translated) and return its class ``name``."""
    path = os.path.join(directory, f"{name}.py")
    control = control_mod.load(path)
    module = types.ModuleType(f"autoserv_server_tests.{name}")
    module.__file__ = path
    if control.translated:
        module.__dict__.update(legacy.PY2_BUILTINS)
    sys.path.insert(0, directory)
    try:
        exec(control.code, module.__dict__)  # importing the user's test module
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(directory)
    cls = module.__dict__.get(name)
    if not isinstance(cls, type):
        raise errors.TestError(f"{path} defines no class {name}")
    return cls


def run_test(job: Any, url: str, *args: Any, **dargs: Any) -> bool:
    """``job.run_test`` on the server: run server test ``url``; True if it passed."""
    tag = dargs.pop("tag", None)
    subdir_tag = dargs.pop("subdir_tag", None)
    dargs.pop("timeout", None)
    name = os.path.basename(str(url).rstrip("/"))
    subdir = name + (f".{tag}" if tag else "") + (f".{subdir_tag}" if subdir_tag else "")
    near = [job.control] if isinstance(getattr(job, "control", None), str) else []
    search = client_tests.server_search_path(getattr(job, "tests", None), near)
    # the job runs in its results dir (a machine's subdir inside parallel_simple); with -N
    # there is none, and the test writes to a scratch directory removed when it ends
    scratch = None if getattr(job, "resultdir", None) else tempfile.mkdtemp(
        prefix="autoserv-server-test-")
    try:
        return _run_in(job, name, subdir, search, scratch or os.getcwd(), args, dargs)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _run_in(job: Any, name: str, subdir: str, search: list[str], base: str,
            args: tuple[Any, ...], dargs: dict[str, Any]) -> bool:
    """:func:`run_test` with the test's output under ``base``."""
    outputdir = os.path.join(base, subdir)
    testname = subdir  # Autotest records the tagged name as the operation too
    job.record("START", subdir, testname)
    try:
        directory = client_tests.find_test(name, search)
        if directory is None:
            raise errors.TestError(f"{name}: test does not exist")
        if os.path.exists(outputdir):
            raise errors.TestError(f"{subdir}: results directory {outputdir} already exists")
        os.makedirs(outputdir)
        cls = load_test_class(name, directory)
        instance = cls(job, directory, outputdir)
        instance._run_lifecycle(args, dargs)
    except errors.TestBaseException as exc:
        word = exc.exit_status if exc.exit_status in ("FAIL", "ERROR", "TEST_NA", "WARN") \
            else "ERROR"
        job.record(word, subdir, testname, str(exc))
        job.record(f"END {word}", subdir, testname)
        return False
    except Exception as exc:
        text = f"Unhandled {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        job.record("FAIL", subdir, testname, text)
        job.record("END FAIL", subdir, testname)
        return False
    job.record("GOOD", subdir, testname, "completed successfully")
    job.record("END GOOD", subdir, testname)
    return True


def install_aliases() -> None:
    """Make ``autotest.server.test``, ``autotest_lib.server.test`` and the client-side
    ``error``/``utils`` names importable on the controller (never replacing real ones)."""
    from autoserv import utils

    this = sys.modules[__name__]
    tree: dict[str, Any] = {
        "autotest.server.test": this,
        "autotest_lib.server.test": this,
        "autotest.client.shared.error": errors,
        "autotest.client.shared.utils": utils,
        "autotest_lib.client.common_lib.error": errors,
        "autotest_lib.client.common_lib.utils": utils,
    }
    for dotted, module in tree.items():
        parts = dotted.split(".")
        for i in range(1, len(parts)):
            pkg = ".".join(parts[:i])
            if pkg not in sys.modules:
                mod = types.ModuleType(pkg, "autoserv import alias")
                mod.__path__ = []
                sys.modules[pkg] = mod
        if dotted not in sys.modules:
            sys.modules[dotted] = module
        parent = sys.modules[".".join(parts[:-1])]
        if not hasattr(parent, parts[-1]):
            setattr(parent, parts[-1], sys.modules[dotted])
