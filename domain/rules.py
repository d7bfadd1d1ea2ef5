"""The speeding rules of CONTRACT.md section 4, per truck, in event time. Pure logic.

Two parts, both plain data so that together they are the truck's recovery snapshot:

* ``TruckTimeline`` puts one truck's readings in event-time order (ties by event_id):
  it drops duplicates, refuses late readings, and holds the rest as *pending* until the
  watermark has passed them, then releases them in order.
* ``SpeedingRules`` evaluates released readings, in that order, with the two rules.

Times are epoch milliseconds. The watermark is a key ``(ts, event_id)``: the larger of
``(max_ts - ALLOWED_LATENESS, "")`` and the last released reading's key (the *frontier*).
A reading whose key is below it is late. Pending readings are released once their key is
below it, so a later arrival can never need to go before a released reading.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from domain.readings import Reading

Key = tuple[int, str]


@dataclass(frozen=True)
class RuleConfig:
    """The rules' knobs (FLEET_THRESHOLD_KMH ... FLEET_ALLOWED_LATENESS_S), times in ms."""

    threshold_kmh: float = 90.0
    violations: int = 5
    window_ms: int = 600_000
    critical_kmh: float = 130.0
    cooldown_ms: int = 600_000
    allowed_lateness_ms: int = 10_000


class Rule(StrEnum):
    SUSTAINED = "sustained_speeding"
    INSTANT = "instant_overspeed"


@dataclass(frozen=True, slots=True)
class Detection:
    """A rule fired: the covered readings in event-time order, and the limit it used."""

    rule: Rule
    truck_id: str
    readings: tuple[Reading, ...]
    threshold_kmh: float


class Verdict(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


def reading_key(reading: Reading) -> Key:
    return (reading.ts_ms, reading.event_id)


@dataclass
class TruckTimeline:
    """Event-time order, duplicates and lateness for one truck."""

    max_ts: int | None = None
    frontier: Key | None = None
    pending: list[tuple[int, str, Reading]] = field(default_factory=list)  # a heap
    # event_id -> ts of readings not yet behind the watermark. A resend keeps its original's
    # ts, so once the watermark passes that ts the resend would be late anyway and the id
    # can be forgotten: this is what keeps the set small.
    seen: dict[str, int] = field(default_factory=dict)

    def watermark(self, lateness_ms: int) -> Key | None:
        event = None if self.max_ts is None else (self.max_ts - lateness_ms, "")
        if event is None or self.frontier is None:
            return event or self.frontier
        return max(event, self.frontier)

    def accept(self, reading: Reading, lateness_ms: int) -> Verdict:
        """Take one arriving reading: a duplicate, late, or now pending."""
        if reading.event_id in self.seen:
            return Verdict.DUPLICATE
        watermark = self.watermark(lateness_ms)
        if watermark is not None and reading_key(reading) < watermark:
            return Verdict.LATE
        heapq.heappush(self.pending, (reading.ts_ms, reading.event_id, reading))
        self.seen[reading.event_id] = reading.ts_ms
        if self.max_ts is None or reading.ts_ms > self.max_ts:
            self.max_ts = reading.ts_ms
        return Verdict.ACCEPTED

    def release(self, lateness_ms: int, *, flush: bool = False) -> list[Reading]:
        """Pending readings now behind the watermark (all of them with ``flush``), in order."""
        watermark = self.watermark(lateness_ms)
        released: list[Reading] = []
        pending = self.pending
        while pending and (flush or (watermark is not None and pending[0][:2] < watermark)):
            ts, event_id, reading = heapq.heappop(pending)
            released.append(reading)
            self.frontier = (ts, event_id)
        if released:
            self._forget_seen(lateness_ms)
        return released

    def _forget_seen(self, lateness_ms: int) -> None:
        watermark = self.watermark(lateness_ms)
        if watermark is not None:
            self.seen = {e: ts for e, ts in self.seen.items() if (ts, e) >= watermark}

    def copy(self) -> TruckTimeline:
        return TruckTimeline(self.max_ts, self.frontier, list(self.pending), dict(self.seen))


@dataclass
class SpeedingRules:
    """Both rules' state for one truck; ``evaluate`` must see readings in event-time order."""

    # Violations within WINDOW of the newest one: never more than VIOLATIONS - 1 between
    # calls, because reaching VIOLATIONS fires the alert and clears them.
    violations: deque[Reading] = field(default_factory=deque)
    sustained_cooldown_until: int | None = None
    instant_cooldown_until: int | None = None

    def evaluate(self, reading: Reading, config: RuleConfig) -> list[Detection]:
        detections: list[Detection] = []
        instant = self._instant(reading, config)
        if instant is not None:
            detections.append(instant)
        sustained = self._sustained(reading, config)
        if sustained is not None:
            detections.append(sustained)
        return detections

    def _instant(self, reading: Reading, config: RuleConfig) -> Detection | None:
        if reading.speed_kmh <= config.critical_kmh:
            return None
        until = self.instant_cooldown_until
        if until is not None and reading.ts_ms < until:
            return None
        self.instant_cooldown_until = reading.ts_ms + config.cooldown_ms
        return Detection(Rule.INSTANT, reading.truck_id, (reading,), config.critical_kmh)

    def _sustained(self, reading: Reading, config: RuleConfig) -> Detection | None:
        until = self.sustained_cooldown_until
        if until is not None:
            if reading.ts_ms < until:
                return None  # cooling down: not counted
            self.sustained_cooldown_until = None  # counting restarts empty
        if reading.speed_kmh <= config.threshold_kmh:
            return None
        violations = self.violations
        horizon = reading.ts_ms - config.window_ms
        while violations and violations[0].ts_ms < horizon:
            violations.popleft()
        violations.append(reading)
        if len(violations) < config.violations:
            return None
        covered = tuple(violations)
        # Cleared at the match: the next alert needs VIOLATIONS new readings after cooldown.
        violations.clear()
        self.sustained_cooldown_until = reading.ts_ms + config.cooldown_ms
        return Detection(Rule.SUSTAINED, reading.truck_id, covered, config.threshold_kmh)

    def copy(self) -> SpeedingRules:
        return SpeedingRules(
            deque(self.violations), self.sustained_cooldown_until, self.instant_cooldown_until
        )


@dataclass
class TruckState:
    """Everything one truck needs to resume: the recovery snapshot."""

    timeline: TruckTimeline = field(default_factory=TruckTimeline)
    rules: SpeedingRules = field(default_factory=SpeedingRules)

    def evaluate_released(self, config: RuleConfig, *, flush: bool = False) -> list[Detection]:
        """Release what the watermark allows (everything with ``flush``) and evaluate it."""
        detections: list[Detection] = []
        for reading in self.timeline.release(config.allowed_lateness_ms, flush=flush):
            detections.extend(self.rules.evaluate(reading, config))
        return detections

    def entries(self) -> int:
        """State size: readings and ids held (for the bounded-state test and metrics)."""
        timeline = self.timeline
        return len(timeline.pending) + len(timeline.seen) + len(self.rules.violations)

    def copy(self) -> TruckState:
        return TruckState(self.timeline.copy(), self.rules.copy())
