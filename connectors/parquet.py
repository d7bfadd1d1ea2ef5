"""Parquet files of readings in the lake's schema (CONTRACT.md section 8), written atomically."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from domain.readings import Reading

READING_SCHEMA = pl.Schema(
    {
        "event_id": pl.String(),
        "truck_id": pl.String(),
        "ts": pl.Datetime("ms", "UTC"),
        "speed_kmh": pl.Float64(),
        "lat": pl.Float64(),
        "lon": pl.Float64(),
    }
)


def readings_frame(readings: Sequence[Reading]) -> pl.DataFrame:
    """Readings as a DataFrame with the lake's columns and types."""
    return pl.DataFrame(
        {
            "event_id": [r.event_id for r in readings],
            "truck_id": [r.truck_id for r in readings],
            "ts": pl.Series([r.ts_ms for r in readings], dtype=pl.Int64).cast(
                pl.Datetime("ms", "UTC")
            ),
            "speed_kmh": [r.speed_kmh for r in readings],
            "lat": [r.lat for r in readings],
            "lon": [r.lon for r in readings],
        },
        schema=READING_SCHEMA,
    )


def write_atomically(frame: pl.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write to a temporary name, fsync, then rename: readers never see a partial file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        frame.write_parquet(temporary, compression="zstd")
        with temporary.open("rb") as written:
            os.fsync(written.fileno())
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)


def write_readings(readings: Sequence[Reading], path: str | os.PathLike[str]) -> None:
    """Write readings as one Parquet file in the lake's schema."""
    write_atomically(readings_frame(readings), path)
