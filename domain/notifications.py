"""Alerts as e-mails: decoding, recipients, rendering, Standard Webhooks signatures, retry
decisions.

Pure logic: the HTTP calls live in connectors/email_api.py. Everything that reaches the
notifier is hostile input: the alerts on ``fleet.alerts`` (any producer can write there) and
the e-mail API's answers. ``decode_alert`` admits only alerts that ``render`` can render,
``render`` puts no line break into a single-line field, and ``RetryPolicy`` reads only the
Retry-After forms of RFC 9110.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import html
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any, Literal

import msgspec

from domain.dead_letters import Reason
from domain.readings import MAX_EVENT_ID_CHARS, Rejection
from domain.timestamps import from_epoch_ms, parse_rfc3339_ms

# Alert ids become HTTP header values (webhook-id, Idempotency-Key) and Kafka keys: the
# contract's ids are 32 hex chars; anything else must at least be a header-safe token.
ALERT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}", re.ASCII)
MAX_TEXT_CHARS = 256  # any other text shown in an e-mail (ids, names, tiers)
MAX_COUNT = 1_000_000
SPEED_RANGE = (0.0, 10_000.0)  # km/h: speeds and limits (readings stop at 400)
MAX_RULE_VERSION = 2**31 - 1

# Characters that must not reach a single-line field (subject, header, tag, recipient, a
# line of the text body): C0 and C1 controls (CR, LF, VT, FF, NEL, the separators
# \x1c-\x1e, ...) and the Unicode line and paragraph separators. Lone surrogates cannot be
# encoded as UTF-8 at all.
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def one_line(value: object, limit: int = MAX_TEXT_CHARS) -> str:
    """``value`` as text fit for a single-line field: every control character and line
    separator becomes a space, a lone surrogate U+FFFD, and the text is cut at ``limit``."""
    text = _SURROGATES.sub("\ufffd", _LINE_BREAKS.sub(" ", str(value)))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


# --- Decoding: what reaches render is an alert it can render -------------------------------


class _Driver(msgspec.Struct, frozen=True):
    """The alert's ``driver``: the history row (CONTRACT.md section 6) and two derived facts.
    Every field may be missing or null; present, it must have the contract's type."""

    driver_id: str | None = None
    name: str | None = None
    hired_on: str | None = None
    overspeed_events_90d: int | None = None
    avg_speed_kmh_90d: float | None = None
    km_driven_90d: float | None = None
    risk_tier: str | None = None
    speed_over_baseline_kmh: float | None = None
    repeat_offender: bool | None = None


class _Position(msgspec.Struct, frozen=True):
    lat: float
    lon: float


class _Alert(msgspec.Struct, frozen=True):
    """An alert (CONTRACT.md section 5) as the notifier accepts it. The five fields it has
    always required are required; the others may be missing (older producers, tests) but
    must have the contract's type when present. Unknown fields are skipped unread."""

    alert_id: str
    rule: str
    truck_id: str
    window_start: str
    window_end: str
    driver_id: str | None = None
    count: int | None = None
    event_ids: list[str] | None = None
    max_speed_kmh: float | None = None
    mean_speed_kmh: float | None = None
    threshold_kmh: float | None = None
    severity: Literal["warning", "critical"] = "warning"
    driver: _Driver | None = None
    detected_at: str | None = None
    schema_version: int = 1
    rule_version: int = 0
    position: _Position | None = None
    details: dict[str, Any] | None = None


_ALERT_DECODER = msgspec.json.Decoder(_Alert)


def decode_alert(raw: bytes, zone: tzinfo = UTC) -> dict[str, Any] | Rejection:
    """An alert from ``fleet.alerts`` that ``render`` can render in ``zone``, as a plain dict;
    or why not: ``invalid_json`` (not UTF-8 JSON, or a lone surrogate), ``schema`` (not an
    object, a field of the wrong type, nesting too deep, text too long or an alert_id that
    is no header-safe token), ``out_of_range`` (a number beyond its range or beyond what a
    float or integer holds) or ``bad_timestamp`` (not RFC 3339, or a time the zone's
    calendar cannot show: a window at the edge of year 9999 seen from east of UTC).
    Never raises for any bytes."""
    try:
        alert = _ALERT_DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        message = str(exc)
        out_of_range = message.startswith(("Number out of range", "Integer value out of range"))
        return Rejection(Reason.OUT_OF_RANGE if out_of_range else Reason.SCHEMA, message)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection(Reason.INVALID_JSON, f"not JSON: {exc}")
    except RecursionError:
        return Rejection(Reason.SCHEMA, "nested too deeply")
    rejection = _check(alert, zone)
    if rejection is not None:
        return rejection
    document: dict[str, Any] = msgspec.to_builtins(alert)
    return document


def _check(alert: _Alert, zone: tzinfo) -> Rejection | None:
    if not ALERT_ID.fullmatch(alert.alert_id):
        return Rejection(Reason.SCHEMA, "alert_id must be 1-128 chars of [A-Za-z0-9_.:-]")
    driver = alert.driver or _Driver()
    texts = {
        "rule": alert.rule,
        "truck_id": alert.truck_id,
        "driver_id": alert.driver_id,
        "driver.driver_id": driver.driver_id,
        "driver.name": driver.name,
        "driver.hired_on": driver.hired_on,
        "driver.risk_tier": driver.risk_tier,
    }
    for name, text in texts.items():
        if text is not None and len(text) > MAX_TEXT_CHARS:
            return Rejection(Reason.SCHEMA, f"{name} longer than {MAX_TEXT_CHARS} chars")
    if not alert.rule or not alert.truck_id:
        return Rejection(Reason.SCHEMA, "rule and truck_id must not be empty")
    if any(not 1 <= len(e) <= MAX_EVENT_ID_CHARS for e in alert.event_ids or ()):
        return Rejection(Reason.SCHEMA, f"event_ids must be 1-{MAX_EVENT_ID_CHARS} chars each")
    return _check_numbers(alert, driver) or _check_times(alert, zone)


def _check_numbers(alert: _Alert, driver: _Driver) -> Rejection | None:
    low, high = SPEED_RANGE
    speeds = {
        "max_speed_kmh": alert.max_speed_kmh,
        "mean_speed_kmh": alert.mean_speed_kmh,
        "threshold_kmh": alert.threshold_kmh,
    }
    for name, speed in speeds.items():
        if speed is not None and not low <= speed <= high:
            return Rejection(Reason.OUT_OF_RANGE, f"{name} {speed} outside {low}..{high}")
    baseline = driver.speed_over_baseline_kmh
    if baseline is not None and not -high <= baseline <= high:
        return Rejection(Reason.OUT_OF_RANGE, f"driver.speed_over_baseline_kmh {baseline}")
    if alert.count is not None and not 1 <= alert.count <= MAX_COUNT:
        return Rejection(Reason.OUT_OF_RANGE, f"count outside 1..{MAX_COUNT}")
    if not 0 <= alert.rule_version <= MAX_RULE_VERSION:
        return Rejection(Reason.OUT_OF_RANGE, "rule_version outside 0..2^31-1")
    position = alert.position
    if position is not None and not (-90 <= position.lat <= 90 and -180 <= position.lon <= 180):
        return Rejection(Reason.OUT_OF_RANGE, "position outside -90..90, -180..180")
    return None


def _check_times(alert: _Alert, zone: tzinfo) -> Rejection | None:
    times = {"window_start": alert.window_start, "window_end": alert.window_end}
    if alert.detected_at is not None:
        times["detected_at"] = alert.detected_at
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


@dataclass(frozen=True)
class Routes:
    """Who gets an alert: the default recipients, those for its severity, and those of
    every truck group whose pattern matches its truck (shell-style, e.g. ``T001*``)."""

    default: tuple[str, ...]
    by_severity: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> Routes:
        """From the routes file's JSON: ``default`` (a list of addresses), ``severity`` (a map
        from severity to addresses), ``groups`` (``[{"trucks": "T00*", "to": [..]}]``)."""
        default = tuple(document.get("default", ()))
        if not default:
            raise ValueError("routes need at least one default recipient")
        by_severity = {str(k): tuple(v) for k, v in document.get("severity", {}).items()}
        groups = tuple((str(g["trucks"]), tuple(g["to"])) for g in document.get("groups", ()))
        return cls(default, by_severity, groups)

    def recipients(self, alert: Mapping[str, Any]) -> list[str]:
        found = list(self.default)
        found += self.by_severity.get(str(alert.get("severity")), ())
        truck = str(alert.get("truck_id"))
        for pattern, to in self.groups:
            if fnmatch.fnmatchcase(truck, pattern):
                found += to
        return list(dict.fromkeys(found))  # once each, in order


@dataclass(frozen=True)
class Email:
    to: list[str]
    subject: str
    text: str
    html: str


RULE_TITLES = {
    "sustained_speeding": "Sustained speeding",
    "instant_overspeed": "Critical over-speed",
}


def render(alert: Mapping[str, Any], routes: Routes, zone: tzinfo) -> Email:
    """The e-mail for an alert, times in the fleet's time zone. Every value is shown through
    ``one_line``: no value can break a line of the subject or the text, and the HTML is
    escaped."""

    def show(value: object) -> str:
        return "unknown" if value is None else one_line(value)

    def local(ts: str) -> str:
        moment = from_epoch_ms(parse_rfc3339_ms(ts)).astimezone(zone)
        return f"{moment:%Y-%m-%d %H:%M:%S} {moment.tzname()}"

    driver = alert.get("driver") or {}
    driver_line = (
        f"{show(driver.get('name'))} ({show(alert.get('driver_id'))}), "
        f"risk {show(driver.get('risk_tier'))}, "
        f"{show(driver.get('speed_over_baseline_kmh'))} km/h over their 90-day average"
        + (", repeat offender" if driver.get("repeat_offender") else "")
        if driver
        else (
            f"{show(alert.get('driver_id'))} (no history)"
            if alert.get("driver_id")
            else "no driver assigned"
        )
    )
    rule, truck = show(alert.get("rule")), show(alert.get("truck_id"))
    title = RULE_TITLES.get(rule, rule)
    severity = show(alert.get("severity") or "warning").upper()
    subject = one_line(
        f"[{severity}] {title}: truck {truck} at {show(alert.get('max_speed_kmh'))} km/h",
        limit=998,  # RFC 5322's longest line
    )
    lines = [
        f"{title} ({rule})",
        f"Truck: {truck}",
        f"Driver: {driver_line}",
        f"From {local(str(alert['window_start']))} to {local(str(alert['window_end']))}",
        f"Readings over the limit: {show(alert.get('count'))} "
        f"(limit {show(alert.get('threshold_kmh'))} km/h)",
        f"Top speed {show(alert.get('max_speed_kmh'))} km/h, "
        f"mean {show(alert.get('mean_speed_kmh'))} km/h",
        f"Alert id: {show(alert.get('alert_id'))}",
    ]
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines[1:])
    body_html = f"<h2>{html.escape(lines[0])}</h2><ul>{items}</ul>"
    to = [one_line(address) for address in routes.recipients(alert)]
    return Email(to, subject, "\n".join(lines) + "\n", body_html)


def secret_bytes(secret: str) -> bytes:
    """A Standard Webhooks secret: ``whsec_<base64>``, or the raw text; at least 24 bytes."""
    raw = (
        base64.b64decode(secret.removeprefix("whsec_"))
        if secret.startswith("whsec_")
        else secret.encode()
    )
    if len(raw) < 24:
        raise ValueError("the signing secret must be at least 24 bytes")
    return raw


def sign(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature``: ``v1,`` + base64 HMAC-SHA256 over ``id.timestamp.body``."""
    digest = hmac.new(secret, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: bytes, message_id: str, timestamp: int, body: bytes, signatures: str) -> bool:
    expected = sign(secret, message_id, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures.split())


class Verdict(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"  # a permanent 4xx: dead-lettered
    UNPROCESSABLE = "unprocessable"  # the alert could not be rendered: no call was made


def classify(status: int) -> Verdict:
    """2xx delivered; 429 and 5xx worth retrying; anything else (4xx, a 3xx the client does
    not follow, a code outside 100-599 that no standard defines) permanent."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status == 429 or 500 <= status < 600:
        return Verdict.RETRY
    return Verdict.REJECTED


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_s: float = 0.5
    cap_s: float = 30.0

    def delay_s(
        self, attempt: int, retry_after: str | None, rng: random.Random, now: datetime
    ) -> float:
        """Full-jitter exponential backoff; a Retry-After (seconds or HTTP date) is honoured,
        between 0 and the cap; one in any other form is ignored."""
        if retry_after:
            wanted = retry_after_s(retry_after, now)
            if wanted is not None:
                return min(max(wanted, 0.0), self.cap_s)
        return rng.uniform(0, min(self.cap_s, self.base_s * 2 ** (min(attempt, 64) - 1)))


# delta-seconds are 1*DIGIT (RFC 9110 section 10.2.3); more than this many digits is more
# than any cap, and int() would refuse a few thousand of them.
_MAX_DELTA_DIGITS = 12


def retry_after_s(value: str, now: datetime) -> float | None:
    """Seconds to wait per a Retry-After value: delta-seconds (ASCII digits only, not the
    other scripts' digits that ``int`` accepts) or an HTTP-date; None for anything else,
    including a date no datetime can hold."""
    value = value.strip(" \t")
    if not value.isascii():
        return None
    if value.isdigit():
        return float(int(value) if len(value) <= _MAX_DELTA_DIGITS else 10**_MAX_DELTA_DIGITS)
    if len(value) > 64:  # an HTTP-date has 29 chars
        return None
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000": a time in UTC (RFC 5322 section 3.3)
            when = when.replace(tzinfo=UTC)
        return (when - now).total_seconds()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def email_json(alert: Mapping[str, Any], email: Email) -> dict[str, Any]:
    """The request body. The tags are single-line fields too."""

    def tag(name: str) -> str | None:
        value = alert.get(name)
        return None if value is None else one_line(value)

    return {
        "to": email.to,
        "subject": email.subject,
        "text": email.text,
        "html": email.html,
        "alert_id": alert.get("alert_id"),
        "tags": {"rule": tag("rule"), "truck_id": tag("truck_id"), "severity": tag("severity")},
    }
