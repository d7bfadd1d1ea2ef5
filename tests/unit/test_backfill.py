"""dataflows.backfill over Parquet files in a temporary directory (local files, no broker)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest
from bytewax.testing import cluster_main, run_main

from connectors.jsonl_sink import JsonlSink
from connectors.parquet import write_readings
from connectors.parquet_input import BackfillInputError, ParquetReadingsSource, resolve_inputs
from dataflows.backfill import build_flow, dead_letter_path
from domain.readings import Reading
from domain.rules import RuleConfig
from runtime.progress import Progress
from tests.builders import BEGINNING_MS
from tests.reference import reference_alerts

CONFIG = RuleConfig()
SPEEDS = [60.0, 88.0, 90.0, 95.0, 110.0, 131.0, 150.0]


def fleet(n: int = 6_000, trucks: int = 25, seed: int = 3) -> list[Reading]:
    rng = random.Random(seed)
    return [
        Reading(
            f"e{i:06d}",
            f"T{i % trucks:03d}",
            BEGINNING_MS + i * 7_000 + rng.randint(0, 900),
            rng.choice(SPEEDS),
        )
        for i in range(n)
    ]


def write_interleaved(directory: Path, readings: list[Reading], files: int = 3) -> None:
    """Every file spans the whole period and every truck: readings dealt round-robin."""
    for k in range(files):
        write_readings(readings[k::files], directory / f"part-{k}.parquet")


def backfill(input_spec: str, out: Path, workers: int = 1) -> tuple[list[dict[str, object]], bytes]:
    files = resolve_inputs(input_spec)
    flow = build_flow(
        ParquetReadingsSource(files, CONFIG.lowest_limit_kmh),
        JsonlSink(out),
        JsonlSink(dead_letter_path(out)),
        CONFIG,
        None,
        Progress(interval_s=3600),
    )
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return [json.loads(line) for line in out.read_bytes().splitlines()], out.read_bytes()


def keys(alerts: list[dict[str, object]]) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(str(a["rule"]), str(a["truck_id"]), tuple(a["event_ids"])) for a in alerts}  # type: ignore[arg-type]


def test_interleaved_files_give_the_sorted_result_on_any_worker_count(tmp_path: Path) -> None:
    readings = fleet()
    write_interleaved(tmp_path / "in", readings)
    one, one_bytes = backfill(str(tmp_path / "in"), tmp_path / "w1.jsonl")
    two, _ = backfill(str(tmp_path / "in"), tmp_path / "w2.jsonl", workers=2)
    _, again_bytes = backfill(str(tmp_path / "in" / "*.parquet"), tmp_path / "again.jsonl")
    expected = reference_alerts(readings, CONFIG)
    assert len(expected) > 20
    assert keys(one) == expected
    assert len(one) == len(expected)
    assert sorted(map(json.dumps, two)) == sorted(map(json.dumps, one)), (
        "-w 2 agrees, field for field"
    )
    assert again_bytes == one_bytes, "the same input gives the same bytes: no wall clock"


def test_detected_at_is_the_window_end(tmp_path: Path) -> None:
    write_interleaved(tmp_path / "in", fleet(n=800))
    alerts, _ = backfill(str(tmp_path / "in"), tmp_path / "out.jsonl")
    assert alerts
    assert all(a["detected_at"] == a["window_end"] for a in alerts)


def test_duplicates_across_files_are_ignored(tmp_path: Path) -> None:
    readings = fleet(n=1_500)
    write_readings(readings, tmp_path / "in" / "a.parquet")
    write_readings(
        readings[::2], tmp_path / "in" / "nested" / "b.parquet"
    )  # resends, in a subdirectory
    alerts, _ = backfill(str(tmp_path / "in"), tmp_path / "out.jsonl")
    assert keys(alerts) == reference_alerts(readings, CONFIG)


def test_bad_rows_are_dead_lettered_and_counted(tmp_path: Path) -> None:
    good = fleet(n=300)
    write_readings(good, tmp_path / "in" / "good.parquet")
    bad = pl.DataFrame(
        {
            "event_id": ["b1", None, "b3", "b4"],
            "truck_id": ["T001", "T001", None, "T 9"],
            "ts": [BEGINNING_MS] * 4,
            "speed_kmh": [450.0, 95.0, 95.0, 95.0],
            "lat": [None] * 4,
            "lon": [None] * 4,
        },
        schema_overrides={"lat": pl.Float64, "lon": pl.Float64},
    ).with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
    bad.write_parquet(tmp_path / "in" / "bad.parquet")
    progress = Progress(interval_s=3600)
    out = tmp_path / "out.jsonl"
    flow = build_flow(
        ParquetReadingsSource(
            resolve_inputs(str(tmp_path / "in")), CONFIG.lowest_limit_kmh, progress=progress
        ),
        JsonlSink(out),
        JsonlSink(dead_letter_path(out)),
        CONFIG,
        None,
        progress,
    )
    run_main(flow)
    dead = [json.loads(line) for line in dead_letter_path(out).read_text().splitlines()]
    assert sorted(d["reason"] for d in dead) == ["out_of_range", "schema", "schema", "schema"]
    assert all(d["stage"] == "backfill" and d["source_topic"].endswith("bad.parquet") for d in dead)
    assert progress.dead_letters == 4
    assert progress.done == progress.total == 304, "every row accounted for"
    assert keys([json.loads(line) for line in out.read_text().splitlines()]) == reference_alerts(
        good, CONFIG
    )


def test_inputs_resolve_from_file_directory_and_glob(tmp_path: Path) -> None:
    write_interleaved(tmp_path / "lake" / "date=2026-11-24", fleet(n=30), files=2)
    (tmp_path / "lake" / "date=2026-11-24" / ".hidden.parquet").write_bytes(b"temporary")
    assert len(resolve_inputs(str(tmp_path / "lake"))) == 2
    assert len(resolve_inputs(str(tmp_path / "lake" / "**" / "part-1.parquet"))) == 1
    with pytest.raises(BackfillInputError, match="names no Parquet file"):
        resolve_inputs(str(tmp_path / "nothing"))
