"""What the archives share: a Kafka topic -> rolls of Parquet in a lake, exactly once.

dataflows.archive (``fleet.telemetry`` -> the lake's ``date=...``) and
dataflows.archive_alerts (``fleet.alerts`` -> its ``alerts/date=...``, ``fleet.scorecards``
-> its ``scorecards/date=...``) differ only in how a roll's records become rows (a
``RollDecoder``; ``record_decoder`` makes one from a per-record function) and which lake
they go to. Everything else is here, once:

- buffering per Kafka partition and rolling by size (``FLEET_LAKE_ROLL_MB``), by age
  (``FLEET_LAKE_ROLL_S``) and at the end of bounded input;
- the dead letters of a roll, confirmed by Kafka *before* its files are written (the files
  commit its offsets: a crash between the two must not lose them);
- exactly once after kill -9: each partition starts right after its last complete roll
  (``lake_source``; connectors/lake.py); nothing is kept in Bytewax snapshots;
- a write the filesystem refuses stops the process (``stop_archive``, exit code 74);
- several topics in one flow (``build_topics_flow``): each has its own input, its own
  step (so partition 0 of one is not partition 0 of the other) and its own lake directory
  (so file names cannot collide, and each resumes from its own files).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

import polars as pl
import structlog
from bytewax import operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink
from confluent_kafka import OFFSET_BEGINNING

from connectors.kafka import ConfirmedProducer, OutboundRecord
from connectors.kafka_source import Fetch, KafkaBatchSource
from connectors.lake import Lake, LakeWriteError
from dataflows._dead_letters import to_kafka
from dataflows._guard import unprocessable
from domain.dead_letters import DeadLetter, Reason, Stage
from domain.readings import Rejection
from domain.timestamps import to_epoch_ms
from runtime.clock import utc_now
from runtime.metrics import READINGS_IN
from runtime.settings import Settings

log = structlog.get_logger("dataflows.archive")

# sysexits.h EX_IOERR: the lake's filesystem refused a write (disk full, permissions).
EXIT_LAKE_WRITE_FAILED = 74
# How long a stopping archive waits for the rolls other workers are writing.
_STOP_WAIT_S = 60.0
_stopping = threading.Lock()

# A roll's record values, their Kafka timestamps (epoch ms, -1: none) and the moment they
# were received -> the rows to write (in the lake's schema, also when empty) and a dead
# letter for each record that is not one. Never raises for any record.
RollDecoder = Callable[[Sequence[bytes], Sequence[int], int], tuple[pl.DataFrame, list[DeadLetter]]]
# One record value -> its row, or why it is refused. May raise (see ``record_decoder``).
RowOf = Callable[[bytes], dict[str, Any] | Rejection]
# Rows -> a DataFrame in the lake's schema (also when empty); raises for a value that does
# not fit its column.
FrameOf = Callable[[Sequence[dict[str, Any]]], pl.DataFrame]


def record_decoder(
    stage: Stage, source_topic: str, row_of: RowOf, frame_of: FrameOf
) -> RollDecoder:
    """A ``RollDecoder`` for records that become one row each: a record ``row_of`` refuses
    is a dead letter of ``stage`` with its reason; one that makes it raise is
    ``out_of_range`` (OverflowError) or ``unprocessable`` (anything else,
    dataflows/_guard.py); a row ``frame_of`` cannot hold is found alone and is
    ``unprocessable``. The roll goes on in every case."""

    def decode(
        values: Sequence[bytes], _timestamps: Sequence[int], received_at_ms: int
    ) -> tuple[pl.DataFrame, list[DeadLetter]]:
        rows: list[dict[str, Any]] = []
        raws: list[bytes] = []
        dead: list[DeadLetter] = []
        for value in values:
            row = _row(value, received_at_ms)
            if isinstance(row, DeadLetter):
                dead.append(row)
            else:
                rows.append(row)
                raws.append(value)
        try:
            return frame_of(rows), dead
        except Exception:  # one bad row must not cost the roll: find it
            kept = []
            for row, raw in zip(rows, raws, strict=True):
                try:
                    frame_of([row])
                    kept.append(row)
                except Exception as error:  # the last line of defence: dataflows/_guard.py
                    dead.append(unprocessable(stage, error, source_topic, raw, received_at_ms))
            return frame_of(kept), dead

    def _row(value: bytes, received_at_ms: int) -> dict[str, Any] | DeadLetter:
        try:
            row = row_of(value)
            if isinstance(row, Rejection):
                return DeadLetter(
                    stage, row.reason, row.detail, source_topic, value, received_at_ms
                )
            return row
        except OverflowError as error:
            return DeadLetter(
                stage, Reason.OUT_OF_RANGE, str(error), source_topic, value, received_at_ms
            )
        except Exception as error:  # the last line of defence: see dataflows/_guard.py
            return unprocessable(stage, error, source_topic, value, received_at_ms)

    return decode


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
            f"{lake.root} (FLEET_LAKE_DIR) and start the archive again; each partition "
            "resumes after its last complete roll"
        ),
    )
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(EXIT_LAKE_WRITE_FAILED)


@dataclass(frozen=True)
class Roll:
    """What one roll wrote (logged); ``lake`` is its lake directory."""

    lake: str
    partition: int
    first_offset: int
    last_offset: int
    rows: int
    dead_letters: int
    files: int
    seconds: float


@dataclass(frozen=True)
class ArchiveStep:
    """Builds the per-partition buffer; the lake, decoder, limits, DLQ and clock are
    plugged in. ``flow`` labels the input counter (``fleetwatch_readings_in_total``)."""

    flow: str
    lake: Lake
    decode: RollDecoder
    roll_bytes: int
    roll_age: timedelta
    dlq_topic: str
    send_dead_letters: Callable[[list[OutboundRecord]], None]
    now: Callable[[], datetime] = utc_now
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


class _ArchiveLogic(StatefulBatchLogic[Fetch, Roll, None]):
    def __init__(self, step: ArchiveStep) -> None:
        self._step = step
        self._buffer = _Buffer()
        self._records_in = READINGS_IN.labels(step.flow)

    def on_batch(self, values: list[Fetch]) -> tuple[list[Roll], bool]:
        rolls = []
        buffer = self._buffer
        for fetch in values:
            self._records_in.inc(len(fetch.values))
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
        rows, dead = step.decode(buffer.values, buffer.timestamps, to_epoch_ms(step.now()))
        if dead:
            # Written here, not by a DLQ output downstream: they must be confirmed before
            # the roll's files commit its offsets (the lake is the commit log), or a crash
            # between the two would lose them.
            step.send_dead_letters([to_kafka(step.dlq_topic)(letter) for letter in dead])
        try:
            files = step.lake.write_rows(
                buffer.partition, buffer.first_offset, buffer.last_offset, rows
            )
        except LakeWriteError as error:
            step.on_write_failed(step.lake, error, buffer.partition, buffer.first_offset)
        return Roll(
            str(step.lake.root),
            buffer.partition,
            buffer.first_offset,
            buffer.last_offset,
            rows.height,
            len(dead),
            len(files),
            round(time.perf_counter() - started, 3),
        )


def partition_key(fetch: Fetch) -> str:
    return str(fetch.partition)


@dataclass(frozen=True)
class TopicArchive:
    """One topic's part of an archive flow; ``prefix`` starts its steps' ids."""

    prefix: str
    source: Source[Fetch]
    step: ArchiveStep


def build_flow(
    name: str, source: Source[Fetch], step: ArchiveStep, rolls_out: Sink[Roll]
) -> Dataflow:
    """The flow archiving one topic."""
    return build_topics_flow(name, [TopicArchive("", source, step)], rolls_out)


def build_topics_flow(name: str, topics: Sequence[TopicArchive], rolls_out: Sink[Roll]) -> Dataflow:
    """The flow archiving several topics, each into its own lake (``TopicArchive.step``)."""
    flow = Dataflow(name)
    rolls = [_archive_topic(flow, topic) for topic in topics]
    op.output("log_rolls", rolls[0] if len(rolls) == 1 else op.merge("rolls", *rolls), rolls_out)
    return flow


def _archive_topic(flow: Dataflow, topic: TopicArchive) -> Stream[Roll]:
    # Keyed by partition within this topic's own stateful step: another topic's partition
    # of the same number has its own buffer, in its own step.
    p = topic.prefix
    fetches = op.input(f"{p}kafka_source", flow, topic.source)  # Fetch
    by_partition = op.key_on(f"{p}partition_key", fetches, partition_key)  # (partition, Fetch)
    rolls = op.stateful_batch(
        f"{p}roll_to_lake", by_partition, topic.step.build
    )  # (partition, Roll)
    return op.key_rm(f"{p}drop_key", rolls)  # Roll


def lake_source(settings: Settings, topic: str, lake: Lake) -> KafkaBatchSource:
    """Every partition of ``topic``, each from right after its last complete roll in
    ``lake`` (from the beginning when it has none)."""
    lake.root.mkdir(parents=True, exist_ok=True)

    def start_offset(partition: int, _resume_state: int | None) -> int:
        resume = lake.resume_offset(partition)
        return OFFSET_BEGINNING if resume is None else resume

    return KafkaBatchSource(
        settings.kafka.config(), topic, tail=settings.kafka.tail, start_offset=start_offset
    )


def archive_step(flow: str, settings: Settings, lake: Lake, decode: RollDecoder) -> ArchiveStep:
    """The step with the roll limits and the DLQ of ``settings``."""
    return ArchiveStep(
        flow,
        lake,
        decode,
        roll_bytes=round(settings.lake.roll_mb * 1024 * 1024),
        roll_age=timedelta(seconds=settings.lake.roll_s),
        dlq_topic=settings.topics.dlq,
        send_dead_letters=ConfirmedProducer(settings.kafka.producer_config()).send_all,
    )
