"""Broker faults: Kafka unreachable at start, Mosquitto restarted mid-run, an alert Kafka
refuses. Flows retry with clear logs or stop loudly with a non-zero exit; nothing is skipped."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from bytewax.recovery import init_db_dir

from connectors.mqtt_publisher import publish_paced
from domain.readings import Reading, encode_canonical
from fleetwatch.localbrokers import LocalBrokers, free_port, mosquitto_broker, tansu_broker
from fleetwatch.settings import MqttUrl
from fleetwatch.simulator import FleetConfig, FleetSimulator
from tests.builders import BEGINNING_MS
from tests.integration.flows import (
    FlowProcess,
    Namespace,
    alert_ids,
    consume_alerts,
    consume_readings,
    consume_until,
    produce,
    uninterrupted_alert_ids,
)
from tests.integration.load import SteadyLoad


def spikes(truck: str, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` instant over-speeds 11 minutes apart (past each cooldown), then a release."""
    readings = [
        Reading(f"{truck}-s{i}", truck, BEGINNING_MS + i * 660_000, 140.0) for i in range(count)
    ]
    readings.append(Reading(f"{truck}-end", truck, BEGINNING_MS + count * 660_000, 60.0))
    return [(truck.encode(), encode_canonical(r)) for r in readings]


def test_kafka_unreachable_at_start_is_waited_for(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = namespace.env(FLEET_KAFKA_BROKERS=f"127.0.0.1:{port}")
    flow = FlowProcess("dataflows.alerts", env, logs / "alerts.log").start()
    kafka = tansu_broker(tmp_path, port)
    try:
        flow.wait_for_event("kafka_unreachable", count=2, timeout_s=30)
        kafka.start()
        flow.wait_for_event("history_loaded", timeout_s=60)
        produce(f"127.0.0.1:{port}", namespace.topic("telemetry"), spikes("T1", 3))
        alerts = consume_until(
            f"127.0.0.1:{port}", namespace.topic("alerts"), lambda r: len(r) >= 3, timeout_s=60
        )
        assert len(alerts) == 3
    finally:
        flow.stop()
        kafka.stop()


def test_kafka_unreachable_too_long_stops_with_a_clear_message(
    namespace: Namespace, logs: Path
) -> None:
    env = namespace.env(
        FLEET_KAFKA_BROKERS=f"127.0.0.1:{free_port()}", FLEET_KAFKA_STARTUP_TIMEOUT_S="3"
    )
    flow = FlowProcess("dataflows.alerts", env, logs / "alerts.log").start()
    assert flow.wait(timeout_s=60) != 0
    assert "answered for 3 s" in flow.log_tail(60)


def test_mosquitto_restart_mid_run_loses_nothing(
    brokers: LocalBrokers, logs: Path, tmp_path: Path
) -> None:
    (tmp_path / "mqtt").mkdir()
    mqtt = mosquitto_broker(tmp_path / "mqtt", free_port())  # its own broker: this test restarts it
    mqtt.start()
    namespace = Namespace(LocalBrokers(tmp_path, mqtt, None, brokers.kafka_brokers))
    config = FleetConfig(trucks=10, seed=12, topic_template=namespace.mqtt_topic_template)
    messages = list(FleetSimulator(config).messages(2_000))
    before, after = messages[:1_000], messages[1_000:]
    url = MqttUrl.parse(namespace.brokers.mqtt_url)
    bridge = FlowProcess("dataflows.bridge", namespace.env(), logs / "bridge.log").start()
    try:
        bridge.wait_for_event("mqtt_subscribed")
        publish_paced(url, "5", [(m.topic, m.payload) for m in before], 0)
        mqtt.stop()  # a clean broker restart: it saves its sessions and comes back
        time.sleep(1)
        mqtt.start()
        bridge.wait_for_event("mqtt_subscribed", count=2, timeout_s=60)
        publish_paced(url, "5", [(m.topic, m.payload) for m in after], 0)
        expected = {m.reading.event_id for m in messages if m.reading is not None}
        telemetry = consume_readings(
            brokers.kafka_brokers, namespace.topic("telemetry"), expected, timeout_s=60
        )
    finally:
        bridge.stop()
        mqtt.stop()
    assert {r.json()["event_id"] for r in telemetry} == expected
    events = [e.get("event") for e in bridge.log_events()]
    assert "mqtt_disconnected" in events


def test_undeliverable_alert_stops_the_flow_and_is_produced_after_the_fix(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    args = ["-r", str(recovery), "-s", "1", "-b", "0"]
    # Five violations with 128-char event ids: each reading is ~260 bytes, their alert ~1.2 kB.
    readings = [
        Reading(f"{i}".rjust(128, "x"), "T7", BEGINNING_MS + i * 1_000, 95.0) for i in range(5)
    ]
    readings.append(Reading("release", "T7", BEGINNING_MS + 60_000, 60.0))
    produce(
        namespace.brokers.kafka_brokers,
        namespace.topic("telemetry"),
        [(b"T7", encode_canonical(r)) for r in readings],
    )
    strict = namespace.env(FLEET_KAFKA_MESSAGE_MAX_BYTES="1000", FLEET_KAFKA_TAIL="false")
    failing = FlowProcess("dataflows.alerts", strict, logs / "strict.log", args).start()
    assert failing.wait(timeout_s=60) != 0, "the flow must stop, not skip the alert"
    assert "too large" in failing.log_tail(80).lower()
    fixed = FlowProcess(
        "dataflows.alerts", namespace.env(FLEET_KAFKA_TAIL="false"), logs / "fixed.log", args
    ).start()
    assert fixed.wait(timeout_s=60) == 0, fixed.log_tail()
    alerts = consume_until(
        namespace.brokers.kafka_brokers,
        namespace.topic("alerts"),
        lambda r: False,
        timeout_s=3,
        settle_s=0,
    )
    assert [r.json()["event_ids"] for r in alerts] == [[r.event_id for r in readings[:5]]]


def test_kafka_outage_mid_run_is_ridden_out(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    """The broker stops answering for 8 s (SIGSTOP: connections hang, data kept) while
    readings keep coming; the flow retries and ends with the uninterrupted run's alerts.
    (The bundled Tansu keeps data in memory only, so a restarted one would be a new, empty
    broker: an outage is simulated by freezing it.)"""
    kafka = tansu_broker(tmp_path)
    kafka.start()
    bootstrap = f"127.0.0.1:{kafka.port}"
    env = namespace.env(FLEET_KAFKA_BROKERS=bootstrap)
    try:
        load = SteadyLoad(
            bootstrap, namespace.topic("telemetry"), count=24_000, rate=2_000, seed=9
        ).start()
        flow = FlowProcess("dataflows.alerts", env, logs / "alerts.log").start()
        flow.wait_for_event("history_loaded")
        time.sleep(3)
        assert kafka.process is not None
        kafka.process.send_signal(signal.SIGSTOP)
        time.sleep(8)
        kafka.process.send_signal(signal.SIGCONT)
        load.join()
        expected = uninterrupted_alert_ids(namespace, logs, FLEET_KAFKA_BROKERS=bootstrap)
        try:
            records = consume_alerts(bootstrap, namespace.topic("alerts"), expected)
        finally:
            assert flow.process is not None
            assert flow.process.poll() is None, "the flow rode the outage out"
            flow.stop()
        assert len(expected) > 10
        assert set(alert_ids(records)) == expected
    finally:
        kafka.stop()
