"""The bridge on real brokers: simulator -> Mosquitto -> bridge -> Kafka (CONTRACT.md 2-3)."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path

from devtools.mqtt_publisher import publish_paced
from devtools.simulator import FleetConfig, FleetSimulator, SimulatedMessage
from domain.dead_letters import PAYLOAD_REASONS
from domain.readings import encode_canonical
from runtime.settings import MqttUrl
from tests.integration.flows import (
    FlowProcess,
    Namespace,
    cluster_addresses,
    cluster_args,
    consume_readings,
    consume_until,
)


def simulate(namespace: Namespace, count: int, seed: int = 11) -> list[SimulatedMessage]:
    config = FleetConfig(
        trucks=40,
        seed=seed,
        bad_share=0.04,
        resend_share=0.02,
        disorder_s=5.0,
        topic_template=namespace.mqtt_topic_template,
    )
    return list(FleetSimulator(config).messages(count))


def publish(namespace: Namespace, messages: list[SimulatedMessage], rate: float = 0) -> None:
    url = MqttUrl.parse(namespace.brokers.mqtt_url)
    sent = publish_paced(
        url, namespace.brokers.mqtt_protocol, [(m.topic, m.payload) for m in messages], rate
    )
    assert sent == len(messages)


def test_every_message_lands_in_telemetry_or_dlq(namespace: Namespace, logs: Path) -> None:
    messages = simulate(namespace, 6_000)
    valid = [m for m in messages if m.reading is not None]
    bad = [m for m in messages if m.reading is None]
    bridge = FlowProcess("dataflows.bridge", namespace.env(), logs / "bridge.log").start()
    try:
        bridge.wait_for_event("mqtt_subscribed")
        publish(namespace, messages)
        telemetry = consume_until(
            namespace.brokers.kafka_brokers,
            namespace.topic("telemetry"),
            lambda r: len(r) >= len(valid),
        )
        dlq = consume_until(
            namespace.brokers.kafka_brokers, namespace.topic("dlq"), lambda r: len(r) >= len(bad)
        )
    finally:
        assert bridge.stop() == 0, bridge.log_tail()

    # Every valid reading (resends included) arrives once, canonical, keyed by truck.
    assert len(telemetry) == len(valid)
    expected = {m.reading.event_id: m.reading for m in valid if m.reading is not None}
    assert {r.json()["event_id"] for r in telemetry} == set(expected)
    for record in telemetry:
        reading = expected[str(record.json()["event_id"])]
        assert record.key == reading.truck_id.encode()
        assert record.value == encode_canonical(reading)

    # Every bad payload is dead-lettered once, with the reason the contract gives it.
    assert len(dlq) == len(bad)
    expected_reasons = Counter(str(m.expected_reason) for m in bad)
    assert Counter(str(r.json()["reason"]) for r in dlq) == expected_reasons
    payload_reasons = {str(reason) for reason in PAYLOAD_REASONS}
    assert set(expected_reasons) == payload_reasons
    raws = {base64.b64decode(str(r.json()["raw"])) for r in dlq}
    assert all(m.payload in raws for m in bad), "each original whole"
    assert all(r.json()["stage"] == "bridge" and r.json()["detail"] for r in dlq)


def test_two_processes_share_the_subscription(namespace: Namespace, logs: Path) -> None:
    messages = simulate(namespace, 3_000, seed=5)
    valid_ids = {m.reading.event_id for m in messages if m.reading is not None}
    addresses = cluster_addresses(2)
    bridges = [
        FlowProcess(
            "dataflows.bridge",
            namespace.env(),
            logs / f"bridge-{i}.log",
            cluster_args(i, addresses),
        ).start()
        for i in range(2)
    ]
    try:
        for bridge in bridges:
            bridge.wait_for_event("mqtt_subscribed")
        publish(namespace, messages)
        telemetry = consume_readings(
            namespace.brokers.kafka_brokers, namespace.topic("telemetry"), valid_ids
        )
    finally:
        for bridge in bridges:
            bridge.stop()
    assert {r.json()["event_id"] for r in telemetry} == valid_ids
    client_ids = {
        e["client_id"]
        for b in bridges
        for e in b.log_events()
        if e.get("event") == "mqtt_subscribed"
    }
    assert client_ids == {f"{namespace.name}-bridge-0", f"{namespace.name}-bridge-1"}


def test_retiring_worker_leaves_the_share_group(namespace: Namespace, logs: Path) -> None:
    """Two independent bridge processes (own client ids, one share group); after a retiring
    one stops with SIGTERM the broker must not assign it messages any more (Mosquitto would
    queue them for its offline session until it came back)."""
    messages = simulate(namespace, 2_000, seed=8)
    before, after = messages[:1_000], messages[1_000:]
    bridges = [
        FlowProcess(
            "dataflows.bridge",
            namespace.env(
                FLEET_MQTT_CLIENT_ID=f"{namespace.name}-pod-{i}",
                FLEET_MQTT_LEAVE_ON_STOP="true" if i == 1 else "false",
            ),
            logs / f"bridge-{i}.log",
        ).start()
        for i in range(2)
    ]
    try:
        for bridge in bridges:
            bridge.wait_for_event("mqtt_subscribed")
        publish(namespace, before)
        assert bridges[1].stop() == 0
        closed = [e for e in bridges[1].log_events() if e.get("event") == "mqtt_closed"]
        assert closed
        assert closed[0]["session_ended"] is True
        publish(namespace, after)
        expected = {m.reading.event_id for m in messages if m.reading is not None}
        telemetry = consume_readings(
            namespace.brokers.kafka_brokers, namespace.topic("telemetry"), expected, timeout_s=30
        )
    finally:
        for bridge in bridges:
            bridge.stop()
    assert {r.json()["event_id"] for r in telemetry} == expected


def test_stopping_the_only_bridge_loses_nothing(namespace: Namespace, logs: Path) -> None:
    """A graceful stop keeps the session: what is published while no bridge runs is queued
    by the broker and delivered when the bridge is back."""
    messages = simulate(namespace, 1_000, seed=9)
    before, during = messages[:500], messages[500:]
    bridge = FlowProcess("dataflows.bridge", namespace.env(), logs / "bridge.log").start()
    bridge.wait_for_event("mqtt_subscribed")
    publish(namespace, before)
    assert bridge.stop() == 0
    publish(namespace, during)
    bridge = FlowProcess("dataflows.bridge", namespace.env(), logs / "bridge.log").start()
    expected = {m.reading.event_id for m in messages if m.reading is not None}
    try:
        telemetry = consume_readings(
            namespace.brokers.kafka_brokers, namespace.topic("telemetry"), expected, timeout_s=30
        )
    finally:
        bridge.stop()
    assert {r.json()["event_id"] for r in telemetry} == expected
