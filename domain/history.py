"""Driver history (CONTRACT.md section 6) and the as-of join that names an alert's driver.

``HistoryIndex`` is built once per load, off the hot path: for every truck, the assignment
rows become disjoint time segments, each naming the driver whose assignment has the latest
``valid_from`` among those in force (``valid_from <= t < valid_to``, open ``valid_to`` =
forever). Overlaps are resolved there, so a lookup is one ``bisect``: O(log n) per alert,
never a scan. Times are epoch milliseconds (UTC).
"""

from __future__ import annotations

import bisect
import heapq
import math
from array import array
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

RISK_TIERS = ("low", "medium", "high")
REPEAT_OFFENDER_EVENTS = 3


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


@dataclass(frozen=True)
class HistoryIndex:
    """Drivers by id and each truck's assignment timeline, ready for lookups."""

    drivers: Mapping[str, Driver] = field(default_factory=dict)
    timelines: Mapping[str, _Segments] = field(default_factory=dict)
    assignments: int = 0

    @classmethod
    def build(cls, drivers: Iterable[Driver], assignments: Iterable[Assignment]) -> HistoryIndex:
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
        return builder.build()

    def driver_id_at(self, truck_id: str, ts_ms: int) -> str | None:
        """The driver assigned to ``truck_id`` at ``ts_ms``, or None."""
        segments = self.timelines.get(truck_id)
        return segments.at(ts_ms) if segments is not None else None


class IndexBuilder:
    """Builds a ``HistoryIndex`` one truck at a time, from columns (no object per row)."""

    def __init__(self, drivers: Iterable[Driver]) -> None:
        self._drivers = {d.driver_id: d for d in drivers}
        self._ids: dict[str, str] = {d: d for d in self._drivers}  # one shared str per id
        self._timelines: dict[str, _Segments] = {}
        self._assignments = 0

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

    def build(self) -> HistoryIndex:
        return HistoryIndex(self._drivers, self._timelines, self._assignments)


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
