"""Alert documents (CONTRACT.md section 5)."""

from __future__ import annotations

import hashlib
import json

from domain.alerts import alert_id, build_alert, encode_alert
from domain.rules import Detection, Rule
from tests.builders import BEGINNING, BEGINNING_MS, reading, seconds


def test_alert_id_is_the_contract_hash() -> None:
    expected = hashlib.sha256(b"sustained_speeding|T1|e-1").hexdigest()[:32]
    assert alert_id(Rule.SUSTAINED, "T1", "e-1") == expected
    assert len(expected) == 32


def test_sustained_alert_document() -> None:
    readings = tuple(
        reading(at=BEGINNING + seconds(s), speed=v, event_id=f"e{s}")
        for s, v in [(0, 91.0), (10, 95.5), (20, 120.25), (30, 99.0), (40.5, 93.0)]
    )
    detection = Detection(Rule.SUSTAINED, "T1", readings, 90.0)
    document = json.loads(encode_alert(build_alert(detection, BEGINNING_MS + 61_234)))
    assert document == {
        "alert_id": alert_id("sustained_speeding", "T1", "e0"),
        "rule": "sustained_speeding",
        "truck_id": "T1",
        "driver_id": None,
        "window_start": "2026-11-24T10:00:00.000Z",
        "window_end": "2026-11-24T10:00:40.500Z",
        "count": 5,
        "event_ids": ["e0", "e10", "e20", "e30", "e40.5"],
        "max_speed_kmh": 120.25,
        "mean_speed_kmh": 99.75,
        "threshold_kmh": 90.0,
        "severity": "warning",
        "driver": None,
        "detected_at": "2026-11-24T10:01:01.234Z",
        "schema_version": 1,
    }


def test_instant_alert_is_critical() -> None:
    detection = Detection(Rule.INSTANT, "T9", (reading("T9", speed=141.0, event_id="x"),), 130.0)
    document = json.loads(encode_alert(build_alert(detection, BEGINNING_MS)))
    assert document["severity"] == "critical"
    assert document["window_start"] == document["window_end"]
    assert document["count"] == 1
    assert document["threshold_kmh"] == 130.0
    assert document["alert_id"] == alert_id("instant_overspeed", "T9", "x")
