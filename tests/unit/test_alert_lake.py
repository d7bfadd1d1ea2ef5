"""Archived alerts (dataflows.archive_alerts, connectors/alert_lake.py): a record becomes one
flat row, bad records become dead letters, the rolls land in ``alerts/date=<window_end>``,
``scan_alerts`` deduplicates, and the telemetry's readers never read them as readings."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from msgspec.structs import replace

from connectors.alert_lake import (
    ALERT_SCHEMA,
    alert_lake,
    alert_row,
    alerts_frame,
    scan_alerts,
)
from connectors.kafka import OutboundRecord
from connectors.kafka_source import Fetch
from connectors.lake import Lake
from connectors.parquet import write_readings
from connectors.parquet_input import resolve_inputs
from dataflows._lake_archive import ArchiveStep, Roll, build_flow
from dataflows.archive_alerts import decode_alerts
from domain.alerts import Alert, AlertDriver, Position, Severity, encode_alert
from domain.timestamps import to_epoch_ms
from tests.builders import reading

TOPIC = "fleet.alerts"
RECEIVED = datetime(2026, 11, 25, 0, 1, tzinfo=UTC)
RECEIVED_MS = to_epoch_ms(RECEIVED)
DRIVER = AlertDriver(
    driver_id="D1",
    name="Ana Berg",
    hired_on="2019-04-01",
    overspeed_events_90d=4,
    avg_speed_kmh_90d=83.0,
    km_driven_90d=9_120.0,
    risk_tier="high",
    speed_over_baseline_kmh=35.0,
    repeat_offender=True,
)
# Its window crosses midnight (UTC): the alert belongs to the date of its window_end.
ALERT = Alert(
    alert_id="a" * 32,
    rule="city_speeding",
    truck_id="T0012",
    driver_id="D1",
    window_start="2026-11-24T23:59:58.000Z",
    window_end="2026-11-25T00:00:02.500Z",
    count=2,
    event_ids=["e1", "e2"],
    max_speed_kmh=118.0,
    mean_speed_kmh=104.25,
    threshold_kmh=90.0,
    severity=Severity.CRITICAL,
    driver=DRIVER,
    detected_at="2026-11-25T00:00:03.120Z",
    rule_version=3,
    position=Position(60.1699, 24.9384),
    details={"posted_limit_kmh": 40.0, "road_name": "Mannerheimintie", "osm_way_id": 7},
)
PLAIN = replace(
    ALERT,
    alert_id="b" * 32,
    rule="instant_overspeed",
    driver_id=None,
    driver=None,
    window_start="2026-11-24T10:00:00.000Z",
    window_end="2026-11-24T10:00:00.000Z",
    count=1,
    event_ids=["e9"],
    rule_version=0,
    position=None,
    details={},
)


def record(alert: Alert, *, without: tuple[str, ...] = (), **changes: Any) -> bytes:
    """The alert as a record of fleet.alerts, with fields changed, or removed (``without``)."""
    document = json.loads(encode_alert(alert)) | changes
    return json.dumps({k: v for k, v in document.items() if k not in without}).encode()


def decode(values: list[bytes]) -> tuple[pl.DataFrame, list[Any]]:
    return decode_alerts(TOPIC)(values, [-1] * len(values), RECEIVED_MS)


def test_an_alert_becomes_one_flat_row_with_typed_times_structs_and_details_as_json() -> None:
    frame, dead = decode([encode_alert(ALERT), encode_alert(PLAIN)])
    assert not dead
    assert frame.schema == ALERT_SCHEMA
    row, plain = frame.rows(named=True)
    assert row["window_start"] == datetime(2026, 11, 24, 23, 59, 58, tzinfo=UTC)
    assert row["window_end"] == datetime(2026, 11, 25, 0, 0, 2, 500_000, tzinfo=UTC)
    assert row["detected_at"] == datetime(2026, 11, 25, 0, 0, 3, 120_000, tzinfo=UTC)
    assert row["event_ids"] == ["e1", "e2"]
    assert row["driver"] == msgspec.structs.asdict(DRIVER)
    assert (row["severity"], row["rule_version"], row["schema_version"]) == ("critical", 3, 1)
    assert (row["lat"], row["lon"]) == (60.1699, 24.9384)
    assert json.loads(row["details"]) == ALERT.details
    assert frame.select(
        pl.col("details").str.json_path_match("$.road_name"),
        pl.col("driver").struct.field("risk_tier"),
    ).row(0) == ("Mannerheimintie", "high")
    assert (plain["driver"], plain["driver_id"], plain["lat"], plain["lon"]) == (None,) * 4
    assert plain["details"] == "{}"
    # Every field of the alert has its column (position as lat/lon).
    wire = set(msgspec.structs.asdict(ALERT)) - {"position"}
    assert wire | {"lat", "lon"} == set(ALERT_SCHEMA)


def test_a_record_without_the_later_fields_reads_as_a_built_in_alert() -> None:
    frame, dead = decode([record(PLAIN, without=("rule_version", "position", "details"))])
    assert not dead
    assert frame.select("rule_version", "lat", "details").row(0) == (0, None, "{}")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1, 2]", "schema"),
        (b"{}", "schema"),
        (record(ALERT, count="two"), "schema"),
        (record(ALERT, alert_id="no spaces allowed"), "schema"),
        (record(ALERT, severity="fatal"), "schema"),
        (record(ALERT, max_speed_kmh=1e6), "out_of_range"),
        (record(ALERT, rule_version=-1), "out_of_range"),
        (record(ALERT, schema_version=2**64), "out_of_range"),
        (
            record(ALERT, driver={**msgspec.structs.asdict(DRIVER), "overspeed_events_90d": 2**63}),
            "out_of_range",
        ),
        (record(ALERT, window_end="yesterday"), "bad_timestamp"),
        (record(ALERT, detected_at="2026-13-01T00:00:00Z"), "bad_timestamp"),
    ],
)
def test_a_record_that_is_no_alert_is_a_dead_letter_of_archive_alerts(
    raw: bytes, reason: str
) -> None:
    frame, dead = decode([encode_alert(PLAIN), raw, encode_alert(ALERT)])
    assert frame["alert_id"].to_list() == [PLAIN.alert_id, ALERT.alert_id], "the others stay"
    (letter,) = dead
    encoded = json.loads(letter.encode())
    assert (encoded["stage"], encoded["reason"], encoded["source_topic"]) == (
        "archive_alerts",
        reason,
        TOPIC,
    )
    assert base64.b64decode(encoded["raw"]) == raw
    assert encoded["detail"]


def test_a_roll_of_nothing_but_bad_records_is_an_empty_frame_of_the_schema() -> None:
    frame, dead = decode([b"x", b"{}"])
    assert frame.height == 0
    assert frame.schema == ALERT_SCHEMA
    assert len(dead) == 2


@pytest.mark.unprocessable_expected
def test_a_record_that_fails_for_no_named_reason_is_unprocessable_and_the_roll_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dataflows.archive_alerts as flow

    def broken_row(alert: Alert) -> dict[str, Any]:
        if alert.alert_id == PLAIN.alert_id:
            raise RuntimeError("a bug")
        if alert.truck_id == "T0099":  # a row no Parquet column holds: found alone
            return alert_row(alert) | {"count": 2**70}
        return alert_row(alert)

    monkeypatch.setattr(flow, "alert_row", broken_row)
    odd = replace(ALERT, alert_id="c" * 32, truck_id="T0099")
    frame, dead = decode([encode_alert(PLAIN), encode_alert(ALERT), encode_alert(odd)])
    assert frame["alert_id"].to_list() == [ALERT.alert_id]
    assert [(d.reason, d.raw) for d in dead] == [
        ("unprocessable", encode_alert(PLAIN)),
        ("unprocessable", encode_alert(odd)),
    ]
    assert dead[0].detail == "RuntimeError: a bug"


def test_alerts_frame_refuses_what_alert_row_would_not_make() -> None:
    row = alert_row(ALERT) | {"count": 2**70}
    with pytest.raises(Exception):  # noqa: B017, PT011 - Polars' overflow error
        alerts_frame([row])


# --- The flow: rolls into alerts/date=..., dead letters first --------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = RECEIVED

    def __call__(self) -> datetime:
        return self.now


def run_flow(lake_dir: Path, fetches: list[Fetch], sent: list[OutboundRecord]) -> list[Roll]:
    lake = alert_lake(lake_dir)

    def send(records: list[OutboundRecord]) -> None:
        # The dead letters are confirmed before the roll's files commit its offsets.
        assert lake.resume_offset(fetches[0].partition) in (None, fetches[0].first_offset)
        sent.extend(records)

    step = ArchiveStep(
        "archive_alerts",
        lake,
        decode_alerts(TOPIC),
        roll_bytes=10**9,
        roll_age=timedelta(minutes=5),
        dlq_topic="fleet.dlq",
        send_dead_letters=send,
        now=Clock(),
    )
    rolls: list[Roll] = []
    run_main(build_flow("archive_alerts", TestingSource(fetches), step, TestingSink(rolls)))
    return rolls


def fetch(partition: int, first_offset: int, values: list[bytes]) -> Fetch:
    return Fetch(
        partition, first_offset, first_offset + len(values) - 1, values, [-1] * len(values)
    )


def test_the_flow_writes_each_record_once_under_its_window_end_date_duplicates_kept(
    tmp_path: Path,
) -> None:
    values = [encode_alert(ALERT), encode_alert(PLAIN), b"garbage", encode_alert(ALERT)]
    sent: list[OutboundRecord] = []
    (roll,) = run_flow(tmp_path, [fetch(2, 10, values)], sent)
    assert (roll.partition, roll.first_offset, roll.last_offset) == (2, 10, 13)
    assert (roll.rows, roll.dead_letters, roll.files) == (3, 1, 2)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == [
        "alerts/date=2026-11-24/p0002-00000000000000000010-00000000000000000013-1of2.parquet",
        "alerts/date=2026-11-25/p0002-00000000000000000010-00000000000000000013-2of2.parquet",
    ]
    (letter,) = sent
    assert letter.topic == "fleet.dlq"
    assert json.loads(letter.value)["stage"] == "archive_alerts"

    every = scan_alerts(tmp_path, deduplicate=False).collect()
    assert every["alert_id"].to_list().count(ALERT.alert_id) == 2, "stored as they came"
    assert every.drop("date").schema == ALERT_SCHEMA

    # Resumed, it goes on after the roll: the next fetch starts at offset 14.
    assert alert_lake(tmp_path).resume_offset(2) == 14
    assert Lake(tmp_path).resume_offset(2) is None, "the telemetry's lake is another"


# --- scan_alerts ------------------------------------------------------------------------


def write_alerts(lake_dir: Path, partition: int, first: int, alerts: list[Alert]) -> None:
    rows = alerts_frame([alert_row(a) for a in alerts])
    alert_lake(lake_dir).write_rows(partition, first, first + len(alerts) - 1, rows)


def test_scan_alerts_keeps_the_first_copy_of_each_alert_sorted_by_window_end(
    tmp_path: Path,
) -> None:
    resent = replace(ALERT, detected_at="2026-11-25T00:07:00.000Z")  # after a restart
    write_alerts(tmp_path, 0, 0, [resent, PLAIN])
    write_alerts(tmp_path, 1, 0, [ALERT, PLAIN])
    alerts = scan_alerts(tmp_path)
    assert isinstance(alerts, pl.LazyFrame)
    frame = alerts.collect()
    assert frame["alert_id"].to_list() == [PLAIN.alert_id, ALERT.alert_id]
    assert frame["detected_at"][1] == datetime(2026, 11, 25, 0, 0, 3, 120_000, tzinfo=UTC)
    assert frame["date"].to_list() == [date(2026, 11, 24), date(2026, 11, 25)]
    assert scan_alerts(tmp_path, deduplicate=False).collect().height == 4
    only = scan_alerts(tmp_path, first_day=date(2026, 11, 25), last_day=date(2026, 11, 25))
    assert only.collect()["alert_id"].to_list() == [ALERT.alert_id]
    assert "date=2026-11-24" not in only.explain(), "the other dates' files are not read"


def test_scan_alerts_of_a_lake_without_alerts_is_empty_and_typed(tmp_path: Path) -> None:
    frame = scan_alerts(tmp_path / "nothing").collect()
    assert frame.height == 0
    assert frame.schema == pl.Schema({**ALERT_SCHEMA, "date": pl.Date()})
    # A roll of bad records only leaves an empty file in date=none: skipped.
    alert_lake(tmp_path).write_rows(0, 0, 4, alerts_frame([]))
    assert scan_alerts(tmp_path).collect().height == 0


# --- The telemetry's readers skip alerts/ --------------------------------------------------


def test_the_readers_of_the_lake_never_take_archived_alerts_for_readings(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    write_readings([reading("T1"), reading("T2")], lake / "date=2026-11-24" / "r.parquet")
    write_alerts(lake, 0, 0, [ALERT, PLAIN])
    readings = [lake / "date=2026-11-24" / "r.parquet"]
    assert resolve_inputs(str(lake)) == readings
    assert resolve_inputs(str(lake / "**" / "*.parquet")) == readings
    assert resolve_inputs(f"{lake}/*/*.parquet") == readings
    assert len(resolve_inputs(f"{lake}/alerts/**/*.parquet")) == 2, "named: read"
    # The telemetry archive's own view of the lake.
    assert Lake(lake).files() == []  # r.parquet has no roll name; alerts/ is not looked at
