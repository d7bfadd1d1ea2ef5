"""State stays bounded under floods, each bound tested by flooding it (issue 14, item 6).

* One truck, new event ids at one constant ts, never pausing: pending readings stay at the
  cap, the oldest are evaluated early in event-time order, memory does not grow.
* Many truck ids: tracked trucks per worker stay at the cap, idle ones are evicted first,
  no pending reading is lost (each is evaluated), evictions are counted.
* The last line of defence: an exception for one truck dead-letters what it held and the
  flow goes on.

The per-truck logic is driven here by ``Bytewax``, a small stand-in that calls it the way
bytewax 0.21's ``stateful_batch`` does: ``notify_at`` is asked only of a key whose logic
was just called, and a due notification runs ``on_notify``."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.testing import TestingSink, TestingSource, TimeTestingGetter, cluster_main, run_main
from structlog.testing import capture_logs

from dataflows.speeding import (
    Arrivals,
    LateReading,
    Outcome,
    SpeedingRulesStep,
    Unprocessable,
    _SpeedingLogic,
    _Trucks,
)
from domain.readings import Reading, encode_canonical
from domain.rules import Admission, Detection, Rule, RuleBook, RuleConfig, TruckState
from runtime.metrics import PENDING_OVERFLOW, TRUCKS_EVICTED
from tests.builders import BEGINNING, BEGINNING_MS, reading, seconds

FAST, CRITICAL = 95.0, 140.0


def count(metric: Any, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())


def evictions(flow: str) -> dict[str, float]:
    return {
        reason: count(TRUCKS_EVICTED, flow, reason) for reason in ("idle", "flushed", "no_room")
    }


def at(*offsets_s: float, truck: str = "T1", speed: float = FAST) -> list[Reading]:
    return [reading(truck, at=BEGINNING + seconds(s), speed=speed) for s in offsets_s]


def arrivals(readings: list[Reading]) -> Arrivals:
    return Arrivals(readings, [encode_canonical(r) for r in readings])


@dataclass
class Bytewax:
    """bytewax 0.21's ``stateful_batch``, reduced to what the logic sees (see the module
    docstring); times come from the test's clock, not from the real wall clock."""

    step: SpeedingRulesStep
    clock: TimeTestingGetter
    logics: dict[str, _SpeedingLogic] = field(default_factory=dict)
    scheduled: dict[str, datetime] = field(default_factory=dict)
    out: list[tuple[str, Outcome]] = field(default_factory=list)
    peak_live: int = 0

    def send(self, truck: str, readings: list[Reading]) -> list[Outcome]:
        logic = self.logics.get(truck)
        if logic is None:
            logic = self.logics[truck] = self.step.build(None)
        return self._called(truck, logic, logic.on_batch([arrivals(readings)]))

    def notify(self) -> None:
        """Run every due notification, in key order as Bytewax does."""
        now = self.clock.get()
        for truck in sorted(t for t, when in self.scheduled.items() if when <= now):
            del self.scheduled[truck]
            self._called(truck, self.logics[truck], self.logics[truck].on_notify())

    def eof(self) -> None:
        for truck, logic in sorted(self.logics.items()):
            self._called(truck, logic, logic.on_eof())

    def advance(self, by: timedelta) -> None:
        self.clock.advance(by)
        self.notify()

    def trucks(self) -> _Trucks:
        trucks = self.step.trucks()
        assert trucks is not None
        return trucks

    def _called(
        self, truck: str, logic: _SpeedingLogic, result: tuple[list[Outcome], bool]
    ) -> list[Outcome]:
        outcomes, discard = result
        self.out.extend((truck, o) for o in outcomes)
        if discard is StatefulBatchLogic.DISCARD:
            del self.logics[truck]
            self.scheduled.pop(truck, None)
        else:
            when = logic.notify_at()
            if when is not None:
                self.scheduled[truck] = when
        self.peak_live = max(self.peak_live, len(self.logics))
        return outcomes


def detections(out: list[tuple[str, Outcome]]) -> list[tuple[str, Detection]]:
    return [(truck, o) for truck, o in out if isinstance(o, Detection)]


# --- (a) one truck floods its pending readings ------------------------------------------


def _constant_ts_batches(total: int, batch: int, descending: bool) -> Iterator[list[Reading]]:
    """``total`` new event ids, all at BEGINNING, ``batch`` at a time (made lazily)."""
    for start in range(0, total, batch):
        ids = range(start, min(start + batch, total))
        yield [
            Reading(f"e{total - i if descending else i:08d}", "T1", BEGINNING_MS, FAST) for i in ids
        ]


@pytest.mark.parametrize(
    ("descending", "evaluated", "late"),
    [(False, 1_000_000, 0), (True, 1_001, 1_000_000 - 1_001)],
    ids=[
        "ids ascending: each arrival pushes the oldest out, all are evaluated",
        "ids descending: the newest arrival is the oldest key, the rest fall behind it",
    ],
)
def test_a_constant_ts_flood_stays_at_the_pending_cap(
    descending: bool, evaluated: int, late: int
) -> None:
    cap = 1_000
    step = SpeedingRulesStep(RuleConfig(max_pending=cap), TimeTestingGetter(BEGINNING).get)
    logic = step.build(None)
    overflow_before = count(PENDING_OVERFLOW, "alerts")
    released = 0
    lates = 0
    real_evaluate = logic.state.evaluate

    def counting(
        readings: list[Reading], config: RuleConfig, book: RuleBook | None = None
    ) -> list[Detection]:
        nonlocal released
        released += len(readings)
        return real_evaluate(readings, config, book)

    logic.state.evaluate = counting  # type: ignore[method-assign]
    raws = [b"{}"] * 1_000
    for readings in _constant_ts_batches(1_000_000, 1_000, descending):
        outcomes, _ = logic.on_batch([Arrivals(readings, raws)])
        lates += sum(isinstance(o, LateReading) for o in outcomes)
        assert len(logic.state.timeline.pending) <= cap
        assert len(logic.state.timeline.seen) <= cap
    logic.on_eof()
    assert (released, lates) == (evaluated, late), "every reading evaluated or late"
    assert count(PENDING_OVERFLOW, "alerts") - overflow_before == evaluated - min(cap, evaluated)


def test_a_flood_s_memory_does_not_grow() -> None:
    """Once at the cap, 50,000 more readings leave memory where 50,000 before them left it."""
    cap = 1_000
    logic = SpeedingRulesStep(RuleConfig(max_pending=cap), TimeTestingGetter(BEGINNING).get).build(
        None
    )
    batches = _constant_ts_batches(200_000, 1_000, descending=False)
    raws = [b"{}"] * 1_000

    def send(n: int) -> None:
        for _ in range(n):
            logic.on_batch([Arrivals(next(batches), raws)])

    send(100)  # the cap is reached, everything warmed up
    tracemalloc.start()
    try:
        send(50)  # every pending reading now was allocated while tracing
        before = tracemalloc.get_traced_memory()[0]
        send(50)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A pending reading costs ~300 bytes: keeping even 1 in 100 would grow 150 KB.
    assert grown < 32 * 1024, f"grew by {grown} bytes over 50,000 readings"


@dataclass
class PendingCase:
    cap: int
    arrivals: list[float]  # seconds after BEGINNING, in arrival order
    evaluated: list[float]  # in evaluation order, by the end of input
    late: list[float] = field(default_factory=list)
    early: int = 0  # released by the cap


PENDING_CASES = {
    "under the cap: sorted as always": PendingCase(3, [2, 0, 1], [0, 1, 2]),
    "over the cap: the oldest goes early, in event-time order": PendingCase(
        2, [2, 0, 1], [0, 1, 2], early=1
    ),
    "a later arrival behind what went early is late, though within the lateness": PendingCase(
        2, [2, 0, 1, -0.5], [0, 1, 2], late=[-0.5], early=1
    ),
    "one after what went early is on time, and pushes the next out": PendingCase(
        2, [2, 0, 1, 0.5], [0, 0.5, 1, 2], early=2
    ),
    "what the watermark passed goes first and is not early": PendingCase(
        2, [0, 1, 30, 31], [0, 1, 30, 31]
    ),
}


@pytest.mark.parametrize("case", PENDING_CASES.values(), ids=PENDING_CASES.keys())
def test_pending_cap(case: PendingCase) -> None:
    config = RuleConfig(max_pending=case.cap)
    state = TruckState()
    sent = at(*case.arrivals)
    released: list[Reading] = []
    late: list[Reading] = []
    early = 0
    for r in sent:
        late_positions, _, overflowed = state.admit([r], config, released)
        late.extend(r for _ in late_positions)
        early += overflowed
    released.extend(state.timeline.release(config.allowed_lateness_ms, flush=True))
    assert [r.ts_ms for r in released] == [r.ts_ms for r in at(*case.evaluated)]
    assert [r.ts_ms for r in late] == [r.ts_ms for r in at(*case.late)]
    assert early == case.early


def test_the_cap_gives_the_same_results_however_arrivals_are_batched() -> None:
    """Deterministic: the same arrival order gives the same outcomes in batches of any size."""
    config = RuleConfig(max_pending=4)
    sent = at(5, 1, 3, 0, 2, 4, 4.5, 0.5, 9, 8, 6, 7, 30, 29, 31, speed=FAST)
    sent += at(31, 32, 33, speed=CRITICAL)  # 31 again: a duplicate

    def run(batch: int) -> tuple[list[tuple[Rule, tuple[str, ...]]], list[int], int]:
        state = TruckState()
        found: list[Detection] = []
        late: list[int] = []
        early = 0
        for start in range(0, len(sent), batch):
            ingested = state.ingest(sent[start : start + batch], config)
            found += ingested.detections
            late += [start + i for i in ingested.late]
            early += ingested.overflowed
        found += state.evaluate_released(config, flush=True)
        return [(d.rule, tuple(r.event_id for r in d.readings)) for d in found], late, early

    expected = run(len(sent))
    assert expected[2] > 0, "the cap did act"
    assert expected[1], "and made some readings late"
    for batch in (1, 2, 3, 7):
        assert run(batch) == expected, f"batches of {batch}"


# --- (b) many trucks -------------------------------------------------------------------


@dataclass
class Flood:
    trucks: int
    per_tick: int  # new trucks between two clock ticks of ``tick``
    tick: timedelta
    idle_ttl: timedelta = timedelta(hours=1)


FLOODS = {
    "a burst: every tracked truck has pending readings": Flood(5_000, 5_000, seconds(0)),
    "a steady stream: trucks go idle before they are evicted": Flood(5_000, 50, seconds(1)),
    "evicted logics leave at their notification, making room": Flood(
        5_000, 20, seconds(1), idle_ttl=timedelta(seconds=30)
    ),
}


@pytest.mark.parametrize("flood", FLOODS.values(), ids=FLOODS.keys())
def test_tracked_trucks_stay_at_the_cap_and_no_reading_is_lost(flood: Flood) -> None:
    cap = 100
    flow = f"flood-{id(flood)}"
    clock = TimeTestingGetter(BEGINNING)
    step = SpeedingRulesStep(RuleConfig(), clock.get, flood.idle_ttl, max_trucks=cap, flow=flow)
    bytewax = Bytewax(step, clock)
    for n in range(flood.trucks):
        if n and n % flood.per_tick == 0:
            bytewax.advance(flood.tick)
        # One critical reading each: evaluating it fires instant_overspeed, so every
        # evaluated reading shows as one detection.
        bytewax.send(f"T{n:05d}", at(n // flood.per_tick, truck=f"T{n:05d}", speed=CRITICAL))
        trucks = bytewax.trucks()
        assert trucks.tracked() <= cap
        assert trucks.evicted <= cap
    assert bytewax.peak_live <= 2 * cap, "Bytewax holds tracked and evicted logics only"
    bytewax.eof()
    fired = sorted(truck for truck, _ in detections(bytewax.out))
    assert fired == [f"T{n:05d}" for n in range(flood.trucks)], "each reading evaluated once"
    evicted = evictions(flow)
    discarded_by_ttl = flood.trucks - sum(evicted.values()) - bytewax.trucks().tracked()
    assert discarded_by_ttl >= 0
    if flood.idle_ttl == timedelta(hours=1):
        assert discarded_by_ttl == 0, "nobody was idle an hour: every truck gone was evicted"


def test_the_eviction_reasons_of_each_flood() -> None:
    """Named reasons, counted: a burst flushes, a stream evicts idle trucks; with no room
    left for evicted logics, a new truck is evaluated at once and not kept."""
    cap = 100
    results = {}
    for name, per_tick in (("burst", 5_000), ("stream", 5)):
        clock = TimeTestingGetter(BEGINNING)
        flow = f"reasons-{name}"
        bytewax = Bytewax(
            SpeedingRulesStep(RuleConfig(), clock.get, max_trucks=cap, flow=flow), clock
        )
        for n in range(1_000):
            if n and n % per_tick == 0:
                bytewax.advance(seconds(1))
            bytewax.send(f"T{n:05d}", at(0, truck=f"T{n:05d}"))
        results[name] = evictions(flow)
    assert results["burst"] == {"idle": 0, "flushed": cap, "no_room": 1_000 - 2 * cap}
    # The stream's evicted idle trucks wait for their 1-hour notification: room for cap.
    assert results["stream"] == {"idle": cap, "flushed": 0, "no_room": 1_000 - 2 * cap}


def test_idle_trucks_go_first_and_a_busy_one_s_readings_are_evaluated_not_dropped() -> None:
    clock = TimeTestingGetter(BEGINNING)
    step = SpeedingRulesStep(RuleConfig(), clock.get, max_trucks=2, flow="first")
    bytewax = Bytewax(step, clock)
    bytewax.send("A", at(0, 1, 2, 3, truck="A"))  # 4 violations: no alert yet
    clock.advance(seconds(5))
    bytewax.send("B", at(5, 6, 7, 8, 9, truck="B"))  # pending: an alert once evaluated
    bytewax.advance(seconds(5))  # A quiet for 10 s: flushed, idle
    assert bytewax.trucks().idle == {bytewax.logics["A"]: None}

    bytewax.send("C", at(10, truck="C"))
    assert evictions("first") == {"idle": 1, "flushed": 0, "no_room": 0}, "A, idle, went"
    assert bytewax.logics["A"].notify_at() is not None
    assert bytewax.logics["A"].state.entries() == 0, "an evicted truck's state is dropped"

    bytewax.send("D", at(10, truck="D"))  # B and C busy: the least recent, B, is flushed
    assert evictions("first") == {"idle": 1, "flushed": 1, "no_room": 0}
    assert detections(bytewax.out) == [], "B's alert is owed until B's own notification"
    bytewax.advance(seconds(5))  # B's notification: 10 s after its last arrival
    [(truck, alert)] = detections(bytewax.out)
    assert (truck, alert.rule, len(alert.readings)) == ("B", Rule.SUSTAINED, 5)
    assert "B" not in bytewax.logics, "and Bytewax has dropped B's logic"

    bytewax.send("A", at(3600, truck="A"))  # A again: a new truck, its old state gone
    timeline = bytewax.logics["A"].state.timeline
    assert (len(timeline.pending), timeline.frontier) == (1, None)


def test_an_evicted_logic_asked_for_its_notification_is_due_at_once() -> None:
    """Evicted after Bytewax called it in the same activation, or rebuilt from a snapshot
    over the cap: ``notify_at`` says now, and its notification owes what it flushed."""
    clock = TimeTestingGetter(BEGINNING)
    step = SpeedingRulesStep(RuleConfig(), clock.get, max_trucks=1, flow="restore")
    first = step.build(TruckState())
    snapshot = TruckState()
    for r in at(0, 1, 2, 3, 4):
        snapshot.timeline.accept(r, RuleConfig().allowed_lateness_ms)
    second = step.build(snapshot)
    assert second.notify_at() is not None
    assert second.notify_at() <= clock.get()  # type: ignore[operator]
    outcomes, discard = second.on_notify()
    assert discard is StatefulBatchLogic.DISCARD
    assert [type(o) for o in outcomes] == [Detection], "its pending readings were evaluated"
    assert first.notify_at() == clock.get() + timedelta(hours=1), "the tracked one stays"


def _rules_flow(
    items: list[tuple[str, Arrivals]],
    build: Callable[[TruckState | None], _SpeedingLogic],
    out: list[tuple[str, Outcome]],
) -> Dataflow:
    flow = Dataflow("state_bounds")
    keyed = op.input("input", flow, TestingSource(items))  # (truck_id, Arrivals)
    outcomes = op.stateful_batch("speeding_rules", keyed, build)  # (truck_id, Outcome)
    op.output("output", outcomes, TestingSink(out))
    return flow


@pytest.mark.parametrize("workers", [1, 2])
def test_a_flood_of_truck_ids_through_bytewax(workers: int) -> None:
    """The real operator, one and two workers: each worker holds its own cap, and every
    truck's readings are evaluated whether it was kept, evicted or never kept."""
    cap = 50
    trucks = [f"T{n:04d}" for n in range(1_000)]
    # The flow's clock is far in the future: no notification comes due while it runs.
    step = SpeedingRulesStep(
        RuleConfig(), lambda: BEGINNING.replace(year=2200), max_trucks=cap, flow=f"bw{workers}"
    )
    registries: set[int] = set()
    per_worker: list[_Trucks] = []

    def build(state: TruckState | None) -> _SpeedingLogic:
        trucks_here = step.trucks()
        assert trucks_here is not None
        if id(trucks_here) not in registries:
            registries.add(id(trucks_here))
            per_worker.append(trucks_here)
        return step.build(state)

    items = [(t, arrivals(at(0, 1, 2, 3, 4, truck=t))) for t in trucks]
    out: list[tuple[str, Outcome]] = []
    flow = _rules_flow(items, build, out)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    assert len(per_worker) == workers, "one registry per worker"
    assert all(r.tracked() <= cap and r.evicted <= cap for r in per_worker)
    fired = sorted(truck for truck, o in out if isinstance(o, Detection))
    assert fired == trucks, "five violations each: one alert per truck, none lost"
    assert sum(evictions(f"bw{workers}").values()) == len(trucks) - sum(
        r.tracked() for r in per_worker
    )


# --- (d) the last line of defence ------------------------------------------------------


POISON = "poison"


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluating a reading whose event id starts with ``poison`` raises."""
    evaluate = TruckState.evaluate

    def failing(
        self: TruckState, released: list[Reading], config: RuleConfig, book: RuleBook | None = None
    ) -> list[Detection]:
        if any(r.event_id.startswith(POISON) for r in released):
            raise ZeroDivisionError("injected")
        return evaluate(self, released, config, book)

    monkeypatch.setattr(TruckState, "evaluate", failing)


def poison(offset_s: float, truck: str = "T1") -> Reading:
    return reading(truck, at=BEGINNING + seconds(offset_s), event_id=f"{POISON}-{offset_s}")


@dataclass
class GuardCase:
    before: list[Reading]  # an earlier batch: pending when the fault strikes
    batch: list[Reading]  # the batch in hand (empty: the fault strikes in ``call``)
    call: Callable[[_SpeedingLogic, list[Reading]], tuple[list[Outcome], bool]]
    dead: list[Reading]  # what comes out as unprocessable: the batch, then the rest sorted


def _batch(logic: _SpeedingLogic, readings: list[Reading]) -> tuple[list[Outcome], bool]:
    return logic.on_batch([arrivals(readings)])


def _quiet(logic: _SpeedingLogic, _: list[Reading]) -> tuple[list[Outcome], bool]:
    return logic.on_notify()


def _eof(logic: _SpeedingLogic, _: list[Reading]) -> tuple[list[Outcome], bool]:
    return logic.on_eof()


P = poison(1)
GUARD_CASES = {
    "on_batch: the new reading itself": GuardCase(
        at(0), [P, *at(30)], _batch, [P, *at(30), *at(0)]
    ),
    "on_batch: a pending one the batch released": GuardCase(
        [P, *at(2)], at(30, 31), _batch, [*at(30, 31), P, *at(2)]
    ),
    "on_notify: the quiet flush": GuardCase([*at(0), P, *at(2)], [], _quiet, [*at(0), P, *at(2)]),
    "on_eof: the end of input": GuardCase([P, *at(2)], [], _eof, [P, *at(2)]),
}


@pytest.mark.usefixtures("poisoned")
@pytest.mark.parametrize("case", GUARD_CASES.values(), ids=GUARD_CASES.keys())
def test_a_failing_truck_is_dead_lettered_and_reset(case: GuardCase) -> None:
    clock = TimeTestingGetter(BEGINNING)
    logic = SpeedingRulesStep(RuleConfig(), clock.get, flow="guard").build(None)
    logic.on_batch([arrivals(case.before)])
    clock.advance(seconds(10))
    with capture_logs() as logs:
        outcomes, discard = case.call(logic, case.batch)
    assert outcomes == [
        Unprocessable("T1", [encode_canonical(r) for r in case.dead], "ZeroDivisionError: injected")
    ]
    assert discard is StatefulBatchLogic.DISCARD, "its state is dropped: it starts afresh"
    assert logic.state.entries() == 0
    assert [(e["event"], e["log_level"], e["truck_id"]) for e in logs] == [
        ("unprocessable", "error", "T1")
    ]


@pytest.mark.usefixtures("poisoned")
def test_the_batch_s_own_bytes_are_dead_lettered() -> None:
    logic = SpeedingRulesStep(RuleConfig(), TimeTestingGetter(BEGINNING).get).build(None)
    with capture_logs():
        outcomes, _ = logic.on_batch([Arrivals([P, *at(30)], [b"P as it came", b"30 s"])])
    assert [o.raws for o in outcomes if isinstance(o, Unprocessable)] == [
        [b"P as it came", b"30 s"]
    ]


@pytest.mark.usefixtures("poisoned")
def test_an_evicted_truck_that_fails_owes_its_readings_and_the_evicting_one_is_fine() -> None:
    clock = TimeTestingGetter(BEGINNING)
    bytewax = Bytewax(SpeedingRulesStep(RuleConfig(), clock.get, max_trucks=1), clock)
    bytewax.send("A", [poison(0, "A"), *at(1, truck="A")])
    with capture_logs():
        outcomes = bytewax.send("B", at(0, 1, 2, 3, 4, truck="B"))  # evicts busy A
    assert outcomes == []
    bytewax.advance(seconds(10))
    [dead] = [(t, o) for t, o in bytewax.out if isinstance(o, Unprocessable)]
    assert dead[0] == "A"
    assert dead[1].raws == [encode_canonical(r) for r in [poison(0, "A"), *at(1, truck="A")]]
    assert [t for t, _ in detections(bytewax.out)] == ["B"]


@pytest.mark.usefixtures("poisoned")
def test_the_flow_goes_on_after_a_failure() -> None:
    """Through Bytewax: a failing truck neither stops the flow nor other trucks' alerts, and
    its next readings are evaluated from an empty state."""
    step = SpeedingRulesStep(RuleConfig(), lambda: BEGINNING, flow="guard-flow")
    items = [
        ("T1", arrivals([poison(0), *at(1, 30)])),  # 30 s releases the poison: on_batch fails
        ("T2", arrivals(at(0, 1, 2, 3, 4, truck="T2"))),
        ("T1", arrivals(at(40, speed=CRITICAL))),  # evaluated at the end of input
    ]
    out: list[tuple[str, Outcome]] = []
    with capture_logs():
        run_main(_rules_flow(items, step.build, out))
    assert [(t, type(o).__name__) for t, o in out] == [
        ("T1", "Unprocessable"),
        ("T1", "Detection"),  # the end of input goes by key
        ("T2", "Detection"),
    ]
    [dead] = [o for _, o in out if isinstance(o, Unprocessable)]
    assert len(dead.raws) == 3


def test_rules_are_unchanged_for_a_truck_that_never_reaches_a_cap() -> None:
    """The caps cost nothing below them: a disordered truck gives the sorted result."""
    sent = at(3, 0, 2, 1, 4, 9, 5, 8, 6, 7)
    state = TruckState()
    found = state.ingest(sent, RuleConfig(max_pending=10)).detections
    found += state.evaluate_released(RuleConfig(max_pending=10), flush=True)
    assert [tuple(r.ts_ms for r in d.readings) for d in found] == [
        tuple(r.ts_ms for r in at(0, 1, 2, 3, 4))
    ]
    assert state.timeline.accept(at(9)[0], 10_000) is Admission.DUPLICATE, "the frontier's resend"
