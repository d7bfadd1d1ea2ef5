"""Telemetry readings: decoding, validation (CONTRACT.md section 2-3) and the canonical form.

``decode_reading`` never raises for any input bytes: it returns a ``Reading`` or a
``Rejection`` naming the contract's reason code. Checks run in a fixed order, and the first
failing one names the reason: size, JSON syntax, schema (presence and types of every field),
timestamp, value ranges, and finally the truck id against the MQTT topic's.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec

from domain.dead_letters import Reason
from domain.speed_limits import RoadLimit
from domain.timestamps import (
    EPOCH,
    BadTimestamp,
    check_epoch_ms,
    format_rfc3339_ms,
    parse_rfc3339_ms,
)

# The limits of CONTRACT.md section 2, defined once: the stream's validation below and the
# backfill's Polars expressions (connectors/parquet_input.py) are both built from these.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_EVENT_ID_CHARS = 128
MAX_SPEED_KMH = 400.0
LAT_RANGE = (-90.0, 90.0)
LON_RANGE = (-180.0, 180.0)
# Anchors are left to each engine (Python's ``$`` also matches before a final newline).
TRUCK_ID_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
TRUCK_ID_RULE = "truck_id must be 1-64 chars of [A-Za-z0-9_.-]"
EVENT_ID_RULE = f"event_id must be a string of 1-{MAX_EVENT_ID_CHARS} chars"

_TRUCK_ID = re.compile(TRUCK_ID_PATTERN, re.ASCII)
_DECODER = msgspec.json.Decoder()
_ONE_MS = timedelta(milliseconds=1)


class Reading(msgspec.Struct, frozen=True, gc=False):
    """One validated telemetry reading; ``ts_ms`` is UTC epoch milliseconds.
    ``posted_limit``: the limit of the road it was matched to, for its truck (CONTRACT.md
    section 10); set by the flows before the rules (connectors/road_limits.py), never by a
    sender, and not part of the wire form."""

    event_id: str
    truck_id: str
    ts_ms: int
    speed_kmh: float
    lat: float | None = None
    lon: float | None = None
    posted_limit: RoadLimit | None = None


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


class _Fields(msgspec.Struct, frozen=True, gc=False):
    """The contract's fields of a raw payload, as they came (types are checked after).
    Decoding into a struct skips unknown fields unread, so an ignored extra field cannot
    make a reading bad, whatever its value (even a number no float can hold)."""

    event_id: Any = None
    truck_id: Any = None
    ts: Any = None
    speed_kmh: Any = None
    lat: Any = None
    lon: Any = None


_FIELDS_DECODER = msgspec.json.Decoder(_Fields)
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


def decode_reading(
    payload: bytes, *, topic_truck_id: str | None = None, not_after_ms: int | None = None
) -> Reading | Rejection:
    """The one decoder of telemetry: a raw MQTT payload (the bridge) or a ``fleet.telemetry``
    record (every flow that reads the topic). ``topic_truck_id`` (the MQTT topic's) is
    checked when given; a ``ts`` after ``not_after_ms`` (receipt + FLEET_MAX_FUTURE_S) is
    refused. The canonical form the bridge writes takes a fast path, checked by msgspec in
    C; anything else is validated field by field. Both decide alike (a property test holds
    them to it), so where a payload comes from never changes its outcome."""
    reading = _decode_canonical(payload, not_after_ms)
    if reading is None:
        return _validate_payload(payload, topic_truck_id, not_after_ms)
    if topic_truck_id is not None and reading.truck_id != topic_truck_id:
        return _mismatch(reading.truck_id, topic_truck_id)
    return reading


def _decode_canonical(payload: bytes, not_after_ms: int | None) -> Reading | None:
    """The reading, if ``payload`` is in the canonical form and valid; else None (then the
    full validation decides)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None
    try:
        canonical = _CANONICAL_DECODER.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    ts = canonical.ts
    # Exactly YYYY-MM-DDTHH:MM:SS.mmmZ in ASCII here; anything else (ISO week dates,
    # other scripts' digits, which fromisoformat takes) goes the full way.
    if (
        not ts.isascii()
        or ts[4] != "-"
        or ts[7] != "-"
        or ts[10] != "T"
        or ts[13] != ":"
        or ts[16] != ":"
        or ts[19] != "."
        or ts[23] != "Z"
        or not _is_truck_id(canonical.truck_id)
    ):
        return None
    try:
        ts_ms = (datetime.fromisoformat(ts) - EPOCH) // _ONE_MS
    except ValueError:
        return None
    if ts_ms < 0 or (not_after_ms is not None and ts_ms > not_after_ms):
        return None
    return Reading(
        canonical.event_id,
        canonical.truck_id,
        ts_ms,
        canonical.speed_kmh,
        canonical.lat,
        canonical.lon,
    )


def _mismatch(truck_id: str, topic_truck_id: str) -> Rejection:
    return Rejection(
        Reason.TRUCK_MISMATCH,
        f"payload truck_id {truck_id!r} differs from topic's {topic_truck_id!r}",
    )


@functools.lru_cache(maxsize=65_536)
def _is_truck_id(truck_id: str) -> bool:
    return _TRUCK_ID.fullmatch(truck_id) is not None


def _validate_payload(
    payload: bytes, topic_truck_id: str | None, not_after_ms: int | None
) -> Reading | Rejection:
    """Validate one payload field by field, in the order the module docstring gives."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejection(
            Reason.TOO_LARGE, f"payload is {len(payload)} bytes, limit is {MAX_PAYLOAD_BYTES}"
        )
    try:
        fields = _FIELDS_DECODER.decode(payload)
    except msgspec.ValidationError:
        return _classify_non_object(payload)
    except msgspec.DecodeError as exc:
        return Rejection(Reason.INVALID_JSON, str(exc))
    except UnicodeDecodeError as exc:
        return Rejection(Reason.INVALID_JSON, f"invalid UTF-8: {exc.reason} at byte {exc.start}")
    except RecursionError:
        return Rejection(Reason.INVALID_JSON, "nested too deeply to decode")
    return _validate_fields(fields, topic_truck_id, not_after_ms)


def _classify_non_object(payload: bytes) -> Rejection:
    """The payload is JSON but did not decode as an object of the contract's fields: a
    number too large for a float in one of them, or another top-level type."""
    try:
        document = _DECODER.decode(payload)
    except msgspec.ValidationError as exc:  # a number too large for a float, e.g. 1e999
        return Rejection(Reason.OUT_OF_RANGE, str(exc))
    except (msgspec.DecodeError, RecursionError) as exc:
        return Rejection(Reason.INVALID_JSON, str(exc) or "nested too deeply to decode")
    if isinstance(document, dict):  # an object whose known field holds no float
        return Rejection(Reason.OUT_OF_RANGE, "a number outside the range of a float")
    return Rejection(Reason.SCHEMA, f"top level is {_json_type(document)}, expected object")


def _validate_fields(
    fields: _Fields, topic_truck_id: str | None, not_after_ms: int | None
) -> Reading | Rejection:
    schema_problem = _schema_problem(fields)
    if schema_problem is not None:
        return Rejection(Reason.SCHEMA, schema_problem)
    event_id: str = fields.event_id
    truck_id: str = fields.truck_id
    try:
        ts_ms = _timestamp_ms(fields.ts)
    except BadTimestamp as exc:
        return Rejection(Reason.BAD_TIMESTAMP, str(exc))
    if not_after_ms is not None and ts_ms > not_after_ms:
        return Rejection(
            Reason.BAD_TIMESTAMP,
            f"ts {format_rfc3339_ms(ts_ms)} is in the future: later than "
            f"{format_rfc3339_ms(not_after_ms)}, FLEET_MAX_FUTURE_S after it was received",
        )
    speed = _to_float(fields.speed_kmh)
    lat = None if fields.lat is None else _to_float(fields.lat)
    lon = None if fields.lon is None else _to_float(fields.lon)
    range_problem = _range_problem(speed, lat, lon)
    if range_problem is not None:
        return Rejection(Reason.OUT_OF_RANGE, range_problem)
    if topic_truck_id is not None and truck_id != topic_truck_id:
        return _mismatch(truck_id, topic_truck_id)
    return Reading(event_id, truck_id, ts_ms, speed, lat, lon)


def _schema_problem(fields: _Fields) -> str | None:
    for name in ("event_id", "truck_id", "ts", "speed_kmh"):
        if getattr(fields, name) is None:
            return f"missing required field {name!r}"
    event_id = fields.event_id
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= MAX_EVENT_ID_CHARS:
        return EVENT_ID_RULE
    truck_id = fields.truck_id
    if not isinstance(truck_id, str) or _TRUCK_ID.fullmatch(truck_id) is None:
        return TRUCK_ID_RULE
    ts = fields.ts
    if not isinstance(ts, str) and not _is_integer(ts):
        return f"ts is {_json_type(ts)}, expected RFC 3339 string or integer epoch milliseconds"
    for name in ("speed_kmh", "lat", "lon"):
        value = getattr(fields, name)
        if value is not None and not _is_number(value):
            return f"{name} is {_json_type(value)}, expected number"
    return None


def _timestamp_ms(ts: str | int) -> int:
    if isinstance(ts, str):
        return parse_rfc3339_ms(ts)
    return check_epoch_ms(ts)


def _range_problem(speed: float, lat: float | None, lon: float | None) -> str | None:
    if not math.isfinite(speed) or not 0.0 <= speed <= MAX_SPEED_KMH:
        return f"speed_kmh {speed} outside 0..{MAX_SPEED_KMH:g}"
    if lat is not None and not (math.isfinite(lat) and LAT_RANGE[0] <= lat <= LAT_RANGE[1]):
        return f"lat {lat} outside -90..90"
    if lon is not None and not (math.isfinite(lon) and LON_RANGE[0] <= lon <= LON_RANGE[1]):
        return f"lon {lon} outside -180..180"
    return None


def _to_float(value: float | int) -> float:
    """A JSON number as a float; an integer beyond float range becomes an infinity (which
    the range check refuses) rather than an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


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
