"""Alerts (CONTRACT.md section 5): what a fired rule becomes on ``fleet.alerts``."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from domain.history import NO_DRIVER, HistoryIndex, driver_context
from domain.rules import Detection, Rule
from domain.timestamps import format_rfc3339_ms

SCHEMA_VERSION = 1


def alert_id(rule: Rule | str, truck_id: str, oldest_event_id: str) -> str:
    """The same alert always gets the same id: replays and duplicates are recognisable."""
    digest = hashlib.sha256(f"{rule}|{truck_id}|{oldest_event_id}".encode()).hexdigest()
    return digest[:32]


class Alert(msgspec.Struct, frozen=True):
    """The alert value, fields in the contract's order."""

    alert_id: str
    rule: str
    truck_id: str
    driver_id: str | None
    window_start: str
    window_end: str
    count: int
    event_ids: list[str]
    max_speed_kmh: float
    mean_speed_kmh: float
    threshold_kmh: float
    severity: str
    driver: dict[str, Any] | None
    detected_at: str
    schema_version: int = SCHEMA_VERSION


def build_alert(
    detection: Detection, detected_at_ms: int, history: HistoryIndex | None = None
) -> Alert:
    """The alert for a detection, with its driver looked up in ``history`` (if any) as of
    the newest covered reading."""
    readings = detection.readings
    speeds = [r.speed_kmh for r in readings]
    max_speed = max(speeds)
    context = NO_DRIVER
    if history is not None:
        context = driver_context(history, detection.truck_id, readings[-1].ts_ms, max_speed)
    critical = detection.rule is Rule.INSTANT or context.high_risk
    return Alert(
        alert_id=alert_id(detection.rule, detection.truck_id, readings[0].event_id),
        rule=str(detection.rule),
        truck_id=detection.truck_id,
        driver_id=context.driver_id,
        window_start=format_rfc3339_ms(readings[0].ts_ms),
        window_end=format_rfc3339_ms(readings[-1].ts_ms),
        count=len(readings),
        event_ids=[r.event_id for r in readings],
        max_speed_kmh=max_speed,
        mean_speed_kmh=round(sum(speeds) / len(speeds), 3),
        threshold_kmh=detection.threshold_kmh,
        severity="critical" if critical else "warning",
        driver=context.driver,
        detected_at=format_rfc3339_ms(detected_at_ms),
    )


_ENCODER = msgspec.json.Encoder()


def encode_alert(alert: Alert) -> bytes:
    return _ENCODER.encode(alert)
