"""Hostile input at the readings' entry points (issue 14): one outcome per input, never an
exception. The corpus names each case; hypothesis fuzzes around it; the stream's and the
backfill's validation classify every reading alike."""

# ruff: noqa: E501 - the corpus is one case a line: it reads best that way.
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
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
)
from domain.timestamps import MAX_EPOCH_MS
from tests.builders import BEGINNING_MS, payload

DEEP = b'{"event_id":"e","truck_id":"T1","ts":0,"speed_kmh":1,"x":' + b"[" * 100_000
DEEP += b"]" * 100_000 + b"}"

CORPUS: list[tuple[str, bytes, Reason | None]] = [
    ("valid", payload(), None),
    ("ts at the calendar's end with a negative offset", payload(ts="9999-12-31T23:59:59.999-01:00"), Reason.BAD_TIMESTAMP),
    ("ts at the calendar's start with a positive offset", payload(ts="0001-01-01T00:00:00+01:00"), Reason.BAD_TIMESTAMP),
    ("ts the last representable instant, offset east", payload(ts="9999-12-31T23:59:59.999+01:00"), None),
    ("ts epoch ms after 9999", payload(ts=MAX_EPOCH_MS + 1), Reason.BAD_TIMESTAMP),
    ("ts epoch ms beyond 64 bits", payload(ts=10**30), Reason.BAD_TIMESTAMP),
    ("ts with Arabic-Indic digits", payload(ts="\u0662\u0660\u0662\u0666-11-24T10:15:03.120Z"), Reason.BAD_TIMESTAMP),
    ("ts an ISO week date", payload(ts="2026-W48-2T10:15:03.120Z"), Reason.BAD_TIMESTAMP),
    ("ts with a trailing newline", payload(ts="2026-11-24T10:15:03.120Z\n"), Reason.BAD_TIMESTAMP),
    ("ts a leap second", payload(ts="2016-12-31T23:59:60.500Z"), None),
    ("ts a leap second that is not at midnight UTC", payload(ts="2016-12-31T12:59:60Z"), Reason.BAD_TIMESTAMP),
    ("ts hour 24", payload(ts="2026-11-24T24:00:00.000Z"), Reason.BAD_TIMESTAMP),
    ("ts a float", payload(ts=1.5e12), Reason.SCHEMA),
    ("ts a boolean", payload(ts=True), Reason.SCHEMA),
    ("speed an integer beyond float range", payload(speed_kmh=10**400), Reason.OUT_OF_RANGE),
    ("speed a literal beyond float range", payload().replace(b"93.5", b"1e999"), Reason.OUT_OF_RANGE),
    ("speed negative zero", payload(speed_kmh=-0.0), None),
    ("lat beyond float range", payload().replace(b"52.5", b"-1e400"), Reason.OUT_OF_RANGE),
    ("lat a string", payload(lat="52.5"), Reason.SCHEMA),
    ("an ignored field beyond float range", payload(fw=1).replace(b'"fw": 1', b'"fw": 1e999'), None),
    ("an ignored field holding every JSON type", payload(fw=[None, True, {"a": [1.5, "x"]}]), None),
    ("nesting deeper than the decoder goes", DEEP[: MAX_PAYLOAD_BYTES], Reason.INVALID_JSON),
    ("truck_id with a trailing newline", payload(truck_id="T1\n"), Reason.SCHEMA),
    ("truck_id with Unicode letters", payload(truck_id="Tä1"), Reason.SCHEMA),
    ("truck_id 65 chars", payload(truck_id="T" * 65), Reason.SCHEMA),
    ("event_id 129 chars", payload(event_id="e" * 129), Reason.SCHEMA),
    ("event_id 128 astral chars", payload(event_id="😀" * 128), None),
    ("event_id a lone surrogate escape", payload(event_id="x").replace(b'"x"', b'"\\ud800"'), Reason.INVALID_JSON),
    ("event_id an object", payload(event_id={"a": 1}), Reason.SCHEMA),
    ("invalid UTF-8", b'{"event_id": "\xff"}', Reason.INVALID_JSON),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + payload(), Reason.INVALID_JSON),
    ("top level an array", b"[1e999]", Reason.OUT_OF_RANGE),
    ("top level a string", b'"x"', Reason.SCHEMA),
    ("empty", b"", Reason.INVALID_JSON),
    ("NaN literal", payload().replace(b"93.5", b"NaN"), Reason.INVALID_JSON),
    ("duplicate keys: the last wins", payload().replace(b'"speed_kmh": 93.5', b'"speed_kmh": 999, "speed_kmh": 93.5'), None),
    ("too large", payload(pad="x" * MAX_PAYLOAD_BYTES), Reason.TOO_LARGE),
]  # fmt: skip


def validated(
    raw: bytes, topic_truck_id: str | None = None, *, not_after_ms: int | None = None
) -> Reading | Rejection:
    """The field-by-field validation alone, without the canonical fast path."""
    return _validate_payload(raw, topic_truck_id, not_after_ms)


@pytest.mark.parametrize(
    ("raw", "expected"), [(c[1], c[2]) for c in CORPUS], ids=[c[0] for c in CORPUS]
)
def test_corpus_has_one_outcome_each(raw: bytes, expected: Reason | None) -> None:
    outcome = validated(raw)
    if expected is None:
        assert isinstance(outcome, Reading), outcome
    else:
        assert isinstance(outcome, Rejection)
        assert outcome.reason is expected, outcome.detail
    assert _same(decode_reading(raw), outcome), "the fast path decides as full validation"


def test_a_leap_second_reads_as_the_millisecond_before_midnight() -> None:
    outcome = validated(payload(ts="2016-12-31T23:59:60.500Z"))
    assert isinstance(outcome, Reading)
    assert json.loads(encode_canonical(outcome))["ts"] == "2016-12-31T23:59:59.999Z"


def test_a_reading_from_the_future_is_bad_timestamp_and_says_so() -> None:
    received = BEGINNING_MS
    at_bound = payload(ts=received + 300_000)
    beyond = payload(ts=received + 300_001)
    assert isinstance(validated(at_bound, not_after_ms=received + 300_000), Reading)
    outcome = validated(beyond, not_after_ms=received + 300_000)
    assert isinstance(outcome, Rejection)
    assert outcome.reason is Reason.BAD_TIMESTAMP
    assert "future" in outcome.detail
    canonical = encode_canonical(Reading("e", "T1", received + 300_001, 50.0))
    assert _same(decode_reading(canonical, not_after_ms=received + 300_000), outcome)


# -- fuzzing ------------------------------------------------------------------------------

EDGE_NUMBERS = st.sampled_from(
    [0, -1, 2**63, -(2**63) - 1, 10**400, 1e308, -1e308, 5e-324, -0.0, MAX_EPOCH_MS + 1]
)
EDGE_STRINGS = st.sampled_from(
    [
        "",
        "\n",
        "T1\n",
        "\u2028",
        "\u0663",
        "9999-12-31T23:59:59.999-01:00",
        "0001-01-01T00:00:00+01:00",
        "2026-W48-2T10:15:03.120Z",
        "2016-12-31T23:59:60Z",
        "x" * 200,
    ]
)
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
    EDGE_NUMBERS,
    EDGE_STRINGS,
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["event_id", "truck_id", "ts", "speed_kmh", "lat", "lon", "extra"]


@given(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES))
def test_any_mutation_of_a_reading_has_one_outcome(replacements: dict[str, Any]) -> None:
    document = json.loads(payload()) | replacements
    raw = json.dumps(document).encode()
    outcome = decode_reading(raw, topic_truck_id="T1", not_after_ms=BEGINNING_MS + 10**9)
    assert isinstance(outcome, Reading | Rejection)
    if isinstance(outcome, Reading):
        encode_canonical(outcome)  # whatever passed can be written back
    assert _same(
        decode_reading(raw, not_after_ms=BEGINNING_MS + 10**9),
        validated(raw, not_after_ms=BEGINNING_MS + 10**9),
    )


@given(st.binary(max_size=300))
def test_any_bytes_have_one_outcome(raw: bytes) -> None:
    outcome = decode_reading(raw, topic_truck_id="T1")
    assert isinstance(outcome, Reading | Rejection)
    assert _same(decode_reading(raw), validated(raw))


@given(st.text(alphabet="0123456789-:.TZz+ W\u0663", min_size=20, max_size=30))
def test_canonical_fast_path_accepts_nothing_validation_refuses(ts: str) -> None:
    raw = json.dumps(
        {"event_id": "e", "truck_id": "T1", "ts": ts, "speed_kmh": 1.0, "lat": None, "lon": None},
        separators=(",", ":"),
    ).encode()
    assert _same(decode_reading(raw), validated(raw))


def _same(a: Reading | Rejection, b: Reading | Rejection) -> bool:
    if isinstance(a, Rejection) and isinstance(b, Rejection):
        return a.reason is b.reason
    return a == b


# -- the stream and the backfill agree ----------------------------------------------------

ROW_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]) | st.sampled_from("T1_.-\n"), max_size=70
)
ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "truck_id": st.sampled_from(["T1", "T1\n", "a.b-c_9", "T" * 64, "T" * 65, "Tä"])
            | ROW_TEXT,
            "ts": st.sampled_from([-1, 0, BEGINNING_MS, MAX_EPOCH_MS, MAX_EPOCH_MS + 1])
            | st.integers(-(10**13), MAX_EPOCH_MS + 10**13),
            "speed_kmh": st.floats(-1e300, 1e300) | st.sampled_from([0.0, 400.0, 400.0001]),
            "lat": st.none() | st.floats(-1e300, 1e300) | st.sampled_from([90.0, -90.0000001]),
            "lon": st.none() | st.floats(-1e300, 1e300) | st.sampled_from([180.0, 180.5]),
        }
    ),
    min_size=1,
    max_size=12,
)
EVENT_IDS = st.sampled_from(["", "e" * 128, "e" * 129, "😀" * 128, "x\n"])


@given(ROWS, st.lists(EVENT_IDS, min_size=12, max_size=12))
def test_stream_and_backfill_classify_every_reading_alike(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]], ids: list[str]
) -> None:
    from connectors.parquet_input import BadRow, ParquetReadingsSource, TruckReadings

    for index, row in enumerate(rows):  # unique ids; some at the limits
        row["event_id"] = f"{index:03d}" + ids[index] if ids[index] else ""
    stream = {row["event_id"]: _reason(validated(json.dumps(row).encode())) for row in rows}
    path = tmp_path_factory.mktemp("agree") / "rows.parquet"
    pl.DataFrame(rows).with_columns(
        pl.col("ts").cast(pl.Datetime("ms", "UTC")),
        pl.col("lat").cast(pl.Float64),
        pl.col("lon").cast(pl.Float64),
    ).write_parquet(path)
    backfill: dict[str, str | None] = {}
    source = ParquetReadingsSource([path], keep=-1.0, buckets=1)
    partition = source.build_part("s", "0", None)
    while True:
        try:
            items = partition.next_batch()
        except StopIteration:
            break
        for item in items:
            if isinstance(item, BadRow):
                backfill[json.loads(item.raw)["event_id"]] = str(item.reason)
            elif isinstance(item, TruckReadings):
                backfill.update({r.event_id: None for r in item.readings})
    if "" in stream:  # both refuse an empty id; the backfill's raw JSON names it too
        assert backfill.get("") == stream[""]
    assert backfill == stream


def _reason(outcome: Reading | Rejection) -> str | None:
    return None if isinstance(outcome, Reading) else str(outcome.reason)


def test_parquet_timestamps_beyond_9999_are_bad_rows_not_a_crash(tmp_path: Path) -> None:
    from connectors.parquet_input import BadRow, ParquetReadingsSource

    path = tmp_path / "far.parquet"
    pl.DataFrame(
        {
            "event_id": ["a", "b"],
            "truck_id": ["T1", "T1"],
            "ts": [MAX_EPOCH_MS + 1, -(10**14)],
            "speed_kmh": [100.0, 100.0],
            "lat": [None, None],
            "lon": [None, None],
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC"))).write_parquet(path)
    partition = ParquetReadingsSource([path], 0.0, buckets=1).build_part("s", "0", None)
    [bad] = [partition.next_batch()]
    assert [b.reason for b in bad if isinstance(b, BadRow)] == [Reason.BAD_TIMESTAMP] * 2
    assert json.loads(bad[0].raw)["ts"].startswith("+10000-01-01")
