"""The Bytewax logic around TruckState: wall-time flushing, idle trucks costing nothing, and
restarts that make nothing late."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from bytewax.operators import StatefulBatchLogic
from bytewax.testing import TimeTestingGetter

from dataflows.speeding import Arrivals, LateReading, SpeedingRulesStep
from domain.readings import Reading, encode_canonical
from domain.rules import Detection, RuleConfig, TruckState
from tests.builders import BEGINNING, reading, seconds

CONFIG = RuleConfig()


def arrivals(*offsets_s: float, speed: float = 95.0) -> list[Arrivals]:
    rs = [reading(at=BEGINNING + seconds(s), speed=speed) for s in offsets_s]
    return [Arrivals(rs, [encode_canonical(r) for r in rs])]


def step(clock: TimeTestingGetter) -> SpeedingRulesStep:
    return SpeedingRulesStep(CONFIG, clock.get, idle_ttl=timedelta(minutes=30))


def test_quiet_truck_flushes_then_is_discarded_and_costs_nothing() -> None:
    clock = TimeTestingGetter(BEGINNING)
    logic = step(clock).build(None)
    outcomes, _ = logic.on_batch(arrivals(0, 1, 2, 3, 4))
    assert outcomes == [], "all within the lateness of the newest: pending"
    assert logic.notify_at() == BEGINNING + seconds(10)

    clock.advance(seconds(10))
    outcomes, discard = logic.on_notify()
    assert [type(o) for o in outcomes] == [Detection]
    assert discard is StatefulBatchLogic.RETAIN
    assert logic.state.entries() == 0, "after the flush no reading or id is held"

    clock.advance(timedelta(minutes=30))
    _, discard = logic.on_notify()
    assert discard is StatefulBatchLogic.DISCARD, "an idle truck's state is dropped entirely"


def test_state_entries_do_not_grow_with_the_number_of_readings() -> None:
    clock = TimeTestingGetter(BEGINNING)
    logic = step(clock).build(None)
    sizes = []
    for batch_start in range(0, 20_000, 100):
        logic.on_batch(arrivals(*range(batch_start, batch_start + 100), speed=85.0))
        logic.on_batch(
            arrivals(batch_start + 50, speed=95.0) + arrivals(batch_start + 51, speed=95.0)
        )
        clock.advance(seconds(1))
        sizes.append(logic.state.entries())
    assert max(sizes) <= 2 * (CONFIG.allowed_lateness_ms // 1000) + 2


def test_restored_state_makes_nothing_late_after_long_downtime() -> None:
    clock = TimeTestingGetter(BEGINNING)
    logic = step(clock).build(None)
    logic.on_batch(arrivals(0, 1, 2, 3))
    snapshot = logic.snapshot()

    clock.advance(timedelta(hours=2))  # the flow was down for two hours
    resumed = step(clock).build(snapshot)
    outcomes, _ = resumed.on_notify()
    assert outcomes == [], "no flush: the downtime is not quiet time of the truck"
    # Readings that were queued in Kafka meanwhile arrive now, some slightly out of order.
    outcomes, _ = resumed.on_batch(arrivals(3.5, 5, 4.5))
    assert not any(isinstance(o, LateReading) for o in outcomes)
    outcomes, _ = resumed.on_batch(arrivals(60, speed=80.0))
    [detection] = [o for o in outcomes if isinstance(o, Detection)]
    assert [r.ts_ms for r in detection.readings] == [
        r.ts_ms for r in arrivals(0, 1, 2, 3, 3.5)[0].readings
    ]


def test_snapshot_is_a_copy() -> None:
    clock = TimeTestingGetter(BEGINNING)
    logic = step(clock).build(None)
    logic.on_batch(arrivals(0))
    snapshot = logic.snapshot()
    logic.on_batch(arrivals(1, 2))
    assert isinstance(snapshot, TruckState)
    assert len(snapshot.timeline.pending) == 1


def test_late_reading_keeps_its_bytes() -> None:
    clock = TimeTestingGetter(BEGINNING)
    logic = step(clock).build(None)
    logic.on_batch(arrivals(100, speed=80.0))
    late: Reading = reading(at=BEGINNING, speed=99.0, event_id="old")
    raw = b'{"the original": "bytes"}'
    outcomes, _ = logic.on_batch([Arrivals([late], [raw])])
    assert outcomes == [LateReading("T1", raw)]


def test_a_bounded_replay_tracks_every_truck_to_the_end() -> None:
    """Without the wall clock (backfill) no truck is evicted: no notification could free an
    evicted one before the end of input, and results must not depend on the fleet's size."""
    clock = TimeTestingGetter(BEGINNING)
    replay = SpeedingRulesStep(CONFIG, clock.get, wall_clock=False, max_trucks=1)
    assert replay.trucks() is None
    logics = [replay.build(None) for _ in range(3)]
    for n, logic in enumerate(logics):
        logic.on_batch([arrivals_of(f"T{n}", 0, 1, 2, 3, 4)])
    for logic in logics:
        outcomes, _ = logic.on_eof()
        assert [type(o) for o in outcomes] == [Detection]


def arrivals_of(truck: str, *offsets_s: float) -> Arrivals:
    rs = [reading(truck, at=BEGINNING + seconds(s)) for s in offsets_s]
    return Arrivals(rs, [encode_canonical(r) for r in rs])


def test_sorted_input_goes_past_the_timeline_and_out_of_order_input_does_not() -> None:
    """The backfill's fast path: a batch continuing its truck's order is judged at once; one
    that does not (a bug upstream) takes the timeline's path, where the stale reading is
    late (and the backfill dead-letters it) and nothing is judged twice."""
    replay = SpeedingRulesStep(CONFIG, TimeTestingGetter(BEGINNING).get, wall_clock=False)
    fast = replace(replay, sorted_input=True)
    in_order = arrivals_of("T1", 0, 1, 2, 3, 4)
    slow_logic, fast_logic = replay.build(None), fast.build(None)
    assert slow_logic.on_batch([in_order])[0] == []  # pending until the watermark passes
    [detection] = fast_logic.on_batch([in_order])[0]
    assert isinstance(detection, Detection)
    assert [type(o) for o in slow_logic.on_eof()[0]] == [Detection]
    assert fast_logic.on_eof()[0] == []
    behind = fast_logic.on_batch([arrivals_of("T1", 2.5)])[0]
    assert [type(o) for o in behind] == [LateReading]
