"""A plain reference for CONTRACT.md section 11's scorecards, written from the text and
sharing no code with the product (domain/scorecards.py): dedupe, sort each truck, attribute
each reading by scanning the assignments, then add up with lists. Slow and obvious.

Inputs: the readings (any order, resends included), the assignments as
(truck_id, driver_id, valid_from_ms, valid_to_ms | None), and the alerts as the flows wrote
them (JSON documents: their driver_id, window_end, rule and severity are what count)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from domain.readings import Reading

RADIUS_KM = 6371.0088

AssignmentRow = tuple[str, str, int, int | None]


def _driver(rows: Sequence[AssignmentRow], truck: str, ts: int) -> str | None:
    """Section 6: valid_from <= ts < valid_to (or open); several: the latest valid_from
    (ties: the larger driver_id, as the product documents)."""
    live = [
        (start, driver)
        for t, driver, start, end in rows
        if t == truck and start <= ts and (end is None or ts < end)
    ]
    return max(live)[1] if live else None


def _local_day(ts_ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, zone).strftime("%Y-%m-%d")


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    # The haversine in its atan2 form (the product uses asin): equal to ~1e-12 relative.
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    h = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * RADIUS_KM * math.atan2(math.sqrt(h), math.sqrt(1 - h))


def _iso_to_ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def reference_scorecards(
    readings: Iterable[Reading],
    assignments: Sequence[AssignmentRow],
    alerts: Iterable[Mapping[str, Any]],
    timezone: str = "UTC",
    threshold_kmh: float = 90.0,
    weights: Mapping[str, Any] | None = None,
) -> dict[tuple[str | None, str], dict[str, Any]]:
    """Every scorecard, by (driver_id, day)."""
    zone = ZoneInfo(timezone)
    w = {"warning": 1.0, "critical": 5.0, "rules": {}, "min_km": 100.0, **(weights or {})}
    unique: dict[tuple[str, str], Reading] = {}
    for r in readings:
        unique.setdefault((r.truck_id, r.event_id), r)
    by_truck: dict[str, list[Reading]] = defaultdict(list)
    for r in unique.values():
        by_truck[r.truck_id].append(r)

    cards: dict[tuple[str | None, str], dict[str, Any]] = {}

    def card(driver: str | None, day: str) -> dict[str, Any]:
        return cards.setdefault(
            (driver, day),
            {
                "trucks": set(),
                "readings": 0,
                "pairs_km": [],
                "driving_ms": 0,
                "over_ms": 0,
                "speeds": [],
                "alerts": defaultdict(int),
                "weights": [],
            },
        )

    for truck, rows in by_truck.items():
        rows.sort(key=lambda r: (r.ts_ms, r.event_id))
        for i, r in enumerate(rows):
            c = card(_driver(assignments, truck, r.ts_ms), _local_day(r.ts_ms, zone))
            c["trucks"].add(truck)
            c["readings"] += 1
            c["speeds"].append(r.speed_kmh)
            if i == 0:
                continue
            p = rows[i - 1]
            positioned = None not in (p.lat, p.lon, r.lat, r.lon)
            if positioned and r.ts_ms - p.ts_ms <= 60_000:
                assert p.lat is not None
                assert p.lon is not None
                assert r.lat is not None
                assert r.lon is not None
                c["pairs_km"].append(_distance_km(p.lat, p.lon, r.lat, r.lon))
                gap = r.ts_ms - p.ts_ms
                if r.speed_kmh > 5 or p.speed_kmh > 5:
                    c["driving_ms"] += gap
                if r.speed_kmh > threshold_kmh and p.speed_kmh > threshold_kmh:
                    c["over_ms"] += gap

    seen: set[str] = set()
    for alert in alerts:
        if alert["alert_id"] in seen:
            continue
        seen.add(alert["alert_id"])
        day = _local_day(_iso_to_ms(alert["window_end"]), zone)
        c = card(alert["driver_id"], day)
        c["trucks"].add(alert["truck_id"])
        c["alerts"][alert["rule"]] += 1
        weight = w["critical"] if alert["severity"] == "critical" else w["warning"]
        c["weights"].append(weight * w["rules"].get(alert["rule"], 1.0))

    out: dict[tuple[str | None, str], dict[str, Any]] = {}
    for (driver, day), c in cards.items():
        distance = math.fsum(c["pairs_km"])
        events = sum(c["alerts"].values())
        weighted = math.fsum(c["weights"])
        out[driver, day] = {
            "driver_id": driver,
            "day": day,
            "trucks": len(c["trucks"]),
            "readings": c["readings"],
            "distance_km": distance,
            "driving_s": c["driving_ms"] / 1000,
            "over_threshold_s": c["over_ms"] / 1000,
            "max_speed_kmh": max(c["speeds"]) if c["speeds"] else None,
            "alerts": dict(sorted(c["alerts"].items())),
            "events_per_1000km": events * 1000 / distance if distance > 0 else None,
            "safety_score": max(0.0, 100 - weighted * 1000 / max(distance, w["min_km"])),
            "schema_version": 1,
        }
    return out


def assert_same_scorecards(
    found: Iterable[Mapping[str, Any]], expected: Mapping[tuple[str | None, str], Mapping[str, Any]]
) -> None:
    """Exactly one scorecard per expected (driver, day), equal field by field (distances and
    the figures made from them to 1e-9 relative: the two haversines differ in the last bits)."""
    by_key: dict[tuple[str | None, str], Mapping[str, Any]] = {}
    for card in found:
        key = (card["driver_id"], card["day"])
        assert key not in by_key, f"two scorecards for {key}"
        by_key[key] = card
    assert set(by_key) == set(expected), (sorted(map(str, by_key)), sorted(map(str, expected)))
    for key, want in expected.items():
        got = by_key[key]
        assert set(got) == set(want), key
        for name, value in want.items():
            if name in ("distance_km", "events_per_1000km", "safety_score") and value is not None:
                assert math.isclose(got[name], value, rel_tol=1e-9, abs_tol=1e-9), (key, name)
            else:
                assert got[name] == value, (key, name, got[name], value)
