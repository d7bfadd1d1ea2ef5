"""dataflows.store: ``fleet.telemetry`` -> a DynamoDB table (history and latest per truck).

Input:  ``FLEET_TOPIC_TELEMETRY``, every partition, from the beginning (or the recovered
        offsets); a record that is not a valid reading goes to ``FLEET_TOPIC_DLQ`` (stage
        ``store``).
Output: ``FLEET_DYNAMODB_TABLE`` (connectors/dynamodb.py has the item design): one history
        item per reading, written 25 at a time, and each truck's latest reading, replaced
        only by a newer one. A reading DynamoDB refuses (too large, invalid) goes to the DLQ
        with reason ``rejected_by_store``.
Guarantee: at least once, without duplicates: a replayed reading rewrites the same item.
        Each batch is written (throttling and unprocessed items retried with backoff, as long
        as it takes) before the flow moves on, so a recovery snapshot never covers an
        unwritten reading.
Knobs:  FLEET_DYNAMODB_TABLE, FLEET_DYNAMODB_REGION, FLEET_DYNAMODB_ENDPOINT_URL (DynamoDB
        Local, ScyllaDB Alternator, dynalite...), FLEET_DYNAMODB_RETENTION_DAYS (the TTL);
        credentials from the usual AWS chain (AWS_ACCESS_KEY_ID..., a role, a profile).
        ``python -m dataflows.store --create-table`` creates the table and exits.
Scale:  ``-w N`` / ``-i/-a``: Kafka partitions are spread over workers; writes need no
        coordination (idempotent history, conditional latest). Recovery with ``-r/-s/-b``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.dynamodb import TelemetryTable, create_table, dynamodb_client
from connectors.kafka import ConfirmedProducer, OutboundRecord
from connectors.kafka_source import Fetch, KafkaBatchSource
from dataflows._canonical import decode_records
from dataflows._entry import lazy_flow, prepare
from domain.dead_letters import Stage
from domain.readings import Reading, encode_canonical
from domain.timestamps import to_epoch_ms
from runtime.clock import utc_now
from runtime.logs import configure_logging
from runtime.metrics import READINGS_IN, counted_dead_letter
from runtime.redaction import redact_text
from runtime.settings import Settings

log = structlog.get_logger(__name__)

_RECORDS_IN = READINGS_IN.labels("store")


@dataclass(frozen=True)
class Decoded:
    """One fetch: its readings, and dead letters for what was not a reading."""

    readings: list[Reading]
    dead_letters: list[OutboundRecord]


@dataclass(frozen=True)
class StoreDecoder:
    telemetry_topic: str
    dlq_topic: str
    now: Callable[[], datetime] = utc_now
    max_future_ms: int = 300_000  # FLEET_MAX_FUTURE_S, from each record's Kafka timestamp

    def decode(self, fetch: Fetch) -> Decoded:
        _RECORDS_IN.inc(len(fetch.values))
        readings, dead = decode_records(
            fetch.values,
            fetch.timestamps,
            Stage.STORE,
            self.telemetry_topic,
            self.dlq_topic,
            to_epoch_ms(self.now()),
            self.max_future_ms,
        )
        return Decoded(readings, dead)


class DynamoSink(DynamicSink[Decoded]):
    """Writes each batch to the table (and its dead letters to Kafka) before returning."""

    def __init__(
        self,
        table: Callable[[], TelemetryTable],
        send_dead_letters: Callable[[list[OutboundRecord]], None],
        telemetry_topic: str,
        dlq_topic: str,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._table = table
        self._send_dead_letters = send_dead_letters
        self._telemetry_topic = telemetry_topic
        self._dlq_topic = dlq_topic
        self._now = now

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DynamoPartition:
        return _DynamoPartition(self, self._table())


class _DynamoPartition(StatelessSinkPartition[Decoded]):
    def __init__(self, sink: DynamoSink, table: TelemetryTable) -> None:
        self._sink = sink
        self._table = table

    def write_batch(self, items: list[Decoded]) -> None:
        sink = self._sink
        readings = [r for item in items for r in item.readings]
        dead = [d for item in items for d in item.dead_letters]
        for rejected in self._table.write(readings):
            log.error(
                "dynamodb_rejected", event_id=rejected.reading.event_id, detail=rejected.detail
            )
            value = counted_dead_letter(
                Stage.STORE,
                rejected.reason,
                rejected.detail,
                sink._telemetry_topic,
                encode_canonical(rejected.reading),
                to_epoch_ms(sink._now()),
            )
            dead.append(OutboundRecord(sink._dlq_topic, rejected.reading.truck_id.encode(), value))
        if dead:
            sink._send_dead_letters(dead)


def build_flow(source: Source[Fetch], decoder: StoreDecoder, sink: DynamoSink) -> Dataflow:
    flow = Dataflow("store")
    fetches = op.input("kafka_source", flow, source)  # Fetch
    decoded = op.map("decode", fetches, decoder.decode)  # Decoded
    op.output("dynamodb", decoded, sink)
    return flow


def telemetry_table(settings: Settings) -> Callable[[], TelemetryTable]:
    def build() -> TelemetryTable:
        client = dynamodb_client(settings.dynamodb.region, settings.dynamodb.endpoint_url)
        return TelemetryTable(
            client, settings.dynamodb.table, settings.dynamodb.retention_days * 86_400
        )

    return build


def flow_from_settings(settings: Settings) -> Dataflow:
    used = [settings.topics.telemetry, settings.topics.dlq]
    prepare("store", settings, ["dynamodb", "kafka", "topics", "stream"], used)
    source = KafkaBatchSource(
        settings.kafka.config(), settings.topics.telemetry, tail=settings.kafka.tail
    )
    decoder = StoreDecoder(
        settings.topics.telemetry,
        settings.topics.dlq,
        max_future_ms=settings.stream.max_future_ms,
    )
    sink = DynamoSink(
        telemetry_table(settings),
        ConfirmedProducer(settings.kafka.producer_config()).send_all,
        settings.topics.telemetry,
        settings.topics.dlq,
    )
    return build_flow(source, decoder, sink)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dataflows.store",
        description="Create the telemetry table; run the flow with python -m bytewax.run.",
    )
    parser.add_argument("--create-table", action="store_true", required=True)
    parser.parse_args(argv)
    configure_logging()
    settings = Settings.from_env()
    client: Any = dynamodb_client(settings.dynamodb.region, settings.dynamodb.endpoint_url)
    try:
        created = create_table(client, settings.dynamodb.table)
    except Exception as exc:  # botocore's messages can quote the endpoint URL, user info and all
        error = redact_text(f"{type(exc).__name__}: {exc}", urls=[settings.dynamodb.endpoint_url])
        log.error("dynamodb_table_failed", table=settings.dynamodb.table, error=error)
        return 1
    log.info("dynamodb_table", table=settings.dynamodb.table, created=created)
    return 0


__getattr__ = lazy_flow(flow_from_settings)

if __name__ == "__main__":
    sys.exit(main())
