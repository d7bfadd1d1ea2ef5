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
