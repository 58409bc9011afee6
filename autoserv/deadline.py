"""A deadline object passed down to every wait, so total time stays bounded."""

from __future__ import annotations

import numbers
import time


class Deadline:
    """A point in monotonic time; ``None`` seconds means never.

    Each attempt of a polling loop asks ``remaining()`` and uses at most that,
    so a loop whose single probe can hang still ends on time.
    """

    def __init__(self, seconds: float | None) -> None:
        # any real number (a numpy integer or a Fraction too), not wait_up(timeout="5")
        if seconds is not None and not isinstance(seconds, numbers.Real):
            raise TypeError(f"a timeout is a number of seconds or None, not {seconds!r}")
        self.seconds = seconds
        self.start = time.monotonic()
        self.end = None if seconds is None else self.start + seconds

    def remaining(self, cap: float | None = None) -> float:
        """Seconds left (>= 0), optionally capped; ``inf`` when unbounded and uncapped."""
        left = float("inf") if self.end is None else max(0.0, self.end - time.monotonic())
        return left if cap is None else min(left, cap)

    def expired(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def sleep(self, seconds: float) -> None:
        """Sleep at most ``seconds``, never past the deadline."""
        time.sleep(self.remaining(seconds))


def backoff(first: float = 0.05, factor: float = 1.6, cap: float = 2.0):  # type: ignore[no-untyped-def]
    """Yield growing sleep intervals: first, first*factor, ... up to cap."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * factor)
