"""Named instants and small builders for readable tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.readings import Reading
from domain.timestamps import to_epoch_ms

BEGINNING = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
BEGINNING_MS = to_epoch_ms(BEGINNING)
# When the bridge received ``payload()``: just after its ts (readings from the future are bad).
RECEIVED_MS = to_epoch_ms(datetime(2026, 11, 24, 10, 15, 4, tzinfo=UTC))


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def payload(**overrides: Any) -> bytes:
    """A valid telemetry payload for truck T1; keyword arguments replace or (None) drop fields."""
    document: dict[str, Any] = {
        "event_id": "e-1",
        "truck_id": "T1",
        "ts": "2026-11-24T10:15:03.120Z",
        "speed_kmh": 93.5,
        "lat": 52.5,
        "lon": 13.4,
    }
    for field, value in overrides.items():
        if value is _DROP:
            document.pop(field, None)
        else:
            document[field] = value
    return json.dumps(document).encode()


_DROP = object()
DROP: Any = _DROP


def reading(
    truck: str = "T1",
    *,
    at: datetime = BEGINNING,
    speed: float = 95.0,
    event_id: str | None = None,
) -> Reading:
    """A reading of ``truck`` at instant ``at``; the event id defaults to truck and ms."""
    ts_ms = to_epoch_ms(at)
    return Reading(event_id or f"{truck}-{ts_ms}", truck, ts_ms, float(speed))
