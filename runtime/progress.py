"""Progress of a bounded run on stderr: rows done of total, rows/s, ETA; and a final line."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import TextIO


class Progress:
    """Shared by the partitions of one process; prints at most every ``interval_s``."""

    def __init__(self, interval_s: float = 2.0, out: TextIO | None = None) -> None:
        self._lock = threading.Lock()
        self._interval = interval_s
        self._out = out or sys.stderr
        self.total = 0
        self.done = 0
        self.alerts: Counter[str] = Counter()
        self.dead_letters = 0
        self._started = time.monotonic()
        self._last_print = 0.0

    def add_total(self, rows: int) -> None:
        with self._lock:
            self.total += rows

    def add_done(self, rows: int) -> None:
        with self._lock:
            self.done += rows
            now = time.monotonic()
            if now - self._last_print >= self._interval:
                self._last_print = now
                self._print(now)

    def add_alert(self, rule: str) -> None:
        with self._lock:
            self.alerts[rule] += 1

    def add_dead_letter(self, count: int = 1) -> None:
        with self._lock:
            self.dead_letters += count

    def _print(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        share = 100 * self.done / self.total if self.total else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        line = f"backfill: {self.done:,} / {self.total:,} rows ({share:.1f} %)"
        print(f"{line}, {rate:,.0f} rows/s, ETA {eta:.0f} s", file=self._out, flush=True)

    def summary(self) -> str:
        seconds = time.monotonic() - self._started
        alerts = ", ".join(f"{rule} {n}" for rule, n in sorted(self.alerts.items())) or "none"
        return (
            f"backfill done: {self.done:,} rows, alerts: {alerts}, "
            f"dead letters {self.dead_letters}, {seconds:.1f} s"
        )
