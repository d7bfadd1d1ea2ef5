"""The rules of CONTRACT.md section 4, table-driven, with named instants."""

from __future__ import annotations

import pickle
from collections import deque
from dataclasses import dataclass, field

import pytest

from domain.catalogue import Catalogue, parse_version
from domain.readings import Reading
from domain.rules import (
    Admission,
    Detection,
    Rule,
    RuleBook,
    RuleConfig,
    RuleState,
    SpeedingRules,
    TruckState,
    TruckTimeline,
    builtin_book,
    judge,
)
from tests.builders import BEGINNING, minutes, reading, seconds

CONFIG = RuleConfig()  # 90 km/h, 5 violations, 600 s window, 130 km/h, 600 s cooldown, 10 s
FAST, CRUISE, CRITICAL = 95.0, 80.0, 140.0


def evaluate_sorted(readings: list[Reading], config: RuleConfig = CONFIG) -> list[Detection]:
    """One reading at a time, as released: the same as all at once (``judge`` keeps state)."""
    states: dict[str, RuleState] = {}
    book = builtin_book(config)
    return [d for r in readings for d in judge(states, [r], book)]


def fast_at(*offsets_s: float, speed: float = FAST) -> list[Reading]:
    return [reading(at=BEGINNING + seconds(s), speed=speed) for s in offsets_s]


@dataclass
class Case:
    readings: list[Reading]
    expected: list[tuple[Rule, int]] = field(default_factory=list)  # (rule, covered count)


CASES = {
    "5 violations exactly 600 s apart fire": Case(
        fast_at(0, 150, 300, 450, 600), [(Rule.SUSTAINED, 5)]
    ),
    "600.001 s apart do not": Case(fast_at(0, 150, 300, 450, 600.001)),
    "the oldest drops out, a later one completes": Case(
        fast_at(0, 150, 300, 450, 600.001, 601), [(Rule.SUSTAINED, 5)]
    ),
    "4 violations are not enough": Case(fast_at(0, 1, 2, 3)),
    "speed equal to the threshold is never a violation": Case(fast_at(0, 1, 2, 3, 4, speed=90.0)),
    "just over the threshold is": Case(fast_at(0, 1, 2, 3, 4, speed=90.01), [(Rule.SUSTAINED, 5)]),
    "non-violations in between do not break a match": Case(
        sorted(fast_at(0, 2, 4, 6, 8) + fast_at(1, 3, 5, speed=CRUISE), key=lambda r: r.ts_ms),
        [(Rule.SUSTAINED, 5)],
    ),
    "speed equal to critical is not instant": Case(fast_at(0, speed=130.0)),
    "instant fires on one reading": Case(fast_at(0, speed=CRITICAL), [(Rule.INSTANT, 1)]),
    "instant and sustained on the same reading": Case(
        fast_at(0, 1, 2, 3) + fast_at(4, speed=CRITICAL), [(Rule.INSTANT, 1), (Rule.SUSTAINED, 5)]
    ),
    "instant cooldown: a second spike within 600 s is quiet": Case(
        fast_at(0, 599.999, speed=CRITICAL), [(Rule.INSTANT, 1)]
    ),
    "instant cooldown ends at window_end + 600 s exactly": Case(
        fast_at(0, 600, speed=CRITICAL), [(Rule.INSTANT, 1), (Rule.INSTANT, 1)]
    ),
    "instant cooldown does not silence sustained": Case(
        fast_at(0, speed=CRITICAL) + fast_at(1, 2, 3, 4), [(Rule.INSTANT, 1), (Rule.SUSTAINED, 5)]
    ),
    "the set is cleared at a match, readings in cooldown are not counted": Case(
        fast_at(0, 1, 2, 3, 4) + fast_at(*range(5, 604, 20)),
        [(Rule.SUSTAINED, 5)],
    ),
    "sustained cooldown ends exactly at window_end + 600 s": Case(
        fast_at(0, 1, 2, 3, 4) + fast_at(603.999) + fast_at(604, 605, 606, 607, 608),
        [(Rule.SUSTAINED, 5), (Rule.SUSTAINED, 5)],
    ),
    "counting restarts empty after cooldown": Case(
        fast_at(0, 1, 2, 3, 4) + fast_at(604, 605, 606, 607),
        [(Rule.SUSTAINED, 5)],
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_rules_on_sorted_readings(case: Case) -> None:
    detections = evaluate_sorted(case.readings)
    assert [(d.rule, len(d.readings)) for d in detections] == case.expected


def test_a_match_covers_exactly_its_violations_in_order() -> None:
    readings = fast_at(0, 100, 200, 300, 400)
    [detection] = evaluate_sorted(readings)
    assert detection.readings == tuple(readings)
    assert detection.threshold_kmh == 90.0
    assert detection.truck_id == "T1"


def test_instant_reports_the_critical_limit() -> None:
    [detection] = evaluate_sorted(fast_at(0, speed=CRITICAL))
    assert detection.threshold_kmh == 130.0


def test_state_is_cleared_at_a_match() -> None:
    states: dict[str, RuleState] = {}
    judge(states, fast_at(0, 1, 2, 3, 4), builtin_book(CONFIG))
    sustained = states[Rule.SUSTAINED]
    assert len(sustained.held) == 0
    assert sustained.cooldown_until is not None


def test_violations_never_exceed_the_count_needed() -> None:
    states: dict[str, RuleState] = {}
    for r in fast_at(*range(0, 36_000, 7)):
        judge(states, [r], builtin_book(CONFIG))
        assert len(states[Rule.SUSTAINED].held) < CONFIG.violations


LATENESS = CONFIG.allowed_lateness_ms


def accept_all(timeline: TruckTimeline, readings: list[Reading]) -> list[Admission]:
    return [timeline.accept(r, LATENESS) for r in readings]


def test_timeline_releases_in_event_time_order_once_behind_the_watermark() -> None:
    timeline = TruckTimeline()
    a, b, c = fast_at(5), fast_at(0), fast_at(30)
    assert accept_all(timeline, a + b) == [Admission.ACCEPTED, Admission.ACCEPTED]
    assert timeline.release(LATENESS) == [], "newest is 5 s, watermark -5 s: nothing behind it"
    accept_all(timeline, c)
    assert timeline.release(LATENESS) == b + a, "watermark 20 s: 0 s and 5 s, sorted"
    assert [r.ts_ms for _, _, r in timeline.pending] == [c[0].ts_ms]


def test_equal_timestamps_are_ordered_by_event_id() -> None:
    timeline = TruckTimeline()
    late_id = reading(at=BEGINNING, event_id="b")
    early_id = reading(at=BEGINNING, event_id="a")
    accept_all(timeline, [late_id, early_id, reading(at=BEGINNING + minutes(1))])
    assert [r.event_id for r in timeline.release(LATENESS)] == ["a", "b"]


def test_equal_timestamps_decide_which_violation_is_oldest() -> None:
    state = TruckState()
    readings = [reading(at=BEGINNING, event_id=e) for e in ("e", "d", "c", "b", "a")]
    for r in [*readings, reading(at=BEGINNING + minutes(1), speed=CRUISE)]:
        state.timeline.accept(r, LATENESS)
    [detection] = state.evaluate_released(CONFIG)
    assert [r.event_id for r in detection.readings] == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("offset_s", "verdict"),
    [(-10.001, Admission.LATE), (-10, Admission.ACCEPTED), (-3, Admission.ACCEPTED)],
    ids=["older than the watermark", "at the watermark", "within lateness"],
)
def test_lateness_boundary(offset_s: float, verdict: Admission) -> None:
    timeline = TruckTimeline()
    accept_all(timeline, fast_at(100))
    assert timeline.accept(fast_at(100 + offset_s)[0], LATENESS) is verdict


def test_duplicates_are_ignored_and_then_forgotten_behind_the_watermark() -> None:
    timeline = TruckTimeline()
    first = reading(at=BEGINNING, event_id="x")
    assert timeline.accept(first, LATENESS) is Admission.ACCEPTED
    assert timeline.accept(first, LATENESS) is Admission.DUPLICATE
    accept_all(timeline, fast_at(60))
    timeline.release(LATENESS)
    assert "x" not in timeline.seen, "forgotten once the watermark passed it"
    assert timeline.accept(first, LATENESS) is Admission.LATE, "a resend after that is late"


def test_a_resend_of_the_last_released_reading_is_a_duplicate_then_late() -> None:
    timeline = TruckTimeline()
    last = reading(at=BEGINNING + seconds(5), event_id="last")
    accept_all(timeline, [*fast_at(0), last])
    timeline.release(LATENESS, flush=True)
    assert timeline.seen == set(), "no id is remembered for a released reading"
    assert timeline.accept(last, LATENESS) is Admission.DUPLICATE, "its key is the frontier"
    accept_all(timeline, fast_at(6))
    timeline.release(LATENESS, flush=True)
    assert timeline.accept(last, LATENESS) is Admission.LATE, "behind the frontier now"


def test_a_truck_flushed_after_every_reading_remembers_no_ids() -> None:
    """Quiet flushes after each reading once left each last id in ``seen`` for good."""
    timeline = TruckTimeline()
    for r in fast_at(*range(0, 3600, 15)):  # one reading per 15 s, each flushed when quiet
        timeline.accept(r, LATENESS)
        timeline.release(LATENESS, flush=True)
        assert len(timeline.seen) == 0


def test_a_duplicate_cannot_complete_a_match() -> None:
    state = TruckState()
    four = fast_at(0, 1, 2, 3)
    for r in [*four, four[0], four[1], reading(at=BEGINNING + minutes(1), speed=CRUISE)]:
        state.timeline.accept(r, LATENESS)
    assert state.evaluate_released(CONFIG) == []


def test_flush_releases_everything_and_later_older_readings_are_late() -> None:
    timeline = TruckTimeline()
    accept_all(timeline, fast_at(0, 5))
    assert len(timeline.release(LATENESS, flush=True)) == 2
    assert timeline.pending == []
    assert timeline.accept(fast_at(4)[0], LATENESS) is Admission.LATE, "behind what was evaluated"
    assert timeline.accept(fast_at(6)[0], LATENESS) is Admission.ACCEPTED


def test_state_stays_small_over_a_long_run() -> None:
    state = TruckState()
    for r in fast_at(*range(0, 86_400, 3)):
        state.timeline.accept(r, LATENESS)
        state.evaluate_released(CONFIG)
        assert state.entries() < 20
    state.evaluate_released(CONFIG, flush=True)
    assert len(state.timeline.seen) <= 1
    assert state.timeline.pending == []


def test_snapshot_copy_is_independent() -> None:
    state = TruckState()
    state.timeline.accept(fast_at(0)[0], LATENESS)
    copy = state.copy()
    state.timeline.accept(fast_at(1)[0], LATENESS)
    state.evaluate(fast_at(2), CONFIG)
    assert len(state.rules[Rule.SUSTAINED].held) == 1
    assert len(copy.timeline.pending) == 1
    assert len(copy.timeline.seen) == 1
    assert copy.rules == {}


# --- From the knobs to a catalogue: the migration keeps each rule's state ----------------

_VERSION_1 = """version: 1
effective_from: 2020-01-01T00:00:00Z
rules:
  - {id: instant_overspeed, kind: instant_over, speed_over_kmh: 130, severity: critical}
  - {id: sustained_speeding, kind: count_over, speed_over_kmh: 90, count: COUNT, within_s: 600}
"""


def _catalogue_book(count: int) -> RuleBook:
    text = _VERSION_1.replace("COUNT", str(count))
    return RuleBook(Catalogue([parse_version(text, "0001.yaml")]))


def test_a_first_version_equal_to_the_knobs_carries_their_state_on() -> None:
    """Three violations counted under the built-in rules, two more under FLEET_RULES'
    version 1 with the same definition: one alert of five, as if nothing had changed."""
    states: dict[str, RuleState] = {}
    readings = fast_at(0, 1, 2, 3, 4)
    assert judge(states, readings[:3], builtin_book(CONFIG)) == []
    [alert] = judge(states, readings[3:], _catalogue_book(5))
    assert (alert.rule, alert.rule_version, len(alert.readings)) == (Rule.SUSTAINED, 1, 5)


def test_a_first_version_that_differs_from_the_knobs_starts_empty() -> None:
    states: dict[str, RuleState] = {}
    readings = fast_at(0, 1, 2, 3, 4, 5, 6, 7)
    judge(states, readings[:3], builtin_book(CONFIG))
    assert judge(states, readings[3:7], _catalogue_book(4))[0].readings == tuple(readings[3:7])


def test_a_snapshot_from_before_the_catalogue_loads_and_carries_on() -> None:
    """A ``SpeedingRules`` snapshot (pickled before the catalogue) becomes rule states."""
    legacy = TruckState.__new__(TruckState)
    legacy.__setstate__(
        {"timeline": TruckTimeline(), "rules": SpeedingRules(deque(fast_at(0, 1, 2, 3)))}
    )
    [alert] = legacy.evaluate(fast_at(4), CONFIG)
    assert (alert.rule, len(alert.readings)) == (Rule.SUSTAINED, 5)
    restored = pickle.loads(pickle.dumps(legacy))
    assert restored.rules == legacy.rules
