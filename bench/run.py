"""``python -m bench``: start the test beds, measure everything, write bench/results/<date>.*.

Sections (``--only`` picks some): ``latency`` and ``transfer`` on a one-host
loopback test bed, ``fanout`` (the curve at N = 10, 50, 250; with ``--scale``
also 1000) on a netns test bed, ``startup`` and ``guest`` without one.  Test
beds are always torn down, also on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import datetime
import logging
import os
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import autoserv
from autoserv.lab.testbed import Testbed
from bench import fanout, guests, latency, report, transfers
from bench.common import Comparison, log

SECTIONS = ("latency", "fanout", "transfer", "startup", "guest")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Trials:
    """How many trials each measurement gets (``--quick`` divides them)."""

    latency: int = 300
    latency_slow: int = 30  # tools that take 40-200 ms per command
    connect: int = 40  # new connections per tool
    fanout: tuple[tuple[int, int], ...] = ((10, 7), (50, 5), (250, 3))
    small_files: int = 5
    big_file: int = 3
    startup: int = 10
    guest: int = 3

    def quick(self) -> Trials:
        return Trials(latency=50, latency_slow=5, connect=5, fanout=((10, 2), (50, 2), (250, 1)),
                      small_files=2, big_file=1, startup=3, guest=1)

    def scale(self) -> Trials:
        """The fan-out curve up to 1000 hosts (``--scale``): a 1000-host test bed, 2 trials (1 quick)."""
        more = 1 if self.fanout[-1][1] == 1 else 2
        return dataclasses.replace(self, fanout=(*self.fanout, (1000, more)))

    def sizes(self, sizes: list[int]) -> Trials:
        """Only these fan-out sizes (``--sizes``); a size the table lacks gets 2 trials (1 quick)."""
        known = dict(self.fanout)
        default = 1 if self.fanout[-1][1] == 1 else 2
        return dataclasses.replace(self, fanout=tuple((n, known.get(n, default)) for n in sizes))


def results_stem(date: str, quick: bool, only: list[str] | None, scale: bool,
                 sizes: list[int] | None, tools: list[str] | None) -> str:
    """The results files' name: the date, then what makes the run partial, so a partial run
    never overwrites the same day's full one (``2026-12-02-fanout-scale-n1000-threads-asyncssh``)."""
    parts = [date]
    if quick:
        parts.append("quick")
    parts += [s for s in SECTIONS if s in (only or [])]
    if scale:
        parts.append("scale")
    if sizes:
        parts.append("n" + "_".join(str(n) for n in sizes))
    parts += [k for k in fanout.TOOL_KEYS if k in (tools or [])]
    return "-".join(parts)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of host counts: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"host counts must be positive: {text!r}")
    return sorted(set(sizes))


def raise_nofile(need: int) -> None:
    """Raise the soft ``RLIMIT_NOFILE`` (inherited by every tool) to ``need`` if the hard
    limit allows, so that 1000 connections at once do not run out of descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


@contextmanager
def testbed(kind: str, count: int) -> Iterator[Testbed]:
    with tempfile.TemporaryDirectory(prefix=f"bench-tb-{kind}-") as tmp:
        t0 = time.monotonic()
        tb = Testbed(tmp, count=count, kind=kind)
        try:
            tb.up()
            log.info("%d %s hosts up in %.2f s", count, kind, time.monotonic() - t0)
            yield tb
        finally:
            tb.down()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"bench: stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=SECTIONS,
                        help="run only this section (repeatable; default: all)")
    parser.add_argument("--quick", action="store_true", help="a few trials each (a smoke run, ~4 min)")
    parser.add_argument("--scale", action="store_true",
                        help="fan-out to 1000 hosts too (a 1000-host test bed; 15+ more minutes)")
    parser.add_argument("--sizes", type=_sizes, metavar="N,N,...",
                        help="fan-out only to these host counts (e.g. 1000)")
    parser.add_argument("--tools", action="append", choices=list(fanout.TOOL_KEYS),
                        help="fan-out only with this tool (repeatable; default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory (default %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true")
    opts = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: the test bed starts sshd in network namespaces")
    logging.basicConfig(level=logging.DEBUG if opts.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("paramiko", "autoserv", "pssh", "invoke", "fabric", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _terminate)
    # Measure autoserv as installed: pip writes the bytecode of a regular
    # install, an editable one under PYTHONDONTWRITEBYTECODE never does, and
    # every start would then recompile ~30 modules (~70 ms here).
    compileall.compile_dir(Path(autoserv.__file__).parent, quiet=1)
    sections = opts.only or list(SECTIONS)
    trials = Trials().quick() if opts.quick else Trials()
    if opts.scale:
        trials = trials.scale()
    if opts.sizes:
        trials = trials.sizes(opts.sizes)
    load_start = os.getloadavg()
    started = time.monotonic()
    comps: list[Comparison] = []

    if "latency" in sections or "transfer" in sections:
        with testbed("loopback", 1) as tb:
            if "latency" in sections:
                comps.append(latency.measure(tb, trials.latency, trials.latency_slow))
                comps.append(latency.measure_connect(tb, trials.connect))
                log.info("latency done (%.0f s)", time.monotonic() - started)
            if "transfer" in sections:
                comps += transfers.measure(tb, trials.small_files, trials.big_file)
                log.info("transfers done (%.0f s)", time.monotonic() - started)
    if "startup" in sections:
        comps.append(fanout.measure_startup(trials.startup))
    if "fanout" in sections:
        sizes = [n for n, _ in trials.fanout]
        raise_nofile(4 * max(sizes) + 256)
        tools = [fanout.TOOL_KEYS[k] for k in fanout.TOOL_KEYS if k in (opts.tools or fanout.TOOL_KEYS)]
        with testbed("netns", max(sizes)) as tb:
            comps += fanout.measure_fanout(tb, sizes, dict(trials.fanout), tools)
        log.info("fan-out done (%.0f s)", time.monotonic() - started)
    if "guest" in sections:
        guest = guests.measure(trials.guest)
        if guest is not None:
            comps.append(guest)

    order = {s: i for i, s in enumerate(("latency", "fanout", "startup", "transfer", "guest"))}
    comps.sort(key=lambda c: order[c.section])
    today = datetime.date.today().isoformat()
    meta = {
        "date": today + ("-quick" if opts.quick else ""),
        "stem": results_stem(today, opts.quick, opts.only, opts.scale, opts.sizes, opts.tools),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": report.machine(),
        "command": "python -m bench" + (" --quick" if opts.quick else "")
        + "".join(f" --only {s}" for s in opts.only or []) + (" --scale" if opts.scale else "")
        + (f" --sizes {','.join(map(str, opts.sizes))}" if opts.sizes else "")
        + "".join(f" --tools {t}" for t in opts.tools or []),
        "elapsed": time.monotonic() - started,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "trials": trials.__dict__,
    }
    written = report.write(comps, meta, opts.out)
    print(report.markdown(comps, meta))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0
