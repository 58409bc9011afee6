"""The thread worker model of :mod:`autoserv.parallel` (``AUTOSERV_WORKERS=threads``).

Why: a forked process per machine costs the controller 36-45 ms of CPU per machine
(measured below), most of it fork, copy-on-write faults after it, and process exit; the
same connect+auth+exec done in one process costs ~7 ms.  A worker thread pays only the
latter.  What a forked worker got for free from its own copy of the process, a thread gets
from its :class:`~autoserv.scope.Scope` and from Linux:

* its own working directory: the thread unshares its filesystem context
  (``unshare(CLONE_FS)``), then ``chdir`` into ``<results>/<arg>/`` moves only it;
* its own status.log, keyval, failures, console prefix (the job's
  :class:`~autoserv.scope.PerWorker` attributes), logging handlers and ``print`` lines
  (:mod:`autoserv.logging_setup`), hosts context, and open hosts (closed at its end);
* an abort of its own: signals reach only the main thread, so the controller raises
  :class:`WorkerAbort` in the worker (``PyThreadState_SetAsyncExc``) on the overall
  timeout or when the job is aborted.  Host commands and barriers wait in slices of at most
  0.5 s, so the worker unwinds through its abort path (remote command killed, hosts closed,
  ``END ABORT`` written) within that; a worker stuck in one long C call (``time.sleep(1000)``)
  cannot be interrupted: after the grace its hosts are closed under it, and after a second
  grace it is abandoned (reported as such; the thread is a daemon).

What threads do not give: a worker that crashes the interpreter (a segfault in C code,
``os._exit``) takes the job down, and a control file that changes process-wide state
(signal handlers, module globals, ``os.environ``) changes it for every worker.  That is
why this model is opt-in, and why the per-process model remains the default
(tests/test_parallel.py also checks that each argument runs in a process of its own).

Figures (2 cores shared with other work, so noisy: both models measured in the same
window, ratios are what counts).  Loopback test bed, ``parallel_simple(lambda m:
hosts.create_host(m).run('uname -a'), machines)``, ``/usr/bin/time -v``; CPU = user+sys of
autoserv and its reaped children, per machine, including ~0.5 s of start-up (N=2 costs
0.5 s in both models); the mean of 2 runs (500: fork 1 run, threads 2)::

    N     fork: wall  CPU/machine  RSS     threads: wall  CPU/machine  RSS    ratio wall  CPU
    50          3.4 s   37.7 ms    46 MB            1.6 s   19.2 ms    52 MB     0.46    0.51
    200        12.9 s   31.2 ms    47 MB            6.5 s   15.4 ms    54 MB     0.50    0.49
    500        41.2 s   35.5 ms    49 MB           14.9 s   15.4 ms    67 MB     0.36    0.43
    260 netns  13.8 s   30.4 ms    49 MB            7.8 s   14.6 ms    58 MB     0.57    0.48

Against asyncssh (``python -m bench.peers asyncssh``: one event loop, ``asyncio.gather``), in
one later window (500-host loopback bed, mean of 2; ratio = ours / asyncssh)::

    N     asyncssh  wall  CPU/machine   threads  wall   ratio   fork  wall   ratio
    50              1.9 s   11.3 ms              3.4 s  1.76          4.8 s  2.49
    200             4.6 s    5.4 ms              6.6 s  1.42         14.9 s  3.2
    500            12.4 s    4.3 ms             14.3 s  1.15         30.4 s  2.45

Without the start-up, a thread costs the controller ~10-15 ms per machine against ~26-35 ms
for a process.  The wall time of the thread model is close to what the hosts' own sshd
CPU allows on two cores.  Why threads in the controller rather than a pool of forked
processes running threads: the pool still needs everything above for the threads inside
it, and isolates a crash only per process, not per machine; what it would add is a fork
per process and the pipe protocol.

Since then (2026-12-04, ``python -m bench --only fanout``, netns test bed, medians; the
asyncssh peer in the same run): each machine stopped paying for the size of the lab (ssh
config lookups and known_hosts reads that scanned every machine's entry), channels are
waited on with ``poll`` (``select`` failed 56 of 1000 machines: descriptors above 1023),
the journal's fsyncs are shared, the collector runs less often during a fan-out::

    N      threads wall  CPU/machine   asyncssh wall  CPU/machine   ratio   fork ratio
    50          1.00 s     12.9 ms          0.76 s       6.5 ms      1.33      1.85
    250         4.46 s      9.9 ms          3.29 s       3.8 ms      1.36      1.93
    1000       19.38 s     10.8 ms         14.29 s       3.1 ms      1.36        -
    50          1.01 s     11.4 ms          0.84 s       7.4 ms      1.21      1.57   (final code)
    250         4.00 s      7.9 ms          3.84 s       4.2 ms      1.04      1.80   (final code)
    1000       18.08 s      9.1 ms         14.47 s       3.1 ms      1.25        -   (final code)
    1000       16.00 s      7.6 ms         14.32 s       3.1 ms      1.12        -   (final code)

(1000 loopback hosts, ``/usr/bin/time``: 15.3-15.9 s and 7.7 ms per machine; the netns
bed's packets cost the controller's kernel time too.)  What remains is paramiko itself:
connect + auth + exec of one machine costs ~5 ms of CPU in one thread (raw paramiko
~4.7 ms), against ~3 ms for asyncssh, and the hosts' sshd share the same two cores.

2026-12-07, where the CPU goes (250 loopback hosts, ``uname -a``, ~7-8 ms per machine in
total; profiles by perf, py-spy, strace, and A/B runs of one change at a time):

* paramiko in threads is most of it: 250 raw paramiko connections in 250 threads cost
  4.3-4.9 ms each, autoserv's ``SSHHost`` in threads the same (5.4-6.0 ms with its own
  0.15 s start-up); crypto (cryptography, libsodium, OpenSSL) is under 3% of the CPU, the
  rest is the interpreter and the kernel, of which futex calls (the GIL changing hands
  between 2 threads per machine) are 7-17%;
* the job layer (results subdir, status.log, keyval, 4 debug files, logging, progress):
  1.2 ms per machine with no SSH at all at 250 machines, 1.8-2.8 ms at 1000 (start-up
  included; a quarter of it futex calls); creating the 9 files and directories of each
  machine cost 2-3.5 ms of kernel time in runs where other processes had just deleted many
  files (ext4 then scans recently freed inodes; openat and mkdir were 23-36% of the CPU),
  0.15-0.5 ms otherwise;
* start-up: a 2-machine job costs 0.31-0.33 s of CPU with bytecode compiled (asyncssh's
  peer 0.25-0.36 s), of which ``kvm`` was 13 ms (now imported on first use); without
  bytecode (an editable install under ``PYTHONDONTWRITEBYTECODE``) 90 ms more, which the
  bench avoids by compiling the checkout;
* the main thread starts the workers one by one, each start waiting twice for the GIL:
  250 starts take 2.8-3.0 s of a 3.7 s run.  Starting them all at once behind a gate is
  worse (10.6-13.1 against 8.1-10.8 ms per machine, 4 pairs): the staggered start spreads
  the handshakes;
* the hosts' sshd: 19.7-20.8 ms of CPU per connection for us in the bench runs, 18.4-21.5
  for asyncssh; measured apart (5 rounds of 250, 25 at a time, +-1 ms between rounds): raw
  paramiko 17.8, asyncssh 18.0, raw paramiko with our command wrapper 18.5 (its ``eval``
  makes bash fork for the command: 1.87 -> 2.28 ms per ``bash -c``), ``SSHHost`` 19.7;
  one connection at a time, ``SSHHost`` and raw paramiko with the wrapper cost the hosts
  the same (21.9 and 21.9 ms, 4 rounds of 100): the rest of the difference comes with
  concurrency, not with what we send.

Changed: the 50 ms switch interval (:func:`longer_switch_interval`: 7.13 -> 6.98 ms per
machine in 6 A/B pairs of this code, 8.31 -> 7.95 in 6 runs with the interval set for the
whole process), ``kvm`` imported on first use (-13 ms of every start), the progress summary
reading only status.log (-32 us of main-thread work per machine).  Tried without gain: AES-GCM
instead of aes128-ctr + HMAC, a buffered socket under paramiko's packetizer (fewer
``recv`` calls: no less CPU), a 1 ms switch interval (worse).  The bench on this code
(netns bed, asyncssh in the same run; ``bench/results/2026-12-07-*``)::

    N      threads wall  CPU/machine   asyncssh wall  CPU/machine   ratio   fork ratio
    50          1.13 s     12.2 ms          1.00 s       7.4 ms      1.13      2.06
    250         4.23 s      8.0 ms          3.82 s       3.8 ms      1.11      2.07
    1000       17.10 s      7.8 ms         16.35 s       3.3 ms      1.05        -

(1000: trials of 0.97x and 1.13x; peak PSS 66 MiB against 62 MiB.  A second 50/250 run:
1.11x with 9.8 ms, 1.11x with 8.2 ms; fork 1.80x and 2.00x.)  The target, <= 1.0x
asyncssh, is still missed at 50 and 250, and at 1000 in the median: paramiko's Python and
the GIL cost 4-5 ms per machine where asyncssh's whole run costs 3.3-3.8.

Later the same day, four changes that each showed in A/B runs or traces:

* no ``threading.Timer`` per connection for paramiko's handshake timeout
  (:func:`autoserv.hosts.paramiko_ext.install_handshake_clock`): 1.55 -> 1.27 s of CPU for
  250 raw paramiko connections in threads (medians of 4);
* a closed connection's thread ends at once (the socket is shut down, which wakes its
  ``poll``; closing the descriptor does not): 93 of 250 transport threads were still alive
  when the job ended, and the process's exit after ``main`` went from 0.19-0.22 s to
  0.11 s (250 machines; peak PSS at 1000 was 54 MiB in the bench below, 66 MiB before);
* a machine's debug files are one handler that formats each record once, and a level's
  file is made by its first record (2 inodes fewer per machine: ext4's inode search was
  up to 10% of the CPU, ``perf``, after other processes had deleted many files);
* the remote command is the last line of the shell's ``-c`` string instead of ``eval``'d,
  so bash execs it instead of forking: the hosts' sshd CPU per connection at 250 went
  from 20.6-21.0 ms to 18.6-18.7 (asyncssh's: 17.8-18.1), at 1000 to 17.9 (asyncssh's:
  20.0).

The bench on that code (netns bed; ``bench/results/2026-12-07-*-after*``)::

    N      threads wall  CPU/machine   asyncssh wall  CPU/machine   ratio   fork ratio
    50          0.94 s     10.7 ms          0.77 s       6.8 ms      1.22      1.70
    250         3.78 s      7.9 ms          3.02 s       3.5 ms      1.25      1.84
    50          0.98 s     10.9 ms          0.82 s       7.1 ms      1.18      1.60   (2nd run)
    250         3.75 s      7.6 ms          3.10 s       3.5 ms      1.21      1.84   (2nd run)
    1000       15.12 s      6.9 ms         13.80 s       3.1 ms      1.10        -

(1000: trials of 1.02x and 1.18x, peak PSS 54 MiB against 63 MiB.)  The ratios at 50 and
250 did not move beyond the noise: the run is CPU-bound on two cores, and what decides it
is the controller's CPU per machine, still twice asyncssh's.  Tried and not kept: freezing
the heap for the collector during the fan-out (no gain), starting worker threads without
waiting for each to run (worse, as the gate above), ending the process with ``os._exit``
after the reports (0.1 s less at 250 machines, 0.03-0.07 s at 50, but a control file's
unclosed files and ``__del__`` would be lost).

In the evening the bench gained raw paramiko in threads as a reference (``--tools paramiko``:
socket, ``Transport``, key auth, one ``exec``; no config, no host key check, no job).  In the
same runs (``bench/results/2026-12-07-*-paramiko*``)::

    N      threads wall  CPU/machine   raw paramiko  CPU/machine   asyncssh  CPU/machine
    50     1.00 (1.00)   11.1 (11.7)   0.90 (1.00)    8.1 (10.2)   1.00 s    9.5 (10.3)
    250    1.18 (1.12)    7.7 (7.5)    1.19 (1.04)    8.5 (6.2)    3.39 s    3.9 (4.5)
    1000   1.13 (1.21)    9.0 (9.7)    0.95 (1.77)    6.6 (28.2)  17.31 s    4.2 (4.0)

(walls as ratios to asyncssh; in parentheses the run on the final code; a last run after the
review, 10-15% slower for every tool: threads 1.24x and 1.15x at 50 and 250 with 14.7 and
9.2 ms, raw paramiko 1.01x and 1.10x with 9.5 and 9.0 ms.)  At 250 raw paramiko
took 0.95-1.19x asyncssh's time in six runs: the thread model, with the whole job around each
connection, is at paramiko's own level, and what stands between it and asyncssh is paramiko
in threads.  At 1000, raw paramiko lost 612 and then 101 hosts in one trial of each run
(handshakes that failed or did not finish; autoserv retries drops before the banner and lost
none), and took 28.2 ms of CPU per host in one trial.  Two changes to the job layer, A/B on a 1000-machine
``parallel_simple`` that records one GOOD per machine and opens no connection (5 pairs,
medians of the whole run's CPU): status.log and keyval lines written with ``os.open`` and
``os.write`` (:func:`autoserv.results_disk.append`: 3 system calls, not 8, each handing the
GIL over) took it from 1.91 to 1.63 s; the debug files as plain descriptors as well, from
2.27 to 1.85 s.  Tried again without gain: paramiko's socket read ahead of its packetizer and
blocking once connected, and paramiko's 0.1-s waits made event-driven (1.73 against 1.70 s
of CPU at 250, 6 pairs), starting all workers behind a gate (worse: 2.15-2.57 against
1.78-2.00 s), two controller processes of 125 machines each, ``--max-parallel`` 16-100.

The last idea, one I/O thread for all of paramiko's transports (2026-12-07, late; the
code is commit a732368, taken out by the next).  Where the thread model's CPU goes at 250
machines: its user CPU is about asyncssh's, its system CPU three times it (0.56-0.78 s
against 0.17-0.24; raw paramiko 0.51-0.74); ``perf record -e sched:sched_switch`` puts
30,000 of 42,000 context switches of raw paramiko in CPython's GIL (its mutex and condition
variable).  A reactor thread reading every socket with one ``epoll`` and handing each whole
packet to paramiko's own handlers took raw paramiko (AES-GCM), 250 hosts, 3 trials, from
1.30-1.60 s of CPU and 60,000-74,000 switches to 0.94-1.00 s and 20,000 (asyncssh
1.01-1.29 s, 1,600-2,900), and its wall time to 3.19-3.42 s (asyncssh 3.42-4.10 s): paramiko
reaches asyncssh once it has no thread per connection.  Inside autoserv it did not help:
250 machines, 5 pairs, median wall 4.56 s against 4.44 s with paramiko's threads and the
same CPU; 1000 machines, 2 pairs, 19.7 and 20.5 s with 5.0 s of system CPU against 16.6
and 16.9 s with 2.8-3.2 s.  The job's worker threads stay (a control file's function
blocks), and the one reader must win the GIL back from all of them after every socket
call, where paramiko's threads share that wait; at 250 the switches stayed at
42,000-50,000 either way.  What remains between the thread model and asyncssh is the GIL
handed among one thread per machine, which no change inside paramiko removes.

Then the other way round (2026-12-07, night): no reader at all, each worker reads its own
connection while it waits on it (:mod:`autoserv.hosts.paramiko_pump`; an idle reader
takes the connections no thread waits on).  Raw paramiko so: 0.81-0.99 s of CPU for 250
hosts against asyncssh's 1.03-1.42 s, in less wall time.  Inside autoserv, interleaved
with the code before: at 250 machines 5% less CPU and 40% fewer context switches for the
same wall time; at 1000, median wall 17.8 against 20.1 s (asyncssh 17.3 s in the same
runs).  What the thread model pays beyond raw paramiko is now the job around each
connection: at 250 machines (thread CPU clocks) the workers took 1.85-1.92 s, 1.55-1.59 s
of it in the control file's function (create_host, connect, run, record), the main thread
0.41-0.46 s (start-up, starting workers, reports), against 0.81-0.99 s for raw paramiko's
whole process.
2026-12-07, last session: where a machine's CPU goes now, and four small changes.  Thread
CPU clocks per machine at 250 machines (wrappers around each step, 2 runs): 4.7-5.2 ms in
the worker, of which connecting 1.9-2.2 (the key exchange 1.0, auth 0.4), the command's
wait and end 0.7, ``create_host`` 0.3, the crash collection's log marks 0.2, ``job.record``
0.17, closing 0.13, the idle reader's claims and releases 0.23; a job that opens no
connection costs its workers 0.73-0.81 ms per machine.  One machine after another in one
thread (100 hosts, connect + ``uname -a`` + close): ``SSHHost`` 4.0-4.4 ms, raw paramiko
4.1-4.5 ms, asyncssh 5.3-7.5 ms; in the 250 fan-out asyncssh needs 2.6 ms per machine (one
``epoll_wait`` serves many connections) while paramiko's per connection stays where it is.
Changed: paramiko's MAC check in C (:func:`~autoserv.hosts.paramiko_ext.install_fast_mac_check`,
~50 us per connection), the FQDN cache asked once when many threads look up at once (each
worker read ``/etc/hosts`` twice before), the idle reader's claim and release under the
transport's own lock instead of one shared lock held across ``epoll_ctl`` (14 A/B pairs
at 250: CPU 1.85 -> 1.79 s, context switches 23.7k -> 20.5k, the same wall time), one claim
for handshake, host key check and auth.  Measured and left: the command wrapper and the log
marks cost the hosts nothing measurable (asyncssh sending our wrapped command: sshd CPU
20.0 against 19.7 ms per host, 13 trials each; bash execs the command either way); the
hosts' sshd CPU per connection is 1-2 ms higher under autoserv than under asyncssh in a
fan-out but the same one connection at a time.

The bench on this code (``bench/results/2026-12-07-*-last*``; the machine ran 35% slower
than 15 minutes before, every tool alike)::

    N      threads wall  CPU/machine   asyncssh wall  CPU/machine   ratio   fork ratio
    50          1.22 s     12.4 ms          1.19 s      10.8 ms      1.03      1.37
    250         4.77 s      8.3 ms          4.71 s       5.6 ms      1.01      1.56
    1000       17.37 s      7.4 ms         14.94 s       3.3 ms      1.16        -

(1000: trials of 1.16x and 1.16x, peak PSS 52 MiB against 63 MiB.  15 minutes before, on
the code without the idle reader's own locks: 1.13x and 1.01x at 50 and 250, with 9.3 and
6.1 ms per machine.)

2026-12-08, the SSH layer apart from the job (250 netns hosts, 4 interleaved trials):
``create_host(m).run('uname -a')`` in plain threads took 3.68 s and 1.33 s of CPU, raw
paramiko on :class:`~autoserv.hosts.paramiko_pump.PumpedTransport` 3.62 s and 1.28 s,
asyncssh 3.96 s and 1.29 s, and the job around the same calls 4.15 s and 1.92 s.  What
keeps this model above asyncssh's time is the job's own 2-2.5 ms of CPU per machine
(results subdir, status.log, debug files, crash marks 0.3-0.6 ms, reports, progress, the
thread itself 0.1-0.2 ms), spread over a dozen steps of 0.1-0.3 ms each
(``bench/README.md``).  Two benches 30 minutes apart (``bench/results/2026-12-08-*``)::

    N      threads wall  CPU/machine   asyncssh wall  CPU/machine   ratio
    50          1.16 s     11.8 ms          0.94 s       8.9 ms      1.23
    250         3.93 s      6.7 ms          3.59 s       4.1 ms      1.10
    1000       15.00 s      5.9 ms         15.19 s       3.3 ms      0.99
    50          0.81 s      7.8 ms          0.74 s       6.7 ms      1.08
    250         4.59 s      8.2 ms          3.60 s       4.4 ms      1.28
    1000       16.92 s      7.0 ms         16.60 s       3.6 ms      1.02
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import queue
import resource
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from autoserv import abort, logging_setup, scope
from autoserv.errors import AutoservError, AutoservUsageError

if TYPE_CHECKING:
    from autoserv.parallel import WorkerHooks, subcommand

__all__ = ["MODEL_ENV", "MODELS", "model", "WorkerAbort", "ThreadWorker", "MEASURED", "fewer_gc_passes",
           "longer_switch_interval", "raise_nofile"]

log = logging.getLogger("autoserv.parallel")

#: The environment variable choosing the worker model.
MODEL_ENV = "AUTOSERV_WORKERS"
MODELS = ("fork", "threads")

#: The table above: model -> N -> (wall s, controller CPU ms per machine, max RSS MB).
MEASURED: dict[str, dict[int, tuple[float, float, int]]] = {
    "fork": {50: (3.4, 37.7, 46), 200: (12.9, 31.2, 47), 500: (41.2, 35.5, 49)},
    "threads": {50: (1.6, 19.2, 52), 200: (6.5, 15.4, 54), 500: (14.9, 15.4, 67)},
}

_CLONE_FS = 0x200


#: The collector's first threshold while worker threads run (CPython's default: 700).
GC_THRESHOLD0 = 20_000


@contextmanager
def fewer_gc_passes(threshold0: int = GC_THRESHOLD0) -> Iterator[None]:
    """Let the cyclic garbage collector run less often while a thread fan-out runs.

    Why: every connection of a fan-out keeps thousands of objects alive in this one
    process, and each collection pass visits the young ones again: at 1000 machines the
    collector took ~5% of the controller's CPU (``perf``).  With 20,000 allocations
    between passes instead of 700: 9.4 -> 8.8 ms of CPU per machine, 0.5 s less wall
    time, 4 MB more peak RSS (1000 loopback hosts, two runs each).  The thresholds are
    restored afterwards; nested fan-outs keep the higher one until the outer ends.
    """
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], threshold0), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


#: The interpreter's thread switch interval while worker threads run (CPython's default: 5 ms).
SWITCH_INTERVAL = 0.05


@contextmanager
def longer_switch_interval(seconds: float = SWITCH_INTERVAL) -> Iterator[None]:
    """Let a thread that holds the GIL keep it longer while a thread fan-out runs.

    Why: a fan-out runs two threads per machine (the worker and its paramiko transport),
    and each one that waits for the GIL asks the holder to drop it after the switch
    interval; with hundreds waiting, the GIL changes hands on every such request, each a
    futex wake and a context switch (``perf``: futex calls were 17% of the CPU of 250
    connections made by threads).  Threads of a fan-out mostly give the GIL up by
    themselves, at each socket wait, so a longer interval costs no machine its turn.  The
    figures are in this module's docstring.  The old interval is restored afterwards;
    nested fan-outs keep the longer one until the outer ends.
    """
    old = sys.getswitchinterval()
    if seconds <= old:  # (setting it again would round it down by a microsecond)
        yield
        return
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def model() -> str:
    """The worker model in force: ``fork`` (default) or ``threads``."""
    value = os.environ.get(MODEL_ENV, "").strip() or "fork"
    if value not in MODELS:
        raise AutoservUsageError(
            f"{MODEL_ENV}={value!r} is not a worker model (choose from {', '.join(MODELS)})"
        )
    return value


_libc: Any = None


def own_working_directory() -> None:
    """Give the calling thread a working directory of its own (Linux ``unshare(CLONE_FS)``)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.unshare(_CLONE_FS) != 0:
        err = ctypes.get_errno()
        raise AutoservError(
            f"a worker thread cannot have its own working directory: unshare(CLONE_FS) "
            f"failed: {os.strerror(err)}; use {MODEL_ENV}=fork"
        )


#: File descriptors a worker thread may hold at once: its 4 debug/ files, a connection or two,
#: a channel's pipes, status.log while it is written.
FDS_PER_WORKER = 12


def raise_nofile(workers: int) -> None:
    """Raise the soft ``RLIMIT_NOFILE`` for ``workers`` threads sharing this fd table.

    A forked worker has its own table; threads share one.  When the hard limit is too low,
    say so in one line (the job still runs; connections may then fail with EMFILE).
    """
    need = 256 + FDS_PER_WORKER * workers
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        log.debug("RLIMIT_NOFILE raised from %d to %d for %d worker threads", soft, new, workers)
        if new < need:
            log.warning("%d worker threads may need %d open files, but the hard limit is %d "
                        "(raise it with ulimit -Hn, or use --max-parallel)", workers, need, hard)


_reasons: dict[int, str] = {}  # thread ident -> the reason of the abort raised in it


class WorkerAbort(abort.JobAbort):
    """The controller aborted this worker thread (its timeout expired, or the job's abort)."""

    def __init__(self, reason: str | None = None) -> None:
        if reason is None:  # raised by the interpreter, without arguments
            reason = _reasons.pop(threading.get_ident(), "aborted by the controller")
        super().__init__(reason)


def _raise_in(ident: int, exc_type: type[BaseException] | None) -> None:
    set_async = ctypes.pythonapi.PyThreadState_SetAsyncExc
    set_async(ctypes.c_ulong(ident), ctypes.py_object(exc_type) if exc_type else None)


class ThreadWorker:
    """One :class:`~autoserv.parallel.subcommand` run in a thread of this process."""

    def __init__(self, sub: subcommand, hooks: WorkerHooks | None,
                 done: queue.SimpleQueue[subcommand]) -> None:
        self.sub = sub
        self.hooks = hooks
        self.done = done
        self.handlers = abort.AbortHandlers()  # never installed: the controller triggers it
        self.scope = scope.Scope(sub.label, scope.current())
        self.scope.slots["abort"] = self.handlers
        self.ended = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(
            target=scope.run_in, args=(self.scope, self._main), daemon=True,
            name=f"autoserv-worker {sub.label}",
        )

    def start(self) -> None:
        self.thread.start()

    def abort(self, reason: str) -> None:
        """Raise :class:`WorkerAbort` with ``reason`` in the worker (unless it is cleaning up)."""
        ident = self.thread.ident
        with self._lock:
            if self.ended.is_set() or ident is None or not self.handlers.request(reason):
                return
            _reasons[ident] = reason
            _raise_in(ident, WorkerAbort)
        log.debug("Aborting worker %s: %s", self.sub.label, reason)

    def close_hosts(self) -> None:
        """Close the worker's hosts from outside (it did not end on its abort)."""
        from autoserv.hosts import registry

        registry.close_all(self.scope)

    def _cleaning_up(self) -> None:
        with self._lock:  # no abort from here on; drop one raised but not yet delivered
            self.handlers.aborting = True
            ident = threading.get_ident()
            if _reasons.pop(ident, None) is not None:
                _raise_in(ident, None)

    def _main(self) -> None:
        sub = self.sub
        state: Any = None
        try:
            try:
                own_working_directory()
                context = (self.hooks.worker_context(sub.label, sub.subdir)
                           if self.hooks is not None else nullcontext())
                with context as state:
                    value = sub.func(*sub.args)
                self._cleaning_up()
                sub.result = value
                sub.exit_status = 0
            except BaseException as exc:
                self._cleaning_up()
                sub.exception = exc
                sub.traceback = "".join(traceback.format_exception(exc))
                sub.exit_status = 1
            sub.failures = int(getattr(state, "failures", 0) or 0)
        except BaseException as exc:  # an abort that raced in after the worker ended
            if sub.exception is None and sub.exit_status is None:
                sub.exception = exc
                sub.exit_status = 1
        finally:
            try:
                logging_setup.close_worker()
            except BaseException:  # pragma: no cover - nothing may stop the report
                pass
            self.ended.set()
            self.done.put(sub)
