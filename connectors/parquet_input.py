"""Bounded Parquet input for dataflows.backfill: the lake or any files with its columns.

The work is split by truck: partition ``b`` of ``buckets`` holds the trucks whose
``truck_id`` hashes to ``b`` (Polars' hash with a fixed seed, the same in every process).
Each partition scans the files with Polars, sets bad rows apart, drops duplicates and the
readings that can affect no rule (``domain.catalogue.Prefilter``: at or below the lowest
limit, outside the zones' bounding boxes, ...; exact: such a reading changes no rule
state), sorts by ``(truck_id, ts, event_id)`` and hands out each truck's readings in
order, in chunks. Its snapshot is the number of chunks handed out.
"""

from __future__ import annotations

import glob
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override

from connectors.alert_lake import ALERTS_DIR
from connectors.scorecard_lake import SCORECARDS_DIR
from domain.catalogue import Prefilter
from domain.dead_letters import Reason
from domain.readings import (
    EVENT_ID_RULE,
    LAT_RANGE,
    LON_RANGE,
    MAX_EVENT_ID_CHARS,
    MAX_SPEED_KMH,
    TRUCK_ID_PATTERN,
    TRUCK_ID_RULE,
    Reading,
)
from domain.timestamps import MAX_EPOCH_MS, MIN_EPOCH_MS
from runtime.progress import Progress

COLUMNS = ["event_id", "truck_id", "ts", "speed_kmh", "lat", "lon"]
# Rust's regex: ``$`` is the end of the text (no multi-line mode), unlike Python's.
_TRUCK_ID = f"^{TRUCK_ID_PATTERN}$"
_GLOB_MAGIC = frozenset("*?[")
# A lake's directories of archived records that are not readings (dataflows.archive_alerts).
_ARCHIVED_RECORDS = frozenset({ALERTS_DIR, SCORECARDS_DIR})
CHUNK_READINGS = 20_000
# Bad rows go to the dead-letter sink in batches of this many, not a bucket's all at once
# (300k bad rows once made one 125 MB batch): memory stays bounded by the chunk size.
CHUNK_BAD_ROWS = 1_000


class BackfillInputError(ValueError):
    """The input cannot be read as readings; the message says which file or spec."""


def resolve_inputs(spec: str) -> list[Path]:
    """A file, a directory (searched recursively) or a glob -> the Parquet files, sorted.

    The archived alerts in a lake's ``alerts/`` (connectors/alert_lake.py) and scorecards
    in its ``scorecards/`` (connectors/scorecard_lake.py) are no readings: a directory's
    ``alerts/`` and ``scorecards/`` are skipped, and so are those in a glob's fixed leading
    directory (``lake/**/*.parquet``); name one in the glob to read it anyway."""
    path = Path(spec)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = [
            p
            for p in path.rglob("*.parquet")
            if not p.name.startswith(".") and not _archived_records(p, path)
        ]
    else:
        root = Path(*itertools.takewhile(lambda part: not _GLOB_MAGIC & set(part), path.parts))
        files = [
            Path(p)
            for p in glob.glob(spec, recursive=True)
            if Path(p).is_file() and not _archived_records(Path(p), root)
        ]
    if not files:
        raise BackfillInputError(f"FLEET_BACKFILL_INPUT={spec!r} names no Parquet file")
    return sorted(files)


def _archived_records(file: Path, root: Path) -> bool:
    """Whether ``file`` lies in ``alerts/`` or ``scorecards/`` right under ``root``."""
    parts = file.relative_to(root).parts if file.is_relative_to(root) else ()
    return len(parts) > 1 and parts[0] in _ARCHIVED_RECORDS


@dataclass(frozen=True, slots=True)
class TruckReadings:
    """Readings of one truck, in event-time order (ties by event_id)."""

    truck_id: str
    readings: list[Reading]


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that is not a valid reading, for the dead-letter output."""

    reason: Reason
    detail: str
    source: str
    raw: bytes


BackfillItem = TruckReadings | BadRow  # what the source emits


def row_problem() -> pl.Expr:
    """Why a row is bad (null: it is fine), in the order the live validation checks and
    with its limits (domain/readings.py), so the stream and the backfill classify every
    reading alike."""
    speed, lat, lon = pl.col("speed_kmh"), pl.col("lat"), pl.col("lon")
    epoch_ms = pl.col("ts").dt.epoch("ms")
    return (
        pl.when(
            pl.any_horizontal(
                pl.col(c).is_null() for c in ("event_id", "truck_id", "ts", "speed_kmh")
            )
        )
        .then(pl.lit("schema:a required column is null"))
        .when(~pl.col("event_id").str.len_chars().is_between(1, MAX_EVENT_ID_CHARS))
        .then(pl.lit(f"schema:{EVENT_ID_RULE}"))
        .when(~pl.col("truck_id").str.contains(_TRUCK_ID))
        .then(pl.lit(f"schema:{TRUCK_ID_RULE}"))
        .when(~epoch_ms.is_between(MIN_EPOCH_MS, MAX_EPOCH_MS))
        .then(pl.lit("bad_timestamp:ts outside 1970-01-01..9999-12-31"))
        .when(~speed.is_finite() | ~speed.is_between(0.0, MAX_SPEED_KMH))
        .then(pl.lit(f"out_of_range:speed_kmh outside 0..{MAX_SPEED_KMH:g}"))
        .when(lat.is_not_null() & (~lat.is_finite() | ~lat.is_between(*LAT_RANGE)))
        .then(pl.lit("out_of_range:lat outside -90..90"))
        .when(lon.is_not_null() & (~lon.is_finite() | ~lon.is_between(*LON_RANGE)))
        .then(pl.lit("out_of_range:lon outside -180..180"))
        .otherwise(pl.lit(None, pl.String))
    )


def scan_readings(files: list[Path]) -> pl.LazyFrame:
    """The lake's columns of ``files``, lazily, typed as a reading's (ts as ms UTC; a naive
    ts is taken as UTC), plus ``_source`` (the file). Every reader of readings uses it
    (the backfill, fleetwatch.history), so they all read the same values."""
    frame = pl.scan_parquet(
        files, hive_partitioning=False, include_file_paths="_source", missing_columns="insert"
    )
    try:
        schema = frame.collect_schema()
    except Exception as exc:
        raise BackfillInputError(f"cannot read the backfill input: {exc}") from exc
    for column in COLUMNS:
        if column not in schema:
            raise BackfillInputError(f"backfill input has no column {column!r}")
    if not isinstance(schema["ts"], pl.Datetime):
        raise BackfillInputError(
            f"backfill input column 'ts' is {schema['ts']}, expected a timestamp"
        )
    ts = (
        pl.col("ts")
        if schema["ts"].time_zone is not None
        else pl.col("ts").dt.replace_time_zone("UTC")
    )
    return frame.select(
        pl.col("event_id").cast(pl.String),
        pl.col("truck_id").cast(pl.String),
        ts.dt.convert_time_zone("UTC").dt.cast_time_unit("ms").alias("ts"),
        pl.col("speed_kmh").cast(pl.Float64),
        pl.col("lat").cast(pl.Float64),
        pl.col("lon").cast(pl.Float64),
        pl.col("_source"),
    )


class ParquetReadingsSource(FixedPartitionedSource[BackfillItem, int]):
    """Bounded readings from Parquet files, split into ``buckets`` partitions by truck."""

    def __init__(
        self,
        files: list[Path],
        keep: Prefilter | float,
        buckets: int = 16,
        progress: Progress | None = None,
    ) -> None:
        """``keep``: the readings the rules need (a bare number: those over it)."""
        self._files = files
        self._keep = keep if isinstance(keep, Prefilter) else Prefilter(keep)
        self._buckets = buckets
        self._progress = progress or Progress()
        self._lock = threading.Lock()
        self._cache: _Prepared | None = None

    @override
    def list_parts(self) -> list[str]:
        return [str(b) for b in range(self._buckets)]

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> StatefulSourcePartition[BackfillItem, int]:
        chunks = self._chunks(int(for_part))
        return _ListPartition(chunks, resume_state or 0)

    def _prepared(self) -> _Prepared:
        """One scan per process for all its buckets (not one per bucket), done once."""
        with self._lock:
            if self._cache is None:
                scan = scan_readings(self._files).with_columns(
                    row_problem().alias("_problem"),
                    # Rows without a truck id have no bucket: the first one takes them.
                    pl.col("truck_id")
                    .hash(seed=0)
                    .mod(self._buckets)
                    .fill_null(0)
                    .alias("_bucket"),
                )
                good = self._good(scan.filter(pl.col("_problem").is_null()))
                # Collected together, the three share one scan, and only the small results
                # (counts, bad rows, readings over the limit) are held in memory.
                sizes, bad, kept = pl.collect_all(
                    [
                        scan.group_by("_bucket").len(),
                        scan.filter(pl.col("_problem").is_not_null()),
                        good,
                    ]
                )
                self._cache = _Prepared(sizes, bad, kept)
            return self._cache

    def _good(self, valid: pl.LazyFrame) -> pl.LazyFrame:
        """Valid rows -> deduplicated, sorted, without the readings no rule needs."""
        keep = self._keep
        speed = pl.col("speed_kmh")
        needed = speed > keep.over_kmh
        for limit, (min_lon, min_lat, max_lon, max_lat) in keep.zones:
            needed |= (
                (speed > limit)
                & pl.col("lat").is_between(min_lat, max_lat)
                & pl.col("lon").is_between(min_lon, max_lon)
            )
        if keep.successors_over_kmh is not None:
            # A slow reading right after a faster one still counts (it ends a run, it can be
            # the slower reading of a braking pair): the one before is taken in each truck's
            # event-time order, after deduplication.
            over = keep.successors_over_kmh
            needed |= (speed > over) | (speed.shift(1).over("truck_id") > over)
        # Deduplicated before the filter: of two rows with one event id, the first stays,
        # as in the stream, whatever the other holds and whatever the catalogue.
        return (
            valid.unique(subset=["truck_id", "event_id"], keep="first", maintain_order=True)
            .sort("_bucket", "truck_id", "ts", "event_id")
            .filter(needed)
        )

    def _chunks(self, bucket: int) -> Iterator[list[BackfillItem]]:
        prepared = self._prepared()
        in_bucket = pl.col("_bucket") == bucket
        total = int(prepared.sizes.filter(in_bucket)["len"].sum())
        self._progress.add_total(total)
        # ts as text: Python's datetime cannot hold a year after 9999 or before 1.
        bad = (
            prepared.bad.filter(in_bucket)
            .drop("_bucket")
            .with_columns(pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ"))
        )
        for offset in range(0, bad.height, CHUNK_BAD_ROWS):
            chunk = bad.slice(offset, CHUNK_BAD_ROWS)
            yield [_bad_row(row) for row in chunk.iter_rows(named=True)]
        good = prepared.good.filter(in_bucket)
        self._progress.add_done(total - good.height)
        for offset in range(0, good.height, CHUNK_READINGS):
            chunk = good.slice(offset, CHUNK_READINGS)
            items: list[BackfillItem] = []
            for (truck_id,), trucks in chunk.partition_by(
                "truck_id", as_dict=True, maintain_order=True
            ).items():
                readings = [
                    Reading(e, t, ts, s, la, lo)
                    for e, t, ts, s, la, lo in trucks.select(
                        "event_id",
                        "truck_id",
                        pl.col("ts").dt.epoch("ms"),
                        "speed_kmh",
                        "lat",
                        "lon",
                    ).iter_rows()
                ]
                items.append(TruckReadings(str(truck_id), readings))
            self._progress.add_done(chunk.height)
            yield items


@dataclass(frozen=True)
class _Prepared:
    sizes: pl.DataFrame  # rows per bucket
    bad: pl.DataFrame
    good: pl.DataFrame  # valid, deduplicated, over the lowest limit, sorted


def _bad_row(row: dict[str, Any]) -> BadRow:
    reason, detail = str(row.pop("_problem")).split(":", 1)
    source = str(row.pop("_source"))
    raw = json.dumps(row, default=str, sort_keys=True).encode()
    return BadRow(Reason(reason), detail, source, raw)


class _ListPartition(StatefulSourcePartition[BackfillItem, int]):
    def __init__(self, chunks: Iterator[list[BackfillItem]], skip: int) -> None:
        self._chunks = chunks
        self._position = 0
        for _ in range(skip):  # resumed: the chunks are deterministic, skip those handed out
            next(self._chunks, None)
            self._position += 1

    @override
    def next_batch(self) -> list[BackfillItem]:
        chunk = next(self._chunks, None)
        if chunk is None:
            raise StopIteration
        self._position += 1
        return chunk

    @override
    def snapshot(self) -> int:
        return self._position
