"""``(key, value)`` items to one Kafka topic, every delivery confirmed (see ConfirmedKafkaSink)."""

from __future__ import annotations

from collections.abc import Mapping

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.kafka import ConfirmedKafkaSink, OutboundRecord


class KafkaTopicSink(DynamicSink[tuple[str, bytes]]):
    def __init__(self, config: Mapping[str, str], topic: str) -> None:
        self._inner = ConfirmedKafkaSink(config, wait_for_delivery=True)
        self._topic = topic

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[tuple[str, bytes]]:
        return _TopicPartition(self._inner.build(step_id, worker_index, worker_count), self._topic)


class _TopicPartition(StatelessSinkPartition[tuple[str, bytes]]):
    def __init__(self, inner: StatelessSinkPartition[OutboundRecord], topic: str) -> None:
        self._inner = inner
        self._topic = topic

    def write_batch(self, items: list[tuple[str, bytes]]) -> None:
        self._inner.write_batch(
            [OutboundRecord(self._topic, key.encode() or None, value) for key, value in items]
        )

    def close(self) -> None:
        self._inner.close()
