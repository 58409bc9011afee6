"""Host and RemoteHost: what every host offers on top of ``run``.

A subclass implements ``_start``/``_run_error`` for the run core (and transfers); everything here —
``run_output``, ``run_grep``, ``is_up``, ``wait_up``/``wait_down`` on a
deadline, ``reboot``, ``get_tmp_dir`` and the system queries — is written
once in terms of it.  Hosts never print: they log to ``autoserv.host.<name>``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import IO, Any, Self

from autoserv import inputs, jobmark, journal
from autoserv.abort import JobAbort
from autoserv.deadline import Deadline, backoff
from autoserv.errors import (
    AutoservError,
    AutoservHostError,
    AutoservHostKeyError,
    AutoservRebootError,
    AutoservRunError,
    AutoservSshPermissionDeniedError,
)
from autoserv.hosts import context, registry
from autoserv.hosts.context import StatusHook
from autoserv.result import CmdResult
from autoserv.run_core import Runner, run_command
from autoserv.streams import TEE_TO_LOGS


def set_status_hook(hook: StatusHook | None) -> None:
    """Where hosts record reboot progress in the current context (a job sets its ``record``)."""
    context.update(record=hook)


class Host(Runner):
    """A machine commands can run on.  Context manager; ``close()`` is idempotent.

    Abstract: a host class implements the run core's ``_start`` and
    ``_run_error`` (:class:`autoserv.run_core.Runner`).
    """

    DENIED_PROBES = 3  # permission-denied probes in a row after which wait_up() gives up

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.log = logging.getLogger(f"autoserv.host.{hostname}")
        self._closed = False
        self._closing = False
        self._tmp_dirs: list[str] = []
        registry.register(self)

    # -- running (transports implement _start and _run_error) --------------
    def run(
        self,
        command: str,
        timeout: float | None = 3600,
        ignore_status: bool = False,
        stdout_tee: IO[str] | Any | None = TEE_TO_LOGS,
        stderr_tee: IO[str] | Any | None = TEE_TO_LOGS,
        connect_timeout: float | None = None,
        stdin: str | bytes | IO[Any] | None = None,
        verbose: bool = True,
        args: Iterable[Any] = (),
    ) -> CmdResult:
        """Run ``command`` on the host; each of ``args`` is appended shell-quoted.

        Output streams live to the host's logger (or to the given file
        objects) and is returned whole.  A non-zero exit raises
        :class:`AutoservRunError` unless ``ignore_status``; a timeout ends the
        command and its children and raises :class:`AutoservRunTimeoutError`
        even with ``ignore_status``.  ``connect_timeout`` bounds reaching the
        host (connecting, opening a channel, the command request) in all.
        The run itself is :func:`autoserv.run_core.run_command`; a host
        class implements ``_start`` and ``_run_error``.
        """
        inputs.check_command(self.hostname, command, args)  # a NUL would break the session
        return run_command(
            self, command, timeout=timeout, ignore_status=ignore_status, stdout_tee=stdout_tee,
            stderr_tee=stderr_tee, connect_timeout=connect_timeout, stdin=stdin, verbose=verbose,
            args=args,
        )

    def _close_connection(self) -> None:
        """Release transport resources (subclasses)."""

    # -- lifecycle -----------------------------------------------------
    def close(self) -> None:
        """Remove the temp dirs made by :meth:`get_tmp_dir`, then disconnect; idempotent."""
        if self._closed or self._closing:
            return
        self._closing = True
        try:
            if self._tmp_dirs:
                try:
                    self.run("rm -rf", args=self._tmp_dirs, timeout=60, connect_timeout=10,
                             ignore_status=True, verbose=False)
                except AutoservError as exc:
                    self.log.warning("could not remove temp dirs %s: %s", self._tmp_dirs, exc)
                self._tmp_dirs = []
        finally:
            self._closed = True
            try:
                self._close_connection()
            finally:
                registry.unregister(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.hostname}>"

    def __str__(self) -> str:
        return self.hostname

    # -- run helpers -----------------------------------------------------
    def run_output(self, command: str, *args: Any, **kwargs: Any) -> str:
        """stdout of ``command``, stripped; raises on failure."""
        return self.run(command, *args, **kwargs).stdout.strip()

    def run_short(self, command: str, **kwargs: Any) -> CmdResult:
        """``run`` with a 60 s timeout."""
        kwargs.setdefault("timeout", 60)
        return self.run(command, **kwargs)

    def run_grep(
        self,
        command: str,
        timeout: float = 30,
        ignore_status: bool = False,
        stdout_ok_regexp: str | None = None,
        stdout_err_regexp: str | None = None,
        stderr_ok_regexp: str | None = None,
        stderr_err_regexp: str | None = None,
        connect_timeout: float = 30,
    ) -> CmdResult:
        """Run ``command`` and judge it by regular expressions over its output.

        An ``*_err_regexp`` match or a missing ``*_ok_regexp`` match raises
        :class:`AutoservRunError`.
        """
        result = self.run(command, timeout=timeout, ignore_status=ignore_status,
                          connect_timeout=connect_timeout)
        for text, ok, err, name in (
            (result.stdout, stdout_ok_regexp, stdout_err_regexp, "stdout"),
            (result.stderr, stderr_ok_regexp, stderr_err_regexp, "stderr"),
        ):
            if err and re.search(err, text):
                raise AutoservRunError(f"{name} of {command!r} matches {err!r}", result)
            if ok and not re.search(ok, text):
                raise AutoservRunError(f"{name} of {command!r} does not match {ok!r}", result)
        return result

    # -- liveness ----------------------------------------------------------
    def is_up(self, timeout: float = 10.0) -> bool:
        """True when a trivial command runs within ``timeout``; never raises."""
        return self._probe(timeout) is None

    def _probe(self, timeout: float) -> Exception | None:
        """Run ``true``; None when it worked, else why not."""
        try:
            self.run("true", timeout=timeout, connect_timeout=timeout, verbose=False,
                     stdout_tee=None, stderr_tee=None)
            return None
        except Exception as exc:
            self.log.debug("%s is not up: %s", self.hostname, str(exc).splitlines()[0])
            return exc

    def _probe_timeout(self, deadline: Deadline, attempt: int) -> float:
        return deadline.remaining(min(10.0, 1.0 * 2 ** min(attempt, 4)))

    def _answers(self, timeout: float) -> bool:
        """A cheap check that the host's service answers at all (before a full probe)."""
        return True

    def wait_up(self, timeout: float | None = None) -> bool:
        """Wait until the host answers; False when ``timeout`` seconds pass first.

        Each probe gets only what is left of the deadline, so the total time is
        bounded even when a probe hangs.  A cheap :meth:`_answers` check runs
        first, so a probe started just before the host comes up cannot hang for
        long, and probes stay at most 0.1 s apart (a refused TCP connect costs
        next to nothing; the bench holds the gap to the first SSH banner).

        A host that answers but can never be logged into is an error, not a
        wait without end: a refused host key raises :class:`AutoservHostKeyError`
        at once, and ``DENIED_PROBES`` permission-denied probes in a row raise
        :class:`AutoservSshPermissionDeniedError`.
        """
        deadline = Deadline(timeout)
        delays = backoff(0.05, 1.5, 0.1)
        attempt = denied = 0
        while True:
            probe = self._probe_timeout(deadline, attempt)
            if probe > 0 and self._answers(min(probe, 0.5 + 0.05 * attempt)):
                failure = self._probe(probe)
                if failure is None:
                    return True
                if isinstance(failure, AutoservHostKeyError):
                    raise failure  # the host answers with a key we refuse: waiting cannot help
                denied = denied + 1 if isinstance(failure, AutoservSshPermissionDeniedError) else 0
                if denied >= self.DENIED_PROBES:
                    raise failure  # up, but refuses our credentials (not a boot-time hiccup)
            attempt += 1
            if deadline.expired():
                return False
            deadline.sleep(next(delays))

    def wait_down(
        self,
        timeout: float | None = None,
        warning_timer: float | None = None,
        old_boot_id: str | None = None,
    ) -> bool:
        """Wait until the host is unreachable or its boot id differs from ``old_boot_id``.

        With ``old_boot_id``, a session that dies under a probe is not proof:
        a host going down often closes sessions before its sshd stops
        listening, and a new connection may still reach the old boot.  Down
        then means a new connection fails, or answers with a new boot id.
        """
        deadline = Deadline(timeout)
        warned = False
        delays = backoff(0.1, 1.5, 1.0)
        while True:
            probe = deadline.remaining(5.0)
            try:
                if probe <= 0:
                    return False
                boot_id = self.get_boot_id(timeout=probe)
                if old_boot_id is not None and boot_id != old_boot_id:
                    self.log.debug("%s has a new boot id: it went down", self.hostname)
                    return True
            except AutoservRunError as exc:
                res = exc.result_obj
                # the session dropped, or its shell was killed by a signal
                ended = res is not None and not res.timed_out and (
                    res.exit_status is None or res.exit_status < 0)
                if old_boot_id is None or not ended:
                    return True
                self.log.debug("%s ended the session; probing on a new connection", self.hostname)
            except Exception:
                return True
            if warning_timer is not None and not warned and deadline.elapsed() > warning_timer:
                self.log.warning("%s still up after %.0f s", self.hostname, deadline.elapsed())
                warned = True
            if deadline.expired():
                return False
            deadline.sleep(next(delays))

    def get_boot_id(self, timeout: float = 60) -> str | None:
        """The kernel's boot id (changes at every boot); None if the kernel has none."""
        out = self.run("cat /proc/sys/kernel/random/boot_id 2>/dev/null || true",
                       timeout=timeout, connect_timeout=timeout, verbose=False,
                       stdout_tee=None, stderr_tee=None).stdout.strip()
        return out or None

    def reboot(
        self,
        timeout: float = 1800,
        label: str | None = None,
        kernel_args: str | None = None,
        wait: bool = True,
        reboot_cmd: str = "reboot",
    ) -> None:
        """Reboot and (with ``wait``) wait for the host to go down and come back.

        Down means unreachable or a changed boot id.  Records ``START reboot``,
        ``GOOD reboot.start``, ``GOOD reboot.verify`` and ``END GOOD reboot`` in
        the job's status.log when run under a job.
        """
        if kernel_args or label:
            self.log.warning("reboot: label/kernel_args are not supported and are ignored")
        record = context.current().record or (lambda *a, **k: None)
        deadline = Deadline(timeout)
        old = self.get_boot_id()
        record("START", None, "reboot")
        try:
            self.run(f"( sleep 1; {reboot_cmd} ) </dev/null >/dev/null 2>&1 &", timeout=30,
                     ignore_status=True)
            self._close_connection()
            record("GOOD", None, "reboot.start")
            if not wait:
                record("END GOOD", None, "reboot")
                return
            if not self.wait_down(timeout=deadline.remaining(), old_boot_id=old):
                raise AutoservRebootError(f"{self.hostname} did not go down within {timeout} s")
            if not self.wait_up(timeout=deadline.remaining()):
                raise AutoservRebootError(f"{self.hostname} did not come back within {timeout} s")
            if old is not None and self.get_boot_id() == old:
                raise AutoservRebootError(f"{self.hostname} answers with its old boot id: "
                                          "it did not reboot")
            record("GOOD", None, "reboot.verify")
        except BaseException as exc:
            word = "END ABORT" if isinstance(exc, JobAbort | KeyboardInterrupt) else "END FAIL"
            record(word, None, "reboot", str(exc).splitlines()[0] if str(exc) else "")
            raise
        record("END GOOD", None, "reboot", optional_fields={"kernel": self.get_kernel_ver()})

    # -- queries -----------------------------------------------------------
    def get_tmp_dir(self, parent: str = "/tmp") -> str:
        """A new remote temporary directory, removed at :meth:`close`."""
        name = f"{jobmark.tmp_prefix(self.hostname)}XXXXXX"  # in a job: marked for cleanup
        path = self.run_output("mktemp -d", args=[f"{parent.rstrip('/') or ''}/{name}"])
        self._tmp_dirs.append(path)
        journal.record("tmpdir", self, path=path)  # for autoserv cleanup (autoserv/journal.py)
        return path

    def get_num_cpu(self) -> int:
        return int(self.run_output("getconf _NPROCESSORS_ONLN 2>/dev/null || "
                                   "grep -c ^processor /proc/cpuinfo"))

    def get_arch(self) -> str:
        return self.run_output("uname -m")

    def get_kernel_ver(self) -> str:
        return self.run_output("uname -r")

    def get_cmdline(self) -> str:
        return self.run_output("cat /proc/cmdline")

    # -- lab lifecycle (autoserv.lifecycle: issue 10) ----------------------------------------
    def verify(self, **kwargs: Any) -> None:
        """Raise unless the host is fit for a job (see :func:`autoserv.lifecycle.verify`)."""
        from autoserv import lifecycle

        lifecycle.verify(self, **kwargs)

    def repair(self, **kwargs: Any) -> list[str]:
        """Repair until it verifies; the steps taken (see :func:`autoserv.lifecycle.repair`)."""
        from autoserv import lifecycle

        return lifecycle.repair(self, **kwargs)

    def cleanup(self, mode: str = "safe") -> str:
        """Clean up after the job; says what it did (see :func:`autoserv.cleanup.cleanup`)."""
        from autoserv import cleanup

        return cleanup.cleanup(self, mode)

    def machine_install(self, **kwargs: Any) -> None:
        """Reinstall with the lab's install hook (see :func:`autoserv.lifecycle.machine_install`)."""
        from autoserv import lifecycle

        lifecycle.machine_install(self, **kwargs)

    def hardreset(self, **kwargs: Any) -> None:
        """Power-cycle with the lab's hardreset hook (see :func:`autoserv.lifecycle.hardreset`)."""
        from autoserv import lifecycle

        lifecycle.hardreset(self, **kwargs)

    @property
    def bootloader(self) -> Any:
        """The original's boot loader control: not supported (one line, at first use)."""
        from autoserv.errors import AutoservUnsupportedError
        from autoserv.unsupported import HOST_ATTRIBUTES

        raise AutoservUnsupportedError(f"host.bootloader: {HOST_ATTRIBUTES['bootloader']}")

    def install(self, installableObject: Any) -> Any:
        """``obj.install(self)``: e.g. ``host.install(kvm_obj)``."""
        return installableObject.install(self)

    # -- Autotest (autoserv.autotest_remote) ----------------------------------
    def run_test(self, test_name: str, **dargs: Any) -> bool:
        """Run Autotest client test ``test_name`` on this host; True if it passed."""
        from autoserv import autotest_remote

        return autotest_remote.Autotest(self).run_test(test_name, **dargs)

    def check_uptime(self) -> str:
        """Seconds since boot (the first field of ``/proc/uptime``); raises if the host is down."""
        if not self.is_up():
            raise AutoservHostError(f"{self.hostname} does not appear to be up")
        return self.run_output("cat /proc/uptime", timeout=30).split()[0]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` with backoff until true or raise after ``timeout``."""
        deadline = Deadline(timeout)
        for delay in backoff(0.05, 1.5, 1.0):
            if predicate():
                return
            if deadline.expired():
                raise AutoservError(f"{self.hostname}: timed out after {timeout} s waiting for {what}")
            deadline.sleep(delay)
        time.sleep(0)  # pragma: no cover


class RemoteHost(Host):
    """A host reached over the network (the Autotest hierarchy level)."""
