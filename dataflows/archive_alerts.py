"""dataflows.archive_alerts: ``fleet.alerts`` -> ``FLEET_LAKE_DIR/alerts/``, for the tools.

Input:  ``FLEET_TOPIC_ALERTS``, every partition, from where the archived alerts end.
Output: Hive-partitioned Parquet beside the telemetry, in the lake's ``alerts/`` directory:
        ``alerts/date=YYYY-MM-DD/p<partition>-<first>-<last>-<k>of<n>.parquet``, zstd, one
        flat row per record in connectors/alert_lake.py's ``ALERT_SCHEMA``; ``date`` is the
        UTC date of the alert's ``window_end`` (event time, so every copy of an alert lands
        on the same date). Read them with ``connectors.alert_lake.scan_alerts`` (lazy,
        deduplicated by alert_id). Records that are not alerts (``domain.alerts.decode_alert``:
        ``invalid_json``, ``schema``, ``out_of_range``, ``bad_timestamp``) go to
        ``FLEET_TOPIC_DLQ`` with stage ``archive_alerts`` before the roll is written.
Duplicates: kept as they came (the alerts flow delivers at least once, and an alert keeps
        its id): the lake is the topic, exactly once; readers deduplicate by alert_id.
Rolls, guarantee, scale and failure: as dataflows.archive, with the same knobs
        (``FLEET_LAKE_ROLL_MB``, ``FLEET_LAKE_ROLL_S``; alerts are few, so rolls are mostly
        by age) and the same code (dataflows/_lake_archive.py): each record stored exactly
        once, also after kill -9; a refused write exits with code 74.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

import polars as pl
from bytewax.dataflow import Dataflow

from connectors.alert_lake import alert_lake, alert_row, alerts_frame
from connectors.log_sink import LogSink
from dataflows._entry import lazy_flow, prepare
from dataflows._guard import unprocessable
from dataflows._lake_archive import RollDecoder, archive_step, build_flow, lake_source
from domain.alerts import decode_alert
from domain.dead_letters import DeadLetter, Reason, Stage
from domain.readings import Rejection
from runtime.settings import Settings

STAGE = Stage.ARCHIVE_ALERTS


def decode_alerts(source_topic: str) -> RollDecoder:
    """A roll's records as rows of archived alerts, and a dead letter (stage
    ``archive_alerts``) for each that is not an alert."""

    def decode(
        values: Sequence[bytes], _timestamps: Sequence[int], received_at_ms: int
    ) -> tuple[pl.DataFrame, list[DeadLetter]]:
        rows: list[dict[str, Any]] = []
        raws: list[bytes] = []
        dead: list[DeadLetter] = []
        for value in values:
            row = _row(value, source_topic, received_at_ms)
            if isinstance(row, DeadLetter):
                dead.append(row)
            else:
                rows.append(row)
                raws.append(value)
        try:
            return alerts_frame(rows), dead
        except Exception:  # one bad row must not cost the roll: find it
            return _frame_row_by_row(rows, raws, dead, source_topic, received_at_ms)

    return decode


def _row(value: bytes, source_topic: str, received_at_ms: int) -> dict[str, Any] | DeadLetter:
    """One record as a row, or its dead letter (never raises)."""
    try:
        alert = decode_alert(value, UTC)
        if isinstance(alert, Rejection):
            return DeadLetter(
                STAGE, alert.reason, alert.detail, source_topic, value, received_at_ms
            )
        return alert_row(alert)
    except OverflowError as error:
        return DeadLetter(
            STAGE, Reason.OUT_OF_RANGE, str(error), source_topic, value, received_at_ms
        )
    except Exception as error:  # the last line of defence: see dataflows/_guard.py
        return unprocessable(STAGE, error, source_topic, value, received_at_ms)


def _frame_row_by_row(
    rows: list[dict[str, Any]],
    raws: list[bytes],
    dead: list[DeadLetter],
    source_topic: str,
    received_at_ms: int,
) -> tuple[pl.DataFrame, list[DeadLetter]]:
    kept = []
    for row, raw in zip(rows, raws, strict=True):
        try:
            alerts_frame([row])
            kept.append(row)
        except Exception as error:  # the last line of defence: see dataflows/_guard.py
            dead.append(unprocessable(STAGE, error, source_topic, raw, received_at_ms))
    return alerts_frame(kept), dead


def flow_from_settings(settings: Settings) -> Dataflow:
    used = [settings.topics.alerts, settings.topics.dlq]
    prepare("archive_alerts", settings, ["lake", "kafka", "topics"], used)
    assert settings.lake.dir is not None  # validated
    lake = alert_lake(settings.lake.dir)
    step = archive_step("archive_alerts", settings, lake, decode_alerts(settings.topics.alerts))
    source = lake_source(settings, settings.topics.alerts, lake)
    return build_flow("archive_alerts", source, step, LogSink("lake_roll_written"))


__getattr__ = lazy_flow(flow_from_settings)
