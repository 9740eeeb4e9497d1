"""Byte counting for every data path, throttled so frontends and the state store are not flooded."""

from __future__ import annotations

import time
from typing import Callable

#: Seconds between progress reports of one stream (rich redraws and store writes are not free).
PROGRESS_INTERVAL = 0.25


class Meter:
    """Counts bytes; reports (bytes so far, smoothed rate) at most every PROGRESS_INTERVAL."""

    def __init__(self, report: Callable[[int, float], None]) -> None:
        self.report = report
        self.done = 0
        self.started = time.monotonic()
        self._last_at = self.started
        self._last_done = 0
        self.rate = 0.0

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last_at >= PROGRESS_INTERVAL:
            instant = (self.done - self._last_done) / (now - self._last_at)
            self.rate = instant if self.rate == 0 else 0.7 * self.rate + 0.3 * instant
            self._last_at, self._last_done = now, self.done
            self.report(self.done, self.rate)

    def flush(self) -> None:
        """A last report with the average rate, when the stream ends."""
        elapsed = self.elapsed()
        self.report(self.done, self.done / elapsed if elapsed > 0 else 0.0)

    def elapsed(self) -> float:
        return time.monotonic() - self.started
