"""Baseline for benchmarks/alerts.py: the alerts flow's work as one plain Python loop.

Consumes FLEET_TOPIC_TELEMETRY to its end with one confluent-kafka consumer, decodes with
``decode_reading``, runs the same ``TruckState`` per truck, and produces the alerts.
Prints a JSON line with the counts.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.kafka import PRODUCER_DEFAULTS
from domain.alerts import build_alert, encode_alert
from domain.readings import Reading, decode_reading
from domain.rules import Detection, TruckState
from runtime.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    config = settings.rules.config()
    topic = settings.topics.telemetry
    admin = AdminClient(dict(settings.kafka.config()))
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer(
        {
            **settings.kafka.config(),
            "group.id": "plain-alerts",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    producer = Producer({**PRODUCER_DEFAULTS, **settings.kafka.config()})
    states: dict[str, TruckState] = defaultdict(TruckState)
    readings = alerts = 0
    finished: set[int] = set()
    started = time.monotonic()

    def emit(detections: list[Detection]) -> None:
        for detection in detections:
            now_ms = time.time_ns() // 1_000_000
            producer.produce(
                settings.topics.alerts,
                encode_alert(build_alert(detection, now_ms)),
                detection.truck_id,
            )

    while len(finished) < len(partitions):
        by_truck: dict[str, list[Reading]] = defaultdict(list)
        for message in consumer.consume(10_000, 0.1):
            error = message.error()
            if error is not None:
                partition = message.partition()
                if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                    finished.add(partition)
                continue
            outcome = decode_reading(message.value() or b"")
            if isinstance(outcome, Reading):
                readings += 1
                by_truck[outcome.truck_id].append(outcome)
        for truck_id, batch in by_truck.items():
            detections = states[truck_id].ingest(batch, config).detections
            alerts += len(detections)
            emit(detections)
    for state in states.values():
        detections = state.evaluate_released(config, flush=True)
        alerts += len(detections)
        emit(detections)
    producer.flush()
    print(
        json.dumps({"readings": readings, "alerts": alerts, "seconds": time.monotonic() - started})
    )


if __name__ == "__main__":
    main()
