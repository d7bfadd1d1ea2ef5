"""dataflows.alerts: canonical readings on Kafka -> speeding alerts on Kafka, in event time.

Input:  ``FLEET_TOPIC_TELEMETRY`` from the beginning (or the recovered offsets), every
        partition; a record that is not a valid reading goes to ``FLEET_TOPIC_DLQ``
        (stage ``alerts``).
Output: ``FLEET_TOPIC_ALERTS`` (key truck_id, CONTRACT.md section 5), each alert with
        its driver as of its newest reading (FLEET_HISTORY_DIR or FLEET_HISTORY_DSN,
        reloaded in the background); late readings, unchanged, to ``FLEET_TOPIC_LATE``.
Rules:  the catalogue of FLEET_RULES (CONTRACT.md section 9, reloaded while the flow runs)
        or, unset, section 4's two rules from the knobs below; per truck, in event-time
        order (ties by event_id), each reading judged by the version in force at its ts,
        duplicates ignored; see domain/rules.py, domain/catalogue.py, dataflows/speeding.py.
Guarantee: at least once. Each batch of output is confirmed by Kafka before the flow moves
        on, so a recovery snapshot never covers an unwritten alert; a failed delivery stops
        the flow. Alert ids are deterministic, so consumers can drop repeats.
Knobs:  FLEET_THRESHOLD_KMH, FLEET_VIOLATIONS, FLEET_WINDOW_S, FLEET_CRITICAL_KMH,
        FLEET_COOLDOWN_S, FLEET_ALLOWED_LATENESS_S; FLEET_MAX_FUTURE_S (a reading further
        ahead of its record's Kafka timestamp is ``bad_timestamp``); FLEET_IDLE_TRUCK_TTL_S
        (a truck quiet that long is forgotten); FLEET_MAX_PENDING_PER_TRUCK and
        FLEET_MAX_TRUCKS (the state's bounds, see dataflows/speeding.py);
        FLEET_KAFKA_TAIL=false ends the flow at
        the end of the topic, after evaluating everything pending.
Scale:  ``-w N`` / ``-i/-a``: Kafka partitions are spread over workers, trucks over workers
        by key; the same alerts whatever the layout. Recovery with ``-r/-s/-b``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from connectors.heartbeat import HeartbeatMonitor
from connectors.history import HistoryStore
from connectors.kafka import (
    ConfirmedKafkaSink,
    OutboundRecord,
)
from connectors.kafka_source import Fetch, KafkaBatchSource
from connectors.liveness import InputClock, InputLiveness
from connectors.road_limits import PostedLimits
from dataflows._canonical import as_dead_letter, decode_telemetry, not_after_all
from dataflows._dead_letters import output_dead_letters, split_dead_letters, to_kafka
from dataflows._entry import lazy_flow, prepare
from dataflows._guard import unprocessable
from dataflows._rules import RuleBooks, live_catalogue, posted_limits
from dataflows.scorecards import (
    ScorecardStep,
    score_keeper,
    scorecard_line,
    scorecards,
    split_tallies,
)
from dataflows.scorecards import weights as scorecard_weights
from dataflows.speeding import (
    Arrivals,
    LateReading,
    RuleOutcome,
    SpeedingRulesStep,
    Unprocessable,
)
from domain.alerts import build_alert, encode_alert
from domain.catalogue import CatalogueError, RuleBook
from domain.dead_letters import DeadLetter, Reason, Stage
from domain.history import HistoryIndex
from domain.readings import Reading, encode_canonical
from domain.rules import RuleConfig, builtin_book
from domain.scorecards import LocalDays, Scorecard, ScoreKeeper
from domain.timestamps import to_epoch_ms
from runtime.clock import utc_now
from runtime.metrics import ALERTS, LATE_READINGS, READINGS_IN
from runtime.settings import Settings, SettingsError, Topics

TruckArrivals = tuple[str, Arrivals]

_RECORDS_IN = READINGS_IN.labels("alerts")
_LATE = LATE_READINGS.labels("alerts")


def no_vehicle_classes() -> Mapping[str, str]:
    return {}


@dataclass(frozen=True)
class TelemetryDecoder:
    """Kafka fetches -> each truck's readings (keyed by truck), or dead letters. With
    ``limits``, each reading gets its posted limit for its truck's vehicle class (one bulk
    map match per batch of fetches)."""

    topics: Topics
    now: Callable[[], datetime]
    max_future_ms: int = 300_000  # FLEET_MAX_FUTURE_S, from each record's Kafka timestamp
    limits: PostedLimits | None = None
    vehicle_classes: Callable[[], Mapping[str, str]] = no_vehicle_classes

    def decode_batch(self, fetches: list[Fetch]) -> list[TruckArrivals | DeadLetter]:
        """Decode and group by truck, keeping each truck's arrival order."""
        by_truck: dict[str, Arrivals] = {}
        dead_letters: list[TruckArrivals | DeadLetter] = []
        received_at = to_epoch_ms(self.now())
        for fetch in fetches:
            _RECORDS_IN.inc(len(fetch.values))
            limits = not_after_all(fetch, received_at, self.max_future_ms)
            for value, not_after in zip(fetch.values, limits, strict=True):
                outcome = decode_telemetry(value, not_after)
                if isinstance(outcome, Reading):
                    arrivals = by_truck.get(outcome.truck_id)
                    if arrivals is None:
                        arrivals = by_truck[outcome.truck_id] = Arrivals([], [])
                    arrivals.readings.append(outcome)
                    arrivals.raws.append(value)
                else:
                    dead_letters.append(
                        as_dead_letter(
                            outcome, Stage.ALERTS, self.topics.telemetry, value, received_at
                        )
                    )
        if self.limits is not None and by_truck:
            self.limits.attach([a.readings for a in by_truck.values()], self.vehicle_classes())
        return [*by_truck.items(), *dead_letters]


def no_history() -> HistoryIndex | None:
    return None


@dataclass(frozen=True)
class OutcomeRecords:
    """Rule outcomes -> Kafka records: alerts (enriched with the driver history in use) to
    the alerts topic, late readings as they came."""

    topics: Topics
    now: Callable[[], datetime]
    history: Callable[[], HistoryIndex | None] = no_history

    def to_records(self, keyed: tuple[str, RuleOutcome]) -> list[OutboundRecord | DeadLetter]:
        truck_id, outcome = keyed
        if isinstance(outcome, LateReading):
            _LATE.inc()
            return [OutboundRecord(self.topics.late, truck_id.encode(), outcome.raw)]
        if isinstance(outcome, Unprocessable):
            # The rules step failed for this truck (logged there): each reading it held
            # becomes a dead letter of its own, so every one is accounted for.
            received_at = to_epoch_ms(self.now())
            return [
                DeadLetter(
                    Stage.ALERTS,
                    Reason.UNPROCESSABLE,
                    outcome.detail,
                    self.topics.telemetry,
                    raw,
                    received_at,
                    truck_id.encode(),
                )
                for raw in outcome.raws
            ]
        try:
            alert = build_alert(outcome, to_epoch_ms(self.now()), self.history())
            value = encode_alert(alert)
        except Exception as error:  # the last line of defence: see dataflows/_guard.py
            # The covered readings, as they were evaluated: nothing else is left of them.
            raw = b"\n".join(encode_canonical(reading) for reading in outcome.readings)
            return [
                unprocessable(
                    Stage.ALERTS, error, self.topics.telemetry, raw, to_epoch_ms(self.now())
                )
            ]
        ALERTS.labels("alerts", alert.rule, alert.severity).inc()
        return [OutboundRecord(self.topics.alerts, truck_id.encode(), value)]


def build_flow(
    source: Source[Fetch],
    sink: Sink[OutboundRecord],
    topics: Topics,
    config: RuleConfig,
    now: Callable[[], datetime] = utc_now,
    idle_truck_ttl: timedelta = timedelta(hours=1),
    history: Callable[[], HistoryIndex | None] = no_history,
    max_future_ms: int = 300_000,
    max_trucks: int = 200_000,
    quiet_clock: Callable[[], datetime] | None = None,
    schedule_clock: Callable[[], datetime] = utc_now,
    dead_letters: Sink[OutboundRecord] | None = None,
    rule_book: Callable[[], RuleBook] | None = None,
    limits: PostedLimits | None = None,
    scoring: ScoreKeeper | None = None,
    scorecard_step: ScorecardStep | None = None,
    scorecard_sink: Sink[OutboundRecord] | None = None,
) -> Dataflow:
    """The alerts flow. Three clocks, each for what it is good for: ``now``, processing time,
    stamps what the flow emits (detected_at, DLQ received_at); ``quiet_clock`` times quiet
    trucks (default ``now``; live: the input clock of connectors/liveness.py, monotonic and
    paused while the input stalls); ``schedule_clock`` is the one Bytewax compares
    notifications with, its own wall clock, whatever ``now`` is in a test. ``history``
    returns the driver history in use. ``dead_letters``: the DLQ sink (default ``sink``).
    ``rule_book`` returns the rules in force (default: section 4's rules from ``config``);
    ``limits``: the road network that gives readings their posted limits (default none);
    ``scoring`` and ``scorecard_step``: driver scorecards (dataflows/scorecards.py), written
    to ``scorecard_sink`` (default ``sink``) as records of ``topics.scorecards``."""
    books = rule_book or (lambda: builtin_book(config))
    # The trucks' classes as the rules see them: a reading's limit is its truck's.
    decoder = TelemetryDecoder(topics, now, max_future_ms, limits, lambda: books().vehicle_classes)
    rules = SpeedingRulesStep(
        config,
        schedule_clock,
        idle_truck_ttl,
        max_trucks=max_trucks,
        quiet_clock=quiet_clock or now,
        rule_book=rule_book,
        scoring=scoring,
    )
    outcome_records = OutcomeRecords(topics, now, history)

    flow = Dataflow("alerts")
    fetches = op.input("kafka_source", flow, source)  # Fetch: the values of one Kafka fetch
    decoded = op.flat_map_batch("decode_batch", fetches, decoder.decode_batch)
    arrivals = split_dead_letters("split_decoded", decoded)  # (truck_id, Arrivals) | dead
    outcomes, tallies = split_tallies(
        "outcomes", op.stateful_batch("speeding_rules", arrivals.oks, rules.build)
    )  # (truck_id, Detection | LateReading | Unprocessable), DayTally (scorecards on)
    records = op.flat_map("to_records", outcomes, outcome_records.to_records)
    if scorecard_step is not None:
        cards = scorecards("scorecards", tallies, scorecard_step)
        op.output(
            "scorecards_out",
            op.map("scorecard_records", cards, partial(_scorecard_record, topics.scorecards)),
            scorecard_sink or sink,
        )
    out = split_dead_letters("split_records", records)  # OutboundRecord | dead
    op.output("kafka_sink", out.oks, sink)  # alerts and late readings
    output_dead_letters(
        "dead_letters", to_kafka(topics.dlq), dead_letters or sink, arrivals.errs, out.errs
    )
    return flow


def _scorecard_record(topic: str, card: Scorecard) -> OutboundRecord:
    key, value = scorecard_line(card)
    return OutboundRecord(topic, key.encode(), value)


def flow_from_settings(settings: Settings) -> Dataflow:
    """Plug the real Kafka source and sink into ``build_flow``."""
    topics = settings.topics
    used = [topics.telemetry, topics.alerts, topics.late, topics.dlq, topics.heartbeats]
    cards = settings.scorecards
    if cards.out is not None and cards.out != "kafka":
        raise SettingsError(
            "FLEET_SCORECARDS_OUT: the alerts flow writes scorecards to Kafka only ('kafka');"
            " a .jsonl path is for dataflows.backfill"
        )
    if cards.out is not None:
        used.append(topics.scorecards)
    prepare("alerts", settings, ["kafka", "topics", "rules", "stream", "history"], used)
    limits = posted_limits(settings.rules)
    # A truck is quiet only while the input flows: outages do not count (connectors/liveness.py).
    liveness = InputLiveness(forget_s=settings.stream.bridge_forget_s)
    HeartbeatMonitor(settings.kafka.config(), topics.heartbeats, liveness, utc_now).start()
    input_clock = InputClock(liveness.live, utc_now).start()
    source = KafkaBatchSource(
        settings.kafka.config(), topics.telemetry, tail=settings.kafka.tail, liveness=liveness
    )
    sink = ConfirmedKafkaSink(settings.kafka.producer_config(), wait_for_delivery=True)
    dead_letters = ConfirmedKafkaSink(settings.kafka.producer_config(), wait_for_delivery=True)
    history = HistoryStore.from_settings(settings.history).start()
    try:
        catalogue = live_catalogue(settings.rules)
    except CatalogueError as exc:
        raise SettingsError(f"FLEET_RULES: no valid catalogue version: {exc}") from None
    return build_flow(
        source,
        sink,
        topics,
        settings.rules.config(),
        utc_now,
        timedelta(seconds=settings.stream.idle_truck_ttl_s),
        history.current,
        max_future_ms=settings.stream.max_future_ms,
        max_trucks=settings.stream.max_trucks,
        quiet_clock=input_clock.now,
        dead_letters=dead_letters,
        rule_book=RuleBooks(catalogue, history.current),
        limits=limits,
        scoring=score_keeper(cards, settings.rules, history.current),
        scorecard_step=None
        if cards.out is None
        else ScorecardStep(
            LocalDays(ZoneInfo(cards.timezone)),
            scorecard_weights(cards),
            timedelta(seconds=cards.grace_s),
            utc_now,
            quiet_clock=input_clock.now,
        ),
    )


__getattr__ = lazy_flow(flow_from_settings)
