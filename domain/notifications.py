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
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any

from domain.alerts import Alert, Severity
from domain.digest_periods import Schedule
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


# A rule's id in the catalogue (CONTRACT.md section 9), and so a key of the routes' "rules".
RULE_ID = re.compile(r"[a-z0-9_]{1,64}", re.ASCII)


def _addresses(where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(a, str) for a in value):
        raise ValueError(f"{where} must be a list of addresses")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class Mode:
    """How a route delivers: ``digest`` None is at once (one e-mail per alert), else in
    that schedule's digests. A digest route still sends critical alerts at once unless
    ``critical_too`` (the route's ``"critical": "digest"``)."""

    digest: Schedule | None = None
    critical_too: bool = False


IMMEDIATE = Mode()
DIGEST_GRACE_S = 60.0
MAX_DIGEST_GRACE_S = 86_400
_ROUTE_KEYS = frozenset({"to", "digest", "critical"})


MAX_URL_CHARS = 2000
_REPORT_URL = re.compile(r"https?://[^\s{}\x00-\x1f\x7f]+", re.ASCII)


def report_url_template(value: object) -> str | None:
    """The routes file's ``report_url``: an http(s) URL with ``{day}`` where the report's
    day goes (``https://reports.example/fleetwatch/{day}.html``), or absent. Anything else,
    other braces or white space in it, is a ValueError."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_URL_CHARS:
        raise ValueError(f"report_url must be a URL of at most {MAX_URL_CHARS} characters")
    if value.count("{day}") != 1 or not _REPORT_URL.fullmatch(value.replace("{day}", "D")):
        raise ValueError(
            'report_url must be an http(s) URL with "{day}" once and no other braces or '
            f"white space, not {value[:100]!r}"
        )
    return value


def _route(
    where: str, value: object, extra: frozenset[str] = frozenset()
) -> tuple[tuple[str, ...], Mode]:
    """A route: a list of addresses (delivered at once), or ``{"to": [..], "digest": ..,
    "critical": "immediate" | "digest"}``."""
    if not isinstance(value, dict):
        return _addresses(where, value), IMMEDIATE
    unknown = sorted(str(k) for k in value.keys() - _ROUTE_KEYS - extra)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (a route has to, digest, critical)")
    if "to" not in value:
        raise ValueError(f'{where} needs "to": a list of addresses')
    to = _addresses(f"{where}.to", value["to"])
    if "digest" not in value:
        if "critical" in value:
            raise ValueError(f'{where}: "critical" needs a digest')
        return to, IMMEDIATE
    schedule = Schedule.parse(f"{where}.digest", value["digest"])
    critical = value.get("critical", "immediate")
    if critical not in ("immediate", "digest"):
        raise ValueError(f'{where}.critical is "immediate" or "digest", not {critical!r}')
    if where == "severity.critical" and critical != "digest":
        raise ValueError(
            'severity.critical: critical alerts go at once unless the route says "critical": '
            '"digest"'
        )
    return to, Mode(schedule, critical_too=critical == "digest")


@dataclass(frozen=True)
class Routes:
    """Who gets an alert, and how: the default recipients, those for its severity, those for
    its rule (by the rule's id, the alert's ``rule``), and those of every truck group whose
    pattern matches its truck (shell-style, e.g. ``T001*``). Each route delivers at once or
    in digests (``modes``, by route name: ``default``, ``severity.critical``,
    ``rules.<id>``, ``groups[<i>]``; a route not named there delivers at once)."""

    default: tuple[str, ...]
    by_severity: Mapping[Severity, tuple[str, ...]] = field(default_factory=dict)
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    by_rule: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    modes: Mapping[str, Mode] = field(default_factory=dict)
    # How long after its period's end a digest waits for the period's last alerts.
    digest_grace_s: float = DIGEST_GRACE_S
    # The daily report's address, ``{day}`` for its local day (YYYY-MM-DD): daily digests
    # link it (domain/digests.py, ``report_link``).
    report_url: str | None = None

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> Routes:
        """From the routes file's JSON: ``default`` (a route), ``severity`` (a map from
        severity to routes), ``rules`` (a map from rule id to routes), ``groups``
        (``[{"trucks": "T00*", "to": [..]}]``, each a route too). A route is a list of
        addresses (at once) or ``{"to": [..], "digest": .., "critical": ..}``
        (domain/digest_periods.py); ``digest_grace_s`` (0 to a day, default 60);
        ``report_url`` (``report_url_template``). A severity
        that is not ``warning`` or ``critical``, a rule id that is not 1-64 chars of
        ``[a-z0-9_]``, an unknown key of a route, a bad period or time is a ValueError, not
        a route that never matches."""
        modes: dict[str, Mode] = {}

        def route(
            where: str, value: object, extra: frozenset[str] = frozenset()
        ) -> tuple[str, ...]:
            to, mode = _route(where, value, extra)
            if mode != IMMEDIATE:
                modes[where] = mode
            return to

        default = route("default", document.get("default", []))
        if not default:
            raise ValueError("routes need at least one default recipient")
        by_severity = {
            Severity(k): route(f"severity.{k}", v)
            for k, v in dict(document.get("severity", {})).items()
        }
        by_rule: dict[str, tuple[str, ...]] = {}
        for rule, to in dict(document.get("rules", {})).items():
            if not isinstance(rule, str) or not RULE_ID.fullmatch(rule):
                raise ValueError(f"rule id {rule!r} is not 1-64 chars of [a-z0-9_]")
            by_rule[rule] = route(f"rules.{rule}", to)
        groups = []
        for i, group in enumerate(document.get("groups", ())):
            if not isinstance(group, dict) or "trucks" not in group:
                raise ValueError(f'groups[{i}] needs "trucks" (a pattern) and "to"')
            to = route(f"groups[{i}]", group, frozenset({"trucks"}))
            groups.append((str(group["trucks"]), to))
        grace = document.get("digest_grace_s", DIGEST_GRACE_S)
        if isinstance(grace, bool) or not isinstance(grace, int | float):
            raise ValueError("digest_grace_s must be a number of seconds")
        if not 0 <= grace <= MAX_DIGEST_GRACE_S:
            raise ValueError(f"digest_grace_s must be 0 to {MAX_DIGEST_GRACE_S}, not {grace}")
        report_url = report_url_template(document.get("report_url"))
        return cls(default, by_severity, tuple(groups), by_rule, modes, float(grace), report_url)

    def _routed(self, alert: Alert) -> list[tuple[str, tuple[str, ...]]]:
        """The routes that take ``alert``, by name, in order."""
        found = [("default", self.default)]
        if alert.severity in self.by_severity:
            found.append((f"severity.{alert.severity}", self.by_severity[alert.severity]))
        if alert.rule in self.by_rule:
            found.append((f"rules.{alert.rule}", self.by_rule[alert.rule]))
        for i, (pattern, to) in enumerate(self.groups):
            if fnmatch.fnmatchcase(alert.truck_id, pattern):
                found.append((f"groups[{i}]", to))
        return found

    def deliveries(self, alert: Alert) -> tuple[list[str], list[tuple[str, Schedule]]]:
        """Who gets ``alert`` at once, and who in which digest: each address once, in route
        order. An address any route sends the alert to at once gets it at once (and in no
        digest); otherwise it goes into the digest of the first route that names it."""
        now: dict[str, None] = {}
        later: dict[str, Schedule] = {}
        critical = alert.severity is Severity.CRITICAL
        for name, to in self._routed(alert):
            mode = self.modes.get(name, IMMEDIATE)
            for address in to:
                if mode.digest is None or (critical and not mode.critical_too):
                    now[address] = None
                else:
                    later.setdefault(address, mode.digest)
        return list(now), [(a, s) for a, s in later.items() if a not in now]

    def recipients(self, alert: Alert) -> list[str]:
        """Who gets ``alert`` at once (everyone it is routed to, without digest routes)."""
        return self.deliveries(alert)[0]


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

# --- Rendering ------------------------------------------------------------------------------
# The kind of a rule (CONTRACT.md section 9) is not a field of the alert: ``details["kind"]``
# names it, and section 4's rules (``details`` ``{}``) are of the kinds they behave as. Any
# detail that is missing or of the wrong type is left out, and an alert of no known kind is
# told in generic words: ``render`` never raises for any ``details``.

KINDS = frozenset(
    {"instant_over", "count_over", "duration_over", "deceleration", "zone_over",
     "posted_limit_over"}
)  # fmt: skip
_BUILTIN_KINDS = {Rule.SUSTAINED: "count_over", Rule.INSTANT: "instant_over"}
MAX_NAME_CHARS = 80  # of a zone's or a road's name in a title
MAX_DETAIL_SPEED = 10_000.0  # km/h, as decode_alert's SPEED_RANGE
MAX_DETAIL_SECONDS = 10.0**10  # ~317 years
_LIMIT_SOURCES = {"hgv": "heavy-vehicle", "implicit": "default"}  # else "posted"
MINUS = "\u2212"


def _number(details: Mapping[Any, Any], key: str, low: float, high: float) -> float | None:
    """``details[key]`` when it is a finite number (not a bool) within low..high."""
    value = details.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        return None
    return number if math.isfinite(number) and low <= number <= high else None


def _name(details: Mapping[Any, Any], key: str) -> str | None:
    """``details[key]`` as a single line of at most MAX_NAME_CHARS, when it is text."""
    value = details.get(key)
    if not isinstance(value, str) or not value.strip():
        return None
    return one_line(value.strip(), MAX_NAME_CHARS)


def _fixed(number: float, places: int) -> str:
    return f"{round(number, places) + 0.0:.{places}f}"  # + 0.0: no "-0.0"


def kmh(speed: float) -> str:
    """A measured speed: one decimal, ``118.0``."""
    return _fixed(speed, 1)


def _limit(speed: float) -> str:
    """A limit: ``90``, or ``30.5`` when it has a fraction."""
    text = _fixed(speed, 1)
    return text.removesuffix(".0")


def duration(seconds: float) -> str:
    """``1.5 s``, ``45 s``, ``1 min 05 s``, ``2 h 05 min``, ``3 d 04 h``: the larger the
    span, the coarser; under a second to the millisecond (``0.04 s``: never "0 s")."""
    if 0 < seconds < 0.95:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + " s"
    if seconds < 9.95:
        return f"{_limit(seconds)} s"
    total = round(seconds)
    if total < 3600:
        minutes, secs = divmod(total, 60)
        if not minutes:
            return f"{secs} s"
        return f"{minutes} min" if not secs else f"{minutes} min {secs:02d} s"
    total_minutes = round(seconds / 60)
    if total_minutes < 24 * 60:
        hours, minutes = divmod(total_minutes, 60)
        return f"{hours} h" if not minutes else f"{hours} h {minutes:02d} min"
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days} d" if not hours else f"{days} d {hours:02d} h"


def _readings(count: int) -> str:
    return "1 reading" if count == 1 else f"{count} readings"


def map_link(lat: float, lon: float) -> str:
    """The position on OpenStreetMap, zoomed to streets."""
    la, lo = _fixed(lat, 5), _fixed(lon, 5)
    return f"https://www.openstreetmap.org/?mlat={la}&mlon={lo}#map=17/{la}/{lo}"


@dataclass(frozen=True)
class _Story:
    """What an alert tells, in words: the title, the subject's ending after the truck, what
    happened, the speeds, the place and the rule."""

    title: str
    headline: str
    happened: str
    speed: str | None
    place: str | None  # a zone or a road, shown before the position
    rule: str | None  # what the rule asks, after its id and version


def _story(alert: Alert, span_s: float | None) -> _Story:
    details: Mapping[Any, Any] = alert.details if isinstance(alert.details, dict) else {}
    kind = details.get("kind")
    builtin = alert.builtin_rule
    if not (isinstance(kind, str) and kind in KINDS):
        kind = None if builtin is None else _BUILTIN_KINDS[builtin]
    builtin_title = RULE_TITLES[builtin] if builtin and kind == _BUILTIN_KINDS[builtin] else None
    limit, count = _limit(alert.threshold_kmh), alert.count
    top, mean = kmh(alert.max_speed_kmh), kmh(alert.mean_speed_kmh)
    span = duration(span_s) if span_s else None  # none for a single instant
    at = f"at {top} km/h"

    def speed(limit_words: str) -> str:
        over = alert.max_speed_kmh - alert.threshold_kmh
        if over > 0:
            return f"top {top} km/h, {kmh(over)} km/h over {limit_words}; mean {mean} km/h"
        return f"top {top} km/h ({limit_words}); mean {mean} km/h"

    the_limit = f"the {limit} km/h limit"
    if kind == "instant_over":
        return _Story(
            builtin_title or f"Over {limit} km/h",
            at,
            f"{_readings(count)} over {limit} km/h" + (f" within {span}" if span else ""),
            speed(the_limit),
            None,
            f"any reading over {limit} km/h",
        )
    if kind == "count_over":
        within_s = _number(details, "within_s", 0, MAX_DETAIL_SECONDS)
        asks = f"{_readings(count)} over {limit} km/h"
        return _Story(
            builtin_title or f"Repeated speeding over {limit} km/h",
            at,
            f"{_readings(count)} over {limit} km/h" + (f" within {span}" if span else ""),
            speed(the_limit),
            None,
            None if within_s is None else f"{asks} within {duration(within_s)}",
        )
    if kind == "duration_over":
        for_s = _number(details, "for_s", 0, MAX_DETAIL_SECONDS)
        title = f"Over {limit} km/h" + (f" for {duration(for_s)}" if for_s is not None else "")
        return _Story(
            builtin_title or title,
            at,
            f"over {limit} km/h" + (f" for {span}" if span else "") + f" ({_readings(count)})",
            speed(the_limit),
            None,
            None if for_s is None else f"over {limit} km/h for {duration(for_s)} or longer",
        )
    if kind == "zone_over":
        zone = _name(details, "zone")
        in_zone = f" in zone {zone}" if zone else " in a zone"
        return _Story(
            builtin_title or f"Speeding{in_zone}",
            at,
            f"{_readings(count)} over {limit} km/h{in_zone}",
            speed(f"{the_limit}{in_zone}"),
            f"zone {zone}" if zone else None,
            f"over {limit} km/h{in_zone}",
        )
    if kind == "posted_limit_over":
        road = _name(details, "road_name") or _name(details, "road")
        on_road = f" on {road}" if road else ""
        source = details.get("limit_source")
        adjective = _LIMIT_SOURCES.get(source, "posted") if isinstance(source, str) else "posted"
        posted = f"the {limit} km/h {adjective} limit{on_road}"
        way = details.get("osm_way_id")
        place = road
        if isinstance(way, int) and not isinstance(way, bool) and 0 < way < 2**63:
            place = f"{road or 'road'} (OSM way {way})"
        return _Story(
            builtin_title or f"Over the {limit} km/h limit{on_road}",
            at,
            f"over {posted}" + (f" for {span}" if span else "") + f" ({_readings(count)})",
            speed(posted),
            place,
            "over the posted limit",
        )
    if kind == "deceleration":
        drop = _number(details, "drop_kmh", 0, MAX_DETAIL_SPEED)
        if drop is not None:
            interval_s = _number(details, "interval_s", 0, MAX_DETAIL_SECONDS)
            interval_s = span_s if interval_s is None else interval_s
            rate = _number(details, "deceleration_ms2", -1e6, 1e6)
            if rate is None and interval_s:
                rate = drop / 3.6 / interval_s  # inf for an interval of 5e-324 s
                rate = rate if rate <= 1e6 else None
            after = kmh(max(alert.max_speed_kmh - drop, 0.0))
            fell = f"from {top} to {after} km/h" + (
                f" in {duration(interval_s)}" if interval_s is not None else ""
            )
            return _Story(
                builtin_title or "Harsh braking",
                f"braked {fell}",
                f"speed fell {fell}"
                + (f" ({MINUS}{_fixed(abs(rate), 1)} m/s\u00b2)" if rate is not None else ""),
                None,
                None,
                f"a drop of {limit} km/h or more",
            )
    return _Story(  # no kind, or one this notifier does not know: generic words
        builtin_title or one_line(alert.rule),
        at,
        f"{_readings(count)}"
        + (f" within {span}" if span else "")
        + f"; the rule's threshold: {limit} km/h",
        f"top {top} km/h; mean {mean} km/h",
        None,
        None,
    )


def story(alert: Alert) -> _Story:
    """What ``alert`` tells, in the words of its rule's kind: what ``render`` and the
    digests (domain/digests.py) both show."""
    start_ms, end_ms = parse_rfc3339_ms(alert.window_start), parse_rfc3339_ms(alert.window_end)
    return _story(alert, (end_ms - start_ms) / 1000 if end_ms >= start_ms else None)


NO_DRIVER = "no driver assigned"


def driver_label(alert: Alert) -> str:
    """``Ana Berg (D1)``, ``D7 (no history)`` or ``no driver assigned``: single-line."""
    if alert.driver is not None:
        return f"{one_line(alert.driver.name)} ({one_line(alert.driver_id or 'unknown')})"
    if alert.driver_id:
        return f"{one_line(alert.driver_id)} (no history)"
    return NO_DRIVER


def render(alert: Alert, routes: Routes, zone: tzinfo) -> Email:
    """The e-mail for an alert, times in the fleet's time zone: what happened, where (with a
    map link), how far over the limit, for how long, and which rule (id and version) said
    so, in the words of the rule's kind (``details["kind"]``; generic words for an unknown
    kind). Every value is shown through ``one_line``: no value can break a line of the
    subject or the text, and the HTML is escaped. A time ``zone`` cannot show raises:
    ``decode_alert`` refuses such alerts. No ``details`` makes it raise."""

    def local(ts: str) -> str:
        moment = from_epoch_ms(parse_rfc3339_ms(ts)).astimezone(zone)
        return f"{moment:%Y-%m-%d %H:%M:%S} {moment.tzname()}"

    driver = alert.driver
    if driver is not None:
        baseline = driver.speed_over_baseline_kmh
        driver_line = (
            f"{one_line(driver.name)} ({one_line(alert.driver_id or 'unknown')}), "
            f"risk {one_line(driver.risk_tier)}, "
            f"{kmh(abs(baseline))} km/h {'under' if baseline < 0 else 'over'} "
            "their 90-day average" + (", repeat offender" if driver.repeat_offender else "")
        )
    elif alert.driver_id:
        driver_line = f"{one_line(alert.driver_id)} (no history)"
    else:
        driver_line = "no driver assigned"
    start_ms, end_ms = parse_rfc3339_ms(alert.window_start), parse_rfc3339_ms(alert.window_end)
    span_s = (end_ms - start_ms) / 1000 if end_ms >= start_ms else None
    story = _story(alert, span_s)
    rule, truck = one_line(alert.rule), one_line(alert.truck_id)
    subject = one_line(
        f"[{alert.severity.upper()}] {story.title}: truck {truck} {story.headline}",
        limit=998,  # RFC 5322's longest line
    )
    if start_ms == end_ms:
        when = f"at {local(alert.window_start)}"
    else:
        when = f"from {local(alert.window_start)} to {local(alert.window_end)}"
        when += f" ({duration(span_s)})" if span_s is not None else ""
    version = "built-in" if alert.rule_version == 0 else f"catalogue version {alert.rule_version}"
    items: list[tuple[str, str | None]] = [  # a line of the text, and its HTML if not escaped
        (f"Truck: {truck}", None),
        (f"Driver: {driver_line}", None),
        (f"What happened: {story.happened}", None),
    ]
    if story.speed is not None:
        items.append((f"Speed: {story.speed}", None))
    place = f"{story.place}, " if story.place else ""
    if alert.position is None:
        items.append((f"Where: {place}no position reported", None))
    else:
        lat, lon = alert.position.lat, alert.position.lon
        point, link = f"{_fixed(lat, 5)}, {_fixed(lon, 5)}", map_link(lat, lon)
        anchor = f'<a href="{html.escape(link)}">{html.escape(point)}</a>'
        items.append((f"Where: {place}{point} ({link})", f"Where: {html.escape(place)}{anchor}"))
    items += [
        (f"When: {when}", None),
        (f"Rule: {rule} ({version})" + (f": {story.rule}" if story.rule else ""), None),
        (f"Alert id: {one_line(alert.alert_id)}", None),
    ]
    lines = [story.title, *(line for line, _ in items)]
    listed = "".join(f"<li>{markup or html.escape(line)}</li>" for line, markup in items)
    body_html = f"<h2>{html.escape(story.title)}</h2><ul>{listed}</ul>"
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
