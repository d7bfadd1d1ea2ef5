"""Every validation rule of CONTRACT.md section 2 and every DLQ reason of section 3."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.dead_letters import Reason
from domain.readings import (
    MAX_PAYLOAD_BYTES,
    Reading,
    Rejection,
    _validate_payload,
    decode_reading,
    encode_canonical,
    truck_id_from_topic,
)
from domain.timestamps import parse_rfc3339_ms
from tests.builders import DROP, payload

TS_MS = parse_rfc3339_ms("2026-11-24T10:15:03.120Z")


def validated(
    raw: bytes, topic_truck_id: str | None = None, *, not_after_ms: int | None = None
) -> Reading | Rejection:
    """The field-by-field validation alone, without the canonical fast path."""
    return _validate_payload(raw, topic_truck_id, not_after_ms)


def test_valid_payload_becomes_a_reading() -> None:
    assert decode_reading(payload(), topic_truck_id="T1") == Reading(
        "e-1", "T1", TS_MS, 93.5, 52.5, 13.4
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param({"lat": DROP, "lon": DROP}, (None, None), id="position optional"),
        pytest.param({"lat": None, "lon": None}, (None, None), id="null position"),
        pytest.param({"lat": -90, "lon": 180}, (-90.0, 180.0), id="position at bounds"),
    ],
)
def test_optional_position(overrides: dict[str, object], expected: tuple[object, object]) -> None:
    reading = decode_reading(payload(**overrides), topic_truck_id="T1")
    assert isinstance(reading, Reading)
    assert (reading.lat, reading.lon) == expected


@pytest.mark.parametrize(
    ("ts", "expected_ms"),
    [
        pytest.param("2026-11-24T10:15:03.120Z", TS_MS, id="Z with ms"),
        pytest.param("2026-11-24T12:15:03.120+02:00", TS_MS, id="positive offset"),
        pytest.param("2026-11-24T05:15:03.120-05:00", TS_MS, id="negative offset"),
        pytest.param("2026-11-24T10:15:03.120999Z", TS_MS, id="sub-ms digits truncated"),
        pytest.param("2026-11-24t10:15:03.12z", TS_MS, id="lower-case t and z"),
        pytest.param("2026-11-24 10:15:03.120Z", TS_MS, id="space separator"),
        pytest.param("2026-11-24T10:15:03Z", TS_MS - 120, id="no fraction"),
        pytest.param(TS_MS, TS_MS, id="integer epoch ms"),
        pytest.param(0, 0, id="epoch zero"),
    ],
)
def test_timestamp_forms(ts: object, expected_ms: int) -> None:
    reading = decode_reading(payload(ts=ts), topic_truck_id="T1")
    assert isinstance(reading, Reading)
    assert reading.ts_ms == expected_ms


def test_extra_fields_are_ignored() -> None:
    assert decode_reading(
        payload(firmware="2.1", extra={"a": [1]}), topic_truck_id="T1"
    ) == validated(payload(), "T1")


def test_speed_bounds_are_inclusive() -> None:
    for speed in (0, 400, 400.0):
        assert isinstance(decode_reading(payload(speed_kmh=speed), topic_truck_id="T1"), Reading)


def test_truck_id_charset_and_length() -> None:
    for truck in ("a", "A-b_c.9", "x" * 64):
        assert isinstance(decode_reading(payload(truck_id=truck), topic_truck_id=truck), Reading)


def test_event_id_length_limits() -> None:
    assert isinstance(decode_reading(payload(event_id="x" * 128), topic_truck_id="T1"), Reading)
    assert _reason(payload(event_id="x" * 129)) is Reason.SCHEMA
    assert _reason(payload(event_id="")) is Reason.SCHEMA


def _reason(raw: bytes, topic_truck: str | None = "T1") -> Reason:
    outcome = decode_reading(raw, topic_truck_id=topic_truck)
    assert isinstance(outcome, Rejection), outcome
    assert outcome.detail
    return outcome.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(payload(blob="x" * MAX_PAYLOAD_BYTES), Reason.TOO_LARGE, id="over 64 KiB"),
        pytest.param(b"{not json", Reason.INVALID_JSON, id="broken json"),
        pytest.param(b"", Reason.INVALID_JSON, id="empty"),
        pytest.param(b'{"event_id": "\xff"}', Reason.INVALID_JSON, id="invalid utf-8"),
        pytest.param(b'{"speed_kmh": NaN}', Reason.INVALID_JSON, id="NaN literal"),
        pytest.param(b"[1, 2]", Reason.SCHEMA, id="array"),
        pytest.param(b'"text"', Reason.SCHEMA, id="string"),
        pytest.param(payload(event_id=DROP), Reason.SCHEMA, id="no event_id"),
        pytest.param(payload(truck_id=DROP), Reason.SCHEMA, id="no truck_id"),
        pytest.param(payload(ts=DROP), Reason.SCHEMA, id="no ts"),
        pytest.param(payload(speed_kmh=DROP), Reason.SCHEMA, id="no speed"),
        pytest.param(payload(speed_kmh=None), Reason.SCHEMA, id="null speed"),
        pytest.param(payload(event_id=7), Reason.SCHEMA, id="numeric event_id"),
        pytest.param(payload(truck_id="T 1"), Reason.SCHEMA, id="space in truck_id"),
        pytest.param(payload(truck_id="T/1"), Reason.SCHEMA, id="slash in truck_id"),
        pytest.param(payload(truck_id="x" * 65), Reason.SCHEMA, id="truck_id too long"),
        pytest.param(payload(speed_kmh="95"), Reason.SCHEMA, id="speed as string"),
        pytest.param(payload(speed_kmh=True), Reason.SCHEMA, id="speed as boolean"),
        pytest.param(payload(lat="52.1"), Reason.SCHEMA, id="lat as string"),
        pytest.param(payload(ts=1.5e12), Reason.SCHEMA, id="fractional epoch"),
        pytest.param(payload(ts=True), Reason.SCHEMA, id="boolean ts"),
        pytest.param(payload(ts=["2026"]), Reason.SCHEMA, id="array ts"),
        pytest.param(payload(ts="yesterday"), Reason.BAD_TIMESTAMP, id="words"),
        pytest.param(payload(ts="2026-11-24T10:15:03"), Reason.BAD_TIMESTAMP, id="no offset"),
        pytest.param(payload(ts="2026-11-24"), Reason.BAD_TIMESTAMP, id="date only"),
        pytest.param(payload(ts="20261124T101503Z"), Reason.BAD_TIMESTAMP, id="basic ISO format"),
        pytest.param(payload(ts="2026-02-30T10:00:00Z"), Reason.BAD_TIMESTAMP, id="30 February"),
        pytest.param(payload(ts="2026-11-24T24:00:00Z"), Reason.BAD_TIMESTAMP, id="hour 24"),
        pytest.param(
            payload(ts="2026-11-24T10:00:00+24:00"), Reason.BAD_TIMESTAMP, id="bad offset"
        ),
        pytest.param(payload(ts=-1), Reason.BAD_TIMESTAMP, id="negative epoch"),
        pytest.param(payload(ts=10**17), Reason.BAD_TIMESTAMP, id="epoch past 9999"),
        pytest.param(payload(speed_kmh=400.01), Reason.OUT_OF_RANGE, id="speed over 400"),
        pytest.param(payload(speed_kmh=-0.1), Reason.OUT_OF_RANGE, id="negative speed"),
        pytest.param(
            b'{"event_id":"e","truck_id":"T1","ts":0,"speed_kmh":1e999}',
            Reason.OUT_OF_RANGE,
            id="inf",
        ),
        pytest.param(payload(lat=90.5), Reason.OUT_OF_RANGE, id="lat over 90"),
        pytest.param(payload(lon=-180.5), Reason.OUT_OF_RANGE, id="lon under -180"),
        pytest.param(payload(truck_id="T2"), Reason.TRUCK_MISMATCH, id="other truck"),
    ],
)
def test_rejections(raw: bytes, reason: Reason) -> None:
    assert _reason(raw) is reason


def test_reason_precedence_follows_check_order() -> None:
    # schema beats timestamp beats range beats truck mismatch
    assert _reason(payload(speed_kmh="x", ts="yesterday")) is Reason.SCHEMA
    assert _reason(payload(ts="yesterday", speed_kmh=999)) is Reason.BAD_TIMESTAMP
    assert _reason(payload(speed_kmh=999, truck_id="T2")) is Reason.OUT_OF_RANGE


def test_truck_is_not_checked_without_topic_truck() -> None:
    assert isinstance(validated(payload(truck_id="T2"), None), Reading)


def test_exactly_64_kib_is_accepted_size_wise() -> None:
    base = payload(pad="")
    padded = base.replace(b'"pad": ""', b'"pad": "' + b"x" * (MAX_PAYLOAD_BYTES - len(base)) + b'"')
    assert len(padded) == MAX_PAYLOAD_BYTES
    assert isinstance(decode_reading(padded, topic_truck_id="T1"), Reading)


def test_canonical_form_has_exactly_the_contract_fields() -> None:
    reading = decode_reading(
        payload(ts="2026-11-24T12:15:03.120+02:00", speed_kmh=95), topic_truck_id="T1"
    )
    assert isinstance(reading, Reading)
    document = json.loads(encode_canonical(reading))
    assert document == {
        "event_id": "e-1",
        "truck_id": "T1",
        "ts": "2026-11-24T10:15:03.120Z",
        "speed_kmh": 95.0,
        "lat": 52.5,
        "lon": 13.4,
    }


def test_canonical_form_round_trips() -> None:
    reading = Reading("e-9", "T9", TS_MS, 12.25, None, None)
    assert decode_reading(encode_canonical(reading), topic_truck_id="T9") == reading


@pytest.mark.parametrize(
    ("topic", "topic_filter", "truck"),
    [
        ("fleet/T1/telemetry", "fleet/+/telemetry", "T1"),
        ("acme/fleet/T1/telemetry", "acme/fleet/+/telemetry", "T1"),
        ("fleet/T1/telemetry", "$share/g/fleet/+/telemetry", "T1"),
        ("fleet/T1/telemetry", "fleet/#", "T1"),
        ("telemetry", "#", None),
        ("fleet//telemetry", "fleet/+/telemetry", None),
    ],
)
def test_truck_id_from_topic(topic: str, topic_filter: str, truck: str | None) -> None:
    assert truck_id_from_topic(topic, topic_filter) == truck


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    outcome = decode_reading(raw, topic_truck_id="T1")
    assert isinstance(outcome, Reading | Rejection)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "event_id": json_values,
            "truck_id": json_values | st.just("T1"),
            "ts": json_values | st.integers(min_value=-(10**16), max_value=10**16),
            "speed_kmh": json_values | st.floats(),
            "lat": json_values,
            "lon": json_values,
        },
    )
)
def test_arbitrary_documents_never_raise(document: dict[str, object]) -> None:
    raw = msgspec.json.encode(document) if _encodable(document) else b"{}"
    outcome = decode_reading(raw, topic_truck_id="T1")
    if isinstance(outcome, Reading):
        assert 0 <= outcome.speed_kmh <= 400
        assert outcome.truck_id == "T1"


def _encodable(document: object) -> bool:
    try:
        msgspec.json.encode(document)
    except (TypeError, OverflowError, msgspec.EncodeError):
        return False
    return True
