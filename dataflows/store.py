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
from bytewax.outputs import Sink

from connectors.dynamodb import TelemetryTable, TelemetryWriter, create_table, dynamodb_client
from connectors.kafka import ConfirmedKafkaSink, OutboundRecord
from connectors.kafka_source import Fetch, KafkaBatchSource
from dataflows._canonical import decode_records
from dataflows._dead_letters import output_dead_letters, split_dead_letters, to_kafka
from dataflows._entry import lazy_flow, prepare
from domain.dead_letters import DeadLetter, Stage
from domain.readings import Reading
from domain.timestamps import to_epoch_ms
from runtime.clock import utc_now
from runtime.logs import configure_logging
from runtime.metrics import READINGS_IN
from runtime.redaction import redact_text
from runtime.settings import Settings

log = structlog.get_logger(__name__)

_RECORDS_IN = READINGS_IN.labels("store")


@dataclass(frozen=True)
class StoreDecoder:
    telemetry_topic: str
    now: Callable[[], datetime] = utc_now
    max_future_ms: int = 300_000  # FLEET_MAX_FUTURE_S, from each record's Kafka timestamp

    def decode_batch(self, fetches: list[Fetch]) -> list[Reading | DeadLetter]:
        """Each fetch's readings, and a dead letter for each record that is not one."""
        out: list[Reading | DeadLetter] = []
        for fetch in fetches:
            _RECORDS_IN.inc(len(fetch.values))
            readings, dead = decode_records(
                fetch.values,
                fetch.timestamps,
                Stage.STORE,
                self.telemetry_topic,
                to_epoch_ms(self.now()),
                self.max_future_ms,
            )
            out.extend(readings)
            out.extend(dead)
        return out


def build_flow(
    source: Source[Fetch],
    decoder: StoreDecoder,
    writer: TelemetryWriter,
    dead_letters: Sink[OutboundRecord],
    dlq_topic: str,
) -> Dataflow:
    """Each batch is written to the table in the ``write_to_table`` step, synchronously, so
    a recovery snapshot never covers an unwritten reading; the items the table refuses come
    out of it as dead letters, beside those of decoding, to the one DLQ output."""
    flow = Dataflow("store")
    fetches = op.input("kafka_source", flow, source)  # Fetch
    decoded = op.flat_map_batch("decode_batch", fetches, decoder.decode_batch)
    split = split_dead_letters("split_decoded", decoded)  # Reading | dead letter
    refused = op.flat_map_batch("write_to_table", split.oks, writer.write_batch)  # dead letter
    output_dead_letters("dead_letters", to_kafka(dlq_topic), dead_letters, split.errs, refused)
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
    decoder = StoreDecoder(settings.topics.telemetry, max_future_ms=settings.stream.max_future_ms)
    writer = TelemetryWriter(telemetry_table(settings), settings.topics.telemetry, utc_now)
    dead_letters = ConfirmedKafkaSink(settings.kafka.producer_config(), wait_for_delivery=True)
    return build_flow(source, decoder, writer, dead_letters, settings.topics.dlq)


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
