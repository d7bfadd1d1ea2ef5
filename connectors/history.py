"""Driver history from Parquet files or PostgreSQL, through Polars, kept fresh in the background.

``load_history_dir`` and ``load_history_postgres`` read the two tables of CONTRACT.md
section 6 (only the needed columns), check them against the contract's schema (an error
names the file or table and the column) and build a ``HistoryIndex``.

``HistoryStore`` holds the index in use. A background thread looks for changes every
``refresh_s`` (file size, mtime and inode; a database is simply re-read), loads the new
data off the hot path and swaps it in with one reference assignment. Loading works one truck
at a time and the index holds few Python objects, so neither building a new one nor freeing
the old one holds the GIL for long (benchmarks/history.py measures the pause). A missing, truncated
or corrupt source keeps the last good data, logs one warning per change of the source, and
counts the failure in ``fleetwatch_history_reloads{outcome="failed"}``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path

import polars as pl
import structlog

from domain.history import RISK_TIERS, Driver, HistoryIndex, IndexBuilder
from fleetwatch.metrics import HISTORY_LOADED_AT, HISTORY_RELOADS

log = structlog.get_logger(__name__)

DRIVERS_FILE = "drivers.parquet"
ASSIGNMENTS_FILE = "assignments.parquet"

_STRING, _DATE, _INTEGER, _NUMBER, _TIMESTAMP = (
    "string",
    "date",
    "integer",
    "number",
    "timestamp UTC",
)
DRIVER_COLUMNS = {
    "driver_id": _STRING,
    "name": _STRING,
    "hired_on": _DATE,
    "overspeed_events_90d": _INTEGER,
    "avg_speed_kmh_90d": _NUMBER,
    "km_driven_90d": _NUMBER,
    "risk_tier": _STRING,
}
ASSIGNMENT_COLUMNS = {
    "truck_id": _STRING,
    "driver_id": _STRING,
    "valid_from": _TIMESTAMP,
    "valid_to": _TIMESTAMP,
}
_REQUIRED = {
    "drivers": ["driver_id", "risk_tier"],
    "assignments": ["truck_id", "driver_id", "valid_from"],
}


class HistoryError(ValueError):
    """The driver history does not match the contract; the message names where and what."""


def _fits(dtype: pl.DataType, kind: str) -> bool:
    if kind == _STRING:
        return dtype == pl.String
    if kind == _DATE:
        return dtype == pl.Date
    if kind == _INTEGER:
        return dtype.is_integer()
    if kind == _NUMBER:
        return dtype.is_numeric()
    # Timestamps must be zone-aware: a naive one would be a guess about its zone.
    return isinstance(dtype, pl.Datetime) and dtype.time_zone is not None


def _checked(frame: pl.LazyFrame, columns: dict[str, str], source: str) -> pl.LazyFrame:
    try:
        schema = frame.collect_schema()
    except Exception as exc:
        raise HistoryError(f"{source}: cannot be read: {exc}") from exc
    for column, kind in columns.items():
        if column not in schema:
            raise HistoryError(f"{source}: missing column {column!r} ({kind})")
        if not _fits(schema[column], kind):
            raise HistoryError(f"{source}: column {column!r} is {schema[column]}, expected {kind}")
    return frame.select(list(columns))


def _collect(frame: pl.LazyFrame, source: str) -> pl.DataFrame:
    try:
        return frame.collect()
    except Exception as exc:
        raise HistoryError(f"{source}: cannot be read: {exc}") from exc


def build_index(
    drivers: pl.DataFrame, assignments: pl.DataFrame, where: dict[str, str]
) -> HistoryIndex:
    """Validate values and build the index; ``where`` names each table's source for errors."""
    for table, frame in (("drivers", drivers), ("assignments", assignments)):
        for column in _REQUIRED[table]:
            nulls = frame[column].null_count()
            if nulls:
                raise HistoryError(f"{where[table]}: column {column!r} has {nulls} null values")
    bad_tiers = (
        drivers.filter(~pl.col("risk_tier").is_in(RISK_TIERS))["risk_tier"].unique().to_list()
    )
    if bad_tiers:
        raise HistoryError(
            f"{where['drivers']}: column 'risk_tier' has values {bad_tiers}, expected {RISK_TIERS}"
        )
    driver_rows = drivers.with_columns(
        pl.col("hired_on").dt.to_string("%Y-%m-%d"),
        pl.col("overspeed_events_90d").cast(pl.Int64),
        pl.col("avg_speed_kmh_90d").cast(pl.Float64),
        pl.col("km_driven_90d").cast(pl.Float64),
    ).iter_rows()
    builder = IndexBuilder(Driver(*row) for row in driver_rows)
    columns = assignments.with_columns(
        pl.col("valid_from").dt.epoch("ms"), pl.col("valid_to").dt.epoch("ms")
    )
    # One truck at a time: the temporary Python values of each are freed before the next.
    for (truck_id,), rows in columns.partition_by(
        "truck_id", as_dict=True, maintain_order=False
    ).items():
        builder.add_truck(
            str(truck_id),
            rows["driver_id"].to_list(),
            rows["valid_from"].to_list(),
            rows["valid_to"].to_list(),
        )
    return builder.build()


def load_history_dir(directory: Path) -> HistoryIndex:
    """Read drivers.parquet and assignments.parquet from ``directory``."""
    drivers_path, assignments_path = directory / DRIVERS_FILE, directory / ASSIGNMENTS_FILE
    for path in (drivers_path, assignments_path):
        if not path.is_file():
            raise HistoryError(f"{path}: no such file")
    drivers = _collect(
        _checked(pl.scan_parquet(drivers_path), DRIVER_COLUMNS, str(drivers_path)),
        str(drivers_path),
    )
    assignments = _collect(
        _checked(pl.scan_parquet(assignments_path), ASSIGNMENT_COLUMNS, str(assignments_path)),
        str(assignments_path),
    )
    return build_index(
        drivers, assignments, {"drivers": str(drivers_path), "assignments": str(assignments_path)}
    )


def load_history_postgres(dsn: str) -> HistoryIndex:
    """Read the ``drivers`` and ``assignments`` tables (same columns as the files)."""
    import psycopg

    frames: dict[str, pl.DataFrame] = {}
    try:
        with psycopg.connect(dsn, connect_timeout=10) as connection:
            for table, columns in (
                ("drivers", DRIVER_COLUMNS),
                ("assignments", ASSIGNMENT_COLUMNS),
            ):
                query = f"SELECT {', '.join(columns)} FROM {table}"
                frame = pl.read_database(query, connection)
                frames[table] = _checked(
                    frame.lazy(), columns, f"PostgreSQL table {table}"
                ).collect()
    except psycopg.Error as exc:
        raise HistoryError(f"PostgreSQL: {exc}".strip()) from exc
    where = {"drivers": "PostgreSQL table drivers", "assignments": "PostgreSQL table assignments"}
    return build_index(frames["drivers"], frames["assignments"], where)


def files_signature(directory: Path) -> Hashable:
    """Changes whenever either file is replaced (rename) or rewritten in place."""
    signature: list[tuple[int, int, int] | None] = []
    for name in (DRIVERS_FILE, ASSIGNMENTS_FILE):
        try:
            stat = (directory / name).stat()
        except OSError:
            signature.append(None)
        else:
            signature.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(signature)


class HistoryStore:
    """The driver history in use, refreshed by a daemon thread. ``current()`` never blocks."""

    def __init__(
        self,
        loader: Callable[[], HistoryIndex],
        signature: Callable[[], Hashable],
        refresh_s: float,
        source: str,
    ) -> None:
        self._loader = loader
        self._signature = signature
        self._refresh_s = refresh_s
        self._source = source
        self._index = HistoryIndex()
        self._seen: Hashable = object()  # nothing loaded or tried yet
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_load_s = 0.0

    @classmethod
    def for_directory(cls, directory: Path, refresh_s: float) -> HistoryStore:
        return cls(
            lambda: load_history_dir(directory),
            lambda: files_signature(directory),
            refresh_s,
            str(directory),
        )

    @classmethod
    def for_postgres(cls, dsn: str, refresh_s: float) -> HistoryStore:
        # A database has no cheap change marker here: it is re-read every interval.
        return cls(lambda: load_history_postgres(dsn), time.monotonic, refresh_s, "postgresql")

    def current(self) -> HistoryIndex:
        return self._index

    def refresh(self) -> bool:
        """Load the source if it changed; True if new data is now in use."""
        signature = self._signature()
        if signature == self._seen:
            return False
        started = time.perf_counter()
        try:
            index = self._loader()
        except Exception as exc:
            # Warn once per change of the source: a broken file is reported, not spammed.
            if signature != self._seen:
                log.warning(
                    "history_reload_failed",
                    source=self._source,
                    error=str(exc),
                    keeping="last good data",
                )
            self._seen = signature
            HISTORY_RELOADS.labels(self._source, "failed").inc()
            return False
        self.last_load_s = time.perf_counter() - started
        self._index = index  # one reference assignment: readers see the old or the new index
        self._seen = signature
        HISTORY_RELOADS.labels(self._source, "ok").inc()
        HISTORY_LOADED_AT.labels(self._source).set_to_current_time()
        log.info(
            "history_loaded",
            source=self._source,
            drivers=len(index.drivers),
            assignments=index.assignments,
            seconds=round(self.last_load_s, 3),
        )
        return True

    def start(self) -> HistoryStore:
        """Load now (a failure leaves an empty history and is retried), then keep refreshing."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="history-refresh", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
