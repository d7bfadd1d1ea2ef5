"""Builders for rule-catalogue tests (CONTRACT.md section 9): YAML versions, GeoJSON zones,
named instants, and the product's alerts over sorted readings in the reference's terms.

The product side goes through ``domain.rules.judge`` (or ``TruckState``) and
``domain.alerts.build_alert``, so severity, rule_version and details are what an alert
carries; ``tests/reference.py`` is the independent side."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import yaml  # type: ignore[import-untyped]  # no stubs needed here: safe_dump gives str

from connectors.roads import RoadIndex
from domain.alerts import Alert, build_alert
from domain.catalogue import Catalogue, Detection, RuleBook, parse_version
from domain.readings import Reading
from domain.rules import RuleState, judge
from domain.timestamps import to_epoch_ms
from domain.zones import Zones
from tests.reference import CatalogueAlertKey, RoadTags

T0 = to_epoch_ms(datetime(2026, 12, 1, tzinfo=UTC))  # the first version's effective_from
T0_YAML = "2026-12-01T00:00:00Z"
MS = 1  # one millisecond: "a boundary missed by 1 ms"


def at(seconds: float) -> int:
    """The instant ``seconds`` after T0, in epoch ms."""
    return T0 + round(seconds * 1000)


def iso(ts_ms: int) -> str:
    """An instant as RFC 3339 text with milliseconds (for effective_from)."""
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}Z"


def reading(
    event_id: str,
    ts_ms: int,
    speed: float,
    truck: str = "T1",
    lat: float | None = None,
    lon: float | None = None,
) -> Reading:
    return Reading(event_id, truck, ts_ms, float(speed), lat, lon)


def rule(kind: str, rule_id: str = "r", **fields: Any) -> dict[str, Any]:
    return {"id": rule_id, "kind": kind, **fields}


def version(*rules: Mapping[str, Any], number: int = 1, effective_from: str | int = T0_YAML) -> str:
    """One catalogue file's text; ``effective_from`` as RFC 3339 text or epoch ms."""
    start = iso(effective_from) if isinstance(effective_from, int) else effective_from
    document = {"version": number, "effective_from": start, "rules": [dict(r) for r in rules]}
    return str(yaml.safe_dump(document, sort_keys=False))


# --- Zones (GeoJSON; positions are [lon, lat]) ----------------------------------------------


def rectangle(lon0: float, lat0: float, lon1: float, lat1: float) -> list[list[float]]:
    """A closed, counter-clockwise ring."""
    return [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]


def polygon(*rings: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [list(r) for r in rings]}


def feature(name: str, geometry: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "properties": {"name": name}, "geometry": dict(geometry)}


def feature_collection(*features: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": [dict(f) for f in features]}


# --- The product's alerts ------------------------------------------------------------------


def make_book(
    texts: Sequence[str],
    zones: Mapping[str, Any] | None = None,
    classes: Mapping[str, str] | None = None,
) -> RuleBook:
    """A rule book from YAML texts, as the product parses them (the zones through a JSON
    round trip, as FLEET_ZONES would be read)."""
    parsed_zones = Zones.from_geojson(json.loads(json.dumps(zones))) if zones else None
    versions = [parse_version(text, f"v{i}.yaml", parsed_zones) for i, text in enumerate(texts)]
    return RuleBook(Catalogue(versions), dict(classes or {}))


def alert_of(detection: Detection) -> Alert:
    return build_alert(detection, detection.readings[-1].ts_ms, None)


def key_of(alert: Alert) -> CatalogueAlertKey:
    return (
        alert.rule,
        alert.rule_version,
        alert.truck_id,
        tuple(alert.event_ids),
        str(alert.severity),
    )


def sorted_unique(readings: Iterable[Reading]) -> dict[str, list[Reading]]:
    """Each truck's readings deduplicated by event id (the first kept) and sorted."""
    by_truck: dict[str, dict[str, Reading]] = defaultdict(dict)
    for r in readings:
        by_truck[r.truck_id].setdefault(r.event_id, r)
    return {
        truck: sorted(unique.values(), key=lambda r: (r.ts_ms, r.event_id))
        for truck, unique in by_truck.items()
    }


def product_alerts(readings: Iterable[Reading], book: RuleBook) -> list[Alert]:
    """The alerts ``judge`` gives over each truck's sorted, deduplicated readings, fed one
    reading at a time (as the stream releases them)."""
    alerts: list[Alert] = []
    for ordered in sorted_unique(readings).values():
        states: dict[str, RuleState] = {}
        for r in ordered:
            alerts.extend(alert_of(d) for d in judge(states, [r], book))
    return alerts


def product_keys(readings: Iterable[Reading], book: RuleBook) -> set[CatalogueAlertKey]:
    return {key_of(a) for a in product_alerts(readings, book)}


def alert_document_key(document: Mapping[str, Any]) -> CatalogueAlertKey:
    """The key of an alert as JSON (the flows' output)."""
    return (
        str(document["rule"]),
        int(document["rule_version"]),
        str(document["truck_id"]),
        tuple(document["event_ids"]),
        str(document["severity"]),
    )


# --- Posted limits (CONTRACT.md section 10) -------------------------------------------------


def road_table(index: RoadIndex, readings: Sequence[Reading]) -> dict[tuple[str, str], RoadTags]:
    """The reference's input: each reading's matched way within 20 m (the project's road index
    used as a table), with the way's raw tags, by (truck_id, event_id)."""
    lats = [math.nan if r.lat is None or r.lon is None else r.lat for r in readings]
    lons = [math.nan if r.lat is None or r.lon is None else r.lon for r in readings]
    ways, _ = index.match(np.array(lats), np.array(lons), 20.0)
    table: dict[tuple[str, str], RoadTags] = {}
    for r, way in zip(readings, ways.tolist(), strict=True):
        if way >= 0:
            w = index.ways[way]
            table[r.truck_id, r.event_id] = RoadTags(
                w.osm_way_id, w.road_name, w.maxspeed, w.maxspeed_hgv
            )
    return table
