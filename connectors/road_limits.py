"""Each reading's posted limit (CONTRACT.md section 10): one bulk map match per batch of
readings (a Kafka fetch in the alerts flow, a chunk in the backfill), never one query per
reading, then the matched way's limit for the truck's vehicle class.

The flows call ``PostedLimits.attach`` on what they hand the rules, so the stream and the
backfill give every reading the same limit by the same code. A reading keeps no limit when it
has no position, no road lies within the match distance, or its road has no limit for its
truck; ``posted_limit_over`` then treats it as not over (domain/rule_kinds.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec
import numpy as np

from connectors.roads import DEFAULT_MATCH_M, RoadIndex, RoadWay, load_road_index
from domain.readings import Reading
from domain.speed_limits import HEAVY, RoadLimit

_replace = msgspec.structs.replace


def _limit(way: RoadWay, vehicle_class: str | None) -> RoadLimit | None:
    posted = way.limit_for(vehicle_class)
    if posted is None:
        return None
    return RoadLimit(posted.kmh, posted.source, way.osm_way_id, way.road_name)


class PostedLimits:
    """A road index and the match distance (FLEET_ROAD_MATCH_M), with each way's limit for
    heavy trucks and for the rest made once: readings share them."""

    def __init__(self, index: RoadIndex, max_m: float = DEFAULT_MATCH_M) -> None:
        self.index = index
        self.max_m = max_m
        self._other = [_limit(way, None) for way in index.ways]
        self._heavy = [_limit(way, HEAVY) for way in index.ways]

    @classmethod
    def load(cls, extract: Path, cache_dir: Path | None, max_m: float) -> PostedLimits:
        return cls(load_road_index(extract, cache_dir), max_m)

    def attach(self, batches: Sequence[list[Reading]], vehicle_classes: Mapping[str, str]) -> None:
        """Give every positioned reading of ``batches`` its posted limit, in place (each
        list's readings are replaced by copies with ``posted_limit`` set): one bulk match
        for all of them."""
        where: list[tuple[list[Reading], int]] = []
        lats: list[float] = []
        lons: list[float] = []
        for readings in batches:
            for position, reading in enumerate(readings):
                lat, lon = reading.lat, reading.lon
                if lat is not None and lon is not None:
                    where.append((readings, position))
                    lats.append(lat)
                    lons.append(lon)
        if not where:
            return
        ways, _ = self.index.match(
            np.array(lats, dtype=np.float64), np.array(lons, dtype=np.float64), self.max_m
        )
        other, heavy = self._other, self._heavy
        for (readings, position), way in zip(where, ways.tolist(), strict=True):
            reading = readings[position]
            limit = None
            if way >= 0:
                table = heavy if vehicle_classes.get(reading.truck_id) == HEAVY else other
                limit = table[way]
            if limit is not reading.posted_limit:
                readings[position] = _replace(reading, posted_limit=limit)
