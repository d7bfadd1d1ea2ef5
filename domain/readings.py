"""Telemetry readings: decoding, validation (CONTRACT.md section 2-3) and the canonical form.

``parse_reading`` never raises for any input bytes: it returns a ``Reading`` or a
``Rejection`` naming the contract's reason code. Checks run in a fixed order, and the first
failing one names the reason: size, JSON syntax, schema (presence and types of every field),
timestamp, value ranges, and finally the truck id against the MQTT topic's.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import msgspec

from domain.timestamps import BadTimestamp, check_epoch_ms, format_rfc3339_ms, parse_rfc3339_ms

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_EVENT_ID_CHARS = 128
MAX_SPEED_KMH = 400.0

_TRUCK_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DECODER = msgspec.json.Decoder()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class Reason(StrEnum):
    """Why a message was dead-lettered (CONTRACT.md section 3)."""

    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    TRUCK_MISMATCH = "truck_mismatch"
    # Any stage: processing one record raised where no rule of the contract names the
    # problem (CONTRACT.md section 3). The record is dead-lettered; the flow goes on.
    UNPROCESSABLE = "unprocessable"


class Reading(msgspec.Struct, frozen=True, gc=False):
    """One validated telemetry reading; ``ts_ms`` is UTC epoch milliseconds."""

    event_id: str
    truck_id: str
    ts_ms: int
    speed_kmh: float
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that breaks the contract, with the reason code and a human-readable detail."""

    reason: Reason
    detail: str


class _CanonicalReading(msgspec.Struct, frozen=True, gc=False):
    """The wire form on ``fleet.telemetry``: the contract fields; lat, lon null if absent."""

    event_id: str
    truck_id: str
    ts: str
    speed_kmh: float
    lat: float | None
    lon: float | None


class _CheckedCanonical(msgspec.Struct, frozen=True, gc=False):
    """The canonical form with the contract's limits, checked by msgspec in C (fast path).
    The truck id's characters are checked through a cache: msgspec's ``pattern`` is slow."""

    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID_CHARS)]
    truck_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    ts: Annotated[str, msgspec.Meta(min_length=24, max_length=24)]
    speed_kmh: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_SPEED_KMH)]
    lat: Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)] | None
    lon: Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)] | None


_ENCODER = msgspec.json.Encoder()


def encode_canonical(reading: Reading) -> bytes:
    """Encode a reading in the canonical JSON form (``ts`` as RFC 3339 UTC with ms)."""
    return _ENCODER.encode(
        _CanonicalReading(
            reading.event_id,
            reading.truck_id,
            format_rfc3339_ms(reading.ts_ms),
            reading.speed_kmh,
            reading.lat,
            reading.lon,
        )
    )


_CANONICAL_DECODER = msgspec.json.Decoder(_CheckedCanonical)


def decode_canonical(payload: bytes) -> Reading | Rejection:
    """Decode a reading from ``fleet.telemetry``: a fast path for the canonical form the
    bridge writes, and the full validation of ``parse_reading`` for anything else (another
    producer may write to the topic), so the outcome is the same either way."""
    try:
        canonical = _CANONICAL_DECODER.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return parse_reading(payload)
    ts = canonical.ts  # exactly YYYY-MM-DDTHH:MM:SS.mmmZ on the fast path
    if ts[10] != "T" or ts[19] != "." or ts[23] != "Z" or not _is_truck_id(canonical.truck_id):
        return parse_reading(payload)
    try:
        ts_ms = (datetime.fromisoformat(ts) - _EPOCH) // _ONE_MS
    except ValueError:
        return parse_reading(payload)
    if ts_ms < 0 or len(payload) > MAX_PAYLOAD_BYTES:
        return parse_reading(payload)
    return Reading(
        canonical.event_id,
        canonical.truck_id,
        ts_ms,
        canonical.speed_kmh,
        canonical.lat,
        canonical.lon,
    )


@functools.lru_cache(maxsize=65_536)
def _is_truck_id(truck_id: str) -> bool:
    return _TRUCK_ID.match(truck_id) is not None


def parse_reading(payload: bytes, topic_truck_id: str | None = None) -> Reading | Rejection:
    """Validate one raw payload. ``topic_truck_id`` (from the MQTT topic) is checked when given."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejection(
            Reason.TOO_LARGE, f"payload is {len(payload)} bytes, limit is {MAX_PAYLOAD_BYTES}"
        )
    try:
        document = _DECODER.decode(payload)
    except msgspec.ValidationError as exc:  # a number too large for a float, e.g. 1e999
        return Rejection(Reason.OUT_OF_RANGE, str(exc))
    except msgspec.DecodeError as exc:
        return Rejection(Reason.INVALID_JSON, str(exc))
    except UnicodeDecodeError as exc:
        return Rejection(Reason.INVALID_JSON, f"invalid UTF-8: {exc.reason} at byte {exc.start}")
    if not isinstance(document, dict):
        return Rejection(Reason.SCHEMA, f"top level is {_json_type(document)}, expected object")
    return _validate_document(document, topic_truck_id)


def _validate_document(document: dict[str, Any], topic_truck_id: str | None) -> Reading | Rejection:
    schema_problem = _schema_problem(document)
    if schema_problem is not None:
        return Rejection(Reason.SCHEMA, schema_problem)
    event_id: str = document["event_id"]
    truck_id: str = document["truck_id"]
    try:
        ts_ms = _timestamp_ms(document["ts"])
    except BadTimestamp as exc:
        return Rejection(Reason.BAD_TIMESTAMP, str(exc))
    speed = float(document["speed_kmh"])
    lat = _optional_float(document.get("lat"))
    lon = _optional_float(document.get("lon"))
    range_problem = _range_problem(speed, lat, lon)
    if range_problem is not None:
        return Rejection(Reason.OUT_OF_RANGE, range_problem)
    if topic_truck_id is not None and truck_id != topic_truck_id:
        return Rejection(
            Reason.TRUCK_MISMATCH,
            f"payload truck_id {truck_id!r} differs from topic's {topic_truck_id!r}",
        )
    return Reading(event_id, truck_id, ts_ms, speed, lat, lon)


def _schema_problem(document: dict[str, Any]) -> str | None:
    for field in ("event_id", "truck_id", "ts", "speed_kmh"):
        if field not in document or document[field] is None:
            return f"missing required field {field!r}"
    event_id = document["event_id"]
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= MAX_EVENT_ID_CHARS:
        return f"event_id must be a string of 1-{MAX_EVENT_ID_CHARS} chars"
    truck_id = document["truck_id"]
    if not isinstance(truck_id, str) or _TRUCK_ID.match(truck_id) is None:
        return "truck_id must be 1-64 chars of [A-Za-z0-9_.-]"
    ts = document["ts"]
    if not isinstance(ts, str) and not _is_integer(ts):
        return f"ts is {_json_type(ts)}, expected RFC 3339 string or integer epoch milliseconds"
    for field in ("speed_kmh", "lat", "lon"):
        value = document.get(field)
        if value is not None and not _is_number(value):
            return f"{field} is {_json_type(value)}, expected number"
    return None


def _timestamp_ms(ts: str | int) -> int:
    if isinstance(ts, str):
        return parse_rfc3339_ms(ts)
    return check_epoch_ms(ts)


def _range_problem(speed: float, lat: float | None, lon: float | None) -> str | None:
    if not math.isfinite(speed) or not 0.0 <= speed <= MAX_SPEED_KMH:
        return f"speed_kmh {speed} outside 0..{MAX_SPEED_KMH:g}"
    if lat is not None and not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        return f"lat {lat} outside -90..90"
    if lon is not None and not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        return f"lon {lon} outside -180..180"
    return None


def _optional_float(value: float | int | None) -> float | None:
    return None if value is None else float(value)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_type(value: object) -> str:
    match value:
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "an object"
        case None:
            return "null"
        case _:
            return type(value).__name__


def truck_id_from_topic(topic: str, topic_filter: str) -> str | None:
    """The truck id an MQTT topic names: the level under the filter's first ``+``.

    A filter without ``+`` (e.g. ``fleet/#``) falls back to the level before the last one,
    as in ``fleet/{truck_id}/telemetry``. Returns None when the topic has no such level.
    """
    levels = topic.split("/")
    filter_levels = topic_filter.split("/")
    if filter_levels and filter_levels[0] == "$share" and len(filter_levels) > 2:
        filter_levels = filter_levels[2:]
    index = filter_levels.index("+") if "+" in filter_levels else len(levels) - 2
    if not 0 <= index < len(levels):
        return None
    return levels[index] or None
