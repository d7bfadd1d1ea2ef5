"""A read-only tally of Kafka topics from the beginning, for the demo's live view and summary."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Sequence

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient


class TopicTally:
    """Counts records per topic (and distinct ids / DLQ reasons) on a background thread."""

    def __init__(self, bootstrap: str, topics: Sequence[str], id_field: dict[str, str]) -> None:
        self._bootstrap = bootstrap
        self._topics = list(topics)
        self._id_field = id_field
        self.records: Counter[str] = Counter()
        self.distinct: dict[str, set[str]] = {topic: set() for topic in topics}
        self.reasons: Counter[str] = Counter()
        self.last_value: dict[str, bytes] = {}
        self.with_driver = 0  # alerts that name a driver
        self.critical = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topic-tally", daemon=True)

    def start(self) -> TopicTally:
        self._thread.start()
        return self

    def _assignments(self) -> list[TopicPartition]:
        admin = AdminClient({"bootstrap.servers": self._bootstrap})
        metadata = admin.list_topics(timeout=10)
        while not self._stop.is_set() and not all(t in metadata.topics for t in self._topics):
            time.sleep(0.2)  # the flows create their topics when they start
            metadata = admin.list_topics(timeout=10)
        return [
            TopicPartition(topic, partition, 0)
            for topic in self._topics
            if topic in metadata.topics
            for partition in metadata.topics[topic].partitions
        ]

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": "fleetwatch-demo",
                "enable.auto.commit": False,
            }
        )
        consumer.assign(self._assignments())
        try:
            while not self._stop.is_set():
                for message in consumer.consume(5_000, 0.2):
                    topic, value = message.topic(), message.value()
                    if message.error() is None and topic is not None and value is not None:
                        self._count(topic, value)
        finally:
            consumer.close()

    def _count(self, topic: str, value: bytes) -> None:
        self.records[topic] += 1
        self.last_value[topic] = value
        document = json.loads(value)
        field = self._id_field.get(topic)
        if field is not None:
            self.distinct[topic].add(str(document.get(field)))
        if "reason" in document and "stage" in document:
            self.reasons[str(document["reason"])] += 1
        if "alert_id" in document:
            self.with_driver += document.get("driver_id") is not None
            self.critical += document.get("severity") == "critical"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def read_to_end(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[bytes]:
    """Every record value of ``topic`` from the beginning to its end as of now, in partition
    order (for a topic nothing writes to any more); none if it does not exist."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "fleetwatch-demo", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in metadata.partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        values: list[bytes] = []
        positions = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout_s
        while any(positions[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {timeout_s} s")
            for message in consumer.consume(5_000, 0.2):
                partition, value = message.partition(), message.value()
                if message.error() is None and partition is not None:
                    positions[partition] = (message.offset() or 0) + 1
                    if value is not None:
                        values.append(value)
        return values
    finally:
        consumer.close()
