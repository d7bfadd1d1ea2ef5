"""The bridge under faults: kill -9 mid-stream, a bad setting, an undeliverable record."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from devtools.mqtt_publisher import MqttPublisher, publish_paced
from devtools.simulator import FleetConfig, FleetSimulator
from runtime.settings import MqttUrl
from tests.builders import payload
from tests.integration.flows import FlowProcess, Namespace, consume_readings, consume_until
from tests.integration.reports import report


def test_kill_9_loses_nothing(
    namespace: Namespace, logs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = FleetConfig(trucks=50, seed=21, topic_template=namespace.mqtt_topic_template)
    messages = list(FleetSimulator(config).messages(12_000))
    expected_ids = {m.reading.event_id for m in messages if m.reading is not None}
    env = namespace.env()
    bridge = FlowProcess("dataflows.bridge", env, logs / "bridge.log").start()
    bridge.wait_for_event("mqtt_subscribed")

    published: list[int] = []
    publisher = threading.Thread(
        target=lambda: published.append(
            publish_paced(
                MqttUrl.parse(namespace.brokers.mqtt_url),
                namespace.brokers.mqtt_protocol,
                [(m.topic, m.payload) for m in messages],
                rate=3_000,
            )
        )
    )
    started = time.monotonic()
    publisher.start()
    kills = 0
    for kill_at in (1.0, 2.5):  # seconds into the stream; the publisher runs ~4 s
        time.sleep(max(0.0, started + kill_at - time.monotonic()))
        bridge.kill()
        kills += 1
        time.sleep(0.3)
        bridge = FlowProcess("dataflows.bridge", env, logs / "bridge.log").start()
    publisher.join(timeout=120)
    assert published == [len(messages)], "the broker acknowledged every publish"
    try:
        telemetry = consume_readings(
            namespace.brokers.kafka_brokers,
            namespace.topic("telemetry"),
            expected_ids,
            timeout_s=90,
        )
    finally:
        bridge.stop()
    arrived = Counter(str(r.json()["event_id"]) for r in telemetry)
    lost = expected_ids - set(arrived)
    duplicates = sum(n - 1 for n in arrived.values())
    report(
        "bridge-kill",
        {"published": len(messages), "kills": kills, "lost": len(lost), "duplicates": duplicates},
        capsys,
    )
    assert not lost, f"{len(lost)} readings lost, e.g. {sorted(lost)[:5]}"
    assert kills == 2


def test_bad_kafka_setting_fails_at_start_naming_the_variable(
    namespace: Namespace, logs: Path
) -> None:
    bridge = FlowProcess(
        "dataflows.bridge",
        namespace.env(FLEET_KAFKA_SECURITY_PROTOCOL="carrier_pigeon"),
        logs / "b.log",
    ).start()
    assert bridge.wait(timeout_s=60) != 0
    assert "FLEET_KAFKA_SECURITY_PROTOCOL" in bridge.log_tail(80)


def test_bad_setting_fails_at_start_naming_the_variable(namespace: Namespace, logs: Path) -> None:
    bridge = FlowProcess(
        "dataflows.bridge", namespace.env(FLEET_MQTT_URL="http://x"), logs / "b.log"
    ).start()
    assert bridge.wait(timeout_s=60) != 0
    assert "FLEET_MQTT_URL" in bridge.log_tail(80)


def test_undeliverable_record_stops_the_flow_and_is_kept_by_mqtt(
    namespace: Namespace, logs: Path
) -> None:
    """A record Kafka refuses is never acknowledged to MQTT: the flow fails loudly, and once
    the cause is fixed the broker redelivers the message."""
    # A payload over 64 KiB is dead-lettered with its first 64 KiB, ~88 KB of JSON: more than
    # the 20 kB this producer may send.
    oversized = payload(truck_id="T1", event_id="huge-1", blob="x" * 70_000)
    small = payload(truck_id="T1", event_id="small-1")
    topic = namespace.mqtt_topic_template.format(truck_id="T1")
    strict = namespace.env(FLEET_KAFKA_MESSAGE_MAX_BYTES="20000")
    bridge = FlowProcess("dataflows.bridge", strict, logs / "strict.log").start()
    bridge.wait_for_event("mqtt_subscribed")
    publisher = MqttPublisher(
        MqttUrl.parse(namespace.brokers.mqtt_url), namespace.brokers.mqtt_protocol
    )
    try:
        publisher.publish(topic, small)
        publisher.publish(topic, oversized)
        publisher.wait_for_acks(2)
    finally:
        publisher.close()
    assert bridge.wait(timeout_s=60) != 0, "the flow must stop, not skip the record"
    assert "too large" in bridge.log_tail(200).lower()

    fixed = FlowProcess("dataflows.bridge", namespace.env(), logs / "fixed.log").start()
    try:
        dlq = consume_until(
            namespace.brokers.kafka_brokers,
            namespace.topic("dlq"),
            lambda r: len(r) >= 1,
            timeout_s=60,
        )
        telemetry = consume_until(
            namespace.brokers.kafka_brokers,
            namespace.topic("telemetry"),
            lambda r: len(r) >= 1,
            timeout_s=30,
        )
    finally:
        fixed.stop()
    assert [json.loads(r.value)["reason"] for r in dlq] == ["too_large"]
    assert "small-1" in {json.loads(r.value)["event_id"] for r in telemetry}
