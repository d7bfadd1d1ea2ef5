"""fleetwatch's own Prometheus metrics, next to Bytewax's (same registry, same endpoint).

With ``BYTEWAX_DATAFLOW_API_ENABLED=true`` every flow process serves Bytewax's metrics and
these on ``:3030/metrics`` (``BYTEWAX_DATAFLOW_API_PORT`` moves it). Counters count what
this process did since it started; Prometheus sums them over pods and restarts with
``sum(rate(...))`` / ``increase(...)``. The README's Observability section lists them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, disable_created_metrics

from domain.dead_letters import Reason, Stage, dead_letter

# Only the counts: no "<name>_created" series next to every counter.
disable_created_metrics()  # type: ignore[no-untyped-call]

READINGS_IN = Counter(
    "fleetwatch_readings_in",
    "Input messages taken in, valid or not (MQTT messages, Kafka records, Parquet rows).",
    ["flow"],
)
DEAD_LETTERS = Counter(
    "fleetwatch_dead_letters",
    "Records sent to the dead-letter topic (or file), by stage and reason.",
    ["stage", "reason"],
)
LATE_READINGS = Counter(
    "fleetwatch_late_readings",
    "Readings older than their truck's watermark, passed on to the late topic unevaluated.",
    ["flow"],
)
ALERTS = Counter(
    "fleetwatch_alerts",
    "Alerts emitted, by rule and severity.",
    ["flow", "rule", "severity"],
)
SCORECARDS = Counter(
    "fleetwatch_scorecards",
    "Driver scorecards emitted (one per driver and local day, once the day has closed).",
    ["flow"],
)
SCORECARD_LATE_TALLIES = Counter(
    "fleetwatch_scorecard_late_tallies",
    "Tallies of readings or alerts for a driver's day whose scorecard had gone out already.",
    ["flow"],
)
HISTORY_RELOADS = Counter(
    "fleetwatch_history_reloads",
    "Driver-history loads, by outcome (ok, failed).",
    ["source", "outcome"],
)
HISTORY_LOADED_AT = Gauge(
    "fleetwatch_history_loaded_timestamp_seconds",
    "When the driver history in use was loaded (Unix time).",
    ["source"],
)
RULE_RELOADS = Counter(
    "fleetwatch_rule_reloads",
    "Reads of the rule catalogue (FLEET_RULES) after a change, by outcome: ok (the catalogue "
    "in force changed), unchanged, refused (a file or the zones were refused: the versions "
    "in force stay in force; the log names the file, the rule and the field).",
    ["outcome"],
)
RULE_FILES_REFUSED = Counter(
    "fleetwatch_rule_files_refused",
    "Catalogue files (or the zones file) refused since start, once per change of the file.",
)
RULE_VERSION_IN_FORCE = Gauge(
    "fleetwatch_rule_catalogue_latest_version",
    "The highest catalogue version in force (0: the built-in rules).",
)
NOTIFICATIONS = Counter(
    "fleetwatch_notifications",
    "Alerts handled by the notifier, by outcome: sent, rejected, undeliverable or "
    "unprocessable (all dead-lettered), duplicate (already sent, skipped), not_an_alert "
    "(dead-lettered); for digests, alerts per recipient digested, digested_late, "
    "digest_duplicate, digest_unlisted, and digests digest_sent, digest_rejected, "
    "digest_undeliverable, digest_unprocessable.",
    ["outcome"],
)
CONSUMER_LAG = Gauge(
    "fleetwatch_consumer_lag_records",
    "Records between this process's read position and the end of a Kafka partition "
    "(the broker's high watermark as of the last fetch).",
    ["topic", "partition"],
)
PENDING_OVERFLOW = Counter(
    "fleetwatch_pending_overflow",
    "Readings evaluated before their truck's watermark passed them, because the truck held "
    "more pending readings than its cap (FLEET_MAX_PENDING_PER_TRUCK); later readings of "
    "that truck behind them are late.",
    ["flow"],
)
TRUCKS_EVICTED = Counter(
    "fleetwatch_trucks_evicted",
    "Trucks whose state was dropped to keep within the trucks tracked per worker "
    "(FLEET_MAX_TRUCKS), by reason: idle (nothing pending), flushed (its pending readings "
    "were evaluated first), no_room (a new truck evaluated at once and not kept).",
    ["flow", "reason"],
)

INPUT_LIVE = Gauge(
    "fleetwatch_input_live",
    "1 while this process's input flows (its Kafka partitions reachable and caught up, "
    "every bridge heartbeating, connected and confirmed), else 0: connectors/liveness.py.",
)
INPUT_CLOCK_PAUSED = Counter(
    "fleetwatch_input_clock_paused_seconds",
    "Seconds the quiet-truck clock stood still because the input did not flow (an outage "
    "of Kafka or a bridge, or catching up on a backlog).",
)


def counted_dead_letter(
    stage: Stage,
    reason: Reason | str,
    detail: str,
    source_topic: str,
    raw: bytes,
    received_at_ms: int,
) -> bytes:
    """``domain.dead_letters.dead_letter``, counted in ``fleetwatch_dead_letters_total``:
    every flow makes its dead letters here, so none goes uncounted."""
    DEAD_LETTERS.labels(stage, reason).inc()
    return dead_letter(stage, reason, detail, source_topic, raw, received_at_ms)
