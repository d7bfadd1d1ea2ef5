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

Bounded state. ``seen`` holds the ids of pending readings only (a resend of the reading at
the frontier is recognised by its key), and pending readings are capped per truck
(``RuleConfig.max_pending``): a truck that keeps sending readings the watermark never
passes (say, new event ids at one constant ts, without a pause) would otherwise grow
without limit and never be evaluated. Over the cap, the oldest pending readings are
released early, in event-time order; the frontier moves with them, so a later arrival
behind it is late. Results stay exact for any truck that never holds more than
``max_pending`` readings with ts within ALLOWED_LATENESS of its newest, and are the same
for the same arrival order however the arrivals are batched.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
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
    # Pending readings one truck may hold (~300 bytes each, measured: 3 MB at most). A truck
    # at 1 Hz holds ~10 at the default lateness and 3,600 at a lateness of an hour; 10,000
    # is ample for any real truck and bounds the one that floods (see the module docstring).
    max_pending: int = 10_000

    @property
    def lowest_limit_kmh(self) -> float:
        """At or below this speed a reading can affect neither rule."""
        return min(self.threshold_kmh, self.critical_kmh)


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


class Admission(Enum):
    """What ``TruckTimeline.accept`` made of an arriving reading."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass
class TruckTimeline:
    """Event-time order, duplicates and lateness for one truck."""

    max_ts: int | None = None
    frontier: Key | None = None
    pending: list[tuple[int, str, Reading]] = field(default_factory=list)  # a heap
    # Ids of the pending readings. A resend keeps its original's ts, so once a reading is
    # released its resend is either behind the frontier (late) or at it (the same key: a
    # duplicate, see ``accept``): its id need not be remembered. This keeps the set small.
    seen: set[str] = field(default_factory=set)

    def accept(self, reading: Reading, lateness_ms: int) -> Admission:
        """Take one arriving reading: a duplicate, late, or now pending."""
        event_id = reading.event_id
        if event_id in self.seen:
            return Admission.DUPLICATE
        ts = reading.ts_ms
        max_ts = self.max_ts
        if max_ts is not None and ts < max_ts - lateness_ms:
            return Admission.LATE
        frontier = self.frontier
        if frontier is not None and ts <= frontier[0]:
            if ts < frontier[0] or event_id < frontier[1]:
                return Admission.LATE
            if event_id == frontier[1]:
                return Admission.DUPLICATE  # a resend of the last released reading
        heapq.heappush(self.pending, (ts, event_id, reading))
        self.seen.add(event_id)
        if max_ts is None or ts > max_ts:
            self.max_ts = ts
        return Admission.ACCEPTED

    def release(self, lateness_ms: int, *, flush: bool = False) -> list[Reading]:
        """Pending readings now behind the watermark (all of them with ``flush``), in order."""
        pending = self.pending
        if not pending or self.max_ts is None:
            return []
        # Every pending key is above the frontier (``accept`` refuses the others), so
        # "below the watermark" reduces to "ts below max_ts - lateness" here.
        limit = self.max_ts - lateness_ms
        released: list[Reading] = []
        while pending and (flush or pending[0][0] < limit):
            released.append(heapq.heappop(pending)[2])
        if released:
            self._passed(released)
        return released

    def release_over(self, lateness_ms: int, keep_at_most: int) -> tuple[list[Reading], int]:
        """What ``release`` gives, then the oldest pending readings beyond ``keep_at_most``
        (released early), in order; and how many were released early."""
        released = self.release(lateness_ms)
        pending = self.pending
        early = len(pending) - keep_at_most
        if early <= 0:
            return released, 0
        forced = [heapq.heappop(pending)[2] for _ in range(early)]
        self._passed(forced)
        released.extend(forced)
        return released, early

    def _passed(self, released: list[Reading]) -> None:
        """The frontier moves to the last of ``released``; their ids need no remembering."""
        last = released[-1]
        self.frontier = (last.ts_ms, last.event_id)
        discard = self.seen.discard
        for reading in released:
            discard(reading.event_id)

    def copy(self) -> TruckTimeline:
        return TruckTimeline(self.max_ts, self.frontier, list(self.pending), set(self.seen))


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


@dataclass(frozen=True, slots=True)
class Ingested:
    """What a batch of arrivals gave: positions of late readings, duplicates, detections,
    and how many readings the pending cap released early."""

    late: list[int]
    duplicates: int
    detections: list[Detection]
    overflowed: int = 0


@dataclass
class TruckState:
    """Everything one truck needs to resume: the recovery snapshot."""

    timeline: TruckTimeline = field(default_factory=TruckTimeline)
    rules: SpeedingRules = field(default_factory=SpeedingRules)

    def evaluate(self, released: list[Reading], config: RuleConfig) -> list[Detection]:
        """Evaluate released readings, in the order released."""
        detections: list[Detection] = []
        evaluate = self.rules.evaluate
        # A reading at or below both limits changes no rule state (the sustained cooldown
        # ends lazily at the next violation), so it need not be evaluated at all.
        lowest = config.lowest_limit_kmh
        for reading in released:
            if reading.speed_kmh > lowest:
                detections.extend(evaluate(reading, config))
        return detections

    def evaluate_released(self, config: RuleConfig, *, flush: bool = False) -> list[Detection]:
        """Release what the watermark allows (everything with ``flush``) and evaluate it."""
        return self.evaluate(self.timeline.release(config.allowed_lateness_ms, flush=flush), config)

    def admit(
        self, readings: Sequence[Reading], config: RuleConfig, released: list[Reading]
    ) -> tuple[list[int], int, int]:
        """Take a batch of arrivals (in arrival order) and append to ``released``, in order,
        what may now be evaluated: what the watermark passed, and what the pending cap
        forced out. ``released`` is the caller's, so the caller still holds every reading
        taken out of ``pending`` if something fails before they are evaluated. Returns the
        positions of late readings, the number of duplicates, and how many readings the cap
        released early (a tuple: this runs per truck per fetch, and a tuple is cheapest)."""
        timeline = self.timeline
        accept = timeline.accept
        pending = timeline.pending
        lateness_ms = config.allowed_lateness_ms
        cap = config.max_pending
        late: list[int] = []
        duplicates = 0
        overflowed = 0
        for position, reading in enumerate(readings):
            admission = accept(reading, lateness_ms)
            if admission is Admission.ACCEPTED:
                if len(pending) > cap:
                    # Readings behind the watermark go first (exact); the oldest of the rest
                    # only if still over the cap.
                    out, early = timeline.release_over(lateness_ms, cap)
                    released.extend(out)
                    overflowed += early
            elif admission is Admission.LATE:
                late.append(position)
            else:
                duplicates += 1
        released.extend(timeline.release(lateness_ms))
        return late, duplicates, overflowed

    def ingest(self, readings: list[Reading], config: RuleConfig) -> Ingested:
        """Take a batch of arrivals (in arrival order), then evaluate what it releases."""
        released: list[Reading] = []
        late, duplicates, overflowed = self.admit(readings, config, released)
        return Ingested(late, duplicates, self.evaluate(released, config), overflowed)

    def held(self) -> list[Reading]:
        """The readings the state holds that were not evaluated yet, in event-time order."""
        return [entry[2] for entry in sorted(self.timeline.pending)]

    def entries(self) -> int:
        """State size: readings and ids held (for the bounded-state test and metrics)."""
        timeline = self.timeline
        return len(timeline.pending) + len(timeline.seen) + len(self.rules.violations)

    def copy(self) -> TruckState:
        return TruckState(self.timeline.copy(), self.rules.copy())
