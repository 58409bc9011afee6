"""The base class of client tests, ``test.test``, with Autotest's lifecycle.

A test is ``<tests dir>/<name>/<name>.py`` defining ``class <name>(test.test)``.
:func:`runtest` (called by the job in a forked child process) imports it (Python 2
source is translated line for line), builds the instance and runs::

    initialize -> setup (only when `version` changed, under a lock) -> warmup
      -> execute(iterations=None, test_length=None)
           -> run_once, postprocess_iteration   (per iteration)
           -> postprocess
    -> cleanup (also after a failure)

Keyword arguments of ``job.run_test`` go to each method that names them (or takes
``**kwargs``); positional arguments are refused, unknown keywords are an ERROR.
Exceptions from test code map to statuses by their ``exit_status``; any other exception
becomes :class:`~autotest.client.shared.error.UnhandledTestFail` (FAIL).

Files written: ``<outputdir>/keyval`` (``version``, ``param-<name>=<repr>``),
``<outputdir>/results/keyval`` (``write_*_keyval``: ``key{perf}=v`` / ``key{attr}=v``,
sorted, each call followed by one blank line) and ``<outputdir>/debug/<test>.DEBUG``.
"""

from __future__ import annotations

import fcntl
import inspect
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from autotest.client.shared import error, loader, utils

__all__ = ["test", "runtest", "find_test"]

log = logging.getLogger("autotest.test")


def _accepts(func: Callable[..., Any]) -> tuple[bool, bool, list[str]]:
    """(takes *args, takes **kwargs, named keyword-capable parameters) of ``func``."""
    star = dstar = False
    names = []
    for param in inspect.signature(func).parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            star = True
        elif param.kind is param.VAR_KEYWORD:
            dstar = True
        elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            names.append(param.name)
    return star, dstar, names


def _cherry_pick_args(func: Callable[..., Any], args: tuple[Any, ...], dargs: Mapping[str, Any],
                      ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The part of ``args``/``dargs`` that ``func`` accepts."""
    star, dstar, names = _accepts(func)
    p_args = args if star else ()
    p_dargs = dict(dargs) if dstar else {k: v for k, v in dargs.items() if k in names}
    return p_args, p_dargs


def _cherry_pick_call(func: Callable[..., Any], *args: Any, **dargs: Any) -> Any:
    p_args, p_dargs = _cherry_pick_args(func, args, dargs)
    return func(*p_args, **p_dargs)


def _call_test_function(func: Callable[..., Any], *args: Any, **dargs: Any) -> Any:
    """Call test code; exceptions that are not test outcomes become UnhandledTestFail."""
    try:
        return func(*args, **dargs)
    except error.TestBaseException:
        raise
    except Exception as exc:
        raise error.UnhandledTestFail(exc) from exc


def _validate_args(args: tuple[Any, ...], dargs: Mapping[str, Any], *funcs: Callable[..., Any]) -> None:
    if args:
        raise error.TestError("Unnamed arguments not accepted. Please call job.run_test with named args only")
    accepted: set[str] = set()
    for func in funcs:
        _, dstar, names = _accepts(func)
        if dstar:
            return
        accepted.update(names)
    for name in dargs:
        if name not in accepted:
            raise error.TestError(f"Unknown parameter: {name}")


class test:
    """Base class of client tests (Autotest's ``test.test``)."""

    version = 0
    #: True keeps ``srcdir`` when ``version`` changes (it is removed before setup otherwise).
    preserve_srcdir = False

    def __init__(self, job: Any, bindir: str, outputdir: str) -> None:
        self.job = job
        self.autodir = job.autodir
        self.bindir = bindir
        self.outputdir = outputdir
        self.tagged_testname = os.path.basename(outputdir.rstrip(os.sep))
        self.resultsdir = os.path.join(outputdir, "results")
        self.profdir = os.path.join(outputdir, "profiling")
        self.debugdir = os.path.join(outputdir, "debug")
        name = os.path.basename(bindir.rstrip(os.sep))
        self.testdir = os.path.join(job.tmpdir, name)
        self.srcdir = os.path.join(self.testdir, "src")
        for path in (self.resultsdir, self.profdir, self.debugdir, self.testdir):
            os.makedirs(path, exist_ok=True)
        self.tmpdir = tempfile.mkdtemp(prefix=f"{self.tagged_testname}-", dir=job.tmpdir)
        self.iteration = 0
        self._keyvals: list[dict[str, dict[str, Any]]] = []
        self.before_iteration_hooks: list[Callable[[test], None]] = []
        self.after_iteration_hooks: list[Callable[[test], None]] = []

    # -- methods tests override --------------------------------------------------------

    def initialize(self) -> None:
        """Called first, with the keyword arguments it names."""

    def setup(self) -> None:
        """Build/install the test into ``srcdir``; runs once per ``version`` on a host."""

    def warmup(self) -> None:
        """Called before ``execute``."""

    def postprocess_iteration(self) -> None:
        """Called after each ``run_once``."""

    def postprocess(self) -> None:
        """Called after the last iteration (by the base ``execute``)."""

    def cleanup(self) -> None:
        """Called last, also after a failure."""

    def execute(self, iterations: int | None = None, test_length: float | None = None,
                profile_only: bool | None = None, *args: Any, **dargs: Any) -> None:
        """Run ``run_once`` ``iterations`` times (default 1), or for ``test_length`` seconds."""
        run_once = getattr(self, "run_once", None)
        if run_once is None:
            raise error.TestError(f"{type(self).__name__} defines neither run_once() nor execute()")
        if test_length is not None:
            start = time.monotonic()
            count = 0
            while time.monotonic() - start < test_length:
                count += 1
                self._run_iteration(run_once, count, None, args, dargs)
        else:
            total = 1 if iterations is None else int(iterations)
            for number in range(1, total + 1):
                self._run_iteration(run_once, number, total, args, dargs)
        self.postprocess()

    def _run_iteration(self, run_once: Callable[..., Any], number: int, total: int | None,
                       args: tuple[Any, ...], dargs: Mapping[str, Any]) -> None:
        self.iteration = number
        log.info("Executing iteration %d%s of %s", number, f" of {total}" if total else "",
                 self.tagged_testname)
        for hook in self.before_iteration_hooks:
            hook(self)
        run_once(*args, **dargs)
        for hook in self.after_iteration_hooks:
            hook(self)
        self.postprocess_iteration()

    # -- keyvals -----------------------------------------------------------------------

    def write_test_keyval(self, attr_dict: Mapping[str, Any]) -> None:
        """Append to ``<outputdir>/keyval``."""
        utils.write_keyval(self.outputdir, attr_dict)

    def write_perf_keyval(self, perf_dict: Mapping[str, Any]) -> None:
        """One iteration's performance values (``key{perf}=value``)."""
        self.write_iteration_keyval({}, perf_dict)

    def write_attr_keyval(self, attr_dict: Mapping[str, Any]) -> None:
        """One iteration's attributes (``key{attr}=value``)."""
        self.write_iteration_keyval(attr_dict, {})

    def write_iteration_keyval(self, attr_dict: Mapping[str, Any], perf_dict: Mapping[str, Any]) -> None:
        """Append attributes and perf values to ``results/keyval``, then a blank line."""
        self._keyvals.append({"attr": dict(attr_dict), "perf": dict(perf_dict)})
        if attr_dict:
            utils.write_keyval(self.resultsdir, {f"{k}{{attr}}": v for k, v in attr_dict.items()}, "attr")
        if perf_dict:
            utils.write_keyval(self.resultsdir, {f"{k}{{perf}}": v for k, v in perf_dict.items()}, "perf")
        with open(os.path.join(self.resultsdir, "keyval"), "a", encoding="utf-8") as f:
            f.write("\n")

    # -- the lifecycle -----------------------------------------------------------------

    def _setup_once(self, args: tuple[Any, ...], dargs: Mapping[str, Any]) -> None:
        """Run ``setup`` under the test's lock unless ``srcdir/.version`` says this version ran it."""
        with open(os.path.join(self.testdir, ".setup.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            version_file = os.path.join(self.srcdir, ".version")
            try:
                with open(version_file, encoding="utf-8") as f:
                    done = f.read() == repr(self.version)
            except OSError:
                done = False
            if done:
                log.debug("%s: setup already done for version %r", self.tagged_testname, self.version)
                return
            if os.path.isdir(self.srcdir) and not self.preserve_srcdir:
                shutil.rmtree(self.srcdir)
            os.makedirs(self.srcdir, exist_ok=True)
            _call_test_function(_cherry_pick_call, self.setup, *args, **dargs)
            os.makedirs(self.srcdir, exist_ok=True)
            with open(version_file, "w", encoding="utf-8") as f:
                f.write(repr(self.version))

    def _exec(self, args: tuple[Any, ...], dargs: Mapping[str, Any]) -> None:
        dargs = dict(dargs)
        run_cleanup = dargs.pop("run_cleanup", True)
        keyvals = dict(dargs.pop("test_attributes", {}) or {})
        keyvals["version"] = self.version
        for index, arg in enumerate(args):
            keyvals[f"param-{index}"] = repr(arg)
        for name, arg in dargs.items():
            keyvals[f"param-{name}"] = repr(arg)
        self.write_test_keyval(keyvals)
        funcs = [self.initialize, self.setup, self.warmup, self.execute, self.cleanup]
        if hasattr(self, "run_once"):
            funcs.append(self.run_once)
        _validate_args(args, dargs, *funcs)
        try:
            _call_test_function(_cherry_pick_call, self.initialize, *args, **dargs)
            self._setup_once(args, dargs)
            os.chdir(self.outputdir)
            _call_test_function(_cherry_pick_call, self.warmup, *args, **dargs)
            run_once = getattr(self, "run_once", None)
            if run_once is not None:
                p_args, p_dargs = _cherry_pick_args(run_once, args, dargs)
                _, _, execute_names = _accepts(self.execute)
                for name in execute_names:  # execute's own named parameters (iterations...)
                    if name in dargs:
                        p_dargs[name] = dargs[name]
            else:
                p_args, p_dargs = _cherry_pick_args(self.execute, args, dargs)
            _call_test_function(self.execute, *p_args, **p_dargs)
        except BaseException:
            if run_cleanup:
                try:
                    _call_test_function(_cherry_pick_call, self.cleanup, *args, **dargs)
                except Exception:
                    log.exception("Ignoring exception during cleanup() after an earlier failure")
            raise
        if run_cleanup:
            _call_test_function(_cherry_pick_call, self.cleanup, *args, **dargs)


def find_test(name: str, test_dirs: list[str]) -> str | None:
    """The directory of test ``name`` (``<dir>/<name>/<name>.py``) in ``test_dirs``, first hit."""
    for directory in test_dirs:
        candidate = os.path.join(directory, name)
        if os.path.isfile(os.path.join(candidate, f"{name}.py")):
            return os.path.abspath(candidate)
    return None


class _Tee:
    """A text stream writing to two streams (the child's stdout and its debug file)."""

    def __init__(self, first: Any, second: Any) -> None:
        self._streams = (first, second)

    def write(self, text: str) -> int:
        for stream in self._streams:
            stream.write(text)
            stream.flush()
        return len(text)

    def flush(self) -> None:
        for stream in self._streams:
            stream.flush()

    def fileno(self) -> int:
        return int(self._streams[0].fileno())

    def isatty(self) -> bool:
        return False


def runtest(job: Any, name: str, bindir: str, outputdir: str, args: tuple[Any, ...],
            dargs: Mapping[str, Any]) -> None:
    """Import test ``name`` from ``bindir`` and run its lifecycle (in the current process)."""
    debugdir = os.path.join(outputdir, "debug")
    os.makedirs(debugdir, exist_ok=True)
    debug_file = open(os.path.join(debugdir, f"{os.path.basename(outputdir)}.DEBUG"), "a",
                      encoding="utf-8")
    handler = logging.StreamHandler(debug_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5.5s| %(message)s"))
    logging.getLogger().addHandler(handler)
    sys.stdout = _Tee(sys.stdout, debug_file)  # type: ignore[assignment]
    sys.stderr = _Tee(sys.stderr, debug_file)  # type: ignore[assignment]
    loader.install_test_finder([bindir])
    path = os.path.join(bindir, f"{name}.py")
    try:
        module = loader.load_module(name, path)
    except loader.SourceSyntaxError as exc:
        raise error.TestError(f"{name}: {exc}") from None
    except error.TestBaseException:
        raise
    except Exception as exc:
        raise error.UnhandledTestError(exc) from exc
    cls = getattr(module, name, None)
    if not isinstance(cls, type) or not issubclass(cls, test):
        raise error.TestError(f"{name}: {path} defines no class {name}(test.test)")
    instance = cls(job, bindir, outputdir)
    try:
        instance._exec(tuple(args), dargs)
    finally:
        shutil.rmtree(instance.tmpdir, ignore_errors=True)
