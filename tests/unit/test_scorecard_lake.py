"""Archived scorecards (dataflows.archive_alerts, connectors/scorecard_lake.py): a record of
fleet.scorecards becomes one flat row, bad records become dead letters of
``archive_scorecards``, the rolls land in ``scorecards/date=<day>`` beside the alerts'
without mixing with them, ``scan_scorecards`` keeps one per (driver, day), and the readers
of the telemetry never read them as readings."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from msgspec.structs import replace

from connectors.alert_lake import alert_lake, scan_alerts
from connectors.history_refresh import lake_files
from connectors.kafka import OutboundRecord
from connectors.kafka_source import Fetch
from connectors.lake import Lake
from connectors.parquet import write_readings
from connectors.parquet_input import resolve_inputs
from connectors.scorecard_lake import (
    SCORECARD_SCHEMA,
    scan_scorecards,
    scorecard_lake,
    scorecard_row,
    scorecards_frame,
    scorecards_of,
)
from dataflows._lake_archive import ArchiveStep, Roll, TopicArchive, build_topics_flow
from dataflows.archive_alerts import decode_alerts, decode_scorecards
from domain.alerts import encode_alert
from domain.readings import Reading
from domain.scorecards import (
    DayTally,
    Scorecard,
    ScoreWeights,
    decode_scorecard,
    encode_scorecard,
)
from domain.timestamps import to_epoch_ms
from fleetwatch.map import read_tracks
from fleetwatch.whatif import Window
from tests.builders import BEGINNING_MS
from tests.unit.test_alert_lake import ALERT, PLAIN

TOPIC = "fleet.scorecards"
RECEIVED = datetime(2026, 11, 25, 0, 20, tzinfo=UTC)
RECEIVED_MS = to_epoch_ms(RECEIVED)

# A Helsinki day (it began 2026-11-23T22:00Z): the partition is the day, not a UTC date.
CARD = Scorecard.of(
    DayTally(
        "D1",
        "2026-11-24",
        ["T0012", "T0013"],
        readings=3_600,
        distance=[212.0, 1e-13],
        driving_ms=14_400_500,
        over_threshold_ms=600_000,
        max_speed_kmh=131.5,
        alerts={"sustained_speeding": 2, "city_speeding": 1},
        weighted_alerts=[7.0],
        newest_ts=0,
    ),
    ScoreWeights(),
)
# No driver, no pair, no alert: the nulls and the empty list.
IDLE = Scorecard.of(
    DayTally(None, "2026-11-25", ["T0099"], readings=1, max_speed_kmh=0.0), ScoreWeights()
)


def record(card: Scorecard, *, without: tuple[str, ...] = (), **changes: Any) -> bytes:
    """The scorecard as a record of fleet.scorecards, with fields changed or removed."""
    document = json.loads(encode_scorecard(card)) | changes
    return json.dumps({k: v for k, v in document.items() if k not in without}).encode()


def decode(values: list[bytes]) -> tuple[pl.DataFrame, list[Any]]:
    return decode_scorecards(TOPIC)(values, [-1] * len(values), RECEIVED_MS)


# --- One record, one flat row ----------------------------------------------------------------


def test_a_scorecard_becomes_one_flat_row_with_its_day_and_alerts_as_rule_count_pairs() -> None:
    frame, dead = decode([encode_scorecard(CARD), encode_scorecard(IDLE)])
    assert not dead
    assert frame.schema == SCORECARD_SCHEMA
    row, idle = frame.rows(named=True)
    assert row["day"] == date(2026, 11, 24)
    assert row["alerts"] == [
        {"rule": "city_speeding", "count": 1},
        {"rule": "sustained_speeding", "count": 2},
    ]
    assert (row["distance_km"], row["driving_s"], row["safety_score"]) == (
        CARD.distance_km,
        14_400.5,
        CARD.safety_score,
    )
    assert (idle["driver_id"], idle["events_per_1000km"], idle["alerts"]) == (None, None, [])
    # What a Polars user does with it: one row per rule, or the day's total.
    per_rule = frame.explode("alerts").unnest("alerts").drop_nulls("rule")
    assert per_rule.select("driver_id", "rule", "count").rows() == [
        ("D1", "city_speeding", 1),
        ("D1", "sustained_speeding", 2),
    ]
    totals = frame.select(pl.col("alerts").list.eval(pl.element().struct.field("count")).list.sum())
    assert totals.to_series().to_list() == [3, 0]
    # Every field of the wire has its column, and the rows give the scorecards back.
    assert set(SCORECARD_SCHEMA) == set(Scorecard.__struct_fields__)
    assert scorecards_of(frame) == [CARD, IDLE]


def test_decode_scorecard_reads_back_what_the_flows_write() -> None:
    for card in (CARD, IDLE):
        assert decode_scorecard(encode_scorecard(card)) == card
    assert decode_scorecard(record(CARD, without=("schema_version",), extra="ignored")) == CARD


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1, 2]", "schema"),
        (b"{}", "schema"),
        (record(CARD, without=("day",)), "schema"),
        (record(CARD, readings="many"), "schema"),
        (record(CARD, alerts={"": 1}), "schema"),
        (record(CARD, alerts={"x" * 300: 1}), "schema"),
        (record(CARD, alerts=[["sustained_speeding", 2]]), "schema"),
        (record(CARD, readings=-1), "out_of_range"),
        (record(CARD, trucks=2**63), "out_of_range"),
        (record(CARD, alerts={"sustained_speeding": 2**64}), "out_of_range"),
        (record(CARD, distance_km=-0.5), "out_of_range"),
        (record(CARD, distance_km="HUGE").replace(b'"HUGE"', b"1e999"), "out_of_range"),
        (record(CARD, distance_km=float("inf")), "invalid_json"),  # Infinity: no JSON
        (record(CARD, events_per_1000km=-1.0), "out_of_range"),
        (record(CARD, max_speed_kmh=20_000.0), "out_of_range"),
        (record(CARD, safety_score=100.5), "out_of_range"),
        (record(CARD, day="2026-11-31"), "bad_timestamp"),
        (record(CARD, day="20261124"), "bad_timestamp"),
        (record(CARD, day="2026-11-24T00:00:00Z"), "bad_timestamp"),
        (record(CARD, day="٢٠٢٦-11-24"), "bad_timestamp"),
    ],
)
def test_a_record_that_is_no_scorecard_is_a_dead_letter_of_archive_scorecards(
    raw: bytes, reason: str
) -> None:
    frame, dead = decode([encode_scorecard(IDLE), raw, encode_scorecard(CARD)])
    assert scorecards_of(frame) == [IDLE, CARD], "the others stay"
    (letter,) = dead
    encoded = json.loads(letter.encode())
    assert (encoded["stage"], encoded["reason"], encoded["source_topic"]) == (
        "archive_scorecards",
        reason,
        TOPIC,
    )
    assert base64.b64decode(encoded["raw"]) == raw
    assert encoded["detail"]


def test_a_roll_of_nothing_but_bad_records_is_an_empty_frame_of_the_schema() -> None:
    frame, dead = decode([b"x", b"{}"])
    assert (frame.height, frame.schema, len(dead)) == (0, SCORECARD_SCHEMA, 2)


@pytest.mark.unprocessable_expected
def test_a_record_that_fails_for_no_named_reason_is_unprocessable_and_the_roll_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dataflows.archive_alerts as flow

    def broken_row(card: Scorecard) -> dict[str, Any]:
        if card.driver_id is None:
            raise RuntimeError("a bug")
        if card.driver_id == "D9":  # a row no Parquet column holds: found alone
            return scorecard_row(card) | {"readings": 2**70}
        return scorecard_row(card)

    monkeypatch.setattr(flow, "scorecard_row", broken_row)
    odd = replace(CARD, driver_id="D9")
    frame, dead = decode([encode_scorecard(IDLE), encode_scorecard(CARD), encode_scorecard(odd)])
    assert scorecards_of(frame) == [CARD]
    assert [(d.reason, d.raw) for d in dead] == [
        ("unprocessable", encode_scorecard(IDLE)),
        ("unprocessable", encode_scorecard(odd)),
    ]
    assert all(d.stage == "archive_scorecards" for d in dead)


# --- One flow, two topics: their partitions, files and resume points never mix ----------------


def fetch(partition: int, first_offset: int, values: list[bytes]) -> Fetch:
    return Fetch(
        partition, first_offset, first_offset + len(values) - 1, values, [-1] * len(values)
    )


def run_both(
    lake_dir: Path, alert_fetches: list[Fetch], card_fetches: list[Fetch]
) -> tuple[list[Roll], list[OutboundRecord]]:
    alerts = alert_lake(lake_dir)
    cards = scorecard_lake(lake_dir, writes_with=alerts)
    sent: list[OutboundRecord] = []

    def step(flow: str, lake: Lake, decode: Any, first: Fetch) -> ArchiveStep:
        def send(records: list[OutboundRecord]) -> None:
            # Confirmed before the roll's files commit its offsets.
            assert lake.resume_offset(first.partition) in (None, first.first_offset)
            sent.extend(records)

        return ArchiveStep(
            flow,
            lake,
            decode,
            roll_bytes=10**9,
            roll_age=timedelta(minutes=5),
            dlq_topic="fleet.dlq",
            send_dead_letters=send,
            now=lambda: RECEIVED,
        )

    rolls: list[Roll] = []
    topics = [
        TopicArchive(
            "",
            TestingSource(alert_fetches),
            step("archive_alerts", alerts, decode_alerts("fleet.alerts"), alert_fetches[0]),
        ),
        TopicArchive(
            "scorecards_",
            TestingSource(card_fetches),
            step("archive_scorecards", cards, decode_scorecards(TOPIC), card_fetches[0]),
        ),
    ]
    run_main(build_topics_flow("archive_alerts", topics, TestingSink(rolls)))
    return rolls, sent


def test_one_flow_archives_both_topics_each_in_its_own_directory_and_resumes_each_alone(
    tmp_path: Path,
) -> None:
    # Partition 0 of both topics, the same offsets: the same file names, other directories.
    alert_values = [encode_alert(ALERT), b"garbage", encode_alert(PLAIN)]
    card_values = [encode_scorecard(CARD), encode_scorecard(IDLE), b"{}", encode_scorecard(CARD)]
    rolls, sent = run_both(tmp_path, [fetch(0, 0, alert_values)], [fetch(0, 0, card_values)])

    by_lake = {Path(r.lake).name: r for r in rolls}
    assert set(by_lake) == {"alerts", "scorecards"}
    assert (by_lake["alerts"].rows, by_lake["alerts"].dead_letters) == (2, 1)
    assert (by_lake["scorecards"].rows, by_lake["scorecards"].dead_letters) == (3, 1)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == [
        "alerts/date=2026-11-24/p0000-00000000000000000000-00000000000000000002-1of2.parquet",
        "alerts/date=2026-11-25/p0000-00000000000000000000-00000000000000000002-2of2.parquet",
        "scorecards/date=2026-11-24/p0000-00000000000000000000-00000000000000000003-1of2.parquet",
        "scorecards/date=2026-11-25/p0000-00000000000000000000-00000000000000000003-2of2.parquet",
    ]
    assert sorted(json.loads(r.value)["stage"] for r in sent) == [
        "archive_alerts",
        "archive_scorecards",
    ]
    assert scan_alerts(tmp_path).collect()["alert_id"].to_list() == [
        PLAIN.alert_id,
        ALERT.alert_id,
    ]
    every = scan_scorecards(tmp_path, deduplicate=False).collect()
    assert scorecards_of(every) == [CARD, CARD, IDLE], "stored as they came, by file"
    # Each topic resumes from its own files.
    assert alert_lake(tmp_path).resume_offset(0) == 3
    assert scorecard_lake(tmp_path).resume_offset(0) == 4

    # The next run goes on where each ended, and a partition of one is not one of the other.
    later = replace(CARD, day="2026-11-26")
    rolls, _ = run_both(
        tmp_path, [fetch(1, 0, [encode_alert(ALERT)])], [fetch(0, 4, [encode_scorecard(later)])]
    )
    assert sorted((Path(r.lake).name, r.partition, r.first_offset) for r in rolls) == [
        ("alerts", 1, 0),
        ("scorecards", 0, 4),
    ]
    assert scorecard_lake(tmp_path).resume_offset(0) == 5
    assert scorecard_lake(tmp_path).resume_offset(1) is None
    assert alert_lake(tmp_path).resume_offset(1) == 1
    assert scorecards_of(scan_scorecards(tmp_path).collect()) == [CARD, IDLE, later]


def test_stopping_one_lake_stops_the_writes_of_the_lake_it_writes_with(tmp_path: Path) -> None:
    alerts = alert_lake(tmp_path)
    cards = scorecard_lake(tmp_path, writes_with=alerts)
    alone = scorecard_lake(tmp_path / "other")
    assert alerts.stop_writing(1.0)
    wrote = threading.Event()

    def write() -> None:
        cards.write_rows(0, 0, 0, scorecards_frame([scorecard_row(CARD)]))
        wrote.set()

    threading.Thread(target=write, daemon=True).start()  # waits until the process exits
    assert not wrote.wait(0.3), "a roll started after the stop"
    assert alone.write_rows(0, 0, 0, scorecards_frame([scorecard_row(CARD)]))


# --- scan_scorecards -----------------------------------------------------------------------


def write_cards(lake_dir: Path, partition: int, first: int, cards: list[Scorecard]) -> None:
    rows = scorecards_frame([scorecard_row(c) for c in cards])
    scorecard_lake(lake_dir).write_rows(partition, first, first + len(cards) - 1, rows)


def test_scan_scorecards_keeps_one_per_driver_and_day_sorted_by_day_then_driver(
    tmp_path: Path,
) -> None:
    other = replace(CARD, driver_id="D0", safety_score=99.0)
    next_day = replace(CARD, day="2026-11-25")
    write_cards(tmp_path, 0, 0, [CARD, IDLE, next_day])
    write_cards(tmp_path, 1, 0, [CARD, other])  # CARD again: resent after a restart
    write_cards(tmp_path, 0, 3, [IDLE])
    scanned = scan_scorecards(tmp_path)
    assert isinstance(scanned, pl.LazyFrame)
    frame = scanned.collect()
    assert frame.schema == SCORECARD_SCHEMA
    assert scorecards_of(frame) == [other, CARD, IDLE, next_day]  # a null driver comes first
    assert scan_scorecards(tmp_path, deduplicate=False).collect().height == 6
    only = scan_scorecards(tmp_path, first_day=date(2026, 11, 25), last_day=date(2026, 11, 25))
    assert scorecards_of(only.collect()) == [IDLE, next_day]
    assert "date=2026-11-24" not in only.explain(), "the other days' files are not read"
    before = scan_scorecards(tmp_path, last_day=date(2026, 11, 24)).collect()
    assert scorecards_of(before) == [other, CARD]


def test_scan_scorecards_of_a_lake_without_scorecards_is_empty_and_typed(tmp_path: Path) -> None:
    frame = scan_scorecards(tmp_path / "nothing").collect()
    assert (frame.height, frame.schema) == (0, SCORECARD_SCHEMA)
    # A roll of bad records only leaves an empty file in date=none: skipped.
    scorecard_lake(tmp_path).write_rows(0, 0, 4, scorecards_frame([]))
    assert scan_scorecards(tmp_path).collect().height == 0


# --- The telemetry's readers skip scorecards/ (and alerts/) ---------------------------------


def test_the_readers_of_the_lake_never_take_archived_scorecards_for_readings(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    day = lake / "date=2026-11-24"
    positioned = [Reading(f"e{n}", f"T{n}", BEGINNING_MS, 50.0, 60.17, 24.94) for n in (1, 2)]
    write_readings(positioned, day / "r.parquet")
    write_cards(lake, 0, 0, [CARD, IDLE])
    alert_lake(lake).write_rows(
        0, 0, 0, decode_alerts("fleet.alerts")([encode_alert(ALERT)], [-1], 0)[0]
    )
    assert len(list((lake / "scorecards").rglob("*.parquet"))) == 2
    readings = [day / "r.parquet"]
    # resolve_inputs: the backfill, fleetwatch.map, whatif and explain read through it.
    assert resolve_inputs(str(lake)) == readings
    assert resolve_inputs(str(lake / "**" / "*.parquet")) == readings
    assert resolve_inputs(f"{lake}/*/*.parquet") == readings
    assert len(resolve_inputs(f"{lake}/scorecards/**/*.parquet")) == 2, "named: read"
    # The history refresh's readings files (through resolve_inputs too).
    assert lake_files(lake, date(2026, 11, 1), date(2026, 11, 30)) == readings
    tracks = read_tracks(str(lake), None, Window(None, None))
    assert sorted(tracks["truck_id"].unique()) == ["T1", "T2"]
    # The telemetry archive's own view of the lake: its root's date=*/p*.parquet only.
    assert Lake(lake).files() == []
