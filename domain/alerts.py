"""Alerts (CONTRACT.md section 5): what a fired rule becomes on ``fleet.alerts``, and the one
decoder of those records.

``Alert`` is the value on the wire, fields in the contract's order: ``build_alert`` makes it,
``encode_alert`` writes it and ``decode_alert`` reads it back (for any bytes: an ``Alert``
or a ``Rejection``, never an exception). Everything on ``fleet.alerts`` is hostile input to
its readers (any producer can write there): ``decode_alert`` admits only alerts whose every
value can be shown, ``domain.notifications.render`` shows them.
"""

from __future__ import annotations

import hashlib
import re
from datetime import tzinfo
from enum import StrEnum
from typing import Any

import msgspec

from domain.dead_letters import Reason
from domain.history import NO_DRIVER, HistoryIndex, driver_context
from domain.readings import MAX_EVENT_ID_CHARS, Reading, Rejection
from domain.rules import Detection, Rule
from domain.timestamps import format_rfc3339_ms, from_epoch_ms, parse_rfc3339_ms

SCHEMA_VERSION = 1
BUILTIN_RULE_VERSION = 0  # section 9: the version of section 4's rules

# What ``decode_alert`` admits beyond the types. Alert ids become HTTP header values
# (webhook-id, Idempotency-Key) and Kafka keys: the contract's ids are 32 hex chars; anything
# else must at least be a header-safe token.
ALERT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}", re.ASCII)
MAX_TEXT_CHARS = 256  # the rule, the truck and the driver's tier and hiring date
MAX_COUNT = 1_000_000
SPEED_RANGE = (0.0, 10_000.0)  # km/h: speeds and limits (readings stop at 400)
MAX_RULE_VERSION = 2**31 - 1


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


def alert_id(rule: Rule | str, truck_id: str, oldest_event_id: str) -> str:
    """The same alert always gets the same id: replays and duplicates are recognisable."""
    digest = hashlib.sha256(f"{rule}|{truck_id}|{oldest_event_id}".encode()).hexdigest()
    return digest[:32]


class AlertDriver(msgspec.Struct, frozen=True):
    """The alert's ``driver``: the driver's history row (CONTRACT.md section 6, ``hired_on``
    as ``YYYY-MM-DD``) and the two facts derived from it for this alert."""

    driver_id: str
    name: str
    hired_on: str
    overspeed_events_90d: int
    avg_speed_kmh_90d: float
    km_driven_90d: float
    risk_tier: str
    speed_over_baseline_kmh: float
    repeat_offender: bool


class Position(msgspec.Struct, frozen=True):
    lat: float
    lon: float


class Alert(msgspec.Struct, frozen=True):
    """The alert value, fields in the contract's order.

    ``rule`` stays text, on the wire and here: it is one of section 4's rules (``Rule``,
    see ``builtin_rule``) or, for the rules of a catalogue (section 9), the rule's id, which
    no enum can list. The last three fields came after the first producers: a record
    without them reads as a built-in rule's alert with no position and no details."""

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
    severity: Severity
    driver: AlertDriver | None
    detected_at: str
    schema_version: int = SCHEMA_VERSION
    rule_version: int = BUILTIN_RULE_VERSION
    position: Position | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def builtin_rule(self) -> Rule | None:
        """The rule of section 4 that ``rule`` names; None for any other rule's id."""
        return _BUILTIN_RULES.get(self.rule)


_BUILTIN_RULES = {str(rule): rule for rule in Rule}


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
    critical = detection.is_critical or context.high_risk
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
        severity=Severity.CRITICAL if critical else Severity.WARNING,
        driver=None if context.driver is None else AlertDriver(**context.driver),
        detected_at=format_rfc3339_ms(detected_at_ms),
        rule_version=detection.rule_version,
        position=_position(readings[-1]),
        details=dict(detection.details),
    )


def _position(reading: Reading) -> Position | None:
    if reading.lat is None or reading.lon is None:
        return None
    return Position(reading.lat, reading.lon)


_ENCODER = msgspec.json.Encoder()


def encode_alert(alert: Alert) -> bytes:
    return _ENCODER.encode(alert)


# --- Decoding: the one reader of fleet.alerts -----------------------------------------------

_DECODER = msgspec.json.Decoder(Alert)


def decode_alert(raw: bytes, zone: tzinfo) -> Alert | Rejection:
    """A record of ``fleet.alerts`` as an ``Alert`` whose every value can be shown, times in
    ``zone``; or why not: ``invalid_json`` (not UTF-8 JSON, or a lone surrogate), ``schema``
    (not an object, a field missing or of the wrong type, an unknown severity, nesting too
    deep, text too long or an alert_id that is no header-safe token), ``out_of_range`` (a
    number beyond its range or beyond what a float or integer holds) or ``bad_timestamp``
    (not RFC 3339, or a time the zone's calendar cannot show: a window at the edge of year
    9999 seen from east of UTC). Unknown fields are skipped unread. Never raises for any
    bytes; ``decode_alert(encode_alert(a), UTC) == a`` for every alert ``build_alert`` makes.
    """
    try:
        alert = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        message = str(exc)
        out_of_range = message.startswith(("Number out of range", "Integer value out of range"))
        return Rejection(Reason.OUT_OF_RANGE if out_of_range else Reason.SCHEMA, message)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection(Reason.INVALID_JSON, f"not JSON: {exc}")
    except RecursionError:
        return Rejection(Reason.SCHEMA, "nested too deeply")
    rejection = _check(alert, zone)
    return alert if rejection is None else rejection


def _check(alert: Alert, zone: tzinfo) -> Rejection | None:
    if not ALERT_ID.fullmatch(alert.alert_id):
        return Rejection(Reason.SCHEMA, "alert_id must be 1-128 chars of [A-Za-z0-9_.:-]")
    # The driver's id and name are not limited: the history sets no limit on them, and an
    # alert of the flow is never refused (the e-mail shows the first MAX_TEXT_CHARS).
    texts = {"rule": alert.rule, "truck_id": alert.truck_id}
    if alert.driver is not None:
        texts["driver.hired_on"] = alert.driver.hired_on
        texts["driver.risk_tier"] = alert.driver.risk_tier
    for name, text in texts.items():
        if len(text) > MAX_TEXT_CHARS:
            return Rejection(Reason.SCHEMA, f"{name} longer than {MAX_TEXT_CHARS} chars")
    if not alert.rule or not alert.truck_id:
        return Rejection(Reason.SCHEMA, "rule and truck_id must not be empty")
    if any(not 1 <= len(e) <= MAX_EVENT_ID_CHARS for e in alert.event_ids):
        return Rejection(Reason.SCHEMA, f"event_ids must be 1-{MAX_EVENT_ID_CHARS} chars each")
    return _check_numbers(alert) or _check_times(alert, zone)


def _check_numbers(alert: Alert) -> Rejection | None:
    low, high = SPEED_RANGE
    speeds = {
        "max_speed_kmh": alert.max_speed_kmh,
        "mean_speed_kmh": alert.mean_speed_kmh,
        "threshold_kmh": alert.threshold_kmh,
    }
    for name, speed in speeds.items():
        if not low <= speed <= high:
            return Rejection(Reason.OUT_OF_RANGE, f"{name} {speed} outside {low}..{high}")
    if alert.driver is not None:
        baseline = alert.driver.speed_over_baseline_kmh
        if not -high <= baseline <= high:
            return Rejection(Reason.OUT_OF_RANGE, f"driver.speed_over_baseline_kmh {baseline}")
    if not 1 <= alert.count <= MAX_COUNT:
        return Rejection(Reason.OUT_OF_RANGE, f"count outside 1..{MAX_COUNT}")
    if not 0 <= alert.rule_version <= MAX_RULE_VERSION:
        return Rejection(Reason.OUT_OF_RANGE, "rule_version outside 0..2^31-1")
    position = alert.position
    if position is not None and not (-90 <= position.lat <= 90 and -180 <= position.lon <= 180):
        return Rejection(Reason.OUT_OF_RANGE, "position outside -90..90, -180..180")
    return None


def _check_times(alert: Alert, zone: tzinfo) -> Rejection | None:
    times = {
        "window_start": alert.window_start,
        "window_end": alert.window_end,
        "detected_at": alert.detected_at,
    }
    for name, text in times.items():
        # Only ASCII: a regular expression's \d (and int()) would take any script's digits.
        if not text.isascii() or len(text) > 64:
            return Rejection(Reason.BAD_TIMESTAMP, f"{name} is not an RFC 3339 date-time")
        try:
            moment = from_epoch_ms(parse_rfc3339_ms(text))
            if name != "detected_at":  # shown in the fleet's zone: it must exist there
                moment.astimezone(zone)
        except (ValueError, OverflowError) as exc:
            return Rejection(Reason.BAD_TIMESTAMP, f"{name}: {exc}")
    return None
