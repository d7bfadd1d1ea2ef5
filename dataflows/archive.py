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
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NoReturn

import structlog
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink
from confluent_kafka import OFFSET_BEGINNING

from connectors.kafka import ConfirmedProducer, OutboundRecord
from connectors.kafka_source import Fetch, KafkaBatchSource
from connectors.lake import Lake, LakeWriteError
from connectors.log_sink import LogSink
from dataflows._canonical import decode_records
from dataflows._dead_letters import to_kafka
from dataflows._entry import lazy_flow, prepare
from domain.dead_letters import Stage
from domain.timestamps import to_epoch_ms
from runtime.clock import utc_now
from runtime.metrics import READINGS_IN
from runtime.settings import Settings, Topics

log = structlog.get_logger("dataflows.archive")

# sysexits.h EX_IOERR: the lake's filesystem refused a write (disk full, permissions).
EXIT_LAKE_WRITE_FAILED = 74
# How long a stopping archive waits for the rolls other workers are writing.
_STOP_WAIT_S = 60.0
_stopping = threading.Lock()


def stop_archive(lake: Lake, error: LakeWriteError, partition: int, first_offset: int) -> NoReturn:
    """Stop the process: one error line, exit code ``EXIT_LAKE_WRITE_FAILED``.

    Raising instead would end in Bytewax's panic backtraces and a generic exit code 1. An
    immediate exit is safe here: the lake is the commit log, and nothing else holds state.
    The first worker to fail reports; one that fails meanwhile waits here for the exit."""
    failed_at = time.monotonic()
    _stopping.acquire()
    finished = lake.stop_writing(_STOP_WAIT_S)
    log.error(
        "lake_write_failed",
        path=error.filename,
        errno=error.errno_name,
        error=error.strerror,
        partition=partition,
        resumes_at_offset=first_offset,
        other_rolls_finished=finished,
        waited_s=round(time.monotonic() - failed_at, 3),
        exit_code=EXIT_LAKE_WRITE_FAILED,
        action=(
            "nothing was lost and no partial file was left: free space in (or fix) "
            f"FLEET_LAKE_DIR={lake.root} and start the archive again; each partition "
            "resumes after its last complete roll"
        ),
    )
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(EXIT_LAKE_WRITE_FAILED)


@dataclass(frozen=True)
class Roll:
    """What one roll wrote (logged)."""

    partition: int
    first_offset: int
    last_offset: int
    readings: int
    dead_letters: int
    files: int
    seconds: float


@dataclass(frozen=True)
class ArchiveStep:
    """Builds the per-partition buffer; the lake, limits, DLQ and clock are plugged in."""

    lake: Lake
    roll_bytes: int
    roll_age: timedelta
    topics: Topics
    send_dead_letters: Callable[[list[OutboundRecord]], None]
    now: Callable[[], datetime] = utc_now
    max_future_ms: int = 300_000  # FLEET_MAX_FUTURE_S, from each record's Kafka timestamp
    # What a refused write does (tests plug in their own; the default ends the process).
    on_write_failed: Callable[[Lake, LakeWriteError, int, int], NoReturn] = stop_archive

    def build(self, _resume_state: None) -> _ArchiveLogic:
        return _ArchiveLogic(self)


@dataclass
class _Buffer:
    values: list[bytes] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)  # each value's Kafka timestamp
    size: int = 0
    partition: int = -1
    first_offset: int = -1
    last_offset: int = -1
    opened_at: datetime | None = None


_RECORDS_IN = READINGS_IN.labels("archive")


class _ArchiveLogic(StatefulBatchLogic[Fetch, Roll, None]):
    def __init__(self, step: ArchiveStep) -> None:
        self._step = step
        self._buffer = _Buffer()

    def on_batch(self, values: list[Fetch]) -> tuple[list[Roll], bool]:
        rolls = []
        buffer = self._buffer
        for fetch in values:
            _RECORDS_IN.inc(len(fetch.values))
            if not buffer.values:
                buffer.partition, buffer.first_offset = fetch.partition, fetch.first_offset
                buffer.opened_at = self._step.now()
            buffer.values.extend(fetch.values)
            buffer.timestamps.extend(
                fetch.timestamps
                if len(fetch.timestamps) == len(fetch.values)
                else [-1] * len(fetch.values)
            )
            buffer.size += sum(len(v) for v in fetch.values)
            buffer.last_offset = fetch.last_offset
            if buffer.size >= self._step.roll_bytes:
                rolls.append(self._roll())
                buffer = self._buffer
        return rolls, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Roll], bool]:
        opened = self._buffer.opened_at
        if (
            self._buffer.values
            and opened is not None
            and self._step.now() - opened >= self._step.roll_age
        ):
            return [self._roll()], StatefulBatchLogic.RETAIN
        return [], StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Roll], bool]:
        return ([self._roll()] if self._buffer.values else []), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        opened = self._buffer.opened_at
        return opened + self._step.roll_age if self._buffer.values and opened is not None else None

    def snapshot(self) -> None:
        # The lake is the commit log (file names carry the offsets): nothing to snapshot.
        return None

    def _roll(self) -> Roll:
        started = time.perf_counter()
        buffer, step = self._buffer, self._step
        self._buffer = _Buffer()
        readings, dead = decode_records(
            buffer.values,
            buffer.timestamps,
            Stage.ARCHIVE,
            step.topics.telemetry,
            to_epoch_ms(step.now()),
            step.max_future_ms,
        )
        if dead:
            # Written here, not by a DLQ output downstream: they must be confirmed before
            # the roll's files commit its offsets (the lake is the commit log), or a crash
            # between the two would lose them.
            step.send_dead_letters([to_kafka(step.topics.dlq)(letter) for letter in dead])
        try:
            files = step.lake.write_roll(
                buffer.partition, buffer.first_offset, buffer.last_offset, readings
            )
        except LakeWriteError as error:
            step.on_write_failed(step.lake, error, buffer.partition, buffer.first_offset)
        return Roll(
            buffer.partition,
            buffer.first_offset,
            buffer.last_offset,
            len(readings),
            len(dead),
            len(files),
            round(time.perf_counter() - started, 3),
        )


def partition_key(fetch: Fetch) -> str:
    return str(fetch.partition)


def build_flow(source: Source[Fetch], step: ArchiveStep, rolls_out: Sink[Roll]) -> Dataflow:
    flow = Dataflow("archive")
    fetches = op.input("kafka_source", flow, source)  # Fetch
    by_partition = op.key_on("partition_key", fetches, partition_key)  # (partition, Fetch)
    rolls = op.stateful_batch("roll_to_lake", by_partition, step.build)  # (partition, Roll)
    op.output("log_rolls", op.key_rm("drop_key", rolls), rolls_out)
    return flow


def flow_from_settings(settings: Settings) -> Dataflow:
    used = [settings.topics.telemetry, settings.topics.dlq]
    prepare("archive", settings, ["lake", "kafka", "topics", "stream"], used)
    assert settings.lake.dir is not None  # validated
    lake = Lake(settings.lake.dir)
    settings.lake.dir.mkdir(parents=True, exist_ok=True)

    def start_offset(partition: int, _resume_state: int | None) -> int:
        resume = lake.resume_offset(partition)
        return OFFSET_BEGINNING if resume is None else resume

    source = KafkaBatchSource(
        settings.kafka.config(),
        settings.topics.telemetry,
        tail=settings.kafka.tail,
        start_offset=start_offset,
    )
    step = ArchiveStep(
        lake,
        roll_bytes=round(settings.lake.roll_mb * 1024 * 1024),
        roll_age=timedelta(seconds=settings.lake.roll_s),
        topics=settings.topics,
        send_dead_letters=ConfirmedProducer(settings.kafka.producer_config()).send_all,
        max_future_ms=settings.stream.max_future_ms,
    )
    return build_flow(source, step, LogSink("lake_roll_written"))


__getattr__ = lazy_flow(flow_from_settings)
