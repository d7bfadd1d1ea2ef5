"""Alerts as e-mails: recipients, rendering, Standard Webhooks signatures, retry decisions.

Pure logic: the HTTP calls live in connectors/email_api.py.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import html
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

from domain.timestamps import from_epoch_ms, parse_rfc3339_ms


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


def render(alert: Mapping[str, Any], routes: Routes, zone: ZoneInfo) -> Email:
    """The e-mail for an alert, times in the fleet's time zone."""

    def local(ts: str) -> str:
        moment = from_epoch_ms(parse_rfc3339_ms(ts)).astimezone(zone)
        return f"{moment:%Y-%m-%d %H:%M:%S} {moment.tzname()}"

    driver = alert.get("driver") or {}
    driver_line = (
        f"{driver.get('name')} ({alert.get('driver_id')}), risk {driver.get('risk_tier')}, "
        f"{driver.get('speed_over_baseline_kmh')} km/h over their 90-day average"
        + (", repeat offender" if driver.get("repeat_offender") else "")
        if driver
        else (
            f"{alert.get('driver_id')} (no history)"
            if alert.get("driver_id")
            else "no driver assigned"
        )
    )
    title = RULE_TITLES.get(str(alert.get("rule")), str(alert.get("rule")))
    severity = str(alert.get("severity", "warning")).upper()
    subject = (
        f"[{severity}] {title}: truck {alert.get('truck_id')} at {alert.get('max_speed_kmh')} km/h"
    )
    lines = [
        f"{title} ({alert.get('rule')})",
        f"Truck: {alert.get('truck_id')}",
        f"Driver: {driver_line}",
        f"From {local(str(alert['window_start']))} to {local(str(alert['window_end']))}",
        f"Readings over the limit: {alert.get('count')} (limit {alert.get('threshold_kmh')} km/h)",
        f"Top speed {alert.get('max_speed_kmh')} km/h, mean {alert.get('mean_speed_kmh')} km/h",
        f"Alert id: {alert.get('alert_id')}",
    ]
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines[1:])
    body_html = f"<h2>{html.escape(lines[0])}</h2><ul>{items}</ul>"
    return Email(routes.recipients(alert), subject, "\n".join(lines) + "\n", body_html)


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


def classify(status: int) -> Verdict:
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status == 429 or status >= 500:
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
        up to the cap."""
        if retry_after:
            wanted = _retry_after_s(retry_after, now)
            if wanted is not None:
                return min(max(wanted, 0.0), self.cap_s)
        return rng.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))


def _retry_after_s(value: str, now: datetime) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return (parsedate_to_datetime(value) - now).total_seconds()
    except (TypeError, ValueError):
        return None


def email_json(alert: Mapping[str, Any], email: Email) -> dict[str, Any]:
    return {
        "to": email.to,
        "subject": email.subject,
        "text": email.text,
        "html": email.html,
        "alert_id": alert.get("alert_id"),
        "tags": {
            "rule": alert.get("rule"),
            "truck_id": alert.get("truck_id"),
            "severity": alert.get("severity"),
        },
    }
