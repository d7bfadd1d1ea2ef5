"""The wall clock, as the default ``now`` getter: every step and connector takes its clock
as a ``Callable[[], datetime]`` parameter, and nothing else reads the wall clock
(tests/unit/test_clock_contract.py). Epoch milliseconds come from it through
``domain.timestamps.to_epoch_ms``; durations are measured on ``time.monotonic``."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Processing time as an aware UTC datetime."""
    return datetime.now(UTC)
