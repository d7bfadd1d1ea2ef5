"""The real clocks, as default ``now`` getters: logic takes its clock as a parameter."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utc_now() -> datetime:
    """Processing time as an aware UTC datetime."""
    return datetime.now(UTC)


def wall_clock_ms() -> int:
    """Processing time in epoch milliseconds."""
    return time.time_ns() // 1_000_000
