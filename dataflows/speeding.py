"""The keyed, stateful step of dataflows.alerts: a thin Bytewax logic around ``TruckState``.

Per truck (the Bytewax key) it takes arriving readings, answers late ones at once, and
releases the rest to the rules in event-time order as the truck's watermark passes them.

The watermark moves with event time (newest reading - ALLOWED_LATENESS). While a truck is
quiet it must also move with wall-clock time, or its last readings would wait for the next
one: after ALLOWED_LATENESS of processing time without an arrival, the truck's pending
readings are flushed. That quiet time is measured from the last arrival *in this process*
and is deliberately not part of the snapshot: after a restart, or while catching up on a
backlog (arrivals then come fast), no reading is made late by time the flow spent away.
Bytewax's EventClock, which adds the wall time elapsed since the snapshot, is not used.

Bounded state, per worker (with the wall clock, i.e. in the stream):

* One truck holds at most ``RuleConfig.max_pending`` pending readings (domain/rules.py).
* At most ``max_trucks`` trucks are *tracked* (hold state). A new truck beyond that evicts
  an idle one (nothing pending: normally quiet for ALLOWED_LATENESS already), the one idle
  longest, i.e. with the oldest last arrival. Only if every tracked truck has pending
  readings is the least recently arrived evicted, its pending readings evaluated first,
  never dropped; its outcomes go out at its next notification, due within
  ALLOWED_LATENESS of its last arrival.
* Bytewax frees a key's logic only from that key's own callback, and asks ``notify_at``
  only of keys it just called (bytewax 0.21 ``stateful_batch``). So an evicted truck's state
  is dropped at once, but its empty logic stays with Bytewax until the notification it had
  scheduled: at most ALLOWED_LATENESS (it had pending readings) or the idle TTL (it had
  none) after its last arrival. (Evicted in the same activation after Bytewax called it,
  or rebuilt from a snapshot over the cap, it says "now" to ``notify_at``.) At most
  ``max_trucks`` evicted logics may wait so; with that many waiting, a new truck is not
  kept at all: its batch is evaluated at once (sorted; lateness still applies within it)
  and it is forgotten. Evictions are counted in ``fleetwatch_trucks_evicted_total``, by
  reason: ``idle``, ``flushed`` (evicted with pending readings), ``no_room`` (not kept).
* An evicted truck starts afresh at its next reading, as after the idle TTL: no violations,
  no cooldown, no watermark, no remembered ids. That changes no alert as long as every
  reading of it that arrives after the eviction has a ts more than max(WINDOW, COOLDOWN)
  (default 600 s) after the newest reading it had evaluated: the violations it kept are
  out of the window by then, its cooldowns are over, and nothing it sends is late or a
  duplicate of what came before. Otherwise forgotten violations and cooldowns count no
  more, and a reading that would have been late or a duplicate is evaluated. Memory
  (measured): an idle truck ~2.0 KB (1.75 KB of Python objects, ~0.25 KB Bytewax's per
  key), a busy one at 1 Hz ~4.7 KB, an evicted logic waiting ~0.6 KB; a pending reading
  ~0.3 KB.
* A bounded replay (``wall_clock`` off: the backfill) tracks every truck to the end: with
  no notifications, an evicted logic could only leave Bytewax at the end of input, so
  evicting would change results and save little.

Last line of defence: an exception in ``on_batch``/``on_notify``/``on_eof`` of one truck
(a bug; nothing a reading holds should cause one) does not stop the flow. Every reading
of that truck not yet emitted (the batch in hand and what the state held) comes out as one
``Unprocessable`` outcome, for the dead-letter topic with reason ``unprocessable``; the
truck's state is dropped (its next reading starts afresh) and the error is logged.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from bytewax.operators import StatefulBatchLogic

from domain.readings import Reading, encode_canonical
from domain.rules import Detection, RuleBook, RuleConfig, TruckState, builtin_book
from domain.scorecards import DayTally, ScoreKeeper
from runtime.metrics import PENDING_OVERFLOW, TRUCKS_EVICTED

log = structlog.get_logger("fleetwatch.unprocessable")

# notify_at's "at once": Bytewax runs every notification due at or before its wall clock.
_AT_ONCE = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Arrivals:
    """One truck's readings from one fetch, in arrival order, with the record bytes each came
    in (a late reading is passed on unchanged; without them it is re-encoded). One item per
    truck, not per reading, is what Bytewax exchanges between workers and hands to the logic."""

    readings: list[Reading]
    raws: list[bytes]


@dataclass(frozen=True, slots=True)
class LateReading:
    truck_id: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Unprocessable:
    """Processing this truck raised (``detail``: the error). ``raws``: every reading of it
    not emitted yet, each once: the batch in hand as it came (re-encoded where its bytes
    were not kept), then what the state held, canonically encoded, in event-time order.
    They go to the dead-letter topic with reason ``unprocessable``; the state is gone."""

    truck_id: str
    raws: list[bytes]
    detail: str


RuleOutcome = Detection | LateReading | Unprocessable
Outcome = RuleOutcome | DayTally


@dataclass(frozen=True)
class SpeedingRulesStep:
    """Builds the per-truck logic; ``now`` is injectable for tests."""

    config: RuleConfig
    now: Callable[[], datetime]
    # A truck quiet this long with nothing pending is forgotten entirely (its rule state can
    # no longer matter once it exceeds WINDOW and COOLDOWN); a reading after that starts anew.
    idle_ttl: timedelta = timedelta(hours=1)
    # Off for bounded replays (backfill): only event time and the end of input release
    # readings there, so no wall clock can touch the results.
    wall_clock: bool = True
    # The input is each truck's readings already deduplicated and in event-time order (the
    # backfill's, sorted by Polars): a batch that continues its truck's order goes straight
    # to the rules, past the timeline (~13% of the backfill's time, measured). One that
    # does not (a bug upstream) takes the timeline's path, which dead-letters what is late.
    sorted_input: bool = False
    # Trucks tracked per worker (see the module docstring). 200,000 is about twice the trucks
    # at 1 Hz one worker keeps up with (the alerts flow drains ~110,000 readings/s), and its
    # worst case, every one busy plus as many evicted logics waiting (~1.1 GB), fits the
    # alerts pod's 2 GiB limit; all idle, it is ~0.5 GB.
    max_trucks: int = 200_000
    # The ``flow`` label of the metrics.
    flow: str = "alerts"
    # What a truck's quiet time is measured on: the input clock (connectors/liveness.py),
    # which stands still while the input does not flow, so an outage of Kafka or of the
    # bridge never passes for a quiet truck. Default: ``now``. ``now`` itself stays the
    # clock notifications are scheduled on, as Bytewax compares them with its wall clock.
    quiet_clock: Callable[[], datetime] | None = None
    # The rules in force (FLEET_RULES with the trucks' classes, swapped when they change);
    # default: section 4's rules from ``config``. Asked once per call of a truck's logic.
    rule_book: Callable[[], RuleBook] | None = None
    # With scorecards on (FLEET_SCORECARDS_OUT), each run of judged readings also gives its
    # ``DayTally``s (domain/scorecards.py), out among the outcomes.
    scoring: ScoreKeeper | None = None
    _workers: dict[int, _Trucks] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.max_trucks < 1:
            raise ValueError(f"max_trucks must be at least 1, not {self.max_trucks}")
        if self.config.max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {self.config.max_pending}")

    def quiet_now(self) -> datetime:
        return (self.quiet_clock or self.now)()

    def book(self) -> RuleBook:
        return self.rule_book() if self.rule_book is not None else builtin_book(self.config)

    def build(self, resume_state: TruckState | None) -> _SpeedingLogic:
        trucks = self.trucks()
        logic = _SpeedingLogic(self, resume_state or TruckState(), trucks)
        if resume_state is not None and trucks is not None:
            trucks.restored(logic)
        return logic

    def trucks(self) -> _Trucks | None:
        """This worker's tracked trucks (None without the wall clock). Bytewax runs each
        worker on an OS thread of its own and calls a key's logic only there. (Not a
        ``threading.local``: Bytewax's threads are not Python's, and each of its calls into
        Python may come with a fresh thread state, and so a fresh ``threading.local``.)"""
        if not self.wall_clock:
            return None
        worker = threading.get_ident()
        trucks = self._workers.get(worker)
        if trucks is None:
            trucks = self._workers.setdefault(worker, _Trucks(self.max_trucks, self.flow))
        return trucks


class _Trucks:
    """The trucks one worker tracks for one step, idle and busy (with pending readings),
    each in the order they got there; and how many evicted logics Bytewax still holds.
    It holds the logics themselves, so a step object serves one execution of its flow (as
    ``python -m bytewax.run`` does; a test that runs a flow again builds it again)."""

    def __init__(self, capacity: int, flow: str) -> None:
        self.capacity = capacity
        self.idle: OrderedDict[_SpeedingLogic, None] = OrderedDict()
        self.busy: OrderedDict[_SpeedingLogic, None] = OrderedDict()
        self.evicted = 0
        self._evictions = {
            reason: TRUCKS_EVICTED.labels(flow, reason) for reason in ("idle", "flushed", "no_room")
        }

    def tracked(self) -> int:
        return len(self.idle) + len(self.busy)

    def make_room(self) -> bool:
        """Room for one more tracked truck, evicting one if need be; False if there is none
        (too many evicted logics still wait for their notification)."""
        if len(self.idle) + len(self.busy) < self.capacity:
            return True
        if self.evicted >= self.capacity:
            self._evictions["no_room"].inc()
            return False
        victim, _ = (self.idle or self.busy).popitem(last=False)
        victim.slot = None
        self._evict(victim)
        return True

    def restored(self, logic: _SpeedingLogic) -> None:
        """A logic Bytewax rebuilt from a snapshot; over the cap it is evicted at once (Bytewax
        asks its ``notify_at`` right away, and it leaves at that notification)."""
        if len(self.idle) + len(self.busy) < self.capacity:
            self.place(logic, busy=bool(logic.state.timeline.pending))
        else:
            self._evict(logic)

    def _evict(self, logic: _SpeedingLogic) -> None:
        self._evictions[logic.evict()].inc()
        self.evicted += 1

    def place(self, logic: _SpeedingLogic, *, busy: bool) -> None:
        """``logic`` was just active: to the end of its queue."""
        queue = self.busy if busy else self.idle
        slot = logic.slot
        if slot is queue:
            queue.move_to_end(logic)
            return
        if slot is not None:
            del slot[logic]
        queue[logic] = None
        logic.slot = queue

    def forget(self, logic: _SpeedingLogic) -> None:
        """``logic`` is being discarded."""
        if logic.slot is not None:
            del logic.slot[logic]
            logic.slot = None
        if logic.held is not None:
            logic.held = None
            self.evicted -= 1


# What an evicted logic keeps as its state until Bytewax drops it; nothing ever changes it.
_EVICTED = TruckState()


class _SpeedingLogic(StatefulBatchLogic[Arrivals, Outcome, TruckState]):
    def __init__(self, step: SpeedingRulesStep, state: TruckState, trucks: _Trucks | None) -> None:
        self._step = step
        self._config = step.config
        self._lateness = timedelta(milliseconds=step.config.allowed_lateness_ms)
        self._trucks = trucks
        self.state = state
        self._last_arrival = step.quiet_now()
        # Where this truck is in ``trucks`` (None: not tracked, e.g. not yet or evicted).
        self.slot: OrderedDict[_SpeedingLogic, None] | None = None
        # Set when evicted: the outcomes it still owes, emitted at its next call.
        self.held: Sequence[Outcome] | None = None

    def on_batch(self, values: list[Arrivals]) -> tuple[list[Outcome], bool]:
        outcomes: list[Outcome] = []
        readings: Sequence[Reading] = ()
        raws: Sequence[bytes] = ()
        released: list[Reading] = []
        owed = 0  # outcomes from before this batch: emitted even if it fails
        try:
            if len(values) == 1:
                readings, raws = values[0].readings, values[0].raws
            else:
                readings = [r for arrivals in values for r in arrivals.readings]
                raws = [raw for arrivals in values for raw in arrivals.raws]
            trucks = self._trucks
            kept = True
            if trucks is not None and self.slot is None:
                # New, or evicted since its last reading: it starts afresh.
                if self.held is not None:
                    outcomes.extend(self.held)
                    owed = len(outcomes)
                    trucks.forget(self)
                    self.state = TruckState()
                kept = trucks.make_room()
            state = self.state
            config = self._config
            late: list[int] = []
            overflowed = 0
            if self._step.sorted_input and state.timeline.continued_by(readings):
                released.extend(readings)
            else:
                late, _, overflowed = state.admit(readings, config, released)
            if late:
                outcomes.extend(
                    LateReading(readings[i].truck_id, _raw(readings, raws, i)) for i in late
                )
            if released:
                outcomes.extend(self._judged(state, released))
            if overflowed:
                PENDING_OVERFLOW.labels(self._step.flow).inc(overflowed)
            if not kept:
                # No room to keep it: everything now, in event-time order, then forgotten.
                outcomes.extend(self._flush(released))
                return outcomes, StatefulBatchLogic.DISCARD
            self._last_arrival = self._step.quiet_now()
            if trucks is not None:
                queue = trucks.busy if state.timeline.pending else trucks.idle
                if self.slot is queue:
                    queue.move_to_end(self)
                else:
                    trucks.place(self, busy=queue is trucks.busy)
            return outcomes, StatefulBatchLogic.RETAIN
        except Exception as error:
            return self._unprocessable(error, outcomes[:owed], readings, raws, released)

    def on_notify(self) -> tuple[list[Outcome], bool]:
        released: list[Reading] = []
        try:
            if self.held is not None:
                return self._leave()
            quiet = self._step.quiet_now() - self._last_arrival
            outcomes: list[Outcome] = []
            if self.state.timeline.pending and quiet >= self._lateness:
                outcomes.extend(self._flush(released))
                if self._trucks is not None:
                    self._trucks.place(self, busy=False)
            if not self.state.timeline.pending and quiet >= self._step.idle_ttl:
                if self._trucks is not None:
                    self._trucks.forget(self)
                return outcomes, StatefulBatchLogic.DISCARD
            return outcomes, StatefulBatchLogic.RETAIN
        except Exception as error:
            return self._unprocessable(error, [], [], [], released)

    def on_eof(self) -> tuple[list[Outcome], bool]:
        # Bounded input: everything pending is evaluated at the end.
        released: list[Reading] = []
        try:
            if self.held is not None:
                return self._leave()
            outcomes: list[Outcome] = [*self._flush(released)]
            if self._trucks is not None and self.slot is not None:
                self._trucks.place(self, busy=False)
            return outcomes, StatefulBatchLogic.RETAIN
        except Exception as error:
            return self._unprocessable(error, [], [], [], released)

    def notify_at(self) -> datetime | None:
        if not self._step.wall_clock:
            return None
        if self.held is not None:
            return _AT_ONCE  # evicted: leave at the next activation
        quiet_for = self._lateness if self.state.timeline.pending else self._step.idle_ttl
        # Due once the truck has been quiet that long on the quiet clock; while the input
        # stalls that clock stands still, and the notification comes back to check.
        remaining = self._last_arrival + quiet_for - self._step.quiet_now()
        return self._step.now() + max(remaining, timedelta(0))

    def snapshot(self) -> TruckState:
        return self.state.copy()

    def evict(self) -> str:
        """Drop the state, evaluating what is pending first (the outcomes wait for this
        truck's next call); the reason, for the metric."""
        state = self.state
        self.state = _EVICTED
        self._last_arrival = _AT_ONCE
        if not state.timeline.pending:
            self.held = ()
            return "idle"
        released: list[Reading] = []
        try:
            flushed = state.timeline.release(self._config.allowed_lateness_ms, flush=True)
            released.extend(flushed)
            self.held = self._judged(state, flushed)
        except Exception as error:
            self.held = [self._dead_letters(error, state, [], [], released)]
        return "flushed"

    def _flush(self, released: list[Reading]) -> list[Outcome]:
        """Evaluate everything pending; ``released`` gets the readings first."""
        flushed = self.state.timeline.release(self._config.allowed_lateness_ms, flush=True)
        released.extend(flushed)
        return self._judged(self.state, flushed)

    def _judged(self, state: TruckState, released: list[Reading]) -> list[Outcome]:
        """The rules' detections for ``released`` (in event-time order), and with scorecards
        on the day tallies of those readings and detections."""
        detections = state.evaluate(released, self._config, self._step.book())
        scoring = self._step.scoring
        if scoring is None or not released:
            return list(detections)
        state.previous, tallies = scoring.tallies(state.previous, released, detections)
        return [*detections, *tallies]

    def _leave(self) -> tuple[list[Outcome], bool]:
        """An evicted truck's last call: what it owes, and Bytewax drops it."""
        held = list(self.held or ())
        if self._trucks is not None:
            self._trucks.forget(self)
        return held, StatefulBatchLogic.DISCARD

    def _unprocessable(
        self,
        error: Exception,
        owed: list[Outcome],
        readings: Sequence[Reading],
        raws: Sequence[bytes],
        released: list[Reading],
    ) -> tuple[list[Outcome], bool]:
        """The last line of defence: dead-letter what this truck held, drop its state."""
        state, self.state = self.state, TruckState()
        outcome = self._dead_letters(error, state, readings, raws, released)
        if self._trucks is not None:
            if self.held is not None:
                owed = [*owed, *self.held]
            self._trucks.forget(self)
        return [*owed, outcome], StatefulBatchLogic.DISCARD

    def _dead_letters(
        self,
        error: Exception,
        state: TruckState,
        readings: Sequence[Reading],
        raws: Sequence[bytes],
        released: list[Reading],
    ) -> Unprocessable:
        detail = f"{type(error).__name__}: {error}"
        taken = {id(r) for r in readings}
        out = [_raw(readings, raws, i) for i in range(len(readings))]
        # Taken out of pending in this call but not emitted, or still pending: each once.
        for reading in sorted([*released, *state.held()], key=lambda r: (r.ts_ms, r.event_id)):
            if id(reading) not in taken:
                taken.add(id(reading))
                out.append(encode_canonical(reading))
        truck_id = _truck_of(readings, released, state)
        log.error(
            "unprocessable",
            stage=self._step.flow,
            truck_id=truck_id,
            readings=len(out),
            error=detail,
            exc_info=error,
        )
        return Unprocessable(truck_id, out, detail)


def _raw(readings: Sequence[Reading], raws: Sequence[bytes], i: int) -> bytes:
    """The bytes reading ``i`` came in, or its canonical form where they were not kept."""
    return raws[i] if i < len(raws) else encode_canonical(readings[i])


def _truck_of(readings: Sequence[Reading], released: list[Reading], state: TruckState) -> str:
    held = [r for rule_state in state.rules.values() for r in rule_state.held]
    for group in (readings, released, state.held(), held):
        for reading in group:
            return reading.truck_id
    return ""
