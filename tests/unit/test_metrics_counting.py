"""Where the flows count: the bridge's messages and dead letters, the notifier's outcomes.
(The alerts flow's counts are checked end to end in tests/integration/test_metrics.py.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bytewax.testing import TestingSink, TestingSource, run_main
from msgspec.structs import replace

from connectors.email_api import Delivery
from connectors.kafka import OutboundRecord
from connectors.mqtt import MqttMessage
from connectors.notify_sink import NotifySink
from dataflows.bridge import BridgeRouter, build_flow
from domain.alerts import Alert, build_alert
from domain.notifications import Verdict
from domain.rules import Detection, Rule
from runtime.metrics import DEAD_LETTERS, NOTIFICATIONS, READINGS_IN
from runtime.settings import Topics
from tests.builders import RECEIVED_MS, payload, reading


def count(metric: Any, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())


def test_the_bridge_counts_every_message_and_each_dead_letter_by_reason() -> None:
    routes = BridgeRouter("fleet/+/telemetry", Topics(telemetry="telemetry", dlq="dlq"))
    before = (
        count(READINGS_IN, "bridge"),
        count(DEAD_LETTERS, "bridge", "invalid_json"),
        count(DEAD_LETTERS, "bridge", "truck_mismatch"),
    )
    messages = [
        MqttMessage("fleet/T1/telemetry", payload(), RECEIVED_MS, lambda: None),
        MqttMessage("fleet/T1/telemetry", b"{", RECEIVED_MS, lambda: None),
        MqttMessage("fleet/T2/telemetry", payload(), RECEIVED_MS, lambda: None),  # payload says T1
    ]
    records: list[OutboundRecord] = []
    sink = TestingSink(records)  # telemetry and dead letters
    run_main(build_flow(TestingSource(messages), sink, sink, routes))  # counted at the DLQ
    assert sorted(r.topic for r in records) == ["dlq", "dlq", "telemetry"]
    after = (
        count(READINGS_IN, "bridge"),
        count(DEAD_LETTERS, "bridge", "invalid_json"),
        count(DEAD_LETTERS, "bridge", "truck_mismatch"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [3, 1, 1]


class ScriptedApi:
    """Answers each alert with the verdict named in its id (a unit-test stand-in)."""

    def deliver_all(self, alerts: Sequence[Alert]) -> list[Delivery]:
        verdicts = {"ok": Verdict.DELIVERED, "bad": Verdict.REJECTED}
        return [Delivery(a.alert_id, verdicts[a.alert_id.split("-")[0]], 1, "") for a in alerts]

    def close(self) -> None:
        pass


def alert(alert_id: str) -> Alert:
    detection = Detection(Rule.INSTANT, "T1", (reading(speed=141.0),), 130.0)
    return replace(build_alert(detection, 0), alert_id=alert_id)


def test_the_notifier_counts_each_outcome() -> None:
    dead: list[OutboundRecord] = []
    sink = NotifySink(
        ScriptedApi, dead.extend, Topics(alerts="alerts", dlq="dlq"), retention_s=3600
    )  # type: ignore[arg-type]
    partition = sink.build_part("notify", "0", None)
    outcomes = ("sent", "rejected", "duplicate")
    before = [count(NOTIFICATIONS, o) for o in outcomes]
    partition.write_batch([(alert("ok-1"), b"1"), (alert("bad-1"), b"2")])
    partition.write_batch([(alert("ok-1"), b"1")])  # already sent
    after = [count(NOTIFICATIONS, o) for o in outcomes]
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]
    assert len(dead) == 1
