"""Driver history from Parquet files or PostgreSQL, through Polars, kept fresh in the background.

``load_history_dir`` and ``load_history_postgres`` read the tables of CONTRACT.md section 6
(only the contract's columns: others are ignored): drivers, assignments and, when it exists,
trucks (``trucks.parquet`` or a ``trucks`` table; absent, no truck has a vehicle class).
``build_index`` checks every value it hands on before building the ``HistoryIndex``, so that
nothing it accepts can make building or encoding an alert raise. The rules
(``domain.history.DRIVER_COLUMNS``, ``ASSIGNMENT_COLUMNS`` and ``TRUCK_COLUMNS``):

- types: strings, a date, an integer count, numbers (integers, floats or decimals), and
  timestamps that carry a time zone (any zone and unit; a naive one would be a guess);
- no nulls, except in ``valid_to`` (open-ended) and ``depot``;
- strings hold no control characters (line breaks, tabs, NUL); ids are not empty;
  ``risk_tier`` is ``low``, ``medium`` or ``high``; ``vehicle_class`` is ``heavy``,
  ``medium`` or ``light``; ``driver_id`` is unique in drivers, ``truck_id`` in trucks;
- dates and timestamps lie in 0001-01-01..9999-12-31 (what Python represents);
- ``overspeed_events_90d`` is 0..2**63-1; ``avg_speed_kmh_90d`` a finite 0..400 (readings
  are 0..400 km/h); ``km_driven_90d`` finite and ≥ 0; ``valid_to`` not before ``valid_from``.

A table that breaks a rule is refused whole, never in part (and with it the whole history,
whichever of the three it is): half a file would silently change who drove and how alerts
are graded, or which rules apply to a truck, while a refusal keeps the last good data and
says what to fix. The ``HistoryError`` names the file or table, the column, the rule, the
first offending row (rows counted from 0; PostgreSQL rows in key order) with its key, and
how many rows break it, e.g. ``…/drivers.parquet: column 'avg_speed_kmh_90d' must be a
finite number ≥ 0 and ≤ 400; row 7 (driver_id 'D00007') has nan (1 row in all)``.
A file with the columns and no rows is valid: an empty history.

``HistoryStore`` holds the index in use. A background thread looks for changes every
``refresh_s`` (file size, mtime and inode; a database is simply re-read), loads the new
data off the hot path and swaps it in with one reference assignment. Loading works one truck
at a time and the index holds few Python objects, so neither building a new one nor freeing
the old one holds the GIL for long (benchmarks/history.py measures the pause). A missing, truncated
or corrupt source, or one that breaks a rule, keeps the last good data, logs one error per
change of the source, and counts the failure in ``fleetwatch_history_reloads{outcome="failed"}``.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import structlog
from polars.exceptions import PanicException

from domain.history import (
    ASSIGNMENT_COLUMNS,
    DRIVER_COLUMNS,
    EARLIEST_MS,
    FIRST_DAY,
    LAST_DAY,
    LATEST_MS,
    MAX_COUNT,
    TRUCK_COLUMNS,
    Column,
    Driver,
    HistoryIndex,
    IndexBuilder,
    Kind,
)
from domain.timestamps import EPOCH
from runtime.metrics import HISTORY_LOADED_AT, HISTORY_RELOADS
from runtime.redaction import redact_text
from runtime.settings import HistorySettings

if TYPE_CHECKING:
    import psycopg
    from psycopg.abc import Buffer
    from psycopg.adapt import Loader

log = structlog.get_logger(__name__)

DRIVERS_FILE = "drivers.parquet"
ASSIGNMENTS_FILE = "assignments.parquet"
TRUCKS_FILE = "trucks.parquet"  # optional

# Polars reports some broken input (a date out of its range, a decimal NaN) by panicking,
# and its PanicException is a BaseException: caught with the rest, it is one more error.
_READ_ERRORS = (Exception, PanicException)
# Each table's columns, and the key that names a row in an error.
_COLUMNS: dict[str, Sequence[Column]] = {
    "drivers": DRIVER_COLUMNS,
    "assignments": ASSIGNMENT_COLUMNS,
    "trucks": TRUCK_COLUMNS,
}
_KEYS = {"drivers": "driver_id", "assignments": "truck_id", "trucks": "truck_id"}
_UNIQUE = ("drivers", "trucks")  # the tables whose key is unique
_FIRST_DAY = (FIRST_DAY - EPOCH.date()).days
_LAST_DAY = (LAST_DAY - EPOCH.date()).days
# What a column of each kind becomes when it holds nothing but nulls (Polars type Null).
_TYPED: dict[Kind, pl.DataType] = {
    Kind.STRING: pl.String(),
    Kind.DATE: pl.Date(),
    Kind.INTEGER: pl.Int64(),
    Kind.NUMBER: pl.Float64(),
    Kind.TIMESTAMP: pl.Datetime("us", "UTC"),
}
# The rule for the dates and timestamps Python holds, for files and tables alike.
_IN_RANGE = {
    Kind.DATE: f"be a date from {FIRST_DAY} to {LAST_DAY}",
    Kind.TIMESTAMP: f"be an instant from {FIRST_DAY} to {LAST_DAY}T23:59:59.999Z",
}


class HistoryError(ValueError):
    """The driver history does not match the contract; the message names where and what."""


def _fits(dtype: pl.DataType, kind: Kind) -> bool:
    if dtype == pl.Null:
        return True  # all values are null: the null rule judges the column
    if kind is Kind.STRING:
        return dtype == pl.String
    if kind is Kind.DATE:
        return dtype == pl.Date
    if kind is Kind.INTEGER:
        return dtype.is_integer()
    if kind is Kind.NUMBER:
        return dtype.is_numeric()
    # Timestamps must be zone-aware: a naive one would be a guess about its zone.
    return isinstance(dtype, pl.Datetime) and dtype.time_zone is not None


def _checked(frame: pl.LazyFrame, columns: Sequence[Column], source: str) -> pl.LazyFrame:
    """The contract's columns of ``frame``, each of its kind's type (only those are read)."""
    try:
        schema = frame.collect_schema()
    except _READ_ERRORS as exc:
        raise HistoryError(f"{source}: cannot be read: {exc}") from exc
    for column in columns:
        if column.name not in schema:
            raise HistoryError(f"{source}: missing column {column.name!r} ({column.kind})")
        dtype = schema[column.name]
        if not _fits(dtype, column.kind):
            raise HistoryError(
                f"{source}: column {column.name!r} is {dtype}, expected {column.kind}"
            )
    return frame.select(
        pl.col(c.name).cast(_TYPED[c.kind]) if schema[c.name] == pl.Null else pl.col(c.name)
        for c in columns
    )


def _collect(frame: pl.LazyFrame, source: str) -> pl.DataFrame:
    try:
        return frame.collect()
    except _READ_ERRORS as exc:
        raise HistoryError(f"{source}: cannot be read: {exc}") from exc


def _rules(column: Column) -> list[tuple[str, pl.Expr]]:
    """What the values of ``column`` must be: (the rule, an expression true where broken)."""
    value = pl.col(column.name)
    rules = [] if column.nullable else [("not be null", value.is_null())]
    if column.kind is Kind.STRING:
        rules.append(
            ("hold no control characters (line breaks, tabs, NUL)", value.str.contains(r"\p{Cc}"))
        )
        if column.non_empty:
            rules.append(("not be empty", value.str.len_bytes() == 0))
        if column.choices:
            rules.append((f"be one of {', '.join(column.choices)}", ~value.is_in(column.choices)))
    elif column.kind is Kind.DATE:
        days = value.cast(pl.Int32)  # the physical value: Polars panics formatting some dates
        rules.append((_IN_RANGE[Kind.DATE], ~days.is_between(_FIRST_DAY, _LAST_DAY)))
    elif column.kind is Kind.INTEGER:
        least = int(column.minimum or 0)
        # Before the cast to Int64: a UInt64 or Int128 may hold more.
        rules.append(
            (f"be an integer from {least} to 2**63-1", (value < least) | (value > MAX_COUNT))
        )
    elif column.kind is Kind.NUMBER:
        number = value.cast(pl.Float64)
        broken = ~number.is_finite()
        bounds = []
        if column.minimum is not None:
            broken = broken | (number < column.minimum)
            bounds.append(f"≥ {column.minimum:g}")
        if column.maximum is not None:
            broken = broken | (number > column.maximum)
            bounds.append(f"≤ {column.maximum:g}")
        rules.append((" ".join(["be a finite number", " and ".join(bounds)]).strip(), broken))
    else:
        epoch_ms = value.dt.epoch("ms")
        rules.append(
            (
                _IN_RANGE[Kind.TIMESTAMP],
                ~epoch_ms.is_between(EARLIEST_MS, LATEST_MS),
            )
        )
    return rules


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _shown(frame: pl.DataFrame, column: Column, row: int) -> str:
    """A value of ``frame`` for an error, without converting what Python cannot hold."""
    series = frame.get_column(column.name)
    if series.is_null()[row]:
        return "null"
    if column.kind is Kind.DATE:
        return f"{series.cast(pl.Int32)[row]} days from 1970-01-01"
    if column.kind is Kind.TIMESTAMP:
        epoch_ms = int(series.dt.epoch("ms")[row])
        if EARLIEST_MS <= epoch_ms <= LATEST_MS:
            moment = EPOCH + timedelta(milliseconds=epoch_ms)
            return moment.isoformat(timespec="milliseconds")
        return f"{epoch_ms} ms from 1970-01-01T00:00Z"
    return _short(series[row])


def _refuse_broken(
    frame: pl.DataFrame, source: str, key: str, column: Column, rule: str, broken: pl.Expr
) -> None:
    """Raise the error for the rows where ``broken`` is true, naming the first of them."""
    mask = frame.select(broken.fill_null(False)).to_series()
    count = int(mask.sum())
    if not count:
        return
    row = int(mask.arg_true()[0])
    named = frame.get_column(key)[row] if column.name != key else None
    where = f"row {row}" + (f" ({key} {_short(named)})" if isinstance(named, str) else "")
    rows = "1 row" if count == 1 else f"{count} rows"
    raise HistoryError(
        f"{source}: column {column.name!r} must {rule}; {where} has "
        f"{_shown(frame, column, row)} ({rows} in all)"
    )


def _check_values(frame: pl.DataFrame, table: str, source: str) -> None:
    """Raise a ``HistoryError`` at the first rule of the contract a value of ``frame`` breaks:
    column by column in the contract's order, then the rules across rows and columns."""
    key = _KEYS[table]
    columns = _COLUMNS[table]
    for column in columns:
        for rule, broken in _rules(column):
            _refuse_broken(frame, source, key, column, rule, broken)
    if table in _UNIQUE:
        repeated = frame.with_row_index("row").filter(pl.col(key).is_duplicated())
        if repeated.height:
            first = repeated.get_column(key)[0]
            rows = repeated.filter(pl.col(key) == first).get_column("row")
            others = repeated.get_column(key).n_unique() - 1
            raise HistoryError(
                f"{source}: column {key!r} must be unique; {_short(first)} is at rows "
                f"{rows[0]} and {rows[1]}"
                + (f" ({others} more ids are repeated)" if others else "")
            )
    elif table == "assignments":
        valid_to = next(c for c in columns if c.name == "valid_to")
        # Compared as the index will: in epoch ms (an open valid_to is null: never broken).
        earlier = pl.col("valid_to").dt.epoch("ms") < pl.col("valid_from").dt.epoch("ms")
        _refuse_broken(frame, source, key, valid_to, "not be before valid_from", earlier)


def build_index(
    drivers: pl.DataFrame,
    assignments: pl.DataFrame,
    where: Mapping[str, str] | None = None,
    trucks: pl.DataFrame | None = None,
) -> HistoryIndex:
    """Check the tables against every rule of the contract and build the index.

    ``trucks`` None (no trucks table) gives no truck a vehicle class. The first broken rule
    refuses the whole history with a ``HistoryError``; ``where`` names each table's source
    in it (default: the table's name). Columns beyond the contract's are ignored."""
    where = {table: table for table in _COLUMNS} | dict(where or {})
    tables = {"drivers": drivers, "assignments": assignments}
    if trucks is not None:
        tables["trucks"] = trucks
    checked: dict[str, pl.DataFrame] = {}
    for table, frame in tables.items():
        source, columns = where[table], _COLUMNS[table]
        checked[table] = _collect(_checked(frame.lazy(), columns, source), source)
        try:
            _check_values(checked[table], table, source)
        except PanicException as exc:
            raise HistoryError(f"{source}: cannot be checked: {exc}") from exc
    drivers, assignments = checked["drivers"], checked["assignments"]
    driver_rows = drivers.with_columns(
        pl.col("hired_on").dt.to_string("%Y-%m-%d"),
        pl.col("overspeed_events_90d").cast(pl.Int64),
        pl.col("avg_speed_kmh_90d").cast(pl.Float64),
        pl.col("km_driven_90d").cast(pl.Float64),
    ).iter_rows()
    builder = IndexBuilder(Driver(*row) for row in driver_rows)
    instants = assignments.with_columns(
        pl.col("valid_from").dt.epoch("ms"), pl.col("valid_to").dt.epoch("ms")
    )
    # One truck at a time: the temporary Python values of each are freed before the next.
    for (truck_id,), rows in instants.partition_by(
        "truck_id", as_dict=True, maintain_order=False
    ).items():
        builder.add_truck(
            str(truck_id),
            rows["driver_id"].to_list(),
            rows["valid_from"].to_list(),
            rows["valid_to"].to_list(),
        )
    if "trucks" in checked:
        listed = checked["trucks"]
        builder.add_trucks(
            listed["truck_id"].to_list(),
            listed["vehicle_class"].to_list(),
            listed["depot"].to_list(),
        )
    return builder.build()


def load_history_dir(directory: Path) -> HistoryIndex:
    """Read drivers.parquet, assignments.parquet and, if present, trucks.parquet from
    ``directory``."""
    drivers_path, assignments_path = directory / DRIVERS_FILE, directory / ASSIGNMENTS_FILE
    trucks_path = directory / TRUCKS_FILE
    for path in (drivers_path, assignments_path):
        if not path.is_file():
            raise HistoryError(f"{path}: no such file")
    drivers = _read_parquet(drivers_path, DRIVER_COLUMNS)
    assignments = _read_parquet(assignments_path, ASSIGNMENT_COLUMNS)
    # Absent: no truck has a class. Present but not a file (Polars would read a directory
    # as a dataset) or gone in between: refused like any broken file, not taken for absent.
    trucks = None
    if trucks_path.exists() or trucks_path.is_symlink():
        if not trucks_path.is_file():
            raise HistoryError(f"{trucks_path}: not a file")
        trucks = _read_parquet(trucks_path, TRUCK_COLUMNS)
    where = {
        "drivers": str(drivers_path),
        "assignments": str(assignments_path),
        "trucks": str(trucks_path),
    }
    return build_index(drivers, assignments, where, trucks)


def _read_parquet(path: Path, columns: Sequence[Column]) -> pl.DataFrame:
    try:
        scan = pl.scan_parquet(path)
    except _READ_ERRORS as exc:
        raise HistoryError(f"{path}: cannot be read: {exc}") from exc
    return _collect(_checked(scan, columns, str(path)), str(path))


# The PostgreSQL types (psycopg's names) that each kind accepts.
_PG_TYPES = {
    Kind.STRING: {"text", "varchar"},
    Kind.DATE: {"date"},
    Kind.INTEGER: {"int2", "int4", "int8"},
    Kind.NUMBER: {"int2", "int4", "int8", "float4", "float8", "numeric"},
    Kind.TIMESTAMP: {"timestamptz"},
}
# Rows in key order, so that "row N" in an error names the same row every time.
_PG_ORDER = {
    "drivers": "driver_id",
    "assignments": "truck_id, valid_from, driver_id",
    "trucks": "truck_id, vehicle_class, depot",
}


def load_history_postgres(dsn: str) -> HistoryIndex:
    """Read the ``drivers`` and ``assignments`` tables, and ``trucks`` if it exists (same
    columns and rules as the files). Tables are found through the connection's search_path."""
    import psycopg

    frames: dict[str, pl.DataFrame] = {}
    try:
        with psycopg.connect(dsn, connect_timeout=10) as connection:
            connection.adapters.register_loader("numeric", _numeric_loader())
            connection.execute("SET TIME ZONE 'UTC'")
            for table, columns in (
                ("drivers", DRIVER_COLUMNS),
                ("assignments", ASSIGNMENT_COLUMNS),
            ):
                frames[table] = _read_table(connection, table, columns)
            # Optional: found as the query would find it (search_path), or not at all.
            found = connection.execute("SELECT to_regclass('trucks') IS NOT NULL").fetchone()
            if found is not None and found[0]:
                frames["trucks"] = _read_table(connection, "trucks", TRUCK_COLUMNS)
    except psycopg.Error as exc:
        # Neither message nor cause may carry the DSN's secrets. libpq's complaint about a
        # malformed DSN (a client-side error: no SQLSTATE) quotes pieces of it: not shown.
        if isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None:
            raise HistoryError("PostgreSQL: libpq cannot read FLEET_HISTORY_DSN") from None
        raise HistoryError(redact_text(f"PostgreSQL: {exc}", dsns=[dsn]).strip()) from None
    where = {table: f"PostgreSQL table {table}" for table in _COLUMNS}
    return build_index(frames["drivers"], frames["assignments"], where, frames.get("trucks"))


def _numeric_loader() -> type[Loader]:
    """numeric as float: NaN and values beyond float range become nan and ±inf, which the
    rules refuse by name (a Decimal NaN makes Polars panic; float() of 1e400 raises)."""
    from psycopg.types.numeric import FloatLoader

    class NumericAsFloat(FloatLoader):
        def load(self, data: Buffer) -> float:
            try:
                return super().load(data)
            except OverflowError:
                return -math.inf if bytes(data).startswith(b"-") else math.inf

    return NumericAsFloat


def _read_table(
    connection: psycopg.Connection[tuple[Any, ...]], table: str, columns: Sequence[Column]
) -> pl.DataFrame:
    """One table as a frame of the kinds' Polars types, after checking the column types."""
    import psycopg

    source = f"PostgreSQL table {table}"
    query = f"SELECT {', '.join(c.name for c in columns)} FROM {table} ORDER BY {_PG_ORDER[table]}"
    try:
        cursor = connection.execute(query)
        for column, described in zip(columns, cursor.description or (), strict=True):
            info = connection.adapters.types.get(described.type_code)
            if info is None or info.name not in _PG_TYPES[column.kind]:
                raise HistoryError(
                    f"{source}: column {column.name!r} is {described.type_display}, "
                    f"expected {column.kind}"
                )
        rows = cursor.fetchall()
    except psycopg.DataError as exc:
        # A date or timestamp Python cannot hold (infinity, BC, after 9999): find which.
        with contextlib.suppress(psycopg.Error):  # a server-side error: say what it said
            _refuse_out_of_range(connection, table, columns, source)
        raise HistoryError(f"{source}: {exc}".strip()) from None  # no connection in the cause
    except psycopg.Error as exc:
        raise HistoryError(f"{source}: {exc}".strip()) from None
    values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    try:
        return pl.DataFrame(
            [
                pl.Series(c.name, v, dtype=_TYPED[c.kind], strict=True)
                for c, v in zip(columns, values, strict=True)
            ]
        )
    except _READ_ERRORS as exc:
        raise HistoryError(f"{source}: cannot be read: {exc}") from exc


def _refuse_out_of_range(
    connection: psycopg.Connection[tuple[Any, ...]],
    table: str,
    columns: Sequence[Column],
    source: str,
) -> None:
    """Raise the error naming the first date or timestamp of ``table`` outside what Python
    holds, as ``_check_values`` would for a file (rows in the same order as read)."""
    key = _KEYS[table]
    for column in columns:
        if column.kind not in _IN_RANGE:
            continue
        name = column.name
        found = connection.execute(
            f"""SELECT row, {key}, {name}::text, count(*) OVER () FROM (
                    SELECT row_number() OVER (ORDER BY {_PG_ORDER[table]}) - 1 AS row,
                           {key}, {name} FROM {table}
                ) AS numbered
                WHERE NOT {name} BETWEEN '0001-01-01' AND '9999-12-31 23:59:59.999999'
                ORDER BY row LIMIT 1"""
        ).fetchone()
        if found is not None:
            row, named, value, count = found
            where = f"row {row}" + (f" ({key} {_short(named)})" if isinstance(named, str) else "")
            rows = "1 row" if count == 1 else f"{count} rows"
            raise HistoryError(
                f"{source}: column {name!r} must {_IN_RANGE[column.kind]}; {where} has "
                f"{_short(value)} ({rows} in all)"
            )


def files_signature(directory: Path) -> Hashable:
    """Changes whenever a file is replaced (rename), rewritten in place, added or removed
    (trucks.parquet included)."""
    signature: list[tuple[int, int, int] | None] = []
    for name in (DRIVERS_FILE, ASSIGNMENTS_FILE, TRUCKS_FILE):
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

    @classmethod
    def from_settings(cls, history: HistorySettings) -> HistoryStore:
        """PostgreSQL when FLEET_HISTORY_DSN is set, else the files in FLEET_HISTORY_DIR."""
        if history.dsn:
            return cls.for_postgres(history.dsn, history.refresh_s)
        return cls.for_directory(history.dir, history.refresh_s)

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
        except _READ_ERRORS as exc:
            # Once per change of the source (an unchanged one returned above): a broken file
            # is reported, not spammed. A refusal never reaches the flow; the index in use
            # stays the last good one.
            log.error(
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
            trucks=len(index.vehicle_classes),
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
