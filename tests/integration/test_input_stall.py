"""An outage is not silence (issue 15, item 1): while the input is stalled, for longer than
the lateness, the alerts flow evaluates nothing early, so a disordered reading that was
still upstream arrives on time afterwards. Stalled two ways: the Kafka broker frozen
(SIGSTOP), and the bridge stopped while its readings queue in Mosquitto.

The readings: five violations of one truck at t+0..4 s and one at t+5 s; the one at t+4 s
comes only after the outage. Evaluated in order, the sustained alert covers t+0..4 s. A
flush during the outage would evaluate t+0..3 and t+5 (the alert then covering those) and
send t+4 to the late topic."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from devtools.localbrokers import tansu_broker
from devtools.mqtt_publisher import publish_paced
from domain.readings import Reading, encode_canonical
from runtime.settings import MqttUrl
from tests.builders import BEGINNING_MS
from tests.integration.flows import FlowProcess, Namespace, consume_until, produce

pytestmark = pytest.mark.integration

LATENESS_S = 15
OUTAGE_S = 25  # longer than the lateness


def _readings(truck: str) -> tuple[list[Reading], Reading]:
    at = [0, 1, 2, 3, 5]
    before = [Reading(f"{truck}-{s}", truck, BEGINNING_MS + s * 1000, 95.0) for s in at]
    return before, Reading(f"{truck}-4", truck, BEGINNING_MS + 4000, 95.0)


def _expect_one_alert_covering_the_disordered_reading(
    bootstrap: str, namespace: Namespace, truck: str, late_reading: Reading
) -> None:
    alerts = consume_until(bootstrap, namespace.topic("alerts"), lambda r: len(r) >= 1, 60)
    assert [a.json()["event_ids"] for a in alerts] == [[f"{truck}-{s}" for s in range(5)]]
    late = consume_until(bootstrap, namespace.topic("late"), lambda r: False, 3, 0)
    assert late == [], f"{late_reading.event_id} went to the late topic"


def test_a_frozen_broker_is_not_a_quiet_fleet(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    kafka = tansu_broker(tmp_path)
    kafka.start()
    bootstrap = f"127.0.0.1:{kafka.port}"
    env = namespace.env(FLEET_KAFKA_BROKERS=bootstrap, FLEET_ALLOWED_LATENESS_S=str(LATENESS_S))
    alerts = FlowProcess("dataflows.alerts", env, logs / "alerts.log").start()
    before, disordered = _readings("T1")
    try:
        alerts.wait_for_event("history_loaded", timeout_s=60)
        produce(
            bootstrap, namespace.topic("telemetry"), [(b"T1", encode_canonical(r)) for r in before]
        )
        time.sleep(2)  # read by the flow
        assert kafka.process is not None
        kafka.process.send_signal(signal.SIGSTOP)
        try:
            time.sleep(OUTAGE_S)
        finally:
            kafka.process.send_signal(signal.SIGCONT)
        produce(bootstrap, namespace.topic("telemetry"), [(b"T1", encode_canonical(disordered))])
        _expect_one_alert_covering_the_disordered_reading(bootstrap, namespace, "T1", disordered)
        assert alerts.process is not None
        assert alerts.process.poll() is None, alerts.log_tail()
    finally:
        alerts.stop()
        kafka.stop()


def test_a_stopped_bridge_is_not_a_quiet_fleet(namespace: Namespace, logs: Path) -> None:
    brokers = namespace.brokers
    env = namespace.env(FLEET_ALLOWED_LATENESS_S=str(LATENESS_S))
    url = MqttUrl.parse(brokers.mqtt_url)
    topic = namespace.mqtt_topic_template.format(truck_id="T2")
    before, disordered = _readings("T2")
    bridge = FlowProcess("dataflows.bridge", env, logs / "bridge.log").start()
    alerts = FlowProcess("dataflows.alerts", env, logs / "alerts.log").start()
    try:
        bridge.wait_for_event("mqtt_subscribed", timeout_s=60)
        alerts.wait_for_event("history_loaded", timeout_s=60)
        publish_paced(url, brokers.mqtt_protocol, [(topic, encode_canonical(r)) for r in before], 0)
        consume_until(
            brokers.kafka_brokers, namespace.topic("telemetry"), lambda r: len(r) >= 5, 30
        )
        time.sleep(2)  # read by the alerts flow
        assert bridge.stop() == 0, bridge.log_tail()  # keeps its session: Mosquitto queues
        publish_paced(url, brokers.mqtt_protocol, [(topic, encode_canonical(disordered))], 0)
        time.sleep(OUTAGE_S)
        bridge = FlowProcess("dataflows.bridge", env, logs / "bridge-2.log").start()
        _expect_one_alert_covering_the_disordered_reading(
            brokers.kafka_brokers, namespace, "T2", disordered
        )
        assert alerts.process is not None
        assert alerts.process.poll() is None, alerts.log_tail()
    finally:
        bridge.stop()
        alerts.stop()
