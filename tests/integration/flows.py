"""Run fleetwatch flows as real processes (devtools/launcher.py), and read Kafka topics back,
for integration tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]
from prometheus_client.parser import text_string_to_metric_families

from devtools.launcher import FlowProcess  # the tests import it from here too
from devtools.localbrokers import LocalBrokers, free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Namespace:
    """One test's own topics, MQTT prefix, share group and client ids."""

    brokers: LocalBrokers
    name: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    partitions: int = 4

    def topic(self, kind: str) -> str:
        return f"{self.name}.{kind}"

    @property
    def mqtt_topic_template(self) -> str:
        return self.name + "/{truck_id}/telemetry"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "FLEET_MQTT_URL": self.brokers.mqtt_url,
            "FLEET_MQTT_PROTOCOL": self.brokers.mqtt_protocol,
            "FLEET_MQTT_TOPIC": f"{self.name}/+/telemetry",
            "FLEET_MQTT_SHARE_GROUP": f"{self.name}-bridge"
            if self.brokers.shared_subscriptions
            else "",
            "FLEET_MQTT_CLIENT_ID": f"{self.name}-bridge",
            "FLEET_KAFKA_BROKERS": self.brokers.kafka_brokers,
            "FLEET_TOPIC_TELEMETRY": self.topic("telemetry"),
            "FLEET_TOPIC_ALERTS": self.topic("alerts"),
            "FLEET_TOPIC_DLQ": self.topic("dlq"),
            "FLEET_TOPIC_LATE": self.topic("late"),
            "FLEET_TOPIC_HEARTBEATS": self.topic("heartbeats"),
            "FLEET_TOPIC_SCORECARDS": self.topic("scorecards"),
            "FLEET_TOPIC_PARTITIONS": str(self.partitions),
        }
        env.update(overrides)
        return env


def cluster_addresses(processes: int) -> str:
    """The ``-a`` value for a local cluster of ``processes`` processes (free ports)."""
    return ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))


def cluster_args(process_id: int, addresses: str) -> list[str]:
    """``-i/-a`` arguments for one process of a local multi-process cluster."""
    return ["-i", str(process_id), "-a", addresses]


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes
    partition: int
    offset: int

    def json(self) -> dict[str, object]:
        document: dict[str, object] = json.loads(self.value)
        return document


def consume_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Record]], bool],
    timeout_s: float = 60.0,
    settle_s: float = 1.0,
) -> list[Record]:
    """Read ``topic`` from the beginning until ``done(records)``, then ``settle_s`` more
    (so extra copies show up). High watermarks are not trusted: records are counted."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    partitions: list[int] = []
    while not partitions:
        metadata = admin.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is not None and metadata.error is None:
            partitions = sorted(metadata.partitions)
        elif time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} never appeared")
        else:
            time.sleep(0.2)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "fleetwatch-tests",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    records: list[Record] = []
    settle_until: float | None = None
    try:
        while True:
            now = time.monotonic()
            if settle_until is None and done(records):
                settle_until = now + settle_s
            if settle_until is not None and now >= settle_until:
                return records
            if now > deadline:
                return records
            for message in consumer.consume(10_000, 0.2):
                if message.error() is None:
                    records.append(
                        Record(
                            message.key(), message.value(), message.partition(), message.offset()
                        )
                    )
    finally:
        consumer.close()


def consume_readings(
    bootstrap: str, topic: str, expected_ids: set[str], timeout_s: float = 60.0
) -> list[Record]:
    """Read ``topic`` until every expected event_id arrived (or the timeout), plus a moment
    for extra copies; the caller asserts on what came back."""
    return consume_until(
        bootstrap,
        topic,
        lambda records: {str(r.json()["event_id"]) for r in records} >= expected_ids,
        timeout_s=timeout_s,
    )


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    """Produce (key, value) records and wait until Kafka confirmed every one."""
    from confluent_kafka import Producer

    failures: list[str] = []
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in records:
        producer.produce(
            topic, value, key, on_delivery=lambda e, _m: failures.append(str(e)) if e else None
        )
    assert producer.flush(30) == 0
    assert not failures, failures


def alert_ids(records: list[Record]) -> Counter[str]:
    """How often each alert_id appears among ``records``."""
    return Counter(str(r.json()["alert_id"]) for r in records)


def consume_alerts(
    bootstrap: str, topic: str, expected_ids: set[str], timeout_s: float = 60.0
) -> list[Record]:
    """Read an alerts topic until every expected alert_id arrived (or the timeout)."""
    return consume_until(
        bootstrap,
        topic,
        lambda records: set(alert_ids(records)) >= expected_ids,
        timeout_s=timeout_s,
    )


def uninterrupted_alert_ids(namespace: Namespace, logs: Path, **overrides: str) -> set[str]:
    """The alert_ids of one alerts run over the whole telemetry topic: no recovery, no
    faults. ``overrides`` are extra FLEET_* settings (e.g. another broker, another lateness)."""
    topic = namespace.topic("alerts-reference")
    env = namespace.env(
        FLEET_TOPIC_ALERTS=topic,
        FLEET_TOPIC_LATE=topic + ".late",
        FLEET_KAFKA_TAIL="false",
        **overrides,
    )
    reference = FlowProcess("dataflows.alerts", env, logs / "reference.log").start()
    assert reference.wait(timeout_s=120) == 0, reference.log_tail()
    bootstrap = env["FLEET_KAFKA_BROKERS"]
    return set(
        alert_ids(consume_until(bootstrap, topic, lambda _records: False, timeout_s=5, settle_s=0))
    )


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample a flow's metrics endpoint (Bytewax's API server) serves."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def run_module(
    module: str, args: list[str], env: Mapping[str, str], timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` as an operator runs it from the source tree, its settings
    from ``env`` (none of this process's FLEET_* variables)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**base, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
    )
