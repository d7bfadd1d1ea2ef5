"""Alerts as e-mails: recipients, rendering, Standard Webhooks signatures, retry decisions.

Pure logic: the HTTP calls live in connectors/email_api.py. Everything that reaches the
notifier is hostile input: the alerts on ``fleet.alerts`` (any producer can write there;
``domain.alerts.decode_alert`` admits only alerts that ``render`` can render) and the e-mail
API's answers. ``render`` puts no line break into a single-line field, and ``RetryPolicy``
reads only the Retry-After forms of RFC 9110.
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
from typing import Any

from domain.alerts import Alert, Severity
from domain.rules import Rule
from domain.timestamps import from_epoch_ms, parse_rfc3339_ms

MAX_TEXT_CHARS = 256  # of any value shown in an e-mail

# Characters that must not reach a single-line field (subject, header, tag, recipient, a
# line of the text body): C0 and C1 controls (CR, LF, VT, FF, NEL, the separators
# \x1c-\x1e, ...) and the Unicode line and paragraph separators. Lone surrogates cannot be
# encoded as UTF-8 at all.
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def one_line(value: object, limit: int = MAX_TEXT_CHARS) -> str:
    """``value`` as text fit for a single-line field: every control character and line
    separator becomes a space, a lone surrogate U+FFFD, and the text is cut at ``limit``."""
    text = str(value)
    if len(text) > limit:  # cut first: each character below stays one character
        text = text[: limit - 1] + "\u2026"
    return _SURROGATES.sub("\ufffd", _LINE_BREAKS.sub(" ", text))


@dataclass(frozen=True)
class Routes:
    """Who gets an alert: the default recipients, those for its severity, and those of
    every truck group whose pattern matches its truck (shell-style, e.g. ``T001*``)."""

    default: tuple[str, ...]
    by_severity: Mapping[Severity, tuple[str, ...]] = field(default_factory=dict)
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> Routes:
        """From the routes file's JSON: ``default`` (a list of addresses), ``severity`` (a map
        from severity to addresses), ``groups`` (``[{"trucks": "T00*", "to": [..]}]``). A
        severity that is not ``warning`` or ``critical`` is a ValueError, not a route that
        never matches."""
        default = tuple(document.get("default", ()))
        if not default:
            raise ValueError("routes need at least one default recipient")
        by_severity = {Severity(k): tuple(v) for k, v in document.get("severity", {}).items()}
        groups = tuple((str(g["trucks"]), tuple(g["to"])) for g in document.get("groups", ()))
        return cls(default, by_severity, groups)

    def recipients(self, alert: Alert) -> list[str]:
        found = list(self.default)
        found += self.by_severity.get(alert.severity, ())
        for pattern, to in self.groups:
            if fnmatch.fnmatchcase(alert.truck_id, pattern):
                found += to
        return list(dict.fromkeys(found))  # once each, in order


@dataclass(frozen=True)
class Email:
    to: list[str]
    subject: str
    text: str
    html: str


RULE_TITLES = {
    Rule.SUSTAINED: "Sustained speeding",
    Rule.INSTANT: "Critical over-speed",
}


def render(alert: Alert, routes: Routes, zone: tzinfo) -> Email:
    """The e-mail for an alert, times in the fleet's time zone. Every value is shown through
    ``one_line``: no value can break a line of the subject or the text, and the HTML is
    escaped. A time ``zone`` cannot show raises: ``decode_alert`` refuses such alerts."""

    def local(ts: str) -> str:
        moment = from_epoch_ms(parse_rfc3339_ms(ts)).astimezone(zone)
        return f"{moment:%Y-%m-%d %H:%M:%S} {moment.tzname()}"

    driver = alert.driver
    if driver is not None:
        driver_line = (
            f"{one_line(driver.name)} ({one_line(alert.driver_id or 'unknown')}), "
            f"risk {one_line(driver.risk_tier)}, "
            f"{driver.speed_over_baseline_kmh} km/h over their 90-day average"
            + (", repeat offender" if driver.repeat_offender else "")
        )
    elif alert.driver_id:
        driver_line = f"{one_line(alert.driver_id)} (no history)"
    else:
        driver_line = "no driver assigned"
    rule, truck = one_line(alert.rule), one_line(alert.truck_id)
    builtin = alert.builtin_rule
    title = rule if builtin is None else RULE_TITLES[builtin]
    subject = one_line(
        f"[{alert.severity.upper()}] {title}: truck {truck} at {alert.max_speed_kmh} km/h",
        limit=998,  # RFC 5322's longest line
    )
    lines = [
        f"{title} ({rule})",
        f"Truck: {truck}",
        f"Driver: {driver_line}",
        f"From {local(alert.window_start)} to {local(alert.window_end)}",
        f"Readings over the limit: {alert.count} (limit {alert.threshold_kmh} km/h)",
        f"Top speed {alert.max_speed_kmh} km/h, mean {alert.mean_speed_kmh} km/h",
        f"Alert id: {one_line(alert.alert_id)}",
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


def email_json(alert: Alert, email: Email) -> dict[str, Any]:
    """The request body. The tags are single-line fields too."""
    return {
        "to": email.to,
        "subject": email.subject,
        "text": email.text,
        "html": email.html,
        "alert_id": alert.alert_id,
        "tags": {
            "rule": one_line(alert.rule),
            "truck_id": one_line(alert.truck_id),
            "severity": alert.severity.value,
        },
    }
