"""The bridge flow with TestingSource/TestingSink: routing, keys, and acknowledgements."""

from __future__ import annotations

import base64
import json

from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.kafka import OutboundRecord
from connectors.mqtt import MqttMessage
from dataflows.bridge import BridgeRouter, build_flow
from runtime.settings import Topics
from tests.builders import RECEIVED_MS, payload

ROUTES = BridgeRouter("fleet/+/telemetry", Topics(telemetry="telemetry", dlq="dlq"))


class AckLog:
    def __init__(self) -> None:
        self.acked: list[str] = []

    def acker(self, name: str):  # type: ignore[no-untyped-def]
        return lambda: self.acked.append(name)


def _run(messages: list[MqttMessage]) -> list[OutboundRecord]:
    out: list[OutboundRecord] = []
    sink = TestingSink(out)  # one list for both outputs: telemetry and dead letters
    run_main(build_flow(TestingSource(messages), sink, sink, ROUTES))
    return out


def test_valid_reading_goes_to_telemetry_keyed_by_truck() -> None:
    acks = AckLog()
    [record] = _run([MqttMessage("fleet/T1/telemetry", payload(), RECEIVED_MS, acks.acker("m1"))])
    assert record.topic == "telemetry"
    assert record.key == b"T1"
    assert json.loads(record.value)["ts"] == "2026-11-24T10:15:03.120Z"
    assert acks.acked == []  # acknowledged only when Kafka confirms
    assert record.on_delivered is not None
    record.on_delivered()
    assert acks.acked == ["m1"]


def test_bad_payload_goes_to_dlq_with_reason_and_raw_bytes() -> None:
    raw = payload(truck_id="T2")
    [record] = _run([MqttMessage("fleet/T1/telemetry", raw, RECEIVED_MS, lambda: None)])
    assert record.topic == "dlq"
    assert record.key == b"T1"
    dead = json.loads(record.value)
    assert dead == {
        "stage": "bridge",
        "reason": "truck_mismatch",
        "detail": dead["detail"],
        "source_topic": "fleet/T1/telemetry",
        "raw": base64.b64encode(raw).decode(),
        "received_at": "2026-11-24T10:15:04.000Z",
    }
    assert "T2" in dead["detail"]


def test_every_message_gives_exactly_one_record() -> None:
    messages = [
        MqttMessage("fleet/T1/telemetry", payload(event_id=f"e{i}"), RECEIVED_MS, lambda: None)
        for i in range(50)
    ] + [MqttMessage("fleet/T1/telemetry", b"garbage", RECEIVED_MS, lambda: None) for _ in range(7)]
    records = _run(messages)
    assert [r.topic for r in records].count("telemetry") == 50
    assert [r.topic for r in records].count("dlq") == 7


def test_topic_without_truck_level_is_a_mismatch() -> None:
    routes = BridgeRouter("#", Topics(telemetry="telemetry", dlq="dlq"))
    out: list[OutboundRecord] = []
    run_main(
        build_flow(
            TestingSource([MqttMessage("telemetry", payload(), RECEIVED_MS, lambda: None)]),
            TestingSink(out),
            TestingSink(out),
            routes,
        )
    )
    [record] = out
    assert record.topic == "dlq"
    assert record.key is None
    assert json.loads(record.value)["reason"] == "truck_mismatch"
