"""Hostile payloads spread through a normal stream, on real brokers, with the bridge, the
alerts flow, the archive and the notifier running together (issue 14): no flow exits,
every message is accounted for (telemetry or DLQ, once each), the alerts are exactly the
reference's, the lake holds exactly the valid readings, one e-mail per alert."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from devtools.email_receiver import EmailReceiver
from devtools.mqtt_publisher import publish_paced
from devtools.simulator import FleetConfig, FleetSimulator
from domain.readings import Reading, encode_canonical
from domain.rules import RuleConfig
from runtime.settings import MqttUrl
from tests.integration.flows import FlowProcess, Namespace, consume_until, produce
from tests.reference import reference_alerts
from tests.unit.test_hostile_input import CORPUS

pytestmark = pytest.mark.integration

SECRET = "a-test-signing-secret-of-32-bytes"
YEAR_MS = 365 * 86_400_000


def _hostile_over_mqtt(now_ms: int) -> list[bytes]:
    """Every refused payload of the unit corpus, and a reading five years ahead."""
    payloads = [raw for _name, raw, reason in CORPUS if reason is not None]
    future = Reading("far-future", "T000", now_ms + 5 * YEAR_MS, 150.0)
    payloads.append(json.dumps(json.loads(encode_canonical(future))).encode())
    return payloads


def _hostile_on_kafka(now_ms: int) -> list[bytes]:
    """Records another producer might write to the telemetry topic, bypassing the bridge."""
    future = Reading("kafka-far-future", "T001", now_ms + 5 * YEAR_MS, 150.0)
    deep = b'{"event_id":"d","truck_id":"T1","ts":0,"speed_kmh":1,"x":' + b"[" * 50_000
    return [encode_canonical(future), b"\xff\xfe not json", deep + b"]" * 50_000 + b"}", b""]


def _hostile_alerts() -> list[bytes]:
    return [
        b"not an alert",
        json.dumps({"alert_id": "x" * 32, "rule": "instant_overspeed", "truck_id": "T1",
                    "window_end": "9999-12-31T23:59:59.999-01:00"}).encode(),
    ]  # fmt: skip


def test_hostile_input_in_a_normal_stream(namespace: Namespace, logs: Path, tmp_path: Path) -> None:
    brokers = namespace.brokers
    config = FleetConfig(
        trucks=20,
        seed=23,
        bad_share=0.02,
        resend_share=0.03,
        disorder_s=4.0,
        episode_chance=0.04,
        spike_chance=0.004,
        topic_template=namespace.mqtt_topic_template,
    )
    simulated = list(FleetSimulator(config).messages(3_000))
    now_ms = time.time_ns() // 1_000_000
    hostile_mqtt = _hostile_over_mqtt(now_ms)
    hostile_kafka = _hostile_on_kafka(now_ms)
    hostile_alerts = _hostile_alerts()
    topic = namespace.mqtt_topic_template.format(truck_id="T000")
    published = [(m.topic, m.payload) for m in simulated]
    for k, raw in enumerate(hostile_mqtt):  # spread through the stream
        published.insert((k + 1) * len(published) // (len(hostile_mqtt) + 1), (topic, raw))
    readings = [m.reading for m in simulated if m.reading is not None]
    expected = reference_alerts(readings, RuleConfig())
    assert len(expected) > 5

    lake = tmp_path / "lake"
    receiver = EmailReceiver(SECRET.encode()).start()
    env = namespace.env(FLEET_LAKE_DIR=str(lake), FLEET_LAKE_ROLL_S="1")
    flows = [
        FlowProcess("dataflows.bridge", env, logs / "bridge.log"),
        FlowProcess("dataflows.alerts", env, logs / "alerts.log"),
        FlowProcess("dataflows.archive", env, logs / "archive.log"),
        FlowProcess(
            "dataflows.notify",
            env | {"FLEET_NOTIFY_URL": receiver.url, "FLEET_NOTIFY_SECRET": SECRET},
            logs / "notify.log",
        ),
    ]
    try:
        for flow in flows:
            flow.start()
        flows[0].wait_for_event("mqtt_subscribed")
        produce(
            brokers.kafka_brokers,
            namespace.topic("telemetry"),
            [(b"T001", v) for v in hostile_kafka[:2]],
        )
        publish_paced(MqttUrl.parse(brokers.mqtt_url), brokers.mqtt_protocol, published, 0)
        produce(
            brokers.kafka_brokers,
            namespace.topic("telemetry"),
            [(b"T001", v) for v in hostile_kafka[2:]],
        )
        produce(
            brokers.kafka_brokers, namespace.topic("alerts"), [(None, v) for v in hostile_alerts]
        )

        bridge_dead = len(simulated) - len(readings) + len(hostile_mqtt)
        dead_expected = {
            "bridge": bridge_dead,
            "alerts": len(hostile_kafka),
            "archive": len(hostile_kafka),
            "notify": len(hostile_alerts),
        }
        dlq = consume_until(
            brokers.kafka_brokers,
            namespace.topic("dlq"),
            lambda r: len(r) >= sum(dead_expected.values()),
            timeout_s=120,
        )
        alerts = consume_until(
            brokers.kafka_brokers,
            namespace.topic("alerts"),
            lambda r: len(r) >= len(expected) + len(hostile_alerts),
            timeout_s=120,
        )
        deadline = time.monotonic() + 60
        while len(receiver.calls) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.2)
        for flow in flows:
            assert flow.process is not None
            assert flow.process.poll() is None, f"{flow.module} exited:\n{flow.log_tail()}"
    finally:
        codes = [flow.stop() for flow in flows]
        receiver.stop()
    # SIGTERM: the bridge stops gracefully (exit 0); the others are simply ended.
    assert codes == [0, -15, -15, -15], [f.log_tail() for f in flows]

    # Every MQTT message once: the valid ones on telemetry, the rest on the DLQ.
    dead = [r.json() for r in dlq]
    assert Counter(str(d["stage"]) for d in dead) == dead_expected
    bridge_raws = Counter(base64.b64decode(str(d["raw"])) for d in dead if d["stage"] == "bridge")
    assert bridge_raws == Counter(
        [m.payload for m in simulated if m.reading is None] + hostile_mqtt
    )
    reasons = Counter(str(d["reason"]) for d in dead)
    assert "unprocessable" not in reasons
    far = [d for d in dead if b"far-future" in base64.b64decode(str(d["raw"]))]
    assert {(d["stage"], d["reason"]) for d in far} == {
        ("bridge", "bad_timestamp"),
        ("alerts", "bad_timestamp"),
        ("archive", "bad_timestamp"),
    }
    assert all("future" in str(d["detail"]) for d in far)

    # The alerts are the reference's: the far-future readings made no reading late.
    documents = [r.json() for r in alerts if r.value not in hostile_alerts]
    keys = {(str(d["rule"]), str(d["truck_id"]), tuple(d["event_ids"])) for d in documents}  # type: ignore[arg-type]
    assert keys == expected
    late = consume_until(
        brokers.kafka_brokers, namespace.topic("late"), lambda r: False, timeout_s=3, settle_s=0
    )
    assert late == []

    # The lake holds exactly the valid readings, once each.
    frame = pl.read_parquet(lake / "**" / "*.parquet", hive_partitioning=True)
    # (a resend is a record of its own: the lake holds every record of the topic once)
    assert Counter(frame["event_id"].to_list()) == Counter(r.event_id for r in readings)

    # One e-mail per alert.
    assert Counter(c.key for c in receiver.calls) == Counter(str(d["alert_id"]) for d in documents)
