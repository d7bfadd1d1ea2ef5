"""The bridge on the pure-Python amqtt broker (MQTT 3.1.1), the demo's fallback where no
Mosquitto is installed: every reading arrives while the bridge runs.

amqtt 0.12 neither redelivers unacknowledged messages nor queues messages for an offline
persistent session, so the bridge's zero-loss-across-restarts guarantee needs a broker that
does (Mosquitto, EMQX, HiveMQ...); that is tested in test_bridge_faults.py on Mosquitto."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.localbrokers import LocalBrokers, amqtt_broker
from devtools.mqtt_publisher import publish_paced
from devtools.simulator import FleetConfig, FleetSimulator
from runtime.settings import MqttUrl
from tests.integration.flows import FlowProcess, Namespace, consume_readings, consume_until


@pytest.fixture
def amqtt_namespace(brokers: LocalBrokers, tmp_path: Path) -> Iterator[Namespace]:
    broker = amqtt_broker(tmp_path)
    broker.start()
    try:
        yield Namespace(LocalBrokers(tmp_path, broker, None, brokers.kafka_brokers))
    finally:
        broker.stop()


def test_bridge_on_amqtt_delivers_everything(amqtt_namespace: Namespace, logs: Path) -> None:
    namespace = amqtt_namespace
    assert namespace.brokers.mqtt_protocol == "3.1.1"
    config = FleetConfig(
        trucks=10, seed=4, bad_share=0.05, topic_template=namespace.mqtt_topic_template
    )
    messages = list(FleetSimulator(config).messages(1_500))
    expected = {m.reading.event_id for m in messages if m.reading is not None}
    bad = sum(m.reading is None for m in messages)
    url = MqttUrl.parse(namespace.brokers.mqtt_url)
    bridge = FlowProcess("dataflows.bridge", namespace.env(), logs / "bridge.log").start()
    try:
        bridge.wait_for_event("mqtt_subscribed")
        publish_paced(url, "3.1.1", [(m.topic, m.payload) for m in messages], 0)
        telemetry = consume_readings(
            namespace.brokers.kafka_brokers, namespace.topic("telemetry"), expected, timeout_s=60
        )
        dlq = consume_until(
            namespace.brokers.kafka_brokers, namespace.topic("dlq"), lambda r: len(r) >= bad
        )
    finally:
        assert bridge.stop() == 0
    assert {r.json()["event_id"] for r in telemetry} == expected
    assert len(dlq) == bad
