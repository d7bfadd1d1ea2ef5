"""The rolls both archives share (dataflows/_lake_archive.py), here with the telemetry's
decoder: rows by ts date, dead letters (stage ``archive``) before the files, the lake
resuming after its last roll; and rolling by size."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.kafka import OutboundRecord
from connectors.kafka_source import Fetch
from connectors.lake import Lake
from connectors.parquet import READING_SCHEMA
from dataflows._lake_archive import ArchiveStep, Roll, build_flow
from dataflows.archive import decode_readings
from domain.readings import encode_canonical
from domain.timestamps import to_epoch_ms
from tests.builders import reading

NOW = datetime(2026, 11, 25, 0, 5, tzinfo=UTC)
BEFORE_MIDNIGHT = datetime(2026, 11, 24, 23, 59, 59, tzinfo=UTC)


def archive(lake: Lake, fetches: list[Fetch], roll_bytes: int = 10**9) -> list[Roll]:
    sent: list[OutboundRecord] = []
    step = ArchiveStep(
        "archive",
        lake,
        decode_readings("fleet.telemetry", 300_000),
        roll_bytes=roll_bytes,
        roll_age=timedelta(minutes=5),
        dlq_topic="fleet.dlq",
        send_dead_letters=sent.extend,
        now=lambda: NOW,
    )
    rolls: list[Roll] = []
    run_main(build_flow("archive", TestingSource(fetches), step, TestingSink(rolls)))
    assert all(json.loads(r.value)["stage"] == "archive" for r in sent)
    return rolls


def test_readings_roll_into_their_ts_dates_and_bad_ones_are_counted(tmp_path: Path) -> None:
    values = [
        encode_canonical(reading("T1", at=BEFORE_MIDNIGHT)),
        encode_canonical(reading("T1", at=BEFORE_MIDNIGHT + timedelta(seconds=2))),
        b"{not json",
    ]
    lake = Lake(tmp_path)
    (roll,) = archive(lake, [Fetch(0, 5, 7, values, [to_epoch_ms(NOW)] * 3)])
    assert (roll.rows, roll.dead_letters, roll.files) == (2, 1, 2)
    assert sorted(p.parent.name for p in tmp_path.rglob("*.parquet")) == [
        "date=2026-11-24",
        "date=2026-11-25",
    ]
    frame = pl.read_parquet(tmp_path / "date=*" / "*.parquet")
    assert frame.schema == READING_SCHEMA
    assert lake.resume_offset(0) == 8


def test_a_partition_rolls_when_its_buffer_reaches_the_size(tmp_path: Path) -> None:
    value = encode_canonical(reading("T1"))
    fetches = [Fetch(1, n, n, [value], [-1]) for n in range(4)]
    rolls = archive(Lake(tmp_path), fetches, roll_bytes=2 * len(value))
    assert [(r.first_offset, r.last_offset) for r in rolls] == [(0, 1), (2, 3)]
