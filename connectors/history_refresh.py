"""The history refresh's reading and writing (CONTRACT.md section 11; docs/history.md).

``driver_stats`` computes, with Polars lazy scans and no Python loop over readings or
alerts, each driver's figures over a ``Window``:

- readings: the lake's files of the window's UTC dates (``lake_files``), the rows that are
  valid readings (``connectors.parquet_input.row_problem``, as the backfill), deduplicated
  by (truck_id, event_id), in each truck's event-time order (ties by event_id);
- *pairs* as the scorecards make them (``domain.scorecards``): consecutive readings of a
  truck, both positioned, at most ``PAIR_MAX_MS`` apart, with the haversine distance on a
  sphere of ``EARTH_RADIUS_KM``; a pair belongs to its second reading;
- each reading's driver: the truck's driver at its ts, section 6, taken from the
  ``HistoryIndex`` the flows build (its per-truck segments, which already resolve
  overlapping assignments, joined with ``join_asof``);
- the archived alerts (``connectors.alert_lake.scan_alerts``, deduplicated by alert_id)
  whose window_end is in the window, by their own ``driver_id``, of the overspeed kinds.

``write_drivers_file`` replaces drivers.parquet atomically (a temporary file in the same
directory, fsync, ``os.replace``): a flow's loader sees the old file or the new one, never a
part. ``write_drivers_postgres`` updates the ``drivers`` table's four columns in one
transaction. Both first check the new rows against section 6's rules (``build_index``),
so the refresh never writes what the flows would refuse.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta, tzinfo
from pathlib import Path

import polars as pl
from polars.exceptions import PanicException

from connectors.alert_lake import alert_files, scan_alerts
from connectors.history import DRIVERS_FILE, build_index
from connectors.parquet_input import BackfillInputError, resolve_inputs, row_problem, scan_readings
from domain.history import HistoryIndex
from domain.history_refresh import (
    BUILTIN_KINDS,
    OVERSPEED_KINDS,
    RISK_CUTOFFS,
    RISK_FLOOR_KM,
    window_days,
)
from domain.scorecards import DRIVING_KMH, EARTH_RADIUS_KM, PAIR_MAX_MS, LocalDays
from domain.timestamps import EPOCH
from runtime.redaction import redact_text

# The columns the refresh writes; every other column of drivers.parquet is kept as it is.
FIGURES = ("overspeed_events_90d", "avg_speed_kmh_90d", "km_driven_90d", "risk_tier")
_READ_ERRORS = (Exception, PanicException)
# Readings sorted at once (a bucket of trucks): about 1.3 GiB of memory at peak.
BUCKET_ROWS = 10_000_000


class RefreshError(RuntimeError):
    """The refresh cannot be done with this data (exit 1); the message says which file or
    table and what to do."""


@dataclass(frozen=True)
class Window:
    """[start_ms, end_ms): the local days ``first_day``..``last_day`` of ``zone``."""

    as_of: date
    first_day: date
    last_day: date
    start_ms: int
    end_ms: int

    @classmethod
    def as_of_day(cls, as_of: date, zone: tzinfo) -> Window:
        first, last = window_days(as_of)
        days = LocalDays(zone)
        return cls(as_of, first, last, days.span(first)[0], days.span(last)[1])

    def utc_dates(self, lead_ms: int = 0) -> tuple[date, date]:
        """The UTC dates from ``start_ms - lead_ms`` to the window's last instant: the lake
        partitions (``date=`` is the UTC date of ts or window_end) that can hold its rows."""
        return _utc_date(self.start_ms - lead_ms), _utc_date(self.end_ms - 1)


def _utc_date(ms: int) -> date:
    return (EPOCH + timedelta(milliseconds=ms)).date()


@dataclass(frozen=True)
class DriverStats:
    """Per driver with data in the window: driver_id, readings, overspeed_events_90d,
    avg_speed_kmh_90d (null: no moving reading), km_driven_90d; and the totals."""

    by_driver: pl.DataFrame
    files: int  # lake files read (readings and alerts)
    rows_read: int  # rows in the readings files read, valid or not, duplicates included
    readings: int  # distinct valid readings in the window
    unattributed: int  # of those, readings of a truck without a driver at their ts
    alerts: int  # distinct archived alerts in the window, of any kind and driver


def lake_files(lake_dir: Path, first: date, last: date) -> list[Path]:
    """The lake's readings files (not its alerts/) in ``date=`` directories from ``first``
    to ``last``, and any file outside a ``date=YYYY-MM-DD`` directory (it may hold any day)."""
    if not lake_dir.is_dir():
        raise RefreshError(f"{lake_dir}: the lake is not a directory")
    try:
        files = resolve_inputs(str(lake_dir))
    except BackfillInputError:
        return []
    chosen = []
    for path in files:
        name = path.parent.name
        try:
            day = date.fromisoformat(name.removeprefix("date=")) if name[:5] == "date=" else None
        except ValueError:
            day = None
        if day is None or first <= day <= last:
            chosen.append(path)
    return chosen


def segments_frame(index: HistoryIndex) -> pl.DataFrame:
    """Every truck's driver segments (section 6, overlaps resolved by the index): truck_id,
    start_ms, driver_id (null in a gap), sorted by truck then start. The segment holding a
    ts is the last one starting at or before it. One Python step per truck, not per row."""
    trucks: list[str] = []
    starts: list[int] = []
    drivers: list[str | None] = []
    for truck_id in sorted(index.timelines):
        segments = index.timelines[truck_id]
        trucks.extend([truck_id] * len(segments.starts))
        starts.extend(segments.starts)
        drivers.extend(segments.drivers)
    return pl.DataFrame(
        {"truck_id": trucks, "start_ms": starts, "driver_id": drivers},
        schema={"truck_id": pl.String, "start_ms": pl.Int64, "driver_id": pl.String},
    )


def _haversine_km(lat1: pl.Expr, lon1: pl.Expr, lat2: pl.Expr, lon2: pl.Expr) -> pl.Expr:
    """``domain.scorecards.haversine_km``, operation for operation, as an expression."""
    p1, p2 = lat1.radians(), lat2.radians()
    dp, dl = p2 - p1, (lon2 - lon1).radians()
    a = (dp / 2).sin().pow(2) + p1.cos() * p2.cos() * (dl / 2).sin().pow(2)
    return 2 * EARTH_RADIUS_KM * a.clip(upper_bound=1.0).sqrt().arcsin()


def _in_bucket(bucket: int, buckets: int) -> pl.Expr:
    return pl.col("truck_id").hash(seed=0) % buckets == bucket


def _readings(files: list[Path], window: Window, bucket: int, buckets: int) -> pl.LazyFrame:
    """The window's distinct valid readings of the trucks in ``bucket`` with ``km`` (their
    pair's distance, 0 without a pair), in truck then event-time order."""
    ts = pl.col("ts_ms")
    truck, lat, lon = pl.col("truck_id"), pl.col("lat"), pl.col("lon")
    # A reading up to PAIR_MAX_MS before the window can be the first of a pair whose second
    # reading, and so the pair, is in it.
    first = window.start_ms - PAIR_MAX_MS
    scanned = scan_readings(files)
    if buckets > 1:  # first: the checks below then run on this bucket's rows only
        scanned = scanned.filter(_in_bucket(bucket, buckets))
    valid = (
        scanned.filter(row_problem().is_null())
        .select(
            "truck_id",
            "event_id",
            pl.col("ts").dt.epoch("ms").alias("ts_ms"),
            "speed_kmh",
            "lat",
            "lon",
        )
        .filter(ts.is_between(first, window.end_ms, closed="left"))
    )
    ordered = valid.sort("truck_id", "ts_ms", "event_id", maintain_order=True).unique(
        ["truck_id", "event_id"], keep="first", maintain_order=True
    )
    previous = [c.shift(1) for c in (truck, ts, lat, lon)]
    pair = (
        (truck == previous[0])
        & (ts - previous[1] <= PAIR_MAX_MS)
        & pl.all_horizontal(c.is_not_null() for c in (lat, lon, previous[2], previous[3]))
    ).fill_null(False)
    km = pl.when(pair).then(_haversine_km(previous[2], previous[3], lat, lon)).otherwise(0.0)
    return ordered.with_columns(km.alias("km")).filter(ts >= window.start_ms)


def _overspeed_alerts(lake_dir: Path, window: Window) -> pl.LazyFrame:
    """The window's distinct archived alerts, with ``overspeed`` (of an overspeed kind)."""
    first, last = window.utc_dates()
    kind = pl.coalesce(
        pl.col("details").str.json_path_match("$.kind"),
        pl.col("rule").replace_strict(BUILTIN_KINDS, default=None, return_dtype=pl.String),
    )
    return (
        scan_alerts(lake_dir, first_day=first, last_day=last)
        .filter(pl.col("window_end").dt.epoch("ms").is_between(window.start_ms, window.end_ms - 1))
        .select(
            "driver_id", kind.is_in(sorted(OVERSPEED_KINDS)).fill_null(False).alias("overspeed")
        )
    )


def _bucket_stats(
    files: list[Path], segments: pl.DataFrame, window: Window, bucket: int, buckets: int
) -> pl.LazyFrame:
    """Per driver (null: no driver) of one bucket's trucks: readings, moving readings and
    the sum of their speeds, km."""
    speed = pl.col("speed_kmh")
    moving = speed > DRIVING_KMH
    drivers = segments.lazy()
    if buckets > 1:
        drivers = drivers.filter(_in_bucket(bucket, buckets))
    return (
        _readings(files, window, bucket, buckets)
        # Sorted by truck then ts on both sides (Polars cannot check that within groups).
        .join_asof(
            drivers,
            left_on="ts_ms",
            right_on="start_ms",
            by="truck_id",
            strategy="backward",
            check_sortedness=False,
        )
        .group_by("driver_id")
        .agg(
            pl.len().alias("readings"),
            moving.sum().cast(pl.Int64).alias("moving"),
            speed.filter(moving).sum().alias("moving_kmh"),
            pl.col("km").sum().alias("km_driven_90d"),
        )
    )


def driver_stats(
    lake_dir: Path, index: HistoryIndex, window: Window, bucket_rows: int = BUCKET_ROWS
) -> DriverStats:
    """Each driver's figures over ``window`` from the lake in ``lake_dir``. Raises
    ``RefreshError`` when the window has no readings, or naming the file that cannot be read.

    The trucks are split into buckets of about ``bucket_rows`` rows (by a hash of truck_id),
    done one after the other: a truck's pairs and drivers depend on its readings alone, and
    the sort of a bucket, not of the whole window, is what the memory must hold."""
    files = lake_files(lake_dir, *window.utc_dates(PAIR_MAX_MS))
    if not files:
        raise RefreshError(
            f"{lake_dir}: no readings files for {window.first_day}..{window.last_day}: "
            "nothing to refresh (is it the lake FLEET_LAKE_DIR names?)"
        )
    alerts = _overspeed_alerts(lake_dir, window)
    overspeed = (
        alerts.filter(pl.col("overspeed") & pl.col("driver_id").is_not_null())
        .group_by("driver_id")
        .len("events")
    )
    try:
        # From the files' metadata: no data read.
        rows_read = int(
            pl.scan_parquet(files, hive_partitioning=False).select(pl.len()).collect().item()
        )
        buckets = max(1, -(-rows_read // bucket_rows))
        segments = segments_frame(index)
        parts = [
            _bucket_stats(files, segments, window, bucket, buckets).collect()
            for bucket in range(buckets)
        ]
        events, alert_count = pl.collect_all([overspeed, alerts.select(pl.len())])
    except (BackfillInputError, *_READ_ERRORS) as exc:
        raise RefreshError(_unreadable(files, lake_dir, exc)) from exc
    readings = (
        pl.concat(parts)
        .group_by("driver_id")
        .agg(pl.col("readings", "moving", "moving_kmh", "km_driven_90d").sum())
        .with_columns(
            pl.when(pl.col("moving") > 0)
            .then(pl.col("moving_kmh") / pl.col("moving"))
            .alias("avg_speed_kmh_90d")
        )
    )
    if readings.is_empty():
        raise RefreshError(
            f"{lake_dir}: no valid readings from {window.first_day} to {window.last_day} in "
            f"{len(files)} files: nothing to refresh"
        )
    unattributed = readings.filter(pl.col("driver_id").is_null())
    by_driver = (
        readings.filter(pl.col("driver_id").is_not_null())
        .join(events, on="driver_id", how="full", coalesce=True)
        .select(
            "driver_id",
            pl.col("readings").fill_null(0),
            pl.col("events").fill_null(0).cast(pl.Int64).alias("overspeed_events_90d"),
            "avg_speed_kmh_90d",
            pl.col("km_driven_90d").fill_null(0.0),
        )
        .sort("driver_id")
    )
    return DriverStats(
        by_driver=by_driver,
        files=len(files) + len(alert_files(lake_dir)),
        rows_read=rows_read,
        readings=int(readings["readings"].sum()),
        unattributed=int(unattributed["readings"].sum()),
        alerts=int(alert_count.item()),
    )


def _unreadable(files: Sequence[Path], lake_dir: Path, exc: BaseException) -> str:
    """The error for a lake that cannot be read, naming the first file that cannot."""
    for path in (*files, *alert_files(lake_dir)):
        try:
            pl.read_parquet(path, hive_partitioning=False)
        except _READ_ERRORS as broken:
            return f"{path}: cannot be read as Parquet ({broken}); move it aside or fix it"
    return f"{lake_dir}: the lake cannot be read: {exc}"


def tier_expr(events: pl.Expr, km: pl.Expr) -> pl.Expr:
    """``domain.history_refresh.risk_tier`` as an expression, same arithmetic."""
    rate = events.cast(pl.Float64) * 1000.0 / pl.max_horizontal(km, pl.lit(RISK_FLOOR_KM))
    tier = pl.lit("low")
    for cutoff, name in reversed(RISK_CUTOFFS):  # the lowest innermost: the highest wins
        tier = pl.when(rate >= cutoff).then(pl.lit(name)).otherwise(tier)
    return tier


def refreshed(drivers: pl.DataFrame, stats: DriverStats) -> pl.DataFrame:
    """``drivers`` (every column, every row, in order) with the four figures replaced: a
    driver without data in the window gets 0 events, 0 km, 0 km/h and ``low``."""
    figures = stats.by_driver.select(
        "driver_id", "overspeed_events_90d", "avg_speed_kmh_90d", "km_driven_90d"
    )
    events, km = pl.col("overspeed_events_90d"), pl.col("km_driven_90d")
    return (
        drivers.drop(FIGURES)
        .join(figures, on="driver_id", how="left", maintain_order="left")
        .with_columns(
            events.fill_null(0).cast(pl.Int64),
            pl.col("avg_speed_kmh_90d").fill_null(0.0).cast(pl.Float64),
            km.fill_null(0.0).cast(pl.Float64),
        )
        .with_columns(tier_expr(events, km).alias("risk_tier"))
        .select(drivers.columns)
    )


def unknown_drivers(drivers: pl.DataFrame, stats: DriverStats) -> list[str]:
    """Drivers with data in the window whom drivers.parquet does not list (not added: their
    name and hire date are unknown)."""
    known = drivers.get_column("driver_id")
    return stats.by_driver.filter(~pl.col("driver_id").is_in(known.implode()))[
        "driver_id"
    ].to_list()


def check_drivers(frame: pl.DataFrame, where: str) -> None:
    """Raise ``HistoryError`` unless the flows would accept ``frame`` as drivers."""
    no_assignments = pl.DataFrame(
        schema={
            "truck_id": pl.String,
            "driver_id": pl.String,
            "valid_from": pl.Datetime("ms", "UTC"),
            "valid_to": pl.Datetime("ms", "UTC"),
        }
    )
    build_index(frame, no_assignments, {"drivers": where})


def file_signature(path: Path) -> Hashable:
    """What changes when ``path`` is replaced or rewritten (as the flows' loader looks)."""
    stat = path.stat()
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def write_drivers_file(directory: Path, frame: pl.DataFrame, read_as: Hashable) -> Path:
    """Replace ``directory``/drivers.parquet by ``frame`` atomically. ``read_as``: the
    file's ``file_signature`` when it was read; if it has changed since (someone replaced
    it meanwhile), nothing is written and ``RefreshError`` says to run again."""
    path = directory / DRIVERS_FILE
    check_drivers(frame, str(path))
    # Hidden and unique: the flows read only drivers.parquet, the lake readers skip dot files.
    temporary = directory / f".{DRIVERS_FILE}.{uuid.uuid4().hex}.tmp"
    try:
        frame.write_parquet(temporary)
        with temporary.open("rb") as written:
            os.fsync(written.fileno())
        if file_signature(path) != read_as:
            raise RefreshError(f"{path}: replaced while the refresh ran; run it again")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # the rename itself survives a crash
    finally:
        os.close(descriptor)
    return path


def write_drivers_postgres(dsn: str, frame: pl.DataFrame) -> int:
    """Set the four figures of every row of the ``drivers`` table that ``frame`` lists, in
    one transaction (readers see all the old figures or all the new). Other columns and
    rows, and rows added meanwhile, are left as they are. Returns the rows updated."""
    import psycopg

    check_drivers(frame, "PostgreSQL table drivers")
    rows = frame.select("driver_id", *FIGURES).rows()
    try:
        with psycopg.connect(dsn, connect_timeout=10) as connection:
            connection.execute(
                """CREATE TEMPORARY TABLE history_refresh (
                       driver_id text PRIMARY KEY, overspeed_events_90d bigint,
                       avg_speed_kmh_90d double precision, km_driven_90d double precision,
                       risk_tier text) ON COMMIT DROP"""
            )
            with connection.cursor() as cursor:
                with cursor.copy("COPY history_refresh FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cursor.execute(
                    """UPDATE drivers AS d
                       SET overspeed_events_90d = r.overspeed_events_90d,
                           avg_speed_kmh_90d = r.avg_speed_kmh_90d,
                           km_driven_90d = r.km_driven_90d,
                           risk_tier = r.risk_tier
                       FROM history_refresh AS r WHERE d.driver_id = r.driver_id"""
                )
                return cursor.rowcount
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None:
            raise RefreshError("PostgreSQL: libpq cannot read FLEET_HISTORY_DSN") from None
        raise RefreshError(redact_text(f"PostgreSQL: {exc}", dsns=[dsn]).strip()) from None
