"""Event-time instants as integer epoch milliseconds, and their RFC 3339 form.

Readings carry time as ``int`` milliseconds since the Unix epoch (UTC): cheap to compare,
exact, and free of naive-datetime mistakes. Text crosses the boundary only here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the Unix epoch, aware: the one definition

# RFC 3339 section 5.6 date-time: a full date, 'T' (or a space, which RFC 3339 permits),
# a full time with optional fraction, and a mandatory offset. ASCII digits only: Python's
# ``\d`` and ``int`` also take other scripts' digits ("٢٠٢٦"), which no producer means.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})\Z",
    re.ASCII,
)

# Readings from before 1970 or after 9999 cannot be written back as RFC 3339 'Z' strings.
MIN_EPOCH_MS = 0
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

_MS_PER_MINUTE = 60_000
_MS_PER_DAY = 86_400_000


class BadTimestamp(ValueError):
    """A timestamp that is not RFC 3339 with an offset, nor epoch milliseconds in range."""


def parse_rfc3339_ms(text: str) -> int:
    """Parse an RFC 3339 date-time with offset into epoch ms (sub-ms digits are truncated).

    The offset is applied in integer milliseconds, not with datetime arithmetic, so a
    local time at the edge of the calendar (``9999-12-31T23:59:59-01:00``) is refused as
    out of range instead of overflowing. A leap second (``23:59:60`` in UTC, RFC 3339
    section 5.7) reads as the last millisecond of the second before it, as Java's
    ``Instant.parse`` reads it: epoch time has no leap seconds, and this keeps it after
    every earlier instant of that minute.
    """
    match = _RFC3339.match(text)
    if match is None:
        raise BadTimestamp(f"not an RFC 3339 date-time with offset: {text[:64]!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    leap_second = second == "60"
    try:
        midnight = datetime(int(year), int(month), int(day), tzinfo=UTC)
    except ValueError as exc:
        raise BadTimestamp(f"impossible date-time {text[:64]!r}: {exc}") from None
    hours, minutes, seconds = int(hour), int(minute), int(second)
    if hours > 23 or minutes > 59 or seconds > 59 + leap_second:
        raise BadTimestamp(f"impossible time of day in {text[:64]!r}")
    offset_ms = 0
    if offset not in ("Z", "z"):
        offset_hours, offset_minutes = int(offset[1:3]), int(offset[4:6])
        if offset_hours > 23 or offset_minutes > 59:
            raise BadTimestamp(f"offset out of range in {text[:64]!r}")
        sign = 1 if offset[0] == "+" else -1
        offset_ms = sign * (offset_hours * 60 + offset_minutes) * _MS_PER_MINUTE
    millis = int((fraction or "0")[:3].ljust(3, "0"))
    day_ms = (midnight - EPOCH) // timedelta(milliseconds=1)
    epoch_ms = day_ms + ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis - offset_ms
    if leap_second:
        # hh:mm:60 counted as the next minute's :00: a true leap second lands on midnight UTC.
        next_midnight = epoch_ms - millis
        if next_midnight % _MS_PER_DAY != 0:
            raise BadTimestamp(f"a leap second must be 23:59:60 UTC: {text[:64]!r}")
        epoch_ms = next_midnight - 1
    return check_epoch_ms(epoch_ms)


def check_epoch_ms(epoch_ms: int) -> int:
    """Return ``epoch_ms`` if it can be represented as an RFC 3339 UTC string."""
    if not MIN_EPOCH_MS <= epoch_ms <= MAX_EPOCH_MS:
        raise BadTimestamp(f"epoch milliseconds {epoch_ms} outside 1970-01-01..9999-12-31")
    return epoch_ms


def format_rfc3339_ms(epoch_ms: int) -> str:
    """Format epoch ms as RFC 3339 UTC with exactly three fraction digits and ``Z``."""
    moment = EPOCH + timedelta(milliseconds=epoch_ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}Z"


def to_epoch_ms(moment: datetime) -> int:
    """Convert an aware datetime to epoch milliseconds (naive datetimes are refused)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: fleetwatch only handles aware UTC instants")
    return (moment - EPOCH) // timedelta(milliseconds=1)


def from_epoch_ms(epoch_ms: int) -> datetime:
    """Convert epoch milliseconds to an aware UTC datetime."""
    return EPOCH + timedelta(milliseconds=epoch_ms)
