"""Readings written as Parquet in the lake's schema (CONTRACT.md section 8)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from connectors.parquet import READING_SCHEMA, write_readings
from devtools.simulator import main as simulator_main
from domain.readings import Reading
from tests.builders import BEGINNING_MS


def test_written_file_has_the_contract_schema_and_values(tmp_path: Path) -> None:
    readings = [
        Reading("e1", "T1", BEGINNING_MS, 95.5, 52.5, 13.4),
        Reading("e2", "T2", BEGINNING_MS + 1, 0.0, None, None),
    ]
    path = tmp_path / "day" / "part.parquet"
    write_readings(readings, path)
    frame = pl.read_parquet(path)
    assert frame.schema == READING_SCHEMA
    assert frame["ts"].dt.epoch("ms").to_list() == [BEGINNING_MS, BEGINNING_MS + 1]
    assert frame["lat"].to_list() == [52.5, None]
    assert [p.name for p in path.parent.iterdir()] == ["part.parquet"], "no temporary file left"


def test_simulator_writes_parquet(tmp_path: Path) -> None:
    path = tmp_path / "fleet.parquet"
    assert (
        simulator_main(
            ["--count", "500", "--trucks", "5", "--resend-share", "0.1", "--parquet", str(path)]
        )
        == 0
    )
    frame = pl.read_parquet(path)
    assert frame.schema == READING_SCHEMA
    assert frame["event_id"].n_unique() == frame.height, "resends are not written twice"
    assert 400 < frame.height <= 500
