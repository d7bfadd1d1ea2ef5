"""Kafka output with a delivery report for every record, topic set-up and config checks.

Bytewax 0.21.1's ``KafkaSink`` ignores delivery reports, so a failed produce would pass
unnoticed. ``ConfirmedKafkaSink`` calls each record's ``on_delivered`` only once the broker
confirmed it, and turns any delivery failure into an exception that stops the flow.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from fleetwatch.redaction import is_secret_name, redact_text
from fleetwatch.settings import Settings, SettingsError

log = structlog.get_logger(__name__)

# Defaults that favour safety and batching; FLEET_KAFKA_<PROPERTY> variables override them.
PRODUCER_DEFAULTS: Mapping[str, str] = {
    "acks": "all",
    "enable.idempotence": "true",
    "linger.ms": "5",
    "batch.num.messages": "10000",
}


class KafkaDeliveryError(RuntimeError):
    """A record could not be delivered to Kafka; the flow stops rather than skip it."""


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    """A record to produce; ``on_delivered`` runs once the broker confirmed it."""

    topic: str
    key: bytes | None
    value: bytes
    on_delivered: Callable[[], None] | None = None


class ConfirmedKafkaSink(DynamicSink[OutboundRecord]):
    """Produce ``OutboundRecord``s, one producer per worker, every delivery confirmed.

    With ``wait_for_delivery`` each batch is flushed before ``write_batch`` returns, so a
    recovery snapshot taken after it never covers an unconfirmed record. Without it, records
    are confirmed asynchronously (their ``on_delivered`` callbacks carry the guarantee).
    """

    def __init__(self, config: Mapping[str, str], *, wait_for_delivery: bool) -> None:
        self._config = {**PRODUCER_DEFAULTS, **config}
        self._wait_for_delivery = wait_for_delivery

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[OutboundRecord]:
        return _ConfirmedKafkaPartition(
            Producer(self._config), self._wait_for_delivery, f"{step_id}-{worker_index}"
        )


class _ConfirmedKafkaPartition(StatelessSinkPartition[OutboundRecord]):
    def __init__(self, producer: Producer, wait_for_delivery: bool, name: str) -> None:
        self._producer = producer
        self._wait_for_delivery = wait_for_delivery
        self._failure: KafkaDeliveryError | None = None
        self._stopping = threading.Event()
        # Delivery reports are served here, so acknowledgements flow even while no new
        # batch arrives (MQTT stops sending once its in-flight window is unacknowledged).
        self._poller = threading.Thread(
            target=self._poll_forever, name=f"kafka-{name}", daemon=True
        )
        self._poller.start()

    def _poll_forever(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.05)

    def write_batch(self, items: list[OutboundRecord]) -> None:
        self._raise_if_failed()
        for record in items:
            self._produce(record)
        if self._wait_for_delivery:
            self._flush()
        self._raise_if_failed()

    def _produce(self, record: OutboundRecord) -> None:
        def report(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                self._record_failure(record, error)
            elif record.on_delivered is not None:
                record.on_delivered()

        while True:
            try:
                self._producer.produce(record.topic, record.value, record.key, on_delivery=report)
                return
            except BufferError:
                # The local queue is full: wait for deliveries to drain it.
                self._producer.poll(0.1)
                self._raise_if_failed()

    def _record_failure(self, record: OutboundRecord, error: KafkaError) -> None:
        if self._failure is None:
            log.error("kafka_delivery_failed", topic=record.topic, error=error.str())
            self._failure = KafkaDeliveryError(
                f"delivery to Kafka topic {record.topic!r} failed: {error.str()}"
            )

    def _flush(self) -> None:
        while self._producer.flush(1.0) > 0:
            self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        try:
            self._flush()
        finally:
            self._stopping.set()
            self._poller.join(timeout=1.0)
        self._raise_if_failed()


class ConfirmedProducer:
    """Produce a few records and wait until Kafka confirmed every one (or raise)."""

    def __init__(self, config: Mapping[str, str]) -> None:
        self._producer = Producer({**PRODUCER_DEFAULTS, **config})

    def send_all(self, records: Iterable[OutboundRecord]) -> None:
        failures: list[str] = []

        def report(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(error.str())

        for record in records:
            self._producer.produce(record.topic, record.value, record.key, on_delivery=report)
        while self._producer.flush(1.0) > 0:
            pass
        if failures:
            raise KafkaDeliveryError(f"delivery to Kafka failed: {failures[0]}")


def ensure_configured_topics(settings: Settings, topics: Iterable[str]) -> None:
    """``ensure_topics`` with the partitions, replication and patience the settings give."""
    ensure_topics(
        settings.kafka_config(),
        topics,
        settings.topic_partitions,
        settings.topic_replication_factor,
        timeout_s=settings.kafka_startup_timeout_s,
    )


def check_kafka_properties(settings: Settings) -> None:
    """Fail fast on a bad FLEET_KAFKA_<PROPERTY> value, naming the variable."""
    for prop, value in settings.kafka_properties.items():
        try:
            Producer(
                {"bootstrap.servers": settings.kafka_config()["bootstrap.servers"], prop: value}
            )
        except KafkaException as exc:
            variable = settings.kafka_property_variables[prop]
            # librdkafka quotes the value in some messages: never a secret's.
            reason = redact_text(str(exc), secrets=[value] if is_secret_name(prop) else [])
            raise SettingsError(f"{variable} (librdkafka {prop!r}) is invalid: {reason}") from None


class KafkaUnreachable(RuntimeError):
    """No Kafka broker answered within the start-up timeout."""


def ensure_topics(
    config: Mapping[str, str],
    topics: Iterable[str],
    partitions: int,
    replication_factor: int,
    timeout_s: float = 120.0,
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    While no broker answers, retry with backoff (1 s doubling to 15 s), logging each
    attempt, for up to ``timeout_s``; then raise ``KafkaUnreachable`` naming the brokers."""
    admin = AdminClient(dict(config))
    wanted = sorted(set(topics))
    deadline = time.monotonic() + timeout_s
    delay = 1.0
    while True:
        try:
            existing = admin.list_topics(
                timeout=min(10.0, max(1.0, deadline - time.monotonic()))
            ).topics
        except KafkaException as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                brokers = config.get("bootstrap.servers")
                raise KafkaUnreachable(
                    f"no Kafka broker at {brokers} answered for {timeout_s:.0f} s: {exc}"
                ) from None
            log.warning(
                "kafka_unreachable",
                brokers=config.get("bootstrap.servers"),
                retry_in_s=delay,
                error=str(exc),
            )
            time.sleep(min(delay, max(left, 0.1)))
            delay = min(delay * 2, 15.0)
            continue
        missing = [t for t in wanted if t not in existing or existing[t].error is not None]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kafka topics {missing} still missing after {timeout_s:.0f} s")
        new = [
            NewTopic(t, num_partitions=partitions, replication_factor=replication_factor)
            for t in missing
        ]
        for topic, future in admin.create_topics(new, request_timeout=30).items():
            try:
                future.result()
                log.info("kafka_topic_created", topic=topic, partitions=partitions)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        time.sleep(0.2)
