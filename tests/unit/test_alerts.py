"""Alert documents (CONTRACT.md section 5) and their one decoder."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date

from hypothesis import given
from hypothesis import strategies as st

from domain.alerts import (
    Alert,
    AlertDriver,
    Position,
    Severity,
    alert_id,
    build_alert,
    decode_alert,
    encode_alert,
)
from domain.history import RISK_TIERS, Assignment, Driver, HistoryIndex
from domain.readings import MAX_EVENT_ID_CHARS, TRUCK_ID_PATTERN, Reading, Rejection
from domain.rules import Detection, Rule
from domain.timestamps import MAX_EPOCH_MS
from tests.builders import BEGINNING, BEGINNING_MS, reading, seconds


def test_alert_id_is_the_contract_hash() -> None:
    expected = hashlib.sha256(b"sustained_speeding|T1|e-1").hexdigest()[:32]
    assert alert_id(Rule.SUSTAINED, "T1", "e-1") == expected
    assert len(expected) == 32


def test_sustained_alert_document() -> None:
    readings = tuple(
        reading(at=BEGINNING + seconds(s), speed=v, event_id=f"e{s}")
        for s, v in [(0, 91.0), (10, 95.5), (20, 120.25), (30, 99.0), (40.5, 93.0)]
    )
    detection = Detection(Rule.SUSTAINED, "T1", readings, 90.0)
    document = json.loads(encode_alert(build_alert(detection, BEGINNING_MS + 61_234)))
    assert document == {
        "alert_id": alert_id("sustained_speeding", "T1", "e0"),
        "rule": "sustained_speeding",
        "truck_id": "T1",
        "driver_id": None,
        "window_start": "2026-11-24T10:00:00.000Z",
        "window_end": "2026-11-24T10:00:40.500Z",
        "count": 5,
        "event_ids": ["e0", "e10", "e20", "e30", "e40.5"],
        "max_speed_kmh": 120.25,
        "mean_speed_kmh": 99.75,
        "threshold_kmh": 90.0,
        "severity": "warning",
        "driver": None,
        "detected_at": "2026-11-24T10:01:01.234Z",
        "schema_version": 1,
        "rule_version": 0,
        "position": None,
        "details": {},
    }


def test_instant_alert_is_critical() -> None:
    detection = Detection(Rule.INSTANT, "T9", (reading("T9", speed=141.0, event_id="x"),), 130.0)
    alert = build_alert(detection, BEGINNING_MS)
    assert alert.severity is Severity.CRITICAL
    assert alert.builtin_rule is Rule.INSTANT
    document = json.loads(encode_alert(alert))
    assert document["severity"] == "critical"
    assert document["window_start"] == document["window_end"]
    assert document["count"] == 1
    assert document["threshold_kmh"] == 130.0
    assert document["alert_id"] == alert_id("instant_overspeed", "T9", "x")


def test_position_is_the_newest_covered_reading_s() -> None:
    older = Reading("a", "T1", BEGINNING_MS, 95.0, 60.0, 24.0)
    newer = Reading("b", "T1", BEGINNING_MS + 1_000, 96.0, 60.5, 24.5)
    unplaced = Reading("c", "T1", BEGINNING_MS + 2_000, 97.0)
    placed = build_alert(Detection(Rule.SUSTAINED, "T1", (older, newer), 90.0), 0)
    assert placed.position == Position(60.5, 24.5)
    assert json.loads(encode_alert(placed))["position"] == {"lat": 60.5, "lon": 24.5}
    last_unplaced = build_alert(Detection(Rule.SUSTAINED, "T1", (older, unplaced), 90.0), 0)
    assert last_unplaced.position is None
    assert placed.alert_id == alert_id(Rule.SUSTAINED, "T1", "a"), "the id is unchanged"


def test_a_catalogue_rule_s_id_is_kept_as_text() -> None:
    """CONTRACT.md section 9: ``rule`` may be a rule's id that no enum lists."""
    raw = json.loads(encode_alert(build_alert(Detection(Rule.INSTANT, "T1", (reading(),), 1), 0)))
    raw.update(rule="school_zone_30", rule_version=7, details={"zone": "Kallio"})
    alert = decode_alert(json.dumps(raw).encode(), UTC)
    assert isinstance(alert, Alert)
    assert (alert.rule, alert.builtin_rule, alert.rule_version) == ("school_zone_30", None, 7)
    assert alert.details == {"zone": "Kallio"}


def test_decoding_fills_the_defaults_of_the_fields_that_came_later() -> None:
    raw = json.loads(encode_alert(build_alert(Detection(Rule.INSTANT, "T1", (reading(),), 1), 0)))
    for later in ("rule_version", "position", "details", "schema_version"):
        del raw[later]
    alert = decode_alert(json.dumps({**raw, "something_new": [1]}).encode(), UTC)
    assert isinstance(alert, Alert)
    assert (alert.schema_version, alert.rule_version, alert.position, alert.details) == (
        1,
        0,
        None,
        {},
    )


def test_a_missing_contract_field_is_a_schema_error() -> None:
    raw = json.loads(encode_alert(build_alert(Detection(Rule.INSTANT, "T1", (reading(),), 1), 0)))
    del raw["count"]
    rejection = decode_alert(json.dumps(raw).encode(), UTC)
    assert isinstance(rejection, Rejection)
    assert (str(rejection.reason), rejection.detail) == (
        "schema",
        "Object missing required field `count`",
    )


# --- Round trip: what build_alert makes, decode_alert reads back as it was -----------------

texts = st.text(min_size=1, max_size=300)  # no lone surrogates: Parquet strings are UTF-8
days = st.dates(date(1, 1, 1), date(9999, 12, 31)).map(date.isoformat)
drivers = st.builds(
    Driver,
    driver_id=texts,
    name=st.text(max_size=300),
    hired_on=days,
    overspeed_events_90d=st.integers(0, 2**63 - 1),
    avg_speed_kmh_90d=st.floats(0, 400),
    km_driven_90d=st.floats(0, 1e12),
    risk_tier=st.sampled_from(RISK_TIERS),
)
positions = st.one_of(
    st.tuples(st.none(), st.none()),
    st.tuples(st.floats(-90, 90), st.floats(-180, 180)),
    st.tuples(st.floats(-90, 90), st.none()),
)


@st.composite
def detections(draw: st.DrawFn) -> Detection:
    truck = draw(st.from_regex(TRUCK_ID_PATTERN, fullmatch=True))
    times = sorted(draw(st.lists(st.integers(0, MAX_EPOCH_MS), min_size=1, max_size=6)))
    readings = tuple(
        Reading(
            draw(st.text(min_size=1, max_size=MAX_EVENT_ID_CHARS)),
            truck,
            ts_ms,
            draw(st.floats(0, 400)),
            *draw(positions),
        )
        for ts_ms in times
    )
    rule = draw(st.sampled_from(Rule))
    return Detection(rule, truck, readings, draw(st.floats(0, 400)))


@st.composite
def histories(draw: st.DrawFn, truck: str) -> HistoryIndex | None:
    """None; or a history where the truck has a known driver, an unknown one or none."""
    if draw(st.booleans()):
        return None
    driver = draw(drivers)
    assigned = draw(st.sampled_from([driver.driver_id, "D-ghost", None]))
    assignments = [] if assigned is None else [Assignment(truck, assigned, 0, None)]
    return HistoryIndex.build([driver], assignments)


@given(data=st.data(), detected_at_ms=st.integers(0, MAX_EPOCH_MS))
def test_decode_reads_back_every_alert_build_alert_makes(
    data: st.DataObject, detected_at_ms: int
) -> None:
    detection = data.draw(detections())
    alert = build_alert(detection, detected_at_ms, data.draw(histories(detection.truck_id)))
    raw = encode_alert(alert)
    assert decode_alert(raw, UTC) == alert
    assert encode_alert(alert) == raw
    driver = alert.driver
    assert driver is None or isinstance(driver, AlertDriver)
    assert alert.builtin_rule is detection.rule
    last = detection.readings[-1]
    assert (alert.position is None) == (last.lat is None or last.lon is None)


def test_round_trip_at_the_edges_of_time() -> None:
    for ts_ms in (0, MAX_EPOCH_MS):
        at = Reading("e", "T1", ts_ms, 131.0)
        alert = build_alert(Detection(Rule.INSTANT, "T1", (at,), 130.0), ts_ms)
        assert decode_alert(encode_alert(alert), UTC) == alert
