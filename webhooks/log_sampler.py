"""Sampling for log lines that anyone who can reach the port can cause (a request without a valid
token): at most one line per interval, carrying how many were left out, so that a flood of them
costs no flood of log lines. Every one of them still counts in the metrics."""

from __future__ import annotations

import time
from collections.abc import Callable


class LogSampler:
    """Lets one event through per `every_s` seconds."""

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every_s = every_s
        self._clock = clock
        self._last: float | None = None
        self._skipped = 0

    def sample(self) -> int | None:
        """None: leave this one out; else log it, with the returned number left out before it."""
        now = self._clock()
        if self._last is not None and now - self._last < self._every_s:
            self._skipped += 1
            return None
        self._last = now
        skipped, self._skipped = self._skipped, 0
        return skipped
