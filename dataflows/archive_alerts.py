"""dataflows.archive_alerts: what the alerts flow writes -> ``FLEET_LAKE_DIR``, for the tools.

Input:  ``FLEET_TOPIC_ALERTS`` and ``FLEET_TOPIC_SCORECARDS``, every partition of each, each
        from where its archive ends.
Output: Hive-partitioned Parquet beside the telemetry, zstd, one flat row per record:
        - alerts in the lake's ``alerts/date=YYYY-MM-DD/`` (files named as the telemetry's,
          ``p<partition>-<first>-<last>-<k>of<n>.parquet``), in connectors/alert_lake.py's
          ``ALERT_SCHEMA``; ``date`` is the UTC date of the alert's ``window_end`` (event
          time, so every copy of an alert lands on the same date). Read them with
          ``connectors.alert_lake.scan_alerts`` (lazy, deduplicated by alert_id).
        - driver scorecards in its ``scorecards/date=YYYY-MM-DD/...``, in
          connectors/scorecard_lake.py's ``SCORECARD_SCHEMA``; ``date`` is the scorecard's
          ``day`` (the local day in FLEET_TIMEZONE it is about). Read them with
          ``connectors.scorecard_lake.scan_scorecards`` (lazy, one per (driver_id, day)).
        Records that are not alerts (``domain.alerts.decode_alert``) or scorecards
        (``domain.scorecards.decode_scorecard``) go to ``FLEET_TOPIC_DLQ`` with stage
        ``archive_alerts`` or ``archive_scorecards`` and their reason (``invalid_json``,
        ``schema``, ``out_of_range``, ``bad_timestamp``) before the roll is written.
Duplicates: kept as they came (the alerts flow delivers at least once; an alert keeps its
        id, a scorecard its (driver_id, day) and content): the lake is the topic, exactly
        once; readers deduplicate, and the two scan functions do.
Why one flow for both topics: they are the alerts flow's output, small (alerts are few, a
        scorecard is one record per driver and day) and go to the same lake: one pod, one
        volume mount, one thing to run and watch. Each topic has its own input, its own
        roll step and its own lake directory, so their partitions, rolls, file names and
        resume points never mix (dataflows/_lake_archive.py ``build_topics_flow``); the
        log line ``lake_roll_written`` names the directory, the input counter
        (``fleetwatch_readings_in_total``) is labelled ``archive_alerts`` and
        ``archive_scorecards``. The scorecards topic is created if missing, so with
        scorecards off (FLEET_SCORECARDS_OUT unset in the alerts flow) it is just empty.
Rolls, guarantee, scale and failure: as dataflows.archive, with the same knobs
        (``FLEET_LAKE_ROLL_MB``, ``FLEET_LAKE_ROLL_S``; both topics are small, so rolls are
        mostly by age) and the same code (dataflows/_lake_archive.py): each record stored
        exactly once, also after kill -9; a refused write exits with code 74, after the
        rolls being written into either directory are finished.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from bytewax.dataflow import Dataflow

from connectors.alert_lake import alert_lake, alert_row, alerts_frame
from connectors.log_sink import LogSink
from connectors.scorecard_lake import scorecard_lake, scorecard_row, scorecards_frame
from dataflows._entry import lazy_flow, prepare
from dataflows._lake_archive import (
    RollDecoder,
    TopicArchive,
    archive_step,
    build_topics_flow,
    lake_source,
    record_decoder,
)
from domain.alerts import decode_alert
from domain.dead_letters import Stage
from domain.readings import Rejection
from domain.scorecards import decode_scorecard
from runtime.settings import Settings

STAGE = Stage.ARCHIVE_ALERTS
SCORECARDS_STAGE = Stage.ARCHIVE_SCORECARDS


def decode_alerts(source_topic: str) -> RollDecoder:
    """A roll's records as rows of archived alerts, and a dead letter (stage
    ``archive_alerts``) for each that is not an alert."""
    return record_decoder(STAGE, source_topic, _alert_row, alerts_frame)


def decode_scorecards(source_topic: str) -> RollDecoder:
    """A roll's records as rows of archived scorecards, and a dead letter (stage
    ``archive_scorecards``) for each that is not a scorecard."""
    return record_decoder(SCORECARDS_STAGE, source_topic, _scorecard_row, scorecards_frame)


def _alert_row(value: bytes) -> dict[str, Any] | Rejection:
    alert = decode_alert(value, UTC)
    return alert if isinstance(alert, Rejection) else alert_row(alert)


def _scorecard_row(value: bytes) -> dict[str, Any] | Rejection:
    card = decode_scorecard(value)
    return card if isinstance(card, Rejection) else scorecard_row(card)


def flow_from_settings(settings: Settings) -> Dataflow:
    topics = settings.topics
    used = [topics.alerts, topics.scorecards, topics.dlq]
    prepare("archive_alerts", settings, ["lake", "kafka", "topics"], used)
    assert settings.lake.dir is not None  # validated
    alerts = alert_lake(settings.lake.dir)
    # One process writes both: a refused write stops it after the rolls of both are done.
    cards = scorecard_lake(settings.lake.dir, writes_with=alerts)
    return build_topics_flow(
        "archive_alerts",
        [
            TopicArchive(
                "",  # the step ids of the flow before it archived scorecards
                lake_source(settings, topics.alerts, alerts),
                archive_step("archive_alerts", settings, alerts, decode_alerts(topics.alerts)),
            ),
            TopicArchive(
                "scorecards_",
                lake_source(settings, topics.scorecards, cards),
                archive_step(
                    "archive_scorecards", settings, cards, decode_scorecards(topics.scorecards)
                ),
            ),
        ],
        LogSink("lake_roll_written"),
    )


__getattr__ = lazy_flow(flow_from_settings)
