# ruff: noqa: E501 - the test inputs are one message a line: they read best that way.
"""The last line of defence (dataflows/_guard.py): a record whose processing raises is
dead-lettered as ``unprocessable`` and the flow goes on. Faults are injected where a bug
would sit; every other record must come out as if nothing had happened."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, TimeTestingGetter, run_main

import dataflows._canonical
import dataflows.bridge
from connectors.jsonl_sink import JsonlSink
from connectors.kafka import OutboundRecord
from connectors.mqtt import MqttMessage
from connectors.parquet import write_readings
from connectors.parquet_input import ParquetReadingsSource
from dataflows.alerts import build_flow as alerts_flow
from dataflows.backfill import build_flow as backfill_flow
from dataflows.backfill import dead_letter_path
from dataflows.bridge import BridgeRouter
from dataflows.bridge import build_flow as bridge_flow
from domain.readings import Reading, Rejection, decode_reading
from domain.rules import RuleConfig
from runtime.progress import Progress
from runtime.settings import Topics
from tests.builders import BEGINNING, RECEIVED_MS, payload
from tests.reference import reference_alerts
from tests.unit.test_alerts_flow import CONFIG, TOPICS, alert_keys, fast, message, on

pytestmark = pytest.mark.unprocessable_expected

POISON = b'{"poison": true}'


def _raising_on_poison(
    real: Callable[..., Reading | Rejection],
) -> Callable[..., Reading | Rejection]:
    def fake(raw: bytes, *args: Any, **kwargs: Any) -> Reading | Rejection:
        if raw == POISON:
            raise OverflowError("date value out of range")
        return real(raw, *args, **kwargs)

    return fake


def _dead(record: OutboundRecord) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(record.value)
    return document


def test_bridge_dead_letters_the_record_and_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataflows.bridge, "decode_reading", _raising_on_poison(decode_reading))
    acked: list[str] = []
    messages = [
        MqttMessage("fleet/T1/telemetry", payload(event_id="a"), RECEIVED_MS, lambda: acked.append("a")),
        MqttMessage("fleet/T1/telemetry", POISON, RECEIVED_MS, lambda: acked.append("poison")),
        MqttMessage("fleet/T1/telemetry", payload(event_id="b"), RECEIVED_MS, lambda: acked.append("b")),
    ]  # fmt: skip
    out: list[OutboundRecord] = []
    run_main(
        bridge_flow(
            TestingSource(messages),
            TestingSink(out),
            TestingSink(out),
            BridgeRouter("fleet/+/telemetry", Topics(telemetry="telemetry", dlq="dlq")),
        )
    )
    assert [r.topic for r in out] == ["telemetry", "dlq", "telemetry"]
    dead = _dead(out[1])
    assert dead["reason"] == "unprocessable"
    assert dead["stage"] == "bridge"
    assert dead["detail"] == "OverflowError: date value out of range"
    assert base64.b64decode(dead["raw"]) == POISON
    for record in out:  # the dead letter is acknowledged once delivered, like the others
        assert record.on_delivered is not None
        record.on_delivered()
    assert acked == ["a", "poison", "b"]


def test_alerts_decoder_dead_letters_the_record_and_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dataflows._canonical, "decode_reading", _raising_on_poison(decode_reading))
    readings = fast("T1", 0, 1, 2, 3, 4)
    fetches = [message(r) for r in readings[:2]]
    fetches.append(type(fetches[0])(0, 0, 0, [POISON], [readings[0].ts_ms]))
    fetches += [message(r) for r in readings[2:]]
    out: list[OutboundRecord] = []
    clock = TimeTestingGetter(BEGINNING)
    run_main(alerts_flow(TestingSource(fetches), TestingSink(out), TOPICS, CONFIG, clock.get))
    assert alert_keys(out) == reference_alerts(readings, CONFIG)
    [dead] = on(out, TOPICS.dlq)
    assert _dead(dead)["reason"] == "unprocessable"
    assert _dead(dead)["stage"] == "alerts"


def test_an_alert_that_cannot_be_built_is_dead_lettered_with_its_readings() -> None:
    def broken_history() -> Any:
        raise ValueError("history row with a null hired_on")

    readings = fast("T1", 0, 1, 2, 3, 4) + fast("T2", 0, speed=140)
    out: list[OutboundRecord] = []
    flow = alerts_flow(
        TestingSource([message(r) for r in readings]),
        TestingSink(out),
        TOPICS,
        CONFIG,
        TimeTestingGetter(BEGINNING).get,
        history=broken_history,
    )
    run_main(flow)
    assert on(out, TOPICS.alerts) == []
    dead = sorted((_dead(r) for r in on(out, TOPICS.dlq)), key=lambda d: len(d["raw"]))
    assert [d["reason"] for d in dead] == ["unprocessable", "unprocessable"]
    covered = [
        [json.loads(line)["event_id"] for line in base64.b64decode(d["raw"]).splitlines()]
        for d in dead
    ]
    assert covered == [[readings[5].event_id], [r.event_id for r in readings[:5]]]


def test_backfill_dead_letters_an_alert_it_cannot_build(tmp_path: Path) -> None:
    class BrokenHistory:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("broken history")

    readings = fast("T1", 0, 1, 2, 3, 4) + fast("T2", 0, speed=140)
    write_readings(readings, tmp_path / "in.parquet")
    out = tmp_path / "alerts.jsonl"
    config = RuleConfig()
    flow = backfill_flow(
        ParquetReadingsSource([tmp_path / "in.parquet"], config.lowest_limit_kmh),
        JsonlSink(out),
        JsonlSink(dead_letter_path(out)),
        config,
        BrokenHistory(),  # type: ignore[arg-type]
        Progress(interval_s=3600),
    )
    run_main(flow)
    assert not out.exists() or out.read_bytes() == b"", "no alert line"
    dead = [json.loads(line) for line in dead_letter_path(out).read_bytes().splitlines()]
    assert sorted(d["reason"] for d in dead) == ["unprocessable", "unprocessable"]
    assert {d["stage"] for d in dead} == {"backfill"}
