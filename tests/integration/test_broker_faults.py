"""Broker faults: Kafka unreachable at start, Mosquitto restarted mid-run, Kafka frozen
mid-run, Kafka away for longer than the delivery budget, a topic deleted, an alert Kafka
refuses. Flows retry with clear logs, or stop with one ``kafka_delivery_failed`` line and
exit code KAFKA_DELIVERY_EXIT_CODE (never a Rust panic); nothing is skipped."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from bytewax.recovery import init_db_dir
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from connectors.kafka import KAFKA_DELIVERY_EXIT_CODE
from devtools.localbrokers import (
    BrokerProcess,
    LocalBrokers,
    free_port,
    mosquitto_broker,
    tansu_broker,
)
from devtools.mqtt_publisher import publish_paced
from devtools.simulator import FleetConfig, FleetSimulator, SimulatedMessage
from domain.readings import Reading, encode_canonical
from runtime.settings import MqttUrl
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
    code = failing.wait(timeout_s=60)
    assert code == KAFKA_DELIVERY_EXIT_CODE, f"exit {code}: the flow must stop, not skip"
    failed = stopped_cleanly(failing)
    assert (failed["topic"], failed["error_name"]) == (
        namespace.topic("alerts"),
        "MSG_SIZE_TOO_LARGE",
    )
    assert failed["failure"] == "refused"
    assert "message.max.bytes" in failed["what_to_do"]
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


def stopped_cleanly(flow: FlowProcess) -> dict[str, object]:
    """The one ``kafka_delivery_failed`` line of a flow that stopped on a delivery failure;
    and no Rust panic, no traceback."""
    failed = [e for e in flow.log_events() if e.get("event") == "kafka_delivery_failed"]
    assert len(failed) == 1, flow.log_tail(60)
    text = flow.log_path.read_text(errors="replace")
    assert "panicked" not in text
    assert "Traceback" not in text
    assert failed[0]["level"] == "error"
    assert failed[0]["exit_code"] == KAFKA_DELIVERY_EXIT_CODE
    return failed[0]


def thaw(broker: BrokerProcess) -> None:
    if broker.process is not None and broker.process.poll() is None:
        broker.process.send_signal(signal.SIGCONT)


def fleet(namespace: Namespace, count: int, seed: int) -> list[SimulatedMessage]:
    config = FleetConfig(
        trucks=10, seed=seed, bad_share=0.05, topic_template=namespace.mqtt_topic_template
    )
    return list(FleetSimulator(config).messages(count))


def publish(namespace: Namespace, messages: list[SimulatedMessage]) -> None:
    url = MqttUrl.parse(namespace.brokers.mqtt_url)
    acked = publish_paced(
        url, namespace.brokers.mqtt_protocol, [(m.topic, m.payload) for m in messages], 0
    )
    assert acked == len(messages)


def assert_all_stored(
    bootstrap: str, namespace: Namespace, messages: list[SimulatedMessage]
) -> None:
    """Every valid reading on the telemetry topic, every bad payload on the DLQ."""
    expected = {m.reading.event_id for m in messages if m.reading is not None}
    telemetry = consume_readings(bootstrap, namespace.topic("telemetry"), expected, timeout_s=90)
    assert {str(r.json()["event_id"]) for r in telemetry} == expected
    bad = sum(m.reading is None for m in messages)
    assert bad > 0
    dead = consume_until(
        bootstrap, namespace.topic("dlq"), lambda r: len(r) >= bad, timeout_s=30, settle_s=0
    )
    assert len(dead) >= bad
    assert {r.json()["reason"] for r in dead} <= {str(m.expected_reason) for m in messages}


def test_bridge_rides_out_a_frozen_kafka(brokers: LocalBrokers, logs: Path, tmp_path: Path) -> None:
    """Kafka stops answering for 10 s (SIGSTOP) while readings arrive: librdkafka retries
    within the delivery budget, the bridge says so (``kafka_delivery_retrying``) and goes on;
    every reading arrives once Kafka is back. (A restarted Tansu would be a new, empty broker:
    its store is memory. The freeze is the outage.)"""
    kafka = tansu_broker(tmp_path)
    kafka.start()
    bootstrap = f"127.0.0.1:{kafka.port}"
    namespace = Namespace(LocalBrokers(tmp_path, brokers.mqtt, kafka, bootstrap))
    messages = fleet(namespace, 2_000, seed=21)
    bridge = FlowProcess("dataflows.bridge", namespace.env(), logs / "bridge.log").start()
    try:
        bridge.wait_for_event("mqtt_subscribed", timeout_s=60)
        publish(namespace, messages[:1_000])
        consume_readings(
            bootstrap,
            namespace.topic("telemetry"),
            {m.reading.event_id for m in messages[:1_000] if m.reading is not None},
        )
        assert kafka.process is not None
        kafka.process.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        publish(namespace, messages[1_000:])
        bridge.wait_for_event("kafka_delivery_retrying", timeout_s=30)
        time.sleep(max(0.0, 10 - (time.monotonic() - frozen_at)))
        kafka.process.send_signal(signal.SIGCONT)
        assert_all_stored(bootstrap, namespace, messages)
        assert bridge.process is not None
        assert bridge.process.poll() is None, "the bridge rode the outage out"
        bridge.wait_for_event("kafka_delivery_resumed", timeout_s=30)
    finally:
        code = bridge.stop()
        thaw(kafka)
        kafka.stop()
    assert code == 0
    events = [e.get("event") for e in bridge.log_events()]
    assert "kafka_delivery_failed" not in events
    [retrying, *_] = [e for e in bridge.log_events() if e.get("event") == "kafka_delivery_retrying"]
    assert retrying["level"] == "warning"
    assert retrying["budget_s"] == 600
    assert int(str(retrying["waiting_records"])) > 0


def test_bridge_stops_when_kafka_stays_away_past_the_budget_and_loses_nothing(
    brokers: LocalBrokers, logs: Path, tmp_path: Path
) -> None:
    """With a 4 s budget, a frozen Kafka stops the bridge: one clear line, exit code
    KAFKA_DELIVERY_EXIT_CODE. The unconfirmed readings were not acknowledged to MQTT, so
    the restarted bridge (same session) stores them all once Kafka is back."""
    kafka = tansu_broker(tmp_path)
    kafka.start()
    bootstrap = f"127.0.0.1:{kafka.port}"
    namespace = Namespace(LocalBrokers(tmp_path, brokers.mqtt, kafka, bootstrap))
    messages = fleet(namespace, 1_000, seed=22)
    impatient = namespace.env(FLEET_KAFKA_DELIVERY_BUDGET_S="4")
    bridge = FlowProcess("dataflows.bridge", impatient, logs / "impatient.log").start()
    again = FlowProcess("dataflows.bridge", namespace.env(), logs / "again.log")
    try:
        bridge.wait_for_event("mqtt_subscribed", timeout_s=60)
        publish(namespace, messages[:500])
        consume_readings(
            bootstrap,
            namespace.topic("telemetry"),
            {m.reading.event_id for m in messages[:500] if m.reading is not None},
        )
        assert kafka.process is not None
        kafka.process.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        publish(namespace, messages[500:])
        code = bridge.wait(timeout_s=60)
        stopped_after_s = time.monotonic() - frozen_at
        kafka.process.send_signal(signal.SIGCONT)
        assert code == KAFKA_DELIVERY_EXIT_CODE, bridge.log_tail()
        failed = stopped_cleanly(bridge)
        assert (failed["failure"], failed["error_name"]) == ("out_of_budget", "_MSG_TIMED_OUT")
        assert "budget of 4 s" in str(failed["what_to_do"])
        assert 4 <= stopped_after_s < 30
        print(f"budget 4 s: stopped {stopped_after_s:.1f} s into the outage")  # README figure
        again.start()
        assert_all_stored(bootstrap, namespace, messages)
    finally:
        thaw(kafka)
        bridge.stop()
        again.stop()
        kafka.stop()


def test_bridge_stops_when_its_topic_is_deleted_and_loses_nothing(
    namespace: Namespace, logs: Path
) -> None:
    """A delivery report Kafka fails for good (the topic was deleted under the running
    bridge, auto-creation off) stops the bridge from its delivery thread, with no new batch
    to carry the error. The restarted bridge creates the topic again and its MQTT session
    hands it every reading that was not acknowledged. (Metadata is refreshed every second
    and an unknown topic given up after 2 s, instead of 5 min and 30 s, to keep it short.)"""
    bootstrap = namespace.brokers.kafka_brokers
    messages = fleet(namespace, 600, seed=23)
    before, after = messages[:200], messages[200:]
    env = namespace.env(
        FLEET_KAFKA_ALLOW_AUTO_CREATE_TOPICS="false",
        FLEET_KAFKA_TOPIC_METADATA_REFRESH_INTERVAL_MS="1000",
        FLEET_KAFKA_TOPIC_METADATA_PROPAGATION_MAX_MS="2000",
    )
    bridge = FlowProcess("dataflows.bridge", env, logs / "bridge.log").start()
    again = FlowProcess("dataflows.bridge", env, logs / "again.log")
    telemetry = namespace.topic("telemetry")
    try:
        bridge.wait_for_event("mqtt_subscribed", timeout_s=60)
        publish(namespace, before)
        consume_readings(
            bootstrap, telemetry, {m.reading.event_id for m in before if m.reading is not None}
        )
        admin = AdminClient({"bootstrap.servers": bootstrap})  # kept: its futures need it
        admin.delete_topics([telemetry])[telemetry].result()
        time.sleep(2.5)  # a metadata refresh sees it gone
        publish(namespace, after)
        code = bridge.wait(timeout_s=60)
        assert code == KAFKA_DELIVERY_EXIT_CODE, bridge.log_tail()
        failed = stopped_cleanly(bridge)
        assert failed["topic"] == telemetry
        assert failed["failure"] == "missing_topic"
        assert "create it" in str(failed["what_to_do"])
        again.start()
        assert_all_stored(bootstrap, namespace, after)
    finally:
        bridge.stop()
        again.stop()
