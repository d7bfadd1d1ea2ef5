"""dataflows.archive: ``fleet.telemetry`` -> the Parquet lake in ``FLEET_LAKE_DIR``.

Input:  ``FLEET_TOPIC_TELEMETRY``, every partition, from where the lake ends (see below).
Output: Hive-partitioned Parquet, ``date=YYYY-MM-DD/p<partition>-<first>-<last>-<k>of<n>.parquet``
        with the contract's columns (CONTRACT.md section 8), zstd; records that are not valid
        readings go to ``FLEET_TOPIC_DLQ`` (stage ``archive``) before the roll is written.
Rolls:  per Kafka partition, when the buffered records reach ``FLEET_LAKE_ROLL_MB`` or the
        oldest is ``FLEET_LAKE_ROLL_S`` old, and at the end of bounded input
        (``FLEET_KAFKA_TAIL=false``). Memory: up to FLEET_LAKE_ROLL_MB per partition.
Guarantee: each reading stored exactly once, also after kill -9. File names record the
        Kafka offsets each roll covers, so the lake is its own commit log: at start every
        partition resumes right after its last complete roll (connectors/lake.py). Nothing
        is kept in Bytewax snapshots; ``-r`` is accepted and changes nothing.
Scale:  ``-w N`` / ``-i/-a``: Kafka partitions are spread over workers. All processes must
        see the same FLEET_LAKE_DIR.
Failure: a write the lake's filesystem refuses (disk full, ENOSPC; no permission; an I/O
        error) stops the process with exit code 74 (``EXIT_LAKE_WRITE_FAILED``, sysexits'
        EX_IOERR) and one ``lake_write_failed`` error line: the file, the errno and its
        text, the roll, and what to do. The failed roll leaves no file; rolls that other
        workers of the process are writing are finished first. Nothing is lost: fix the
        cause and start again, and each partition resumes after its last complete roll.
The rolls, the exactly-once scheme and the failure handling are dataflows/_lake_archive.py,
shared with dataflows.archive_alerts (``fleet.alerts`` -> ``FLEET_LAKE_DIR/alerts/``, which
the readers of the telemetry skip); this module decodes the readings.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from bytewax.dataflow import Dataflow

from connectors.lake import Lake
from connectors.log_sink import LogSink
from connectors.parquet import readings_frame
from dataflows._canonical import decode_records
from dataflows._entry import lazy_flow, prepare
from dataflows._lake_archive import (
    EXIT_LAKE_WRITE_FAILED,
    RollDecoder,
    archive_step,
    build_flow,
    lake_source,
)
from domain.dead_letters import DeadLetter, Stage
from runtime.settings import Settings

__all__ = ["EXIT_LAKE_WRITE_FAILED", "decode_readings", "flow_from_settings"]


def decode_readings(source_topic: str, max_future_ms: int) -> RollDecoder:
    """A roll's records as lake rows (CONTRACT.md section 8), and a dead letter (stage
    ``archive``) for each that is not a valid reading; ``max_future_ms`` is
    FLEET_MAX_FUTURE_S, from each record's Kafka timestamp."""

    def decode(
        values: Sequence[bytes], timestamps: Sequence[int], received_at_ms: int
    ) -> tuple[pl.DataFrame, list[DeadLetter]]:
        readings, dead = decode_records(
            values, timestamps, Stage.ARCHIVE, source_topic, received_at_ms, max_future_ms
        )
        return readings_frame(readings), dead

    return decode


def flow_from_settings(settings: Settings) -> Dataflow:
    used = [settings.topics.telemetry, settings.topics.dlq]
    prepare("archive", settings, ["lake", "kafka", "topics", "stream"], used)
    assert settings.lake.dir is not None  # validated
    lake = Lake(settings.lake.dir)
    decode = decode_readings(settings.topics.telemetry, settings.stream.max_future_ms)
    step = archive_step("archive", settings, lake, decode)
    source = lake_source(settings, settings.topics.telemetry, lake)
    return build_flow("archive", source, step, LogSink("lake_roll_written"))


__getattr__ = lazy_flow(flow_from_settings)
