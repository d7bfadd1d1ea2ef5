"""The kinds of rule of CONTRACT.md section 9, each judging one truck's readings in event-time
order. Pure logic; the catalogue (domain/catalogue.py) says which rules apply when.

A kind is a frozen dataclass of its parameters (what a catalogue file sets) with one method,
``judge(held, reading)``: ``held`` is the rule's own readings for this truck (the violations
in the window, the run so far, the previous reading), which it updates; it returns the
covered readings when the rule fires. Cooldown is the same for every kind and lives in
``CatalogueRule.judge`` (domain/catalogue.py), not here.

``speed_floor_kmh``: a reading at or below it changes nothing for this kind, so callers
may skip it (the stream's and the backfill's fast path). ``duration_over`` (a slow
reading ends the run) and ``deceleration`` (every reading is someone's previous one) must
see every reading, except one thing (the backfill's prefilter): a reading at or below
``prefilter_floor_kmh`` whose predecessor is too changes nothing for them either
(``successor_matters``). For ``duration_over`` the run is already over; for
``deceleration`` neither can be the faster reading of a pair (r1.speed - r2.speed >= drop
needs r1.speed >= drop), so whichever of the two is "previous" makes no pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from domain.readings import Reading

if TYPE_CHECKING:
    from domain.zones import Zone

Covered = tuple[Reading, ...]


class Kind(Protocol):
    name: ClassVar[str]

    @property
    def speed_floor_kmh(self) -> float:
        """At or below this speed a reading changes nothing (``-inf``: every reading counts)."""
        ...

    @property
    def prefilter_floor_kmh(self) -> float:
        """At or below this speed a reading changes nothing, if its predecessor is also at or
        below it where ``successor_matters``."""
        ...

    successor_matters: ClassVar[bool]

    @property
    def threshold_kmh(self) -> float:
        """The alert's ``threshold_kmh``: the limit the rule used."""
        ...

    def threshold_of(self, covered: Covered) -> float:
        """The alert's ``threshold_kmh`` for these covered readings: ``threshold_kmh``, or
        the posted limit at the reading that fired (``posted_limit_over``)."""
        ...

    def judge(self, held: list[Reading], reading: Reading) -> Covered | None: ...

    def details(self, covered: Covered) -> dict[str, Any]: ...


_EVERY_READING = float("-inf")


class _FixedThreshold:
    """A kind whose alerts all carry its one ``threshold_kmh``."""

    __slots__ = ()

    @property
    def threshold_kmh(self) -> float:
        raise NotImplementedError  # each kind says

    def threshold_of(self, covered: Covered) -> float:
        return self.threshold_kmh


class _EveryReading(_FixedThreshold):
    """A kind that every reading may change (a slower one ends a run, or is the next
    reading's previous one): never skipped in the stream; in the backfill's prefilter only
    with its predecessor (``successor_matters``)."""

    __slots__ = ()
    successor_matters: ClassVar[bool] = True

    @property
    def speed_floor_kmh(self) -> float:
        return _EVERY_READING


class _OverASpeed(_FixedThreshold):
    """A kind that fires only on readings over ``speed_over_kmh`` and that a slower reading
    leaves as it was: callers may skip such readings, in the stream and the backfill."""

    __slots__ = ()
    successor_matters: ClassVar[bool] = False
    speed_over_kmh: float

    @property
    def speed_floor_kmh(self) -> float:
        return self.speed_over_kmh

    @property
    def prefilter_floor_kmh(self) -> float:
        return self.speed_over_kmh

    @property
    def threshold_kmh(self) -> float:
        return self.speed_over_kmh


@dataclass(frozen=True, slots=True)
class InstantOver(_OverASpeed):
    """One reading over the limit fires at once."""

    name: ClassVar[str] = "instant_over"
    speed_over_kmh: float

    def judge(self, held: list[Reading], reading: Reading) -> Covered | None:
        return (reading,) if reading.speed_kmh > self.speed_over_kmh else None

    def details(self, covered: Covered) -> dict[str, Any]:
        return {"kind": self.name}


@dataclass(frozen=True, slots=True)
class CountOver(_OverASpeed):
    """``count`` readings over the limit, the oldest and newest at most ``within`` apart."""

    name: ClassVar[str] = "count_over"
    speed_over_kmh: float
    count: int
    within_ms: int

    def judge(self, held: list[Reading], reading: Reading) -> Covered | None:
        if reading.speed_kmh <= self.speed_over_kmh:
            return None  # not a violation; the window is trimmed at the next one
        horizon = reading.ts_ms - self.within_ms
        if held and held[0].ts_ms < horizon:
            stale = 1
            while stale < len(held) and held[stale].ts_ms < horizon:
                stale += 1
            del held[:stale]
        held.append(reading)
        if len(held) < self.count:
            return None
        covered = tuple(held)
        held.clear()  # the next alert needs ``count`` new violations
        return covered

    def details(self, covered: Covered) -> dict[str, Any]:
        return {"kind": self.name, "within_s": self.within_ms / 1000}


@dataclass(frozen=True, slots=True)
class DurationOver(_EveryReading):
    """A run of consecutive readings over the limit, gaps at most ``max_gap``, that has
    lasted ``for_`` fires at its first reading that reaches it, covering the run so far."""

    name: ClassVar[str] = "duration_over"
    speed_over_kmh: float
    for_ms: int
    max_gap_ms: int

    @property
    def prefilter_floor_kmh(self) -> float:
        return self.speed_over_kmh

    @property
    def threshold_kmh(self) -> float:
        return self.speed_over_kmh

    def judge(self, held: list[Reading], reading: Reading) -> Covered | None:
        if reading.speed_kmh <= self.speed_over_kmh:
            held.clear()  # a reading not over the limit ends the run
            return None
        if held and reading.ts_ms - held[-1].ts_ms > self.max_gap_ms:
            held.clear()  # so does a gap: this reading starts a new one
        held.append(reading)
        if reading.ts_ms - held[0].ts_ms < self.for_ms:
            return None
        covered = tuple(held)
        held.clear()
        return covered

    def details(self, covered: Covered) -> dict[str, Any]:
        return {
            "kind": self.name,
            "duration_s": (covered[-1].ts_ms - covered[0].ts_ms) / 1000,
            "for_s": self.for_ms / 1000,
        }


@dataclass(frozen=True, slots=True)
class Deceleration(_EveryReading):
    """Consecutive readings r1, r2 with 0 < r2.ts - r1.ts <= ``within`` whose speed fell by
    at least ``drop_kmh`` fire at r2, covering both. The pair is used up: r2 is nobody's
    previous reading."""

    name: ClassVar[str] = "deceleration"
    drop_kmh: float
    within_ms: int

    @property
    def prefilter_floor_kmh(self) -> float:
        # The largest speed below drop_kmh: "at or below it" is "slower than the drop".
        return math.nextafter(self.drop_kmh, -math.inf)

    @property
    def threshold_kmh(self) -> float:
        return self.drop_kmh  # the rule's limit is a drop, not a speed

    def judge(self, held: list[Reading], reading: Reading) -> Covered | None:
        if not held:
            held.append(reading)
            return None
        previous = held[0]
        interval = reading.ts_ms - previous.ts_ms
        if 0 < interval <= self.within_ms and previous.speed_kmh - reading.speed_kmh >= (
            self.drop_kmh
        ):
            held.clear()
            return (previous, reading)
        held[0] = reading
        return None

    def details(self, covered: Covered) -> dict[str, Any]:
        first, last = covered[0], covered[-1]
        drop = first.speed_kmh - last.speed_kmh
        interval_s = (last.ts_ms - first.ts_ms) / 1000
        return {
            "kind": self.name,
            "drop_kmh": round(drop, 3),
            "deceleration_ms2": round(drop / 3.6 / interval_s, 3),
            "interval_s": interval_s,
        }


@dataclass(frozen=True, slots=True)
class ZoneOver(_OverASpeed):
    """A reading inside the zone (or on its boundary) and over the limit fires at once."""

    name: ClassVar[str] = "zone_over"
    zone_name: str
    speed_over_kmh: float
    # The geometry is not part of the definition: the rule names its zone.
    zone: Zone = field(compare=False, repr=False)

    def judge(self, held: list[Reading], reading: Reading) -> Covered | None:
        if reading.speed_kmh <= self.speed_over_kmh:
            return None
        lat, lon = reading.lat, reading.lon
        if lat is None or lon is None:
            return None  # a rule that needs a position never matches a reading without one
        return (reading,) if self.zone.contains(lat, lon) else None

    def details(self, covered: Covered) -> dict[str, Any]:
        return {"kind": self.name, "zone": self.zone_name}


@dataclass(frozen=True, slots=True)
class PostedLimitOver(_EveryReading):
    """``duration_over`` against each reading's own posted limit (CONTRACT.md section 10): a
    reading is over when its speed is more than ``limit + max(over_kmh, limit * over_pct /
    100)``; a run goes on across a change of road, and a reading without a limit (no road
    within the match distance, no position, a road without a limit) ends it as a reading
    not over does. ``for_ms`` 0 fires at the first reading over."""

    name: ClassVar[str] = "posted_limit_over"
    over_kmh: float
    over_pct: float
    for_ms: int
    max_gap_ms: int

    @property
    def prefilter_floor_kmh(self) -> float:
        # Limits are over 0, so the margin is at least over_kmh: a reading at or below it
        # is over no limit at all.
        return self.over_kmh

    @property
    def threshold_kmh(self) -> float:
        return math.nan  # no one threshold: each alert carries its reading's limit

    def threshold_of(self, covered: Covered) -> float:
        limit = covered[-1].posted_limit
        assert limit is not None, "posted_limit_over fired on a reading without a limit"
        return limit.kmh

    def is_over(self, reading: Reading) -> bool:
        limit = reading.posted_limit
        if limit is None:
            return False
        kmh = limit.kmh
        return reading.speed_kmh > kmh + max(self.over_kmh, kmh * self.over_pct / 100)

    def judge(self, held: list[Reading], reading: Reading) -> Covered | None:
        if not self.is_over(reading):
            held.clear()  # a reading not over its limit, or without one, ends the run
            return None
        if held and reading.ts_ms - held[-1].ts_ms > self.max_gap_ms:
            held.clear()  # so does a gap: this reading starts a new one
        held.append(reading)
        if reading.ts_ms - held[0].ts_ms < self.for_ms:
            return None
        covered = tuple(held)
        held.clear()
        return covered

    def details(self, covered: Covered) -> dict[str, Any]:
        fired = covered[-1]
        limit = fired.posted_limit
        assert limit is not None, "posted_limit_over fired on a reading without a limit"
        return {
            "kind": self.name,
            "posted_limit_kmh": limit.kmh,
            "road_name": limit.road_name,
            "osm_way_id": limit.osm_way_id,
            "limit_source": limit.source,
            "duration_s": (fired.ts_ms - covered[0].ts_ms) / 1000,
            "for_s": self.for_ms / 1000,
        }
