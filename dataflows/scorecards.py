"""Driver scorecards in the alerts flow and the backfill (CONTRACT.md section 11): the step
that adds up each driver's day and says when it has closed.

The rules' step (dataflows/speeding.py) gives, with each run of judged readings of a truck,
``DayTally``s per (driver, local day) (domain/scorecards.py). Here they are keyed by
(driver, day), merged, and the scorecard goes out once, when the day has closed:

* In event time. A (driver, day)'s clock is the newest reading or alert it counted, plus
  the wall time since that tally arrived (Bytewax's EventClock, kept per key and measured
  from the last arrival in this process: a restart or a backlog never closes a day early).
  The day closes when that clock passes the day's end (local midnight, so a DST day is 23
  or 25 hours) plus FLEET_SCORECARD_GRACE_S. Live, a day's scorecards go out that long
  after midnight; replaying a backlog, later, never sooner.
* Bounded input (the backfill, ``FLEET_KAFKA_TAIL=false``) closes every day at its end.

Why not Bytewax's windowing operators: a tumbling window has one fixed length, a local day
does not (23, 24 or 25 hours), and a window keyed by driver would close all of a driver's
days on one clock; keyed by (driver, day), each key is one window, which is what this step
is, with the calendar in it.

A tally for a day that already went out (its truck was more than the grace behind) is not
added: it is counted in ``fleetwatch_scorecard_late_tallies_total`` and logged with the
driver and the day. Its readings were judged by the rules as usual. The marker of a closed
day is kept for a day, then dropped; a tally after that would start a second, partial
scorecard, so keep the grace above the lag any truck may have.

Exactness: the stream and the backfill give the same scorecards as long as no tally is
late; a restart from a snapshot gives the same too (tallies and closed markers are in the
snapshot; records may repeat after a restart, as alerts may: consumers keep one per
(driver_id, day)).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from bytewax import operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

from dataflows.speeding import Outcome, RuleOutcome
from domain.history import HistoryIndex
from domain.scorecards import (
    DayTally,
    LocalDays,
    Scorecard,
    ScoreKeeper,
    ScoreWeights,
    encode_scorecard,
    weights_from_json,
)
from runtime.metrics import SCORECARD_LATE_TALLIES, SCORECARDS
from runtime.settings import RuleSettings, ScorecardSettings

log = structlog.get_logger("fleetwatch.scorecards")

# How long a closed day's marker stays (see the module docstring).
CLOSED_KEPT = timedelta(days=1)


def score_keeper(
    settings: ScorecardSettings,
    rules: RuleSettings,
    history: Callable[[], HistoryIndex | None],
) -> ScoreKeeper | None:
    """The rules' step's part, or None when FLEET_SCORECARDS_OUT is unset."""
    if settings.out is None:
        return None
    return ScoreKeeper(
        LocalDays(ZoneInfo(settings.timezone)), rules.threshold_kmh, weights(settings), history
    )


def weights(settings: ScorecardSettings) -> ScoreWeights:
    if settings.weights is None:
        return ScoreWeights()
    return weights_from_json(json.loads(settings.weights))  # validated with the settings


@dataclass
class DayState:
    """One (driver, day): what it added up to so far; None once its scorecard went out."""

    tally: DayTally | None
    closed_at_ms: int | None = None  # event time of the close, for the marker's lifetime


@dataclass(frozen=True)
class ScorecardStep:
    """Builds the logic per (driver, day). ``now`` is Bytewax's wall clock (notifications
    are compared with it); without ``wall_clock`` (a bounded replay) only the end of input
    closes days."""

    days: LocalDays
    weights: ScoreWeights
    grace: timedelta
    now: Callable[[], datetime]
    wall_clock: bool = True
    flow: str = "alerts"
    # What the wall time since a tally is measured on: the alerts flow's input clock, which
    # stands still while the input does not flow (an outage closes no day). Default ``now``.
    quiet_clock: Callable[[], datetime] | None = None

    def quiet_now(self) -> datetime:
        return (self.quiet_clock or self.now)()

    def build(self, resume: DayState | None) -> _DayLogic:
        return _DayLogic(self, resume or DayState(None))


class _DayLogic(StatefulBatchLogic[DayTally, Scorecard, DayState]):
    def __init__(self, step: ScorecardStep, state: DayState) -> None:
        self._step = step
        self.state = state
        self._end_ms: int | None = None
        self._arrived = step.quiet_now()

    def on_batch(self, values: list[DayTally]) -> tuple[list[Scorecard], bool]:
        state = self.state
        if state.closed_at_ms is not None:
            for tally in values:
                SCORECARD_LATE_TALLIES.labels(self._step.flow).inc()
                log.warning(
                    "scorecard_tally_late",
                    driver_id=tally.driver_id,
                    day=tally.day,
                    readings=tally.readings,
                    why="the day's scorecard went out already; raise FLEET_SCORECARD_GRACE_S",
                )
            return [], StatefulBatchLogic.RETAIN
        for tally in values:
            if state.tally is None:
                state.tally = DayTally(tally.driver_id, tally.day)
            state.tally.merge(tally)
        self._arrived = self._step.quiet_now()
        return [], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Scorecard], bool]:
        if self.state.closed_at_ms is not None or self.state.tally is None:
            return [], StatefulBatchLogic.DISCARD  # the marker's day is over
        if self._remaining() > timedelta(0):
            return [], StatefulBatchLogic.RETAIN  # the input stalled meanwhile: not yet
        return self._close(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Scorecard], bool]:
        if self.state.closed_at_ms is not None:
            return [], StatefulBatchLogic.RETAIN
        return self._close(), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self._step.wall_clock:
            return None
        if self.state.closed_at_ms is not None or self.state.tally is None:
            return self._step.now() + CLOSED_KEPT
        return self._step.now() + max(self._remaining(), timedelta(0))

    def _remaining(self) -> timedelta:
        """How long until this key's clock passes the day's end + grace: its newest event
        time, plus the (input) wall time since the last tally arrived."""
        tally = self.state.tally
        assert tally is not None
        ahead = timedelta(milliseconds=self.end_ms() - tally.newest_ts) + self._step.grace
        return ahead - (self._step.quiet_now() - self._arrived)

    def snapshot(self) -> DayState:
        tally = self.state.tally
        copied = None
        if tally is not None:
            copied = DayTally(tally.driver_id, tally.day)
            copied.merge(tally)
        return DayState(copied, self.state.closed_at_ms)

    def end_ms(self) -> int:
        if self._end_ms is None:
            assert self.state.tally is not None
            self._end_ms = self._step.days.end_of(self.state.tally.day)
        return self._end_ms

    def _close(self) -> list[Scorecard]:
        tally = self.state.tally
        if tally is None:
            return []
        card = Scorecard.of(tally, self._step.weights)
        self.state = DayState(None, tally.newest_ts)
        SCORECARDS.labels(self._step.flow).inc()
        return [card]


def _tallies(keyed: tuple[str, Outcome]) -> list[DayTally]:
    outcome = keyed[1]
    return [outcome] if isinstance(outcome, DayTally) else []


def _rule_outcomes(keyed: tuple[str, Outcome]) -> list[tuple[str, RuleOutcome]]:
    truck_id, outcome = keyed
    return [] if isinstance(outcome, DayTally) else [(truck_id, outcome)]


def split_tallies(
    step_id: str, outcomes: Stream[tuple[str, Outcome]]
) -> tuple[Stream[tuple[str, RuleOutcome]], Stream[DayTally]]:
    """The rules' step's outcomes: (what the rules gave, the day tallies)."""
    rest = op.flat_map(f"{step_id}_rules", outcomes, _rule_outcomes)
    return rest, op.flat_map(f"{step_id}_tallies", outcomes, _tallies)


def day_key(tally: DayTally) -> str:
    """The Bytewax key of a (driver, day): JSON, so a null driver is not a driver named ''."""
    return json.dumps([tally.driver_id, tally.day])


def scorecards(step_id: str, tallies: Stream[DayTally], step: ScorecardStep) -> Stream[Scorecard]:
    """Tallies in, each (driver, day)'s scorecard out once its day has closed."""
    keyed = op.key_on(f"{step_id}_key", tallies, day_key)
    cards = op.stateful_batch(f"{step_id}_days", keyed, step.build)
    return op.map(f"{step_id}_values", cards, lambda kv: kv[1])


def scorecard_line(card: Scorecard) -> tuple[str, bytes]:
    """(key, JSON) for the Kafka and .jsonl sinks: keyed by driver_id ('' for none)."""
    return card.driver_id or "", encode_scorecard(card)
