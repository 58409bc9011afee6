"""``python -m bench``: start the test beds, measure everything, write bench/results/<date>.*.

Sections (``--only`` picks some): ``latency`` and ``transfer`` on a one-host
loopback test bed, ``fanout`` (N = 10, 50, 100, which is also the scale
curve) on a netns test bed, ``startup`` and ``guest`` without one.  Test beds
are always torn down, also on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import logging
import os
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
    fanout: tuple[tuple[int, int], ...] = ((10, 7), (50, 5), (100, 3))
    small_files: int = 5
    big_file: int = 3
    startup: int = 10
    guest: int = 3

    def quick(self) -> Trials:
        return Trials(latency=50, latency_slow=5, connect=5, fanout=((10, 2), (50, 2), (100, 1)),
                      small_files=2, big_file=1, startup=3, guest=1)


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
    parser.add_argument("--quick", action="store_true", help="a few trials each (a smoke run, ~1.5 min)")
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
        with testbed("netns", max(sizes)) as tb:
            comps += fanout.measure_fanout(tb, sizes, dict(trials.fanout))
        log.info("fan-out done (%.0f s)", time.monotonic() - started)
    if "guest" in sections:
        guest = guests.measure(trials.guest)
        if guest is not None:
            comps.append(guest)

    order = {s: i for i, s in enumerate(("latency", "fanout", "startup", "transfer", "guest"))}
    comps.sort(key=lambda c: order[c.section])
    meta = {
        "date": datetime.date.today().isoformat() + ("-quick" if opts.quick else ""),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": report.machine(),
        "command": "python -m bench" + (" --quick" if opts.quick else "")
        + "".join(f" --only {s}" for s in opts.only or []),
        "elapsed": time.monotonic() - started,
        "trials": trials.__dict__,
    }
    written = report.write(comps, meta, opts.out)
    print(report.markdown(comps, meta))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0
