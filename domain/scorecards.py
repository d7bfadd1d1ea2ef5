"""Driver scorecards (CONTRACT.md section 11): per driver and local day, from the readings the
rules evaluate and the alerts they raise. Pure logic; dataflows/scorecards.py runs it.

Two steps, so that a driver who changes trucks, or a truck that changes drivers, comes out
right whatever the arrival order:

* Per truck (``ScoreKeeper.tallies``, called by the rules' step with each run of released
  readings, in event-time order): each reading goes to the driver assigned to its truck at
  its ts (section 6) and to the local day of its ts (FLEET_TIMEZONE); each *pair* of
  consecutive readings, both with a position and at most 60 s apart, goes whole to the
  driver and day of its second reading; each alert to its driver and the local day of its
  window_end. What one run gives is a ``DayTally`` per (driver, day).
* Per (driver, day) (``DayTally.merge``): tallies from any trucks and runs add up, and the
  scorecard is built once the day has closed (``Scorecard.of``).

``decode_scorecard`` is the one reader of ``fleet.scorecards`` records (dataflows.archive_alerts
archives them): a ``Scorecard`` or a ``Rejection``, for any bytes.

Exactness. Counts and durations are integers (ms); the maximum is a maximum; distances are
kept as an exact sum (``math.fsum``'s partials, Shewchuk's algorithm), so however the pairs
are grouped into tallies and the tallies merged, the distance is the sum of the pairs'
distances rounded once. The stream, the backfill and any restart give the same figures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

import msgspec

from domain.alerts import MAX_TEXT_CHARS, SPEED_RANGE
from domain.catalogue import Detection
from domain.dead_letters import Reason
from domain.history import NO_DRIVER, HistoryIndex, driver_context
from domain.readings import Reading, Rejection

EARTH_RADIUS_KM = 6371.0088
PAIR_MAX_MS = 60_000  # inclusive
DRIVING_KMH = 5.0  # a pair is driving time when either reading is over this
SCHEMA_VERSION = 1

DayKey = tuple[str | None, str]  # (driver_id, local day YYYY-MM-DD)


class LocalDays:
    """Local calendar days in one time zone, as epoch-ms spans: a DST day is 23 or 25 h."""

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone
        self._start = self._end = 0
        self._day = ""

    def of(self, ts_ms: int) -> str:
        """The local day (YYYY-MM-DD) of ``ts_ms``; the last day asked is cached."""
        if self._start <= ts_ms < self._end:
            return self._day
        local = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(self.zone).date()
        self._start, self._end = self.span(local)
        self._day = local.isoformat()
        return self._day

    def day_at(self, ts_ms: int) -> tuple[str, int, int]:
        """The local day of ``ts_ms`` and its [start, end) in epoch ms."""
        day = self.of(ts_ms)
        return day, self._start, self._end

    def span(self, day: date) -> tuple[int, int]:
        """[start, end) of a local day in epoch ms: local midnight to the next."""
        return self._midnight(day), self._midnight(day + timedelta(days=1))

    def end_of(self, day: str) -> int:
        return self.span(date.fromisoformat(day))[1]

    def _midnight(self, day: date) -> int:
        # The first instant of the day: where midnight does not exist (a DST jump at 00:00),
        # fold 0 gives the instant the clocks jump to.
        local = datetime.combine(day, time(0), self.zone)
        return round(local.astimezone(UTC).timestamp() * 1000)


_RAD = math.pi / 180
_DIAMETER_KM = 2 * EARTH_RADIUS_KM
sin, cos, asin, sqrt = math.sin, math.cos, math.asin, math.sqrt


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance on a sphere of EARTH_RADIUS_KM (section 11); the same
    arithmetic as the inline copy in ``ScoreKeeper.tallies``, to the last bit."""
    p1, p2 = lat1 * _RAD, lat2 * _RAD
    a = sin((p2 - p1) / 2) ** 2 + cos(p1) * cos(p2) * sin((lon2 - lon1) * _RAD / 2) ** 2
    return _DIAMETER_KM * asin(sqrt(min(1.0, a)))


def _exact_partials(values: list[float]) -> list[float]:
    """The exact sum of ``values`` as ``_exact_add`` keeps it (non-overlapping floats,
    smallest first), in C: ``math.fsum`` rounds the exact sum once; what it left out is the
    exact sum of the values and the negated partials so far, rounded again, until nothing is
    left (an exact sum of floats is a whole multiple of the least float, so it ends: for
    distances, after two or three sums)."""
    partials: list[float] = []
    rest = list(values)
    while part := math.fsum(rest):
        partials.append(part)
        rest.append(-part)
    partials.reverse()
    return partials


def _exact_add(partials: list[float], x: float) -> None:
    """Add ``x`` to an exact sum kept as non-overlapping floats (``math.fsum``'s method)."""
    i = 0
    for part in partials:
        y = part
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo:
            partials[i] = lo
            i += 1
        x = hi
    partials[i:] = [x]


class DayTally(msgspec.Struct, gc=False):
    """What some readings and alerts of one driver on one local day add up to. Mergeable
    in any order with the same result; small (it is state and travels between workers)."""

    driver_id: str | None
    day: str
    trucks: list[str] = msgspec.field(default_factory=list)  # sorted, distinct
    readings: int = 0
    distance: list[float] = msgspec.field(default_factory=list)  # exact-sum partials, km
    driving_ms: int = 0
    over_threshold_ms: int = 0
    max_speed_kmh: float | None = None
    alerts: dict[str, int] = msgspec.field(default_factory=dict)
    weighted_alerts: list[float] = msgspec.field(default_factory=list)  # exact-sum partials
    newest_ts: int = 0  # the newest reading or alert counted: the tally's event time

    @property
    def key(self) -> DayKey:
        return (self.driver_id, self.day)

    def merge(self, other: DayTally) -> None:
        if other.trucks != self.trucks:
            self.trucks = sorted({*self.trucks, *other.trucks})
        self.readings += other.readings
        for part in other.distance:
            _exact_add(self.distance, part)
        self.driving_ms += other.driving_ms
        self.over_threshold_ms += other.over_threshold_ms
        if other.max_speed_kmh is not None and (
            self.max_speed_kmh is None or other.max_speed_kmh > self.max_speed_kmh
        ):
            self.max_speed_kmh = other.max_speed_kmh
        for rule, count in other.alerts.items():
            self.alerts[rule] = self.alerts.get(rule, 0) + count
        for part in other.weighted_alerts:
            _exact_add(self.weighted_alerts, part)
        self.newest_ts = max(self.newest_ts, other.newest_ts)


@dataclass(frozen=True)
class ScoreWeights:
    """The safety score (README "Driver scorecards"): 100 minus the day's weighted alerts
    per 1,000 km, at least 0. An alert weighs its severity's weight times its rule's factor
    (default 1); the distance is taken as at least ``min_km``, so that a short day with one
    alert is not a catastrophe. FLEET_SCORE_WEIGHTS sets them (JSON)."""

    warning: float = 1.0
    critical: float = 5.0
    rules: Mapping[str, float] = field(default_factory=dict)
    min_km: float = 100.0

    def of(self, rule: str, critical: bool) -> float:
        return (self.critical if critical else self.warning) * self.rules.get(rule, 1.0)

    def score(self, weighted: float, distance_km: float) -> float:
        per_1000km = weighted * 1000 / max(distance_km, self.min_km)
        return max(0.0, 100.0 - per_1000km)


class Scorecard(msgspec.Struct, frozen=True):
    """One record of ``fleet.scorecards`` (section 11)."""

    driver_id: str | None
    day: str
    trucks: int
    readings: int
    distance_km: float
    driving_s: float
    over_threshold_s: float
    max_speed_kmh: float | None
    alerts: dict[str, int]
    events_per_1000km: float | None
    safety_score: float
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def of(cls, tally: DayTally, weights: ScoreWeights) -> Scorecard:
        distance = math.fsum(tally.distance)
        events = sum(tally.alerts.values())
        return cls(
            driver_id=tally.driver_id,
            day=tally.day,
            trucks=len(tally.trucks),
            readings=tally.readings,
            distance_km=distance,
            driving_s=tally.driving_ms / 1000,
            over_threshold_s=tally.over_threshold_ms / 1000,
            max_speed_kmh=tally.max_speed_kmh,
            alerts=dict(sorted(tally.alerts.items())),
            events_per_1000km=events * 1000 / distance if distance > 0 else None,
            safety_score=weights.score(math.fsum(tally.weighted_alerts), distance),
        )


_ENCODER = msgspec.json.Encoder()


def encode_scorecard(card: Scorecard) -> bytes:
    return _ENCODER.encode(card)


# --- Decoding: the one reader of fleet.scorecards --------------------------------------------

_DECODER = msgspec.json.Decoder(Scorecard)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_INT64_MAX = 2**63 - 1  # what a Parquet (and Polars) integer holds


def decode_scorecard(raw: bytes) -> Scorecard | Rejection:
    """A record of ``fleet.scorecards`` as a ``Scorecard``, or why not: ``invalid_json`` (not
    UTF-8 JSON), ``schema`` (not an object, a field missing or of the wrong type, a rule id
    empty or longer than MAX_TEXT_CHARS, nesting too deep), ``out_of_range`` (a count,
    duration, distance or rate below 0 or beyond a 64-bit integer or a float, a speed
    outside SPEED_RANGE, a score outside 0..100) or ``bad_timestamp`` (``day`` not a
    YYYY-MM-DD calendar day). Unknown fields are skipped unread. Never raises for any bytes;
    ``decode_scorecard(encode_scorecard(c)) == c`` for every scorecard ``Scorecard.of`` makes."""
    try:
        card = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        message = str(exc)
        out_of_range = message.startswith(("Number out of range", "Integer value out of range"))
        return Rejection(Reason.OUT_OF_RANGE if out_of_range else Reason.SCHEMA, message)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection(Reason.INVALID_JSON, f"not JSON: {exc}")
    except RecursionError:
        return Rejection(Reason.SCHEMA, "nested too deeply")
    return _check_scorecard(card) or card


def _check_scorecard(card: Scorecard) -> Rejection | None:
    if not _DAY.fullmatch(card.day):
        return Rejection(Reason.BAD_TIMESTAMP, "day is not YYYY-MM-DD")
    try:
        date.fromisoformat(card.day)
    except ValueError as exc:
        return Rejection(Reason.BAD_TIMESTAMP, f"day: {exc}")
    for rule in card.alerts:
        if not 1 <= len(rule) <= MAX_TEXT_CHARS:
            return Rejection(Reason.SCHEMA, f"alerts: rule ids must be 1-{MAX_TEXT_CHARS} chars")
    counts = {"trucks": card.trucks, "readings": card.readings}
    counts |= {f"alerts.{rule}": n for rule, n in card.alerts.items()}
    counts["schema_version"] = card.schema_version
    for name, count in counts.items():
        if not 0 <= count <= _INT64_MAX:
            return Rejection(Reason.OUT_OF_RANGE, f"{name} {count} outside 0..2^63-1")
    amounts = {
        "distance_km": card.distance_km,
        "driving_s": card.driving_s,
        "over_threshold_s": card.over_threshold_s,
        "events_per_1000km": card.events_per_1000km,
    }
    for name, amount in amounts.items():
        if amount is not None and not 0 <= amount < math.inf:
            return Rejection(Reason.OUT_OF_RANGE, f"{name} {amount} is not a finite number >= 0")
    low, high = SPEED_RANGE
    if card.max_speed_kmh is not None and not low <= card.max_speed_kmh <= high:
        return Rejection(Reason.OUT_OF_RANGE, f"max_speed_kmh outside {low}..{high}")
    if not 0 <= card.safety_score <= 100:
        return Rejection(Reason.OUT_OF_RANGE, "safety_score outside 0..100")
    return None


# The previous released reading of a truck, for the next pair: (ts, lat, lon, speed).
Previous = tuple[int, float | None, float | None, float]


@dataclass
class ScoreKeeper:
    """Turns one truck's released readings (in event-time order) and the detections they
    raised into ``DayTally``s. ``history`` attributes readings and alerts to drivers (as
    the alerts do); ``days`` is FLEET_TIMEZONE's calendar."""

    days: LocalDays
    threshold_kmh: float  # FLEET_THRESHOLD_KMH: over_threshold_s
    weights: ScoreWeights = field(default_factory=ScoreWeights)
    history: Callable[[], HistoryIndex | None] = lambda: None

    def tallies(
        self,
        previous: Previous | None,
        released: Sequence[Reading],
        detections: Iterable[Detection],
    ) -> tuple[Previous | None, list[DayTally]]:
        """The tallies of ``released`` (one truck's, after ``previous``, its last reading
        before them) and of ``detections``; and the new last reading."""
        history = self.history()
        by_key: dict[DayKey, DayTally] = {}
        pairs: dict[DayKey, list[float]] = {}  # each tally's pair distances, km
        threshold = self.threshold_kmh
        # This runs per reading (most of what scorecards cost the flow), so it is kept
        # lean: the (driver, day) and the span [since, until) over which both hold are
        # looked up only when a reading leaves that span (a new day or a shift change).
        since = until = 0  # empty: the first reading looks up
        tally, distances = DayTally(None, ""), []
        # The previous reading, for the pair; none: no position, so no pair.
        p_ts, p_lat, p_lon, p_speed = previous or (0, None, None, 0.0)
        for reading in released:
            ts, speed = reading.ts_ms, reading.speed_kmh
            if not since <= ts < until:
                driver, since, until = self._driver_span(history, reading.truck_id, ts)
                day, day_start, day_end = self.days.day_at(ts)
                since, until = max(since, day_start), min(until, day_end)
                key = (driver, day)
                found = by_key.get(key)
                if found is None:
                    found = by_key[key] = DayTally(driver, day, [reading.truck_id])
                    pairs[key] = []
                tally, distances = found, pairs[key]
            tally.readings += 1
            tally.newest_ts = ts
            if tally.max_speed_kmh is None or speed > tally.max_speed_kmh:
                tally.max_speed_kmh = speed
            lat, lon = reading.lat, reading.lon
            gap = ts - p_ts
            if (
                gap <= PAIR_MAX_MS
                and lat is not None
                and lon is not None
                and p_lat is not None
                and p_lon is not None
            ):
                # haversine_km, inline.
                p1, p2 = p_lat * _RAD, lat * _RAD
                a = sin((p2 - p1) / 2) ** 2 + cos(p1) * cos(p2) * sin((lon - p_lon) * _RAD / 2) ** 2
                distances.append(_DIAMETER_KM * asin(sqrt(min(1.0, a))))
                if speed > DRIVING_KMH or p_speed > DRIVING_KMH:
                    tally.driving_ms += gap
                if speed > threshold and p_speed > threshold:
                    tally.over_threshold_ms += gap
            p_ts, p_lat, p_lon, p_speed = ts, lat, lon, speed
        if released:
            previous = (p_ts, p_lat, p_lon, p_speed)
        for key, found_pairs in pairs.items():
            by_key[key].distance = _exact_partials(found_pairs)
        for detection in detections:
            # The driver and severity the detection's alert has (build_alert), without
            # building the alert: the speed only shapes the alert's driver details.
            ts = detection.readings[-1].ts_ms
            context = (
                NO_DRIVER
                if history is None
                else driver_context(history, detection.truck_id, ts, 0.0)
            )
            rule = str(detection.rule)
            critical = detection.is_critical or context.high_risk
            day = self.days.of(ts)
            key = (context.driver_id, day)
            found = by_key.get(key)
            if found is None:
                found = by_key[key] = DayTally(context.driver_id, day, [detection.truck_id])
            found.alerts[rule] = found.alerts.get(rule, 0) + 1
            _exact_add(found.weighted_alerts, self.weights.of(rule, critical))
            found.newest_ts = max(found.newest_ts, ts)
        return previous, list(by_key.values())

    @staticmethod
    def _driver_span(
        history: HistoryIndex | None, truck_id: str, ts_ms: int
    ) -> tuple[str | None, int, int]:
        """The truck's driver at ``ts_ms`` (``driver_id_at``) and a span [since, until)
        around ``ts_ms`` over which it stays that driver: its assignment's (as the history
        resolved the rows), or only ``ts_ms`` itself when the truck has no driver then."""
        if history is None:
            return None, -_FOREVER, _FOREVER
        assignment = history.assignment_at(truck_id, ts_ms)
        if assignment is None:
            return None, ts_ms, ts_ms + 1
        end = assignment.valid_to_ms
        return assignment.driver_id, assignment.valid_from_ms, _FOREVER if end is None else end


_FOREVER = 2**63


def weights_from_json(document: Any) -> ScoreWeights:
    """FLEET_SCORE_WEIGHTS: ``{"warning": 1, "critical": 5, "rules": {"harsh_braking": 2},
    "min_km": 100}``, every key optional; ValueError naming what is wrong."""
    if not isinstance(document, dict):
        raise ValueError("must be a JSON object")
    unknown = set(document) - {"warning", "critical", "rules", "min_km"}
    if unknown:
        expected = "warning, critical, rules, min_km"
        raise ValueError(f"unknown keys {sorted(unknown)} (expected {expected})")
    values: dict[str, Any] = {}
    for name in ("warning", "critical", "min_km"):
        if name in document:
            values[name] = _non_negative(name, document[name])
    rules = document.get("rules", {})
    if not isinstance(rules, dict):
        raise ValueError("rules must be an object of rule id: factor")
    values["rules"] = {str(k): _non_negative(f"rules.{k}", v) for k, v in rules.items()}
    if values.get("min_km", 1.0) <= 0:
        raise ValueError("min_km must be over 0")
    return ScoreWeights(**values)


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if not math.isfinite(value) or value < 0 or value > 1e6:
        raise ValueError(f"{name} must be a number from 0 to 1000000")
    return float(value)
