"""dataflows.alerts with TestingSource/TestingSink and an injected clock."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import timedelta

from bytewax.testing import TestingSink, TestingSource, TimeTestingGetter, run_main

from connectors.kafka import OutboundRecord
from connectors.kafka_source import Fetch
from dataflows.alerts import build_flow
from domain.readings import Reading, encode_canonical
from domain.rules import RuleConfig
from runtime.settings import Topics
from tests.builders import BEGINNING, reading, seconds
from tests.reference import AlertKey, reference_alerts

TOPICS = Topics(telemetry="telemetry", alerts="alerts", dlq="dlq", late="late")
CONFIG = RuleConfig()


def message(r: Reading) -> Fetch:
    """A Kafka fetch holding one record, produced at the reading's ts (as by the bridge)."""
    return Fetch(0, 0, 0, [encode_canonical(r)], [r.ts_ms])


def fetch(*values: bytes) -> Fetch:
    return Fetch(0, 0, len(values) - 1, list(values))


def run(items: Iterable[object], clock: TimeTestingGetter | None = None) -> list[OutboundRecord]:
    clock = clock or TimeTestingGetter(BEGINNING)
    out: list[OutboundRecord] = []
    # The fake clock drives all three clocks: being in Bytewax's past, every notification is
    # due at once, and the quiet time the flow sees is the fake one.
    flow = build_flow(
        TestingSource(items), TestingSink(out), TOPICS, CONFIG, clock.get, schedule_clock=clock.get
    )
    run_main(flow)
    return out


def alert_keys(records: list[OutboundRecord]) -> set[AlertKey]:
    keys = set()
    for record in records:
        if record.topic == "alerts":
            document = json.loads(record.value)
            keys.add((document["rule"], document["truck_id"], tuple(document["event_ids"])))
    return keys


def on(records: list[OutboundRecord], topic: str) -> list[OutboundRecord]:
    return [r for r in records if r.topic == topic]


def fast(truck: str, *offsets_s: float, speed: float = 95.0) -> list[Reading]:
    return [reading(truck, at=BEGINNING + seconds(s), speed=speed) for s in offsets_s]


def test_one_fetch_with_many_trucks_and_readings() -> None:
    ordered = fast("T1", 0, 3, 6, 9, 12) + fast("T2", 0, 1, speed=140) + fast("T3", 0, speed=80)
    records = run([fetch(*(encode_canonical(r) for r in ordered))])
    assert alert_keys(records) == reference_alerts(ordered, CONFIG)
    assert len(alert_keys(records)) == 2


def test_disorder_within_lateness_gives_the_sorted_result() -> None:
    ordered = fast("T1", 0, 3, 6, 9, 12, 15, 18) + fast("T2", 0, 1, speed=140)
    shuffled = [ordered[i] for i in (2, 0, 1, 4, 3, 7, 6, 5, 8)]
    records = run(message(r) for r in shuffled)
    assert alert_keys(records) == reference_alerts(ordered, CONFIG)
    assert alert_keys(records) == {
        ("sustained_speeding", "T1", tuple(r.event_id for r in ordered[:5])),
        ("instant_overspeed", "T2", (ordered[7].event_id,)),
    }


def test_alerts_are_keyed_by_truck() -> None:
    records = run(message(r) for r in fast("T7", 0, 1, 2, 3, 4))
    [alert] = on(records, "alerts")
    assert alert.key == b"T7"


def test_late_reading_is_routed_unchanged_and_not_counted() -> None:
    early = fast("T1", 0, 1, 2, 3)
    newest = fast("T1", 100, speed=80)
    late = fast("T1", 50)  # 50 s behind the newest: more than the 10 s allowed
    records = run(message(r) for r in [*early, *newest, *late])
    assert [r.value for r in on(records, "late")] == [encode_canonical(late[0])]
    assert on(records, "late")[0].key == b"T1"
    assert on(records, "alerts") == [], "the late reading would have completed a match"


def test_duplicates_do_not_complete_a_match() -> None:
    four = fast("T1", 0, 1, 2, 3)
    records = run(message(r) for r in [*four, *four, *four])
    assert on(records, "alerts") == []
    assert on(records, "late") == []


def test_bad_records_are_dead_lettered_by_the_alerts_stage() -> None:
    good = encode_canonical(fast("T1", 0)[0])
    records = run([fetch(b"{broken", good, b""), fetch(b'{"truck_id": "T1"}')])
    dead = [json.loads(r.value) for r in on(records, "dlq")]
    assert [(d["stage"], d["reason"], d["source_topic"]) for d in dead] == [
        ("alerts", "invalid_json", "telemetry"),
        ("alerts", "invalid_json", "telemetry"),
        ("alerts", "schema", "telemetry"),
    ]


def test_end_of_input_evaluates_everything_pending() -> None:
    # All five are within the lateness of the newest: only the end of input releases them.
    records = run(message(r) for r in fast("T1", 0, 1, 2, 3, 4))
    assert len(on(records, "alerts")) == 1


def _quiet_truck_stream(clock: TimeTestingGetter, advance: timedelta) -> Iterator[object]:
    for r in fast("T1", 0, 1, 2, 3, 4):  # pending: within 10 s of the newest
        yield message(r)
    clock.advance(advance)
    for i in range(50):  # another truck keeps the flow busy; T1 stays quiet
        yield message(reading("T2", at=BEGINNING + seconds(5 + i / 100), speed=50))
    yield TestingSource.ABORT()  # stop without end-of-input: no flush from EOF


def test_quiet_truck_is_flushed_by_wall_time() -> None:
    clock = TimeTestingGetter(BEGINNING)
    records = run(_quiet_truck_stream(clock, seconds(11)), clock)
    assert len(on(records, "alerts")) == 1


def test_quiet_truck_is_not_flushed_before_the_lateness_passed() -> None:
    clock = TimeTestingGetter(BEGINNING)
    records = run(_quiet_truck_stream(clock, seconds(9)), clock)
    assert on(records, "alerts") == []


def test_detected_at_is_processing_time() -> None:
    clock = TimeTestingGetter(BEGINNING + timedelta(days=2))
    records = run((message(r) for r in fast("T1", 0, 1, 2, 3, 4)), clock)
    assert json.loads(on(records, "alerts")[0].value)["detected_at"] == "2026-11-26T10:00:00.000Z"
