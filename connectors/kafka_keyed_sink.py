"""``(key, value)`` items to one Kafka topic, every delivery confirmed (see ConfirmedKafkaSink).

Each batch is confirmed before ``write_batch`` returns. These records (alerts, dead letters)
have no fallback: one Kafka refuses, or cannot confirm within the delivery budget, stops the
process with ``KAFKA_DELIVERY_EXIT_CODE`` (connectors/kafka.py, README "Delivery failures").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override

from connectors.kafka import ConfirmedKafkaSink, OutboundRecord


class KafkaTopicSink(DynamicSink[tuple[str, bytes]]):
    """``(key, value)`` to ``topic``; an empty key is produced as no key."""

    def __init__(self, config: Mapping[str, str], topic: str, **options: Any) -> None:
        # ``options``: ConfirmedKafkaSink's test hooks (producer_factory, stop, now).
        self._inner = ConfirmedKafkaSink(config, wait_for_delivery=True, **options)
        self._topic = topic

    @override
    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[tuple[str, bytes]]:
        return _TopicPartition(self._inner.build(step_id, worker_index, worker_count), self._topic)


class _TopicPartition(StatelessSinkPartition[tuple[str, bytes]]):
    def __init__(self, inner: StatelessSinkPartition[OutboundRecord], topic: str) -> None:
        self._inner = inner
        self._topic = topic

    @override
    def write_batch(self, items: list[tuple[str, bytes]]) -> None:
        self._inner.write_batch(
            [OutboundRecord(self._topic, key.encode() or None, value) for key, value in items]
        )

    @override
    def close(self) -> None:
        self._inner.close()
