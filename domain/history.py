"""Driver history (CONTRACT.md section 6) and the as-of join that names an alert's driver.

``HistoryIndex`` is built once per load, off the hot path: for every truck, the assignment
rows become disjoint time segments, each naming the driver whose assignment has the latest
``valid_from`` among those in force (``valid_from <= t < valid_to``, open ``valid_to`` =
forever). Overlaps are resolved there, so a lookup is one ``bisect``: O(log n) per alert,
never a scan. Times are epoch milliseconds (UTC).

``DRIVER_COLUMNS``, ``ASSIGNMENT_COLUMNS`` and ``TRUCK_COLUMNS`` say, as data, what a loader
must check before it hands rows to the index: each column's kind, whether it may be null, and
its limits. A row that passes them cannot make ``driver_context`` (and so building or encoding
an alert) raise.

The optional trucks table gives each listed truck its vehicle class (what a rule's
``scope.vehicle_classes`` matches, CONTRACT.md section 9) and, when known, its depot: the
index's ``vehicle_classes`` and ``depots``. A truck that is not listed has no class.
"""

from __future__ import annotations

import bisect
import heapq
import math
from array import array
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from domain.readings import MAX_SPEED_KMH

RISK_TIERS = ("low", "medium", "high")
VEHICLE_CLASSES = ("heavy", "medium", "light")
REPEAT_OFFENDER_EVENTS = 3

# What Python's ``date`` and ``datetime`` represent. A value outside cannot become an
# alert's ``hired_on`` (Polars even panics formatting it), so the loaders refuse it.
FIRST_DAY = date(1, 1, 1)
LAST_DAY = date(9999, 12, 31)
EARLIEST_MS = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
LATEST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_COUNT = 2**63 - 1  # a count is a signed 64-bit integer (Polars Int64, msgspec)


class Kind(StrEnum):
    """A column's type, as CONTRACT.md section 6 names it."""

    STRING = "string"
    DATE = "date"
    INTEGER = "integer"
    NUMBER = "number"
    TIMESTAMP = "timestamp UTC"


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a history table and the values it may hold.

    Every kind has limits of its own as well: strings hold no control characters (a line
    break in a name would forge a line of the alert's e-mail), dates and timestamps lie in
    ``FIRST_DAY``..``LAST_DAY``, integers are at most ``MAX_COUNT``, numbers are finite.
    """

    name: str
    kind: Kind
    nullable: bool = False
    non_empty: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


# The contract lists no nullable column but valid_to (an open-ended assignment) and a
# truck's depot.
DRIVER_COLUMNS = (
    Column("driver_id", Kind.STRING, non_empty=True),  # unique, too
    Column("name", Kind.STRING),
    Column("hired_on", Kind.DATE),
    Column("overspeed_events_90d", Kind.INTEGER, minimum=0),
    # An average of readings, which are 0..MAX_SPEED_KMH (CONTRACT.md section 2).
    Column("avg_speed_kmh_90d", Kind.NUMBER, minimum=0, maximum=MAX_SPEED_KMH),
    Column("km_driven_90d", Kind.NUMBER, minimum=0),
    Column("risk_tier", Kind.STRING, choices=RISK_TIERS),
)
ASSIGNMENT_COLUMNS = (
    Column("truck_id", Kind.STRING, non_empty=True),
    Column("driver_id", Kind.STRING, non_empty=True),
    Column("valid_from", Kind.TIMESTAMP),
    Column("valid_to", Kind.TIMESTAMP, nullable=True),  # not before valid_from, too
)
TRUCK_COLUMNS = (
    Column("truck_id", Kind.STRING, non_empty=True),  # unique, too
    Column("vehicle_class", Kind.STRING, choices=VEHICLE_CLASSES),
    Column("depot", Kind.STRING, nullable=True),
)


@dataclass(frozen=True, slots=True)
class Driver:
    """A row of drivers.parquet; ``hired_on`` as ``YYYY-MM-DD``."""

    driver_id: str
    name: str
    hired_on: str
    overspeed_events_90d: int
    avg_speed_kmh_90d: float
    km_driven_90d: float
    risk_tier: str


@dataclass(frozen=True, slots=True)
class Assignment:
    """A row of assignments.parquet; ``valid_to_ms`` None means open-ended."""

    truck_id: str
    driver_id: str
    valid_from_ms: int
    valid_to_ms: int | None


@dataclass(frozen=True, slots=True)
class Truck:
    """A row of trucks.parquet; ``depot`` None when it is not known."""

    truck_id: str
    vehicle_class: str
    depot: str | None = None


@dataclass(frozen=True, slots=True)
class _Segments:
    """One truck's timeline: from ``starts[i]`` until ``starts[i + 1]`` it is ``drivers[i]``.

    ``starts`` is an ``array`` (one object, not one per instant) and the driver ids are
    shared strings: a large history is few Python objects, so replacing one frees little and
    never pauses the flow (see ``connectors.history``)."""

    starts: array[int]
    drivers: list[str | None]

    def at(self, ts_ms: int) -> str | None:
        index = bisect.bisect_right(self.starts, ts_ms) - 1
        return self.drivers[index] if index >= 0 else None

    def span_at(self, ts_ms: int) -> tuple[str | None, int, int | None] | None:
        """The segment holding ``ts_ms``: (driver, start, end or None while open); None
        before the first."""
        index = bisect.bisect_right(self.starts, ts_ms) - 1
        if index < 0:
            return None
        end = self.starts[index + 1] if index + 1 < len(self.starts) else None
        return self.drivers[index], self.starts[index], end


@dataclass(frozen=True)
class HistoryIndex:
    """Drivers by id, each truck's assignment timeline, and the trucks' vehicle classes
    (truck_id -> ``heavy``/``medium``/``light``) and depots (only those that are known)."""

    drivers: Mapping[str, Driver] = field(default_factory=dict)
    timelines: Mapping[str, _Segments] = field(default_factory=dict)
    assignments: int = 0
    vehicle_classes: Mapping[str, str] = field(default_factory=dict)
    depots: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        drivers: Iterable[Driver],
        assignments: Iterable[Assignment],
        trucks: Iterable[Truck] = (),
    ) -> HistoryIndex:
        by_truck: dict[str, list[Assignment]] = defaultdict(list)
        for assignment in assignments:
            by_truck[assignment.truck_id].append(assignment)
        builder = IndexBuilder(drivers)
        for truck, rows in by_truck.items():
            builder.add_truck(
                truck,
                [r.driver_id for r in rows],
                [r.valid_from_ms for r in rows],
                [r.valid_to_ms for r in rows],
            )
        listed = list(trucks)
        builder.add_trucks(
            [t.truck_id for t in listed],
            [t.vehicle_class for t in listed],
            [t.depot for t in listed],
        )
        return builder.build()

    def driver_id_at(self, truck_id: str, ts_ms: int) -> str | None:
        """The driver assigned to ``truck_id`` at ``ts_ms``, or None."""
        segments = self.timelines.get(truck_id)
        return segments.at(ts_ms) if segments is not None else None

    def assignment_at(self, truck_id: str, ts_ms: int) -> Assignment | None:
        """The assignment that makes ``driver_id_at`` its driver, as the flows resolve the
        rows (section 6): the driver and the span over which the truck has that driver
        without a break (``valid_to_ms`` None: still open). Overlapping rows are already
        resolved, so the span can be narrower than the row that named the driver (a later
        row that overlapped it cuts it) and back-to-back rows of one driver are one span.
        None when the truck has no driver at ``ts_ms``."""
        segments = self.timelines.get(truck_id)
        span = segments.span_at(ts_ms) if segments is not None else None
        if span is None:
            return None
        driver_id, start, end = span
        return None if driver_id is None else Assignment(truck_id, driver_id, start, end)


class IndexBuilder:
    """Builds a ``HistoryIndex`` one truck at a time, from columns (no object per row)."""

    def __init__(self, drivers: Iterable[Driver]) -> None:
        self._drivers = {d.driver_id: d for d in drivers}
        self._ids: dict[str, str] = {d: d for d in self._drivers}  # one shared str per id
        self._timelines: dict[str, _Segments] = {}
        self._assignments = 0
        self._classes: dict[str, str] = {}
        self._depots: dict[str, str] = {}

    def add_truck(
        self,
        truck_id: str,
        driver_ids: list[str],
        valid_from: list[int],
        valid_to: list[int | None],
    ) -> None:
        ids = self._ids
        shared = [ids.setdefault(d, d) for d in driver_ids]
        self._timelines[truck_id] = _timeline(shared, valid_from, valid_to)
        self._assignments += len(shared)

    def add_trucks(
        self, truck_ids: list[str], vehicle_classes: list[str], depots: list[str | None]
    ) -> None:
        """Rows of the trucks table, as columns (a truck listed again: its last row)."""
        shared = {c: c for c in VEHICLE_CLASSES}  # one str per class, not one per truck
        for truck_id, vehicle_class, depot in zip(truck_ids, vehicle_classes, depots, strict=True):
            self._classes[truck_id] = shared.get(vehicle_class, vehicle_class)
            if depot is None:
                self._depots.pop(truck_id, None)
            else:
                self._depots[truck_id] = depot

    def build(self) -> HistoryIndex:
        return HistoryIndex(
            self._drivers, self._timelines, self._assignments, self._classes, self._depots
        )


def _timeline(
    driver_ids: list[str], valid_from: list[int], valid_to: list[int | None]
) -> _Segments:
    """Disjoint segments for one truck: at each boundary, the active row with the latest
    ``valid_from`` wins (ties: the larger driver_id, so the result never depends on row order).

    A sweep over the boundaries with a heap of the rows begun so far, highest rank on top;
    rows that have ended are dropped when they reach the top. O(n log n) per truck.
    """
    ranked = sorted(range(len(driver_ids)), key=lambda i: (valid_from[i], driver_ids[i]))
    boundaries = sorted(set(valid_from) | {end for end in valid_to if end is not None})
    begun: list[tuple[int, float, str]] = []  # (-rank, valid_to or inf, driver_id)
    starts: array[int] = array("q")
    drivers: list[str | None] = []
    rank = 0
    for start in boundaries:
        while rank < len(ranked) and valid_from[ranked[rank]] <= start:
            row = ranked[rank]
            end = valid_to[row]
            heapq.heappush(begun, (-rank, math.inf if end is None else end, driver_ids[row]))
            rank += 1
        while begun and begun[0][1] <= start:  # valid_to is exclusive
            heapq.heappop(begun)
        winner = begun[0][2] if begun else None
        if not drivers or drivers[-1] != winner:
            starts.append(start)
            drivers.append(winner)
    return _Segments(starts, drivers)


@dataclass(frozen=True, slots=True)
class DriverContext:
    """What an alert says about its driver (CONTRACT.md section 5)."""

    driver_id: str | None
    driver: dict[str, Any] | None
    high_risk: bool


NO_DRIVER = DriverContext(None, None, high_risk=False)


def driver_context(
    index: HistoryIndex, truck_id: str, window_end_ms: int, max_speed_kmh: float
) -> DriverContext:
    """The driver fields of an alert whose newest covered reading is at ``window_end_ms``.

    An assignment naming a driver that drivers.parquet does not know gives that driver_id
    with ``driver`` null: who drove is known, how they usually drive is not.
    """
    driver_id = index.driver_id_at(truck_id, window_end_ms)
    if driver_id is None:
        return NO_DRIVER
    row = index.drivers.get(driver_id)
    if row is None:
        return DriverContext(driver_id, None, high_risk=False)
    driver = {
        "driver_id": row.driver_id,
        "name": row.name,
        "hired_on": row.hired_on,
        "overspeed_events_90d": row.overspeed_events_90d,
        "avg_speed_kmh_90d": row.avg_speed_kmh_90d,
        "km_driven_90d": row.km_driven_90d,
        "risk_tier": row.risk_tier,
        "speed_over_baseline_kmh": round(max_speed_kmh - row.avg_speed_kmh_90d, 3),
        "repeat_offender": row.overspeed_events_90d >= REPEAT_OFFENDER_EVENTS,
    }
    return DriverContext(driver_id, driver, high_risk=row.risk_tier == "high")
