"""Digest schedules: the periods a digest covers, in the fleet's time zone, and their ids.

Pure logic. A schedule cuts time into consecutive periods ``[start, end)``:

* ``hourly``: each local hour (``10:00``-``11:00`` local; in a zone whose offset is not a
  whole hour these are not UTC hours). On the night clocks go back the repeated hour is
  two periods, one per offset.
* ``daily`` at a local time (``{"daily": "07:00"}``; ``"daily"`` is ``00:00``): from that
  time one day to that time the next, so a period is 23 or 25 hours long across a daylight
  saving change. A start time the change skips is read with the offset before the change
  (``03:30`` on the spring-forward night in Helsinki is 04:30 summer time); a time the
  change repeats is its first occurrence (PEP 495, ``fold=0``).
* ``every_s`` (``{"every_s": 30}``): fixed periods of that many seconds from the Unix
  epoch, whatever the zone: for tests and for operators who want short digests.

A digest's id is the first 32 hex chars of SHA-256 of ``"digest|{schedule}|{start ms}|
{recipient}"``: the same recipient, schedule and period always have the same id, which is
what the e-mail API's idempotency key and ``webhook-id`` carry.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum

from domain.timestamps import from_epoch_ms, to_epoch_ms

_HH_MM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])", re.ASCII)
MAX_EVERY_S = 7 * 86_400


class Every(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"
    SECONDS = "every_s"


@dataclass(frozen=True, slots=True)
class Period:
    start_ms: int
    end_ms: int  # exclusive


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a route's digests close. ``at`` (daily): minutes after local midnight;
    ``seconds`` (every_s): the period's length."""

    every: Every
    at: int = 0
    seconds: int = 0

    @classmethod
    def parse(cls, where: str, value: object) -> Schedule:
        """``"hourly"``, ``"daily"``, ``{"daily": "HH:MM"}`` or ``{"every_s": N}`` (an
        integer, 1 s to 7 days); anything else is a ValueError naming ``where``."""
        if value == "hourly":
            return cls(Every.HOURLY)
        if value == "daily":
            return cls(Every.DAILY)
        if isinstance(value, dict) and len(value) == 1:
            ((key, arg),) = value.items()
            if key == "daily":
                match = _HH_MM.fullmatch(arg) if isinstance(arg, str) else None
                if match is None:
                    raise ValueError(
                        f'{where}: daily takes a local time "HH:MM" (00:00-23:59), not {arg!r}'
                    )
                return cls(Every.DAILY, at=int(match[1]) * 60 + int(match[2]))
            if key == "every_s":
                if isinstance(arg, bool) or not isinstance(arg, int):
                    raise ValueError(f"{where}: every_s takes a whole number of seconds")
                if not 1 <= arg <= MAX_EVERY_S:
                    raise ValueError(f"{where}: every_s must be 1 to {MAX_EVERY_S}, not {arg}")
                return cls(Every.SECONDS, seconds=arg)
        raise ValueError(
            f'{where}: a digest is "hourly", "daily", {{"daily": "HH:MM"}} or '
            f'{{"every_s": N}}, not {value!r}'
        )

    @property
    def name(self) -> str:
        """``hourly``, ``daily 07:00`` or ``every 30 s``: part of the digest's id and key."""
        if self.every is Every.HOURLY:
            return "hourly"
        if self.every is Every.DAILY:
            return f"daily {self.at // 60:02d}:{self.at % 60:02d}"
        return f"every {self.seconds} s"

    def period(self, at_ms: int, zone: tzinfo) -> Period:
        """The period holding the instant ``at_ms`` (epoch ms)."""
        if self.every is Every.SECONDS:
            length = self.seconds * 1000
            start = at_ms - at_ms % length
            return Period(start, start + length)
        moment = from_epoch_ms(at_ms)
        if self.every is Every.HOURLY:
            start_at = _hour_start(moment, zone)
            candidate = start_at + timedelta(hours=1)
            while _hour_start(candidate, zone) <= start_at:  # a local hour of 90 minutes
                candidate += timedelta(minutes=15)
            return Period(to_epoch_ms(start_at), to_epoch_ms(_hour_start(candidate, zone)))
        day = moment.astimezone(zone).date()
        if self._daily_start(day, zone) > moment:
            day -= timedelta(days=1)
        start_at = self._daily_start(day, zone)
        return Period(to_epoch_ms(start_at), to_epoch_ms(self._daily_start(day + _DAY, zone)))

    def _daily_start(self, day: date, zone: tzinfo) -> datetime:
        local = datetime.combine(day, time(self.at // 60, self.at % 60), tzinfo=zone)
        return local.astimezone(UTC)


_DAY = timedelta(days=1)


def _hour_start(moment: datetime, zone: tzinfo) -> datetime:
    """The start of the local hour holding ``moment``, in UTC. The local time keeps its
    ``fold``, so the repeated hour of a fall-back night gives two different starts."""
    local = moment.astimezone(zone)
    start = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    return min(start, moment.astimezone(UTC))  # a truncation into a gap reads as earlier


def digest_id(recipient: str, schedule: Schedule, start_ms: int) -> str:
    """The id of ``recipient``'s digest of the period starting at ``start_ms``."""
    key = f"digest|{schedule.name}|{start_ms}|{recipient}"
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
