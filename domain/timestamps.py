"""Event-time instants as integer epoch milliseconds, and their RFC 3339 form.

Readings carry time as ``int`` milliseconds since the Unix epoch (UTC): cheap to compare,
exact, and free of naive-datetime mistakes. Text crosses the boundary only here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# RFC 3339 section 5.6 date-time: a full date, 'T' (or a space, which RFC 3339 permits),
# a full time with optional fraction, and a mandatory offset.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)

# Readings from before 1970 or after 9999 cannot be written back as RFC 3339 'Z' strings.
MIN_EPOCH_MS = 0
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class BadTimestamp(ValueError):
    """A timestamp that is not RFC 3339 with an offset, nor epoch milliseconds in range."""


def parse_rfc3339_ms(text: str) -> int:
    """Parse an RFC 3339 date-time with offset into epoch ms (sub-ms digits are truncated)."""
    match = _RFC3339.match(text)
    if match is None:
        raise BadTimestamp(f"not an RFC 3339 date-time with offset: {text[:64]!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
    except ValueError as exc:
        raise BadTimestamp(f"impossible date-time {text[:64]!r}: {exc}") from None
    millis = int((fraction or "0")[:3].ljust(3, "0"))
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 23 or minutes > 59:
            raise BadTimestamp(f"offset out of range in {text[:64]!r}")
        moment -= sign * timedelta(hours=hours, minutes=minutes)
    epoch_ms = (moment - _EPOCH) // timedelta(milliseconds=1) + millis
    return check_epoch_ms(epoch_ms)


def check_epoch_ms(epoch_ms: int) -> int:
    """Return ``epoch_ms`` if it can be represented as an RFC 3339 UTC string."""
    if not MIN_EPOCH_MS <= epoch_ms <= MAX_EPOCH_MS:
        raise BadTimestamp(f"epoch milliseconds {epoch_ms} outside 1970-01-01..9999-12-31")
    return epoch_ms


def format_rfc3339_ms(epoch_ms: int) -> str:
    """Format epoch ms as RFC 3339 UTC with exactly three fraction digits and ``Z``."""
    moment = _EPOCH + timedelta(milliseconds=epoch_ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}Z"


def to_epoch_ms(moment: datetime) -> int:
    """Convert an aware datetime to epoch milliseconds (naive datetimes are refused)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: fleetwatch only handles aware UTC instants")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def from_epoch_ms(epoch_ms: int) -> datetime:
    """Convert epoch milliseconds to an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=epoch_ms)
