"""``autotest_remote``: run Autotest client jobs on hosts (the module control files use).

Control files see this module as ``autotest_remote`` (and by its 2008 name ``autotest``)::

    at = autotest_remote.Autotest(host)
    at.run_test('sleeptest', seconds=1)           # one client test; returns True if it passed
    at.run(control_text_or_path, tag='smoke')     # a whole client control file
    autotest_remote.Autotest().run_test('sleeptest', host=h)
    at.run_test(test, results_dir, machine)       # positional, as real files do

A failed test is recorded (``FAIL``, ``ERROR``...) in status.log and does not raise; a
client that cannot complete (timeout, abort, death, a control file that raised) raises
:class:`AutotestRunError` after recording ``END ABORT`` and collecting its results.
See :mod:`autoserv.client_session` for how a run works on the host and
:mod:`autoserv.client_install` for the installation.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from typing import IO, Any

from autoserv import client_install, client_tests
from autoserv.client_session import ClientRun, RemoteLayout
from autoserv.errors import AutoservError, AutotestAbort, AutotestRunError, AutotestTimeoutError

__all__ = [
    "Autotest",
    "BaseAutotest",
    "AutotestRunError",
    "AutotestTimeoutError",
    "AutotestAbort",
    "client_control_for_test",
    "namespace_for",
]

log = logging.getLogger("autoserv.autotest")


def client_control_for_test(test_name: str, *args: Any, **dargs: Any) -> str:
    """The one-line client control file that runs one test: ``job.run_test('name', k=v)``."""
    parts = [repr(test_name), *map(repr, args)]
    parts += [f"{key}={value!r}" for key, value in dargs.items()]
    return f"job.run_test({', '.join(parts)})\n"


def _is_host(obj: Any) -> bool:
    from autoserv.hosts import Host

    return isinstance(obj, Host)


def _as_host(host: Any) -> Any:
    if isinstance(host, str):
        from autoserv import hosts

        return hosts.create_host(host)
    return host


class Autotest:
    """Installs the client runtime on a host and runs client control files there.

    ``job`` is set by the runner to the running :class:`~autoserv.job.ServerJob` (as
    the original did); outside a job the client's status only goes to the log.
    """

    job: Any = None

    def __init__(self, host: Any = None) -> None:
        self.host = _as_host(host)
        self.autodir: str | None = None
        self.installed = False

    # -- install ------------------------------------------------------------------------
    def install(self, host: Any = None, autodir: str | None = None) -> str:
        """Install (or check) the client runtime on ``host``; return the autodir."""
        host = self._host(host)
        settings = self._settings()
        inst = client_install.install(host, autodir, tmpdir=bool(settings and
                                                                settings.install_in_tmpdir))
        self.autodir = inst.autodir
        self.installed = True
        return inst.autodir

    # -- run ------------------------------------------------------------------------------
    def run(
        self,
        control_file: str | IO[str] | IO[bytes],
        results_dir: str = ".",
        host: Any = None,
        timeout: float | None = None,
        tag: str | None = None,
        parallel_flag: bool = False,
        background: bool = False,
        client_disconnect_timeout: float | None = None,
        *,
        args: Sequence[str] = (),
    ) -> bool | ClientRun:
        """Run a client control file (text, path, URL or file object) on the host.

        Results go to ``results_dir`` (``<results_dir>/<tag>`` with ``tag``); returns
        True when the client recorded no failure.  ``background`` starts the client and
        returns the :class:`ClientRun` at once; its ``wait()`` follows it to the end.
        """
        if _is_host(results_dir) and host is None:  # at.run(control, host)
            results_dir, host = ".", results_dir
        host = self._host(host)
        text, path = _read_control(control_file, self._job_control_dir())
        crun = self._prepare(host, text, path, results_dir, timeout, tag,
                             client_disconnect_timeout, args, parallel_flag)
        crun.start()
        if background:
            return crun
        return crun.wait()

    def run_test(self, test_name: str, results_dir: str = ".", host: Any = None, *args: Any,
                 **dargs: Any) -> bool:
        """Run one client test (``job.run_test(test_name, *args, **dargs)`` on the host)."""
        return self.run_timed_test(test_name, results_dir, host, None, *args, **dargs)

    def run_timed_test(self, test_name: str, results_dir: str = ".", host: Any = None,
                       timeout: float | None = None, *args: Any, **dargs: Any) -> bool:
        """:meth:`run_test` with a timeout for the whole client run."""
        if _is_host(results_dir) and host is None:
            results_dir, host = ".", results_dir
        disconnect = dargs.pop("client_disconnect_timeout", None)
        control = client_control_for_test(test_name, *args, **dargs)
        result = self.run(control, results_dir, host, timeout=timeout,
                          client_disconnect_timeout=disconnect)
        return bool(result)

    # -- pieces -----------------------------------------------------------------------------
    def _host(self, host: Any) -> Any:
        host = _as_host(host) if host is not None else self.host
        if host is None:
            raise AutoservError("Autotest: no host given (Autotest(host) or host=...)")
        return host

    def _job(self) -> Any:
        return type(self).job

    def _settings(self) -> client_tests.TestSettings | None:
        return getattr(self._job(), "tests", None)

    def _job_control_dir(self) -> str | None:
        control = getattr(self._job(), "control", None)
        return os.path.dirname(control) if isinstance(control, str) else None

    def _prepare(self, host: Any, text: str, path: str | None, results_dir: str,
                 timeout: float | None, tag: str | None, disconnect: float | None,
                 args: Sequence[str], parallel_flag: bool = False) -> ClientRun:
        job = self._job()
        autodir = self.install(host)
        near = [p for p in (getattr(job, "control", None), path) if isinstance(p, str)]
        search = client_tests.client_search_path(self._settings(), near)
        tests = client_tests.tests_to_send(text, search)
        name = tag or "default"
        if parallel_flag and not tag:  # clients side by side on one host: own dirs each
            global _parallel_runs
            _parallel_runs += 1
            name = f"default.{os.getpid()}.{_parallel_runs}"
        tests_dirs: list[str] = []
        if tests:
            log.info("%s: sending tests %s", host.hostname, ", ".join(sorted(tests)))
            tests_dirs.append(client_install.send_tests(host, autodir, name, tests))
        local = os.path.abspath(results_dir)
        if tag:
            local = os.path.join(local, tag)
        record = getattr(job, "record_entry", None)
        return ClientRun(
            host=host, layout=RemoteLayout(autodir, name), results_dir=local,
            control_text=text, tests_dirs=tests_dirs, args=list(args), tag=tag,
            timeout=timeout, disconnect_timeout=disconnect, record=record,
        )


_parallel_runs = 0

#: The original's class hierarchy had a ``BaseAutotest``; both names work.
BaseAutotest = Autotest


def _read_control(control_file: str | IO[str] | IO[bytes], near: str | None) -> tuple[str,
                                                                                   str | None]:
    """``(text, local path or None)`` of a control file given as text, path, URL or file."""
    if isinstance(control_file, io.IOBase) or hasattr(control_file, "read"):
        data = control_file.read()  # type: ignore[union-attr]
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        return text, getattr(control_file, "name", None) if isinstance(
            getattr(control_file, "name", None), str) else None
    if not isinstance(control_file, str):
        raise AutoservError(f"control_file must be text, a path or a file, not "
                            f"{type(control_file).__name__}")
    if control_file.startswith(("http://", "https://", "ftp://")) and "\n" not in control_file:
        import urllib.request  # here: ~8 ms of every job's start-up for a rare case

        with urllib.request.urlopen(control_file, timeout=60) as resp:
            return resp.read().decode("utf-8", "replace"), None
    if "\n" not in control_file and len(control_file) < 4096:
        candidates = [control_file]
        if near and not os.path.isabs(control_file):
            candidates.append(os.path.join(near, control_file))
        for candidate in candidates:
            if os.path.isfile(candidate):
                with open(candidate, encoding="utf-8", errors="replace") as f:
                    return f.read(), os.path.abspath(candidate)
        looks_like_path = "/" in control_file or control_file.endswith(
            (".control", ".ctrl", "control")) and "(" not in control_file
        if looks_like_path:
            raise AutoservError(f"client control file {control_file} does not exist")
    return control_file, None


def namespace_for(job: Any) -> dict[str, Any]:
    """What the control-file namespace gets: this module as ``autotest_remote``/``autotest``."""
    import sys

    from autoserv import server_test
    from autoserv.hosts import Host

    Autotest.job = job
    Host.job = job  # type: ignore[attr-defined]  # as the original set hosts.Host.job
    server_test.install_aliases()
    module = sys.modules[__name__]
    return {"autotest_remote": module, "autotest": module}
