"""dataflows.backfill: bounded Parquet input -> the same rules and enrichment -> alerts.

Input:  ``FLEET_BACKFILL_INPUT``: a Parquet file, a directory (searched recursively, e.g.
        the lake) or a glob, with the lake's columns (CONTRACT.md section 8).
Output: ``FLEET_ALERTS_OUT``: a ``.jsonl`` path (one alert per line), or ``kafka`` for
        ``FLEET_TOPIC_ALERTS``. Bad rows (null required values, values out of range) go to
        the sibling ``<name>.dlq.jsonl``, or to ``FLEET_TOPIC_DLQ`` with ``kafka``.
Rules:  the very code of dataflows.alerts (``SpeedingRulesStep``, ``build_alert``; the
        catalogue of FLEET_RULES or the built-in rules, and the driver history, each loaded
        once at start: a backfill refuses to start on any invalid catalogue file), fed each
        truck's readings sorted by event time, so the alerts are those the stream gave for
        the same readings (and the same rules and history).
Determinism: event time only. No wall clock decides anything (the quiet-truck flush is
        off; the end of input releases what is pending) and ``detected_at`` is the alert's
        ``window_end``: the same input always gives the same alerts, byte for byte.
Speed:  readings at or below the lowest limit of every rule cannot change any rule, so
        Polars drops them before any per-row Python (with a duration_over or deceleration
        rule, a slow reading right after a faster one is kept: ``Prefilter`` in
        domain/catalogue.py); duplicates are dropped there too.
Scale:  ``-w N`` / ``-i/-a``: the input is split by truck into 16 buckets. Ends by itself
        with exit 0; progress on stderr, then a summary line.
"""

from __future__ import annotations

import atexit
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from connectors.history import HistoryStore
from connectors.jsonl_sink import JsonlSink
from connectors.kafka_keyed_sink import KafkaTopicSink
from connectors.parquet_input import (
    BackfillItem,
    ParquetReadingsSource,
    TruckReadings,
    resolve_inputs,
)
from connectors.road_limits import PostedLimits
from dataflows._dead_letters import output_dead_letters, split_dead_letters, to_line
from dataflows._entry import lazy_flow, prepare
from dataflows._guard import unprocessable
from dataflows._rules import fixed_catalogue, posted_limits
from dataflows.scorecards import (
    ScorecardStep,
    score_keeper,
    scorecard_line,
    scorecards,
    split_tallies,
)
from dataflows.speeding import (
    Arrivals,
    LateReading,
    RuleOutcome,
    SpeedingRulesStep,
    Unprocessable,
)
from domain.alerts import build_alert, encode_alert
from domain.catalogue import CatalogueError, Prefilter, RuleBook
from domain.dead_letters import DeadLetter, Reason, Stage
from domain.history import HistoryIndex
from domain.readings import encode_canonical
from domain.rules import RuleConfig
from domain.scorecards import ScoreKeeper
from domain.timestamps import EPOCH, to_epoch_ms
from runtime.clock import utc_now
from runtime.metrics import ALERTS, READINGS_IN
from runtime.progress import Progress
from runtime.settings import Settings, SettingsError

KeyedLine = tuple[str, bytes]
DEAD_LETTER_KEY = ""  # alert lines are keyed by truck id, which is never empty


def _no_wall_clock() -> datetime:
    return EPOCH  # never consulted for results: wall_clock=False below


_ROWS_IN = READINGS_IN.labels("backfill")


@dataclass(frozen=True)
class BackfillLines:
    """Outcomes and bad rows -> output lines; counts them for the summary. ``now`` only
    stamps dead letters' ``received_at``: no result depends on it."""

    history: HistoryIndex | None
    progress: Progress
    source: str = "backfill"  # the dead letters' source_topic for unprocessable alerts
    now: Callable[[], datetime] = utc_now
    limits: PostedLimits | None = None  # posted limits for the readings (one match a chunk)
    vehicle_classes: Mapping[str, str] = field(default_factory=dict)  # the rule book's

    def arrivals(self, items: list[BackfillItem]) -> list[tuple[str, Arrivals] | DeadLetter]:
        """Each truck's sorted readings to the rules; a bad row is a dead letter."""
        out: list[tuple[str, Arrivals] | DeadLetter] = []
        for item in items:
            if isinstance(item, TruckReadings):
                _ROWS_IN.inc(len(item.readings))
                out.append((item.truck_id, Arrivals(item.readings, [])))
            else:
                _ROWS_IN.inc()
                self.progress.add_dead_letter()
                received_at = to_epoch_ms(self.now())
                out.append(
                    DeadLetter(
                        Stage.BACKFILL, item.reason, item.detail, item.source, item.raw, received_at
                    )
                )
        if self.limits is not None:
            self.limits.attach(
                [item.readings for item in items if isinstance(item, TruckReadings)],
                self.vehicle_classes,
            )
        return out

    def alert_lines(self, keyed: tuple[str, RuleOutcome]) -> list[KeyedLine | DeadLetter]:
        truck_id, outcome = keyed
        if isinstance(outcome, LateReading):
            # Each truck's readings arrive sorted: nothing can be late. A bug if it is, so it
            # is dead-lettered as one (and fails the tests), not dropped.
            error = RuntimeError(f"backfill produced a late reading for {truck_id}")
            return [self._unprocessable(error, outcome.raw)]
        if isinstance(outcome, Unprocessable):
            # The rules step failed for this truck (logged there): a dead letter per reading.
            received_at = to_epoch_ms(self.now())
            self.progress.add_dead_letter(len(outcome.raws))
            return [
                DeadLetter(
                    Stage.BACKFILL,
                    Reason.UNPROCESSABLE,
                    outcome.detail,
                    self.source,
                    raw,
                    received_at,
                )
                for raw in outcome.raws
            ]
        detected_at = outcome.readings[-1].ts_ms  # event time: the alert's window_end
        try:
            alert = build_alert(outcome, detected_at, self.history)
            line = encode_alert(alert)
        except Exception as error:  # the last line of defence: see dataflows/_guard.py
            raw = b"\n".join(encode_canonical(reading) for reading in outcome.readings)
            return [self._unprocessable(error, raw)]
        self.progress.add_alert(str(outcome.rule))
        ALERTS.labels("backfill", alert.rule, alert.severity).inc()
        return [(truck_id, line)]

    def _unprocessable(self, error: Exception, raw: bytes) -> DeadLetter:
        self.progress.add_dead_letter()
        return unprocessable(Stage.BACKFILL, error, self.source, raw, to_epoch_ms(self.now()))


def build_flow(
    source: Source[BackfillItem],
    alerts_out: Sink[KeyedLine],
    dead_letters_out: Sink[KeyedLine],
    config: RuleConfig,
    history: HistoryIndex | None,
    progress: Progress,
    rule_book: RuleBook | None = None,
    limits: PostedLimits | None = None,
    scorecards_out: tuple[ScoreKeeper, ScorecardStep, Sink[KeyedLine]] | None = None,
) -> Dataflow:
    """``rule_book``: the rules (default: section 4's from ``config``), fixed for the run;
    ``limits``: the road network that gives readings their posted limits (default none);
    ``scorecards_out``: driver scorecards (dataflows/scorecards.py) and where they go. The
    source must then keep every reading (scorecards count them all)."""
    book = rule_book
    rules = SpeedingRulesStep(
        config,
        _no_wall_clock,
        wall_clock=False,
        sorted_input=True,  # ParquetReadingsSource: each truck's readings sorted, deduplicated
        flow="backfill",
        rule_book=None if book is None else lambda: book,
        scoring=None if scorecards_out is None else scorecards_out[0],
    )
    classes = book.vehicle_classes if book is not None else {}
    lines = BackfillLines(history, progress, limits=limits, vehicle_classes=classes)

    flow = Dataflow("backfill")
    items = op.input("parquet_source", flow, source)  # TruckReadings (sorted) | BadRow
    arrivals = split_dead_letters(
        "split_rows", op.flat_map_batch("arrivals", items, lines.arrivals)
    )  # (truck_id, Arrivals) | dead letter
    outcomes, tallies = split_tallies(
        "outcomes", op.stateful_batch("speeding_rules", arrivals.oks, rules.build)
    )
    if scorecards_out is not None:
        _, step, cards_out = scorecards_out
        cards = scorecards("scorecards", tallies, step)
        op.output("scorecards_out", op.map("scorecard_lines", cards, scorecard_line), cards_out)
    alerts = split_dead_letters(
        "split_alerts", op.flat_map("alert_lines", outcomes, lines.alert_lines)
    )  # (truck_id, alert JSON) | dead letter
    op.output("alerts_out", alerts.oks, alerts_out)
    output_dead_letters("dead_letters", to_line, dead_letters_out, arrivals.errs, alerts.errs)
    return flow


def dead_letter_path(alerts_path: Path) -> Path:
    """``alerts.jsonl`` -> ``alerts.dlq.jsonl``."""
    return alerts_path.with_name(alerts_path.name.removesuffix(".jsonl") + ".dlq.jsonl")


def flow_from_settings(settings: Settings) -> Dataflow:
    backfill = settings.backfill
    to_kafka = backfill.alerts_out == "kafka"
    used = [settings.topics.alerts, settings.topics.dlq] if to_kafka else []
    if settings.scorecards.out == "kafka":
        used.append(settings.topics.scorecards)
    prepare("backfill", settings, ["backfill", "rules", "history", "kafka", "topics"], used)
    assert backfill.input is not None  # validated
    assert backfill.alerts_out is not None
    files = resolve_inputs(backfill.input)
    config = settings.rules.config()
    progress = Progress()
    atexit.register(lambda: print(progress.summary(), file=sys.stderr, flush=True))
    # Loaded once: a history that changed halfway through would make the result depend on timing.
    store = HistoryStore.from_settings(settings.history)
    store.refresh()
    try:
        catalogue = fixed_catalogue(settings.rules)
    except CatalogueError as exc:
        raise SettingsError(f"FLEET_RULES: {exc}") from None
    history = store.current()
    book = RuleBook(catalogue, history.vehicle_classes)
    alerts_out: Sink[KeyedLine]
    dead_out: Sink[KeyedLine]
    if to_kafka:
        alerts_out = KafkaTopicSink(settings.kafka.producer_config(), settings.topics.alerts)
        dead_out = KafkaTopicSink(settings.kafka.producer_config(), settings.topics.dlq)
    else:
        path = Path(backfill.alerts_out)
        alerts_out, dead_out = JsonlSink(path), JsonlSink(dead_letter_path(path))
    cards = settings.scorecards
    scoring = score_keeper(cards, settings.rules, lambda: history)
    scorecards_out = None
    # Scorecards count every reading; without them the rules need only some.
    prefilter = catalogue.prefilter if scoring is None else Prefilter(-math.inf)
    if scoring is not None:
        assert cards.out is not None
        step = ScorecardStep(
            scoring.days,
            scoring.weights,
            timedelta(seconds=cards.grace_s),
            _no_wall_clock,
            wall_clock=False,
            flow="backfill",
        )
        cards_sink: Sink[KeyedLine] = (
            KafkaTopicSink(settings.kafka.producer_config(), settings.topics.scorecards)
            if cards.out == "kafka"
            else JsonlSink(Path(cards.out))
        )
        scorecards_out = (scoring, step, cards_sink)
    source = ParquetReadingsSource(files, prefilter, progress=progress)
    limits = posted_limits(settings.rules)
    return build_flow(
        source, alerts_out, dead_out, config, history, progress, book, limits, scorecards_out
    )


__getattr__ = lazy_flow(flow_from_settings)
