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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bytewax.operators import StatefulBatchLogic

from domain.readings import Reading
from domain.rules import Detection, RuleConfig, TruckState


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


Outcome = Detection | LateReading


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

    def build(self, resume_state: TruckState | None) -> _SpeedingLogic:
        return _SpeedingLogic(self, resume_state or TruckState())


class _SpeedingLogic(StatefulBatchLogic[Arrivals, Outcome, TruckState]):
    def __init__(self, step: SpeedingRulesStep, state: TruckState) -> None:
        self._step = step
        self._config = step.config
        self._lateness = timedelta(milliseconds=step.config.allowed_lateness_ms)
        self.state = state
        self._last_arrival = step.now()

    def on_batch(self, values: list[Arrivals]) -> tuple[list[Outcome], bool]:
        if len(values) == 1:
            readings, raws = values[0].readings, values[0].raws
        else:
            readings = [r for arrivals in values for r in arrivals.readings]
            raws = [raw for arrivals in values for raw in arrivals.raws]
        ingested = self.state.ingest(readings, self._config)
        self._last_arrival = self._step.now()
        outcomes: list[Outcome] = [
            LateReading(readings[i].truck_id, raws[i]) for i in ingested.late
        ]
        outcomes.extend(ingested.detections)
        return outcomes, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Outcome], bool]:
        quiet = self._step.now() - self._last_arrival
        outcomes: list[Outcome] = []
        if self.state.timeline.pending and quiet >= self._lateness:
            outcomes.extend(self.state.evaluate_released(self._config, flush=True))
        if not self.state.timeline.pending and quiet >= self._step.idle_ttl:
            return outcomes, StatefulBatchLogic.DISCARD
        return outcomes, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Outcome], bool]:
        # Bounded input: everything pending is evaluated at the end.
        return list(
            self.state.evaluate_released(self._config, flush=True)
        ), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self._step.wall_clock:
            return None
        if self.state.timeline.pending:
            return self._last_arrival + self._lateness
        return self._last_arrival + self._step.idle_ttl

    def snapshot(self) -> TruckState:
        return self.state.copy()
