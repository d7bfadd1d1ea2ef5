"""The rules per truck, in event time (CONTRACT.md sections 4 and 9). Pure logic.

Two parts, both plain data so that together they are the truck's recovery snapshot:

* ``TruckTimeline`` puts one truck's readings in event-time order (ties by event_id):
  it drops duplicates, refuses late readings, and holds the rest as *pending* until the
  watermark has passed them, then releases them in order.
* ``judge`` evaluates released readings, in that order, each under the catalogue version
  in force at its ts (domain/catalogue.py), keeping each rule's state by rule id. Without
  a catalogue (FLEET_RULES unset) the book is section 4's two rules (``builtin_book``).

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from functools import lru_cache
from typing import Any

from domain.catalogue import (
    CatalogueRule,
    Detection,
    Judged,
    RuleBook,
    RuleState,
    VersionInForce,
    builtin_catalogue,
)
from domain.readings import Reading

__all__ = [
    "Admission",
    "Detection",
    "Rule",
    "RuleBook",
    "RuleConfig",
    "RuleState",
    "TruckState",
    "TruckTimeline",
    "builtin_book",
    "judge",
]

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
        """At or below this speed a reading can affect neither built-in rule."""
        return min(self.threshold_kmh, self.critical_kmh)


class Rule(StrEnum):
    """Section 4's rules: the ids of the built-in catalogue's two rules."""

    SUSTAINED = "sustained_speeding"
    INSTANT = "instant_overspeed"


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

    def continued_by(self, readings: Sequence[Reading]) -> bool:
        """Whether ``readings`` are in strict event-time order after everything this timeline
        took (nothing pending, each key above the last); if so they count as released."""
        if self.pending or not readings:
            return not readings
        previous = self.frontier
        for reading in readings:
            key = (reading.ts_ms, reading.event_id)
            if previous is not None and key <= previous:
                return False
            previous = key
        self.frontier = previous
        last_ts = readings[-1].ts_ms
        if self.max_ts is None or last_ts > self.max_ts:
            self.max_ts = last_ts
        return True

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
    """The state of section 4's two rules as snapshots before the catalogue held it. Kept
    only so that such a snapshot still loads: ``TruckState`` turns it into rule states."""

    violations: deque[Reading] = field(default_factory=deque)
    sustained_cooldown_until: int | None = None
    instant_cooldown_until: int | None = None

    def rule_states(self) -> dict[str, RuleState]:
        return {
            Rule.INSTANT.value: RuleState(LEGACY_LINEAGE, self.instant_cooldown_until),
            Rule.SUSTAINED.value: RuleState(
                LEGACY_LINEAGE, self.sustained_cooldown_until, list(self.violations)
            ),
        }


# The lineage of a state converted from a ``SpeedingRules`` snapshot: a built-in rule takes
# it as its own (the knobs are section 4's as before); any other rule starts empty.
LEGACY_LINEAGE = "legacy"


@lru_cache(maxsize=64)
def builtin_book(config: RuleConfig) -> RuleBook:
    """The built-in catalogue for these knobs (section 9: when FLEET_RULES is unset)."""
    catalogue = builtin_catalogue(
        config.threshold_kmh,
        config.violations,
        config.window_ms,
        config.critical_kmh,
        config.cooldown_ms,
    )
    return RuleBook(catalogue)


def judge(
    states: dict[str, RuleState], released: Sequence[Reading], book: RuleBook
) -> list[Detection]:
    """Judge released readings, in the order released, each under the catalogue version in
    force at its ts; ``states``: the truck's rule states by rule id, updated."""
    detections: list[Detection] = []
    catalogue = book.catalogue
    classes = book.vehicle_classes
    # The version in force over [low, high) and, once a reading needs them, its rules for
    # this truck with their states: resolved once per run of readings under one version.
    low = high = 0
    version: VersionInForce | None = None
    active: list[_Active] | None = None
    number = 0
    for reading in released:
        ts = reading.ts_ms
        if not low <= ts < high:
            version, low, high = catalogue.span(ts)
            active = None
        # At or below the version's floor no rule can change: such readings are skipped.
        if version is None or reading.speed_kmh <= version.floor:
            continue
        if active is None:
            active = _resolve(states, version, reading.truck_id, classes, book)
            number = version.version.version
        speed = reading.speed_kmh
        # CatalogueRule.judge, inline: this runs per reading and rule (~40% of a catalogue
        # backfill's Python time before it was).
        for rule, state, held, kind_judge, floor in active:
            if speed <= floor:
                continue  # changes nothing for this rule (its kind skips slow readings)
            state.last_ts = ts
            until = state.cooldown_until
            if until is not None:
                if ts < until:
                    continue  # cooling down: not counted
                state.cooldown_until = None  # counting restarts empty
                held.clear()
            covered = kind_judge(held, reading)
            if covered is not None:
                detections.append(rule.fired(state, covered, number))
    return detections


# A rule that judges this truck with what the hot loop needs of it: its state, the state's
# held readings, the kind's judge and the speed at or below which it changes nothing.
_Active = tuple[CatalogueRule, RuleState, list[Reading], Callable[..., Any], float]


def _resolve(
    states: dict[str, RuleState],
    version: VersionInForce,
    truck_id: str,
    classes: Mapping[str, str],
    book: RuleBook,
) -> list[_Active]:
    """The rules of ``version`` that judge this truck, each with its state (a new one where
    the lineage differs)."""
    if len(states) > len(version.judged):
        _forget_removed(states, version.judged)
    active = []
    for rule, lineage, run_start in version.rules_for(truck_id, classes.get(truck_id)):
        state = states.get(rule.id)
        if state is None or not _carries_on(state, lineage, run_start, rule):
            state = states[rule.id] = RuleState(lineage)
        kind = rule.definition.kind
        active.append((rule, state, state.held, kind.judge, rule.floor))
    return active


def _carries_on(state: RuleState, lineage: str, run_start: int, rule: CatalogueRule) -> bool:
    """Whether ``state`` is this rule's to go on with: the same definition, and in force
    without a break since the last reading that reached the state (domain/catalogue.py).
    This also carries the built-in rules' state into a catalogue whose first version has
    the same definitions and is in force since (the migration from the knobs), and a
    snapshot from before the catalogue into the built-in rules."""
    if state.lineage == LEGACY_LINEAGE and rule.builtin:
        state.lineage, state.last_ts = lineage, run_start
        return True
    last = state.last_ts
    return state.lineage == lineage and last is not None and run_start <= last


def _forget_removed(states: dict[str, RuleState], judged: Judged) -> None:
    """A rule missing from the version in force starts empty if it comes back (a later
    version gives it a new lineage): its state can go."""
    present = {rule.id for rule, _, _ in judged}
    for rule_id in [r for r in states if r not in present]:
        del states[rule_id]


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
    """Everything one truck needs to resume: the recovery snapshot. ``rules``: each rule's
    state by rule id (section 9: a snapshot holds each rule's state by its id)."""

    timeline: TruckTimeline = field(default_factory=TruckTimeline)
    rules: dict[str, RuleState] = field(default_factory=dict)
    # The last reading judged, (ts, lat, lon, speed), while scorecards are kept: the first
    # of the next pair (domain/scorecards.py). A snapshot from before has none.
    previous: tuple[int, float | None, float | None, float] | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        rules = state.get("rules")
        if isinstance(rules, SpeedingRules):  # a snapshot from before the catalogue
            state = {**state, "rules": rules.rule_states()}
        self.__dict__.update(state)

    def evaluate(
        self, released: list[Reading], config: RuleConfig, book: RuleBook | None = None
    ) -> list[Detection]:
        """Judge released readings, in the order released, with ``book`` (default: the
        built-in catalogue of ``config``)."""
        return judge(self.rules, released, book or builtin_book(config))

    def evaluate_released(
        self, config: RuleConfig, *, flush: bool = False, book: RuleBook | None = None
    ) -> list[Detection]:
        """Release what the watermark allows (everything with ``flush``) and evaluate it."""
        released = self.timeline.release(config.allowed_lateness_ms, flush=flush)
        return self.evaluate(released, config, book)

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

    def ingest(
        self, readings: list[Reading], config: RuleConfig, book: RuleBook | None = None
    ) -> Ingested:
        """Take a batch of arrivals (in arrival order), then evaluate what it releases."""
        released: list[Reading] = []
        late, duplicates, overflowed = self.admit(readings, config, released)
        return Ingested(late, duplicates, self.evaluate(released, config, book), overflowed)

    def held(self) -> list[Reading]:
        """The readings the state holds that were not evaluated yet, in event-time order."""
        return [entry[2] for entry in sorted(self.timeline.pending)]

    def entries(self) -> int:
        """State size: readings and ids held (for the bounded-state test and metrics)."""
        timeline = self.timeline
        held = sum(len(state.held) for state in self.rules.values())
        return len(timeline.pending) + len(timeline.seen) + held

    def copy(self) -> TruckState:
        rules = {k: v.copy() for k, v in self.rules.items()}
        return TruckState(self.timeline.copy(), rules, self.previous)
