"""Loading driver history from Parquet through Polars, and reloading it while in use.

Hostile files (one case per kind of value at the edge of what the types hold) are refused
whole, naming the file, the column and the first offending row, and the last good data
stays; what the loader accepts can always become an alert (a hypothesis property). The
optional trucks.parquet (vehicle classes and depots) is held to the same rules: absent, no
truck has a class; broken, the whole history is refused."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import structlog
from hypothesis import event, given
from hypothesis import strategies as st
from polars.exceptions import PanicException

from connectors.history import (
    ASSIGNMENTS_FILE,
    DRIVERS_FILE,
    TRUCKS_FILE,
    HistoryError,
    HistoryStore,
    build_index,
    files_signature,
    load_history_dir,
)
from connectors.parquet import write_atomically
from devtools.history_generator import HistoryShape, generate, generate_trucks
from domain.alerts import build_alert, encode_alert
from domain.history import (
    EARLIEST_MS,
    FIRST_DAY,
    LAST_DAY,
    LATEST_MS,
    MAX_COUNT,
    RISK_TIERS,
    VEHICLE_CLASSES,
    HistoryIndex,
)
from domain.readings import MAX_SPEED_KMH, Reading
from domain.rules import Detection, Rule
from domain.timestamps import MAX_EPOCH_MS, MIN_EPOCH_MS, to_epoch_ms
from runtime.metrics import HISTORY_RELOADS
from runtime.settings import SAMPLE_HISTORY_DIR

NOON = to_epoch_ms(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
ROW = 3  # hostile values go into this row of the sample: errors must name it
SAMPLE_DRIVER = "D00003"  # the sample's row 3
EPOCH_DAY = date(1970, 1, 1)


def write_history(directory: Path, drivers: pl.DataFrame, assignments: pl.DataFrame) -> None:
    write_atomically(drivers, directory / DRIVERS_FILE)
    write_atomically(assignments, directory / ASSIGNMENTS_FILE)


def one_assignment(truck: str, driver: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "truck_id": [truck],
            "driver_id": [driver],
            "valid_from": [datetime(2026, 1, 1, tzinfo=UTC)],
            "valid_to": [None],
        },
        schema={
            "truck_id": pl.String,
            "driver_id": pl.String,
            "valid_from": pl.Datetime("ms", "UTC"),
            "valid_to": pl.Datetime("ms", "UTC"),
        },
    )


def failures(directory: Path) -> float:
    return HISTORY_RELOADS.labels(str(directory), "failed")._value.get()  # type: ignore[no-any-return]


@pytest.fixture
def history_dir(tmp_path: Path) -> Path:
    shutil.copytree(SAMPLE_HISTORY_DIR, tmp_path / "history")
    return tmp_path / "history"


def test_shipped_sample_is_what_the_generator_makes() -> None:
    drivers, assignments = generate(HistoryShape())
    assert pl.read_parquet(SAMPLE_HISTORY_DIR / DRIVERS_FILE).equals(drivers)
    assert pl.read_parquet(SAMPLE_HISTORY_DIR / ASSIGNMENTS_FILE).equals(assignments)
    assert pl.read_parquet(SAMPLE_HISTORY_DIR / TRUCKS_FILE).equals(generate_trucks(HistoryShape()))


def test_sample_classifies_most_trucks_and_leaves_a_few_unlisted() -> None:
    index = load_history_dir(SAMPLE_HISTORY_DIR)
    classes = index.vehicle_classes
    assert set(classes.values()) == set(VEHICLE_CLASSES), "a mix of heavy, medium and light"
    assert (classes["T00000"], classes["T00001"], classes["T00003"]) == ("heavy", "medium", "light")
    assert "T00008" not in classes, "unlisted: no class"
    assert "T00018" not in classes
    assert 400 <= len(classes) < 500
    assert index.depots["T00000"] == "Hamburg"
    assert "T00002" in classes
    assert "T00002" not in index.depots, "listed, with no depot"
    assert set(index.depots) < set(classes)


def test_sample_covers_the_simulated_fleet() -> None:
    index = load_history_dir(SAMPLE_HISTORY_DIR)
    assert len(index.drivers) > 100
    assert index.driver_id_at("T00000", NOON) is not None
    assert index.driver_id_at("T00009", NOON) is None, "every 10th truck has no assignment"
    morning = to_epoch_ms(datetime(2026, 11, 24, 13, 59, tzinfo=UTC))
    afternoon = to_epoch_ms(datetime(2026, 11, 24, 14, 0, tzinfo=UTC))
    assert index.driver_id_at("T00000", morning) != index.driver_id_at("T00000", afternoon), (
        "shift change"
    )


# --- Hostile files --------------------------------------------------------------------------

Change = Callable[[pl.DataFrame], pl.DataFrame]
Damage = Callable[[Path], None]


def at_row(column: str, value: Any, dtype: pl.DataType | None = None) -> Change:
    """Put ``value`` (a Python value or an expression) into ``column`` at ROW; with ``dtype``,
    the column is cast to it first."""

    def change(frame: pl.DataFrame) -> pl.DataFrame:
        if dtype is not None:
            frame = frame.with_columns(pl.col(column).cast(dtype))
        new = value if isinstance(value, pl.Expr) else pl.lit(value, frame.schema[column])
        is_row = pl.int_range(pl.len()) == ROW
        return frame.with_columns(pl.when(is_row).then(new).otherwise(pl.col(column)).alias(column))

    return change


def day(days_from_1970: int) -> pl.Expr:
    """A Date by its physical value: also one that Python's date cannot hold."""
    return pl.lit(days_from_1970, pl.Int32).cast(pl.Date)


def instant(epoch_ms: int) -> pl.Expr:
    """A timestamp by its physical value: also one that Python's datetime cannot hold."""
    return pl.lit(epoch_ms, pl.Int64).cast(pl.Datetime("ms", "UTC"))


def rewritten(change: Change) -> Damage:
    """Rewrite the file through Polars with ``change`` applied (atomically)."""
    return lambda path: write_atomically(change(pl.read_parquet(path)), path)


def invalid_utf8(path: Path) -> None:
    """A string that is not UTF-8: the bytes a lone surrogate (U+D800) would be in CESU-8."""
    frame = pl.read_parquet(path).with_columns(
        pl.when(pl.int_range(pl.len()) == ROW)
        .then(pl.lit("@@S@@"))
        .otherwise(pl.col("name"))
        .alias("name")
    )
    frame.write_parquet(path, compression="uncompressed", statistics=False)
    data = path.read_bytes()
    assert data.count(b"@@S@@") == 1
    path.write_bytes(data.replace(b"@@S@@", b"ab\xed\xa0\x80"))


@dataclass(frozen=True)
class Hostile:
    """A damaged file, and what the error must say (besides the file's path)."""

    file: str
    damage: Damage
    message: str | tuple[str, ...]  # the error contains this, or each of these

    def said_by(self, error: str) -> bool:
        parts = (self.message,) if isinstance(self.message, str) else self.message
        return all(part in error for part in parts)


def drivers(change: Change, message: str | tuple[str, ...]) -> Hostile:
    return Hostile(DRIVERS_FILE, rewritten(change), message)


def assignments(change: Change, message: str | tuple[str, ...]) -> Hostile:
    return Hostile(ASSIGNMENTS_FILE, rewritten(change), message)


def trucks(change: Change, message: str | tuple[str, ...]) -> Hostile:
    return Hostile(TRUCKS_FILE, rewritten(change), message)


def null_at_row(column: str) -> Change:
    return at_row(column, None)


def a_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    shutil.copy(SAMPLE_HISTORY_DIR / TRUCKS_FILE, path / "part-0.parquet")


A_ROW = f"row {ROW} (driver_id '{SAMPLE_DRIVER}')"
BAD_DATE = "must be a date from 0001-01-01 to 9999-12-31; " + A_ROW
BAD_INSTANT = f"must be an instant from 0001-01-01 to 9999-12-31T23:59:59.999Z; row {ROW}"
BAD_SPEED = "'avg_speed_kmh_90d' must be a finite number ≥ 0 and ≤ 400; " + A_ROW
BAD_KM = "'km_driven_90d' must be a finite number ≥ 0; " + A_ROW
BAD_COUNT = "'overspeed_events_90d' must be an integer from 0 to 2**63-1; " + A_ROW
CONTROL = "must hold no control characters (line breaks, tabs, NUL)"
A_TRUCK = f"row {ROW} (truck_id 'T00003')"  # the sample trucks' row 3
BAD_CLASS = "'vehicle_class' must be one of heavy, medium, light; " + A_TRUCK
SAMPLE_TRUCKS = 450  # rows of the sample's trucks.parquet
LAST_DAY_N = (LAST_DAY - EPOCH_DAY).days
FIRST_DAY_N = (FIRST_DAY - EPOCH_DAY).days

HOSTILE = {
    # Nulls, in every column that must not have any (only valid_to may).
    **{
        f"null {c}": drivers(null_at_row(c), f"column '{c}' must not be null; row {ROW}")
        for c in (
            "driver_id",
            "name",
            "hired_on",
            "overspeed_events_90d",
            "avg_speed_kmh_90d",
            "km_driven_90d",
            "risk_tier",
        )
    },
    **{
        f"null {c} (assignments)": assignments(
            null_at_row(c), f"column '{c}' must not be null; row {ROW}"
        )
        for c in ("truck_id", "driver_id", "valid_from")
    },
    "a column of nulls only (type Null)": drivers(
        lambda f: f.with_columns(pl.lit(None).alias("name")),
        "column 'name' must not be null; row 0 (driver_id 'D00000') has null (666 rows in all)",
    ),
    # Dates beyond Python's (Polars panics formatting some of them).
    "hired_on in year 10000": drivers(at_row("hired_on", day(LAST_DAY_N + 1)), BAD_DATE),
    "hired_on before year 1": drivers(at_row("hired_on", day(FIRST_DAY_N - 1)), BAD_DATE),
    "hired_on at the end of Polars' range": drivers(at_row("hired_on", day(2**31 - 1)), BAD_DATE),
    "hired_on at the start of Polars' range": drivers(at_row("hired_on", day(-(2**31))), BAD_DATE),
    "valid_from after 9999": assignments(at_row("valid_from", instant(LATEST_MS + 1)), BAD_INSTANT),
    "valid_to before year 1": assignments(
        at_row("valid_to", instant(EARLIEST_MS - 1)), BAD_INSTANT
    ),
    "valid_from at the end of i64": assignments(
        at_row("valid_from", instant(2**63 - 1)), BAD_INSTANT
    ),
    "valid_to before valid_from": assignments(
        at_row("valid_to", pl.col("valid_from") - pl.duration(milliseconds=1)),
        f"column 'valid_to' must not be before valid_from; row {ROW} (truck_id 'T00000')",
    ),
    # Numbers: NaN, infinities, beyond the type, negative, beyond what readings allow.
    "avg speed NaN": drivers(at_row("avg_speed_kmh_90d", math.nan), BAD_SPEED + " has nan"),
    "avg speed inf": drivers(at_row("avg_speed_kmh_90d", math.inf), BAD_SPEED + " has inf"),
    "avg speed -inf": drivers(at_row("avg_speed_kmh_90d", -math.inf), BAD_SPEED),
    "avg speed negative": drivers(at_row("avg_speed_kmh_90d", -0.5), BAD_SPEED),
    "avg speed over 400": drivers(at_row("avg_speed_kmh_90d", MAX_SPEED_KMH + 0.001), BAD_SPEED),
    "avg speed a huge decimal": drivers(
        at_row("avg_speed_kmh_90d", pl.lit("1e37").cast(pl.Decimal(38, 0)), pl.Decimal(38, 0)),
        BAD_SPEED,
    ),
    "avg speed float32 NaN": drivers(
        at_row("avg_speed_kmh_90d", math.nan, pl.Float32()), BAD_SPEED + " has nan"
    ),
    "km NaN": drivers(at_row("km_driven_90d", math.nan), BAD_KM),
    "km inf": drivers(at_row("km_driven_90d", math.inf), BAD_KM),
    "km negative": drivers(at_row("km_driven_90d", -1.0), BAD_KM),
    "negative count": drivers(at_row("overspeed_events_90d", -1), BAD_COUNT + " has -1"),
    "count beyond i64 (u64)": drivers(
        at_row("overspeed_events_90d", 2**64 - 1, pl.UInt64()), BAD_COUNT
    ),
    "count beyond i64 (i128)": drivers(
        at_row("overspeed_events_90d", 2**100, pl.Int128()), BAD_COUNT
    ),
    "negative count (i8)": drivers(at_row("overspeed_events_90d", -128, pl.Int8()), BAD_COUNT),
    # risk_tier outside low/medium/high.
    "risk tier unknown": drivers(
        at_row("risk_tier", "extreme"),
        "'risk_tier' must be one of low, medium, high; " + A_ROW + " has 'extreme'",
    ),
    "risk tier in capitals": drivers(at_row("risk_tier", "HIGH"), "'risk_tier' must be one of"),
    "risk tier empty": drivers(at_row("risk_tier", ""), "'risk_tier' must be one of"),
    # Strings: line breaks and other control characters, empty ids, invalid UTF-8.
    "line break in a name": drivers(
        at_row("name", "Kemal\nJansen"), f"'name' {CONTROL}; {A_ROW} has 'Kemal\\nJansen'"
    ),
    "CR LF in a name": drivers(at_row("name", "Kemal\r\nBcc: x"), f"'name' {CONTROL}"),
    "NUL in a name": drivers(at_row("name", "Kemal\x00"), f"'name' {CONTROL}"),
    "C1 control in a name": drivers(at_row("name", "Kemal\x85"), f"'name' {CONTROL}"),
    "line break in a driver_id": drivers(at_row("driver_id", "D00003\n"), f"'driver_id' {CONTROL}"),
    "tab in a truck_id": assignments(at_row("truck_id", "T\t1"), f"'truck_id' {CONTROL}; row 3"),
    "empty driver_id": drivers(at_row("driver_id", ""), "'driver_id' must not be empty; row 3"),
    "empty truck_id": assignments(at_row("truck_id", ""), "'truck_id' must not be empty; row 3"),
    "empty driver_id (assignments)": assignments(
        at_row("driver_id", ""), "'driver_id' must not be empty; row 3"
    ),
    "invalid UTF-8 (a lone surrogate)": Hostile(
        DRIVERS_FILE, invalid_utf8, ("cannot be read", "invalid UTF-8")
    ),
    # Wrong column types.
    "hired_on a string": drivers(
        lambda f: f.with_columns(pl.col("hired_on").cast(pl.String)),
        "column 'hired_on' is String, expected date",
    ),
    "hired_on a datetime": drivers(
        lambda f: f.with_columns(pl.col("hired_on").cast(pl.Datetime("ms", "UTC"))),
        ("column 'hired_on' is Datetime", "expected date"),
    ),
    "name categorical": drivers(
        lambda f: f.with_columns(pl.col("name").cast(pl.Categorical)),
        "column 'name' is Categorical, expected string",
    ),
    "count a float": drivers(
        lambda f: f.with_columns(pl.col("overspeed_events_90d").cast(pl.Float64)),
        "column 'overspeed_events_90d' is Float64, expected integer",
    ),
    "speed a boolean": drivers(
        lambda f: f.with_columns(pl.col("avg_speed_kmh_90d") > 0),
        "column 'avg_speed_kmh_90d' is Boolean, expected number",
    ),
    "driver_id an integer": drivers(
        lambda f: f.with_columns(pl.int_range(pl.len()).alias("driver_id")),
        "column 'driver_id' is Int64, expected string",
    ),
    "naive timestamp": assignments(
        lambda f: f.with_columns(pl.col("valid_from").dt.replace_time_zone(None)),
        ("column 'valid_from' is Datetime", "time_zone=None", "expected timestamp UTC"),
    ),
    "timestamp a date": assignments(
        lambda f: f.with_columns(pl.col("valid_to").cast(pl.Date)),
        "column 'valid_to' is Date, expected timestamp UTC",
    ),
    # Missing columns.
    "missing risk_tier": drivers(lambda f: f.drop("risk_tier"), "missing column 'risk_tier'"),
    "missing valid_to": assignments(lambda f: f.drop("valid_to"), "missing column 'valid_to'"),
    # The same driver twice: refused, not "the last row wins".
    "duplicate driver_id": drivers(
        lambda f: pl.concat([f, f[ROW].with_columns(risk_tier=pl.lit("high"))]),
        f"column 'driver_id' must be unique; '{SAMPLE_DRIVER}' is at rows {ROW} and 666",
    ),
    # Empty and corrupt files.
    "empty file (0 bytes)": Hostile(DRIVERS_FILE, lambda p: p.write_bytes(b""), "cannot be read"),
    "corrupt file": Hostile(
        ASSIGNMENTS_FILE,
        lambda p: p.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1"),
        "cannot be read",
    ),
    # trucks.parquet (optional, but when present held to the same rules).
    **{
        f"null {c} (trucks)": trucks(null_at_row(c), f"column '{c}' must not be null; row {ROW}")
        for c in ("truck_id", "vehicle_class")
    },
    "vehicle classes nulls only (type Null)": trucks(
        lambda f: f.with_columns(pl.lit(None).alias("vehicle_class")),
        "column 'vehicle_class' must not be null; row 0 (truck_id 'T00000') has null "
        f"({SAMPLE_TRUCKS} rows in all)",
    ),
    "vehicle class unknown": trucks(at_row("vehicle_class", "huge"), BAD_CLASS + " has 'huge'"),
    "vehicle class in capitals": trucks(at_row("vehicle_class", "Heavy"), BAD_CLASS),
    "vehicle class padded": trucks(at_row("vehicle_class", " light"), BAD_CLASS),
    "vehicle class empty": trucks(at_row("vehicle_class", ""), BAD_CLASS + " has ''"),
    "empty truck_id (trucks)": trucks(
        at_row("truck_id", ""), "'truck_id' must not be empty; row 3"
    ),
    "line break in a truck_id (trucks)": trucks(
        at_row("truck_id", "T00003\n"), f"'truck_id' {CONTROL}; row 3"
    ),
    "line break in a depot": trucks(
        at_row("depot", "Ham\nburg"), f"'depot' {CONTROL}; {A_TRUCK} has 'Ham\\nburg'"
    ),
    "NUL in a depot": trucks(at_row("depot", "Hamburg\x00"), f"'depot' {CONTROL}; {A_TRUCK}"),
    "duplicate truck_id": trucks(
        lambda f: pl.concat([f, f[ROW].with_columns(vehicle_class=pl.lit("heavy"))]),
        f"column 'truck_id' must be unique; 'T00003' is at rows {ROW} and {SAMPLE_TRUCKS}",
    ),
    "several duplicate truck_ids": trucks(
        lambda f: pl.concat([f, f[:3]]),
        "column 'truck_id' must be unique; 'T00000' is at rows 0 and 450 (2 more ids are repeated)",
    ),
    "vehicle class categorical": trucks(
        lambda f: f.with_columns(pl.col("vehicle_class").cast(pl.Categorical)),
        "column 'vehicle_class' is Categorical, expected string",
    ),
    "truck_id an integer": trucks(
        lambda f: f.with_columns(pl.int_range(pl.len()).alias("truck_id")),
        "column 'truck_id' is Int64, expected string",
    ),
    "depot an integer": trucks(
        lambda f: f.with_columns(pl.int_range(pl.len()).alias("depot")),
        "column 'depot' is Int64, expected string",
    ),
    "missing vehicle_class": trucks(
        lambda f: f.drop("vehicle_class"), "missing column 'vehicle_class'"
    ),
    "missing depot": trucks(lambda f: f.drop("depot"), "missing column 'depot'"),
    "empty trucks file (0 bytes)": Hostile(
        TRUCKS_FILE, lambda p: p.write_bytes(b""), "cannot be read"
    ),
    "corrupt trucks file": Hostile(
        TRUCKS_FILE, lambda p: p.write_bytes(b"this is not parquet" * 10), "cannot be read"
    ),
    "trucks.parquet a directory": Hostile(TRUCKS_FILE, a_directory, "not a file"),
}


@pytest.mark.parametrize("case", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_file_is_refused_and_the_last_good_data_stays(
    history_dir: Path, case: Hostile
) -> None:
    store = HistoryStore.for_directory(history_dir, refresh_s=60)
    assert store.refresh()
    good = store.current()
    failed_before = failures(history_dir)
    case.damage(history_dir / case.file)

    with pytest.raises(HistoryError) as caught:
        load_history_dir(history_dir)
    assert case.said_by(str(caught.value)), str(caught.value)
    assert str(caught.value).startswith(f"{history_dir / case.file}: "), "it names the file"

    with structlog.testing.capture_logs() as logs:
        assert not store.refresh()
    assert store.current() is good
    assert failures(history_dir) == failed_before + 1
    [entry] = logs
    assert (entry["event"], entry["log_level"]) == ("history_reload_failed", "error")
    assert entry["error"] == str(caught.value)


def test_duplicate_driver_ids_refuse_the_file_instead_of_the_last_row_winning(
    history_dir: Path,
) -> None:
    store = HistoryStore.for_directory(history_dir, refresh_s=60)
    store.refresh()
    assert store.current().drivers[SAMPLE_DRIVER].risk_tier == "medium"
    frame = pl.read_parquet(history_dir / DRIVERS_FILE)
    twice = pl.concat([frame, frame.filter(pl.col("driver_id") == SAMPLE_DRIVER)])
    write_atomically(twice.with_columns(risk_tier=pl.lit("high")), history_dir / DRIVERS_FILE)
    assert not store.refresh()
    assert store.current().drivers[SAMPLE_DRIVER].risk_tier == "medium", "the last good data"


def test_a_broken_trucks_file_refuses_the_whole_history(history_dir: Path) -> None:
    """Good new drivers and assignments beside a broken trucks.parquet are not used either:
    the history is refused whole, and used whole once the trucks file is fixed."""
    store = HistoryStore.for_directory(history_dir, refresh_s=60)
    assert store.refresh()
    good = store.current()
    drivers = pl.read_parquet(history_dir / DRIVERS_FILE)
    write_history(history_dir, drivers, one_assignment("T00009", "D00001"))
    listed = pl.read_parquet(history_dir / TRUCKS_FILE)
    write_atomically(at_row("vehicle_class", "huge")(listed), history_dir / TRUCKS_FILE)
    assert not store.refresh()
    assert store.current() is good
    assert store.current().driver_id_at("T00009", NOON) is None, "the new assignment is not used"

    write_atomically(at_row("vehicle_class", "light")(listed), history_dir / TRUCKS_FILE)
    assert store.refresh()
    assert store.current().driver_id_at("T00009", NOON) == "D00001"
    assert store.current().vehicle_classes["T00003"] == "light"


def test_without_a_trucks_file_no_truck_has_a_class(history_dir: Path) -> None:
    (history_dir / TRUCKS_FILE).unlink()
    index = load_history_dir(history_dir)
    assert (index.vehicle_classes, index.depots) == ({}, {})
    reference = load_history_dir(SAMPLE_HISTORY_DIR)
    assert dict(index.drivers) == dict(reference.drivers)
    assert index.assignments == reference.assignments
    assert index.driver_id_at("T00000", NOON) == reference.driver_id_at("T00000", NOON)


def test_a_good_file_after_a_refused_one_is_used(history_dir: Path) -> None:
    store = HistoryStore.for_directory(history_dir, refresh_s=60)
    store.refresh()
    drivers = pl.read_parquet(history_dir / DRIVERS_FILE)
    write_history(history_dir, drivers, one_assignment("T00009", "D00001").clear())
    write_atomically(at_row("avg_speed_kmh_90d", math.nan)(drivers), history_dir / DRIVERS_FILE)
    assert not store.refresh()
    write_atomically(drivers, history_dir / DRIVERS_FILE)
    assert store.refresh()
    assert store.current().assignments == 0


def test_a_panic_in_polars_keeps_the_last_good_data(history_dir: Path) -> None:
    """Polars reports some input by panicking (a BaseException): it must not escape."""

    def panicking() -> HistoryIndex:
        raise PanicException("out-of-range date")

    loaders = iter([lambda: load_history_dir(history_dir), panicking])

    def load() -> HistoryIndex:
        return next(loaders)()

    store = HistoryStore(load, time.monotonic, 60, "panicking")
    assert store.refresh()
    good = store.current()
    assert not store.refresh()
    assert store.current() is good


# --- Edge values that are accepted, as the module docstring says ---------------------------


def sample_drivers() -> pl.DataFrame:
    return pl.read_parquet(SAMPLE_HISTORY_DIR / DRIVERS_FILE)


def sample_assignments() -> pl.DataFrame:
    return pl.read_parquet(SAMPLE_HISTORY_DIR / ASSIGNMENTS_FILE)


def in_zone(zone: str, unit: str) -> Change:
    def change(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(
            pl.col(c).cast(pl.Datetime(unit, "UTC")).dt.convert_time_zone(zone)  # type: ignore[arg-type]
            for c in ("valid_from", "valid_to")
        )

    return change


ACCEPTED: dict[str, tuple[Change, Change]] = {
    "hired_on 0001-01-01": (at_row("hired_on", FIRST_DAY), lambda f: f),
    "hired_on 9999-12-31": (at_row("hired_on", LAST_DAY), lambda f: f),
    "timestamps in ns": (lambda f: f, in_zone("UTC", "ns")),
    "timestamps in us, Helsinki time": (lambda f: f, in_zone("Europe/Helsinki", "us")),
    "timestamps in Kathmandu time (+05:45)": (lambda f: f, in_zone("Asia/Kathmandu", "ms")),
    "valid_from at year 1, valid_to at 9999": (
        lambda f: f,
        lambda f: at_row("valid_to", instant(LATEST_MS))(
            at_row("valid_from", instant(EARLIEST_MS))(f)
        ),
    ),
    "valid_to equal to valid_from (never in force)": (
        lambda f: f,
        at_row("valid_to", pl.col("valid_from")),
    ),
    "every valid_to null (type Null)": (lambda f: f, lambda f: f.with_columns(valid_to=None)),
    "extra columns are ignored": (
        lambda f: f.with_columns(notes=pl.lit("x\ny"), rating=None),
        lambda f: f.with_columns(comment=pl.lit(math.nan)),
    ),
    "numbers of other types": (
        lambda f: f.with_columns(
            pl.col("overspeed_events_90d").cast(pl.UInt8),
            pl.col("avg_speed_kmh_90d").cast(pl.Float32),
            pl.col("km_driven_90d").cast(pl.Decimal(20, 3)),
        ),
        lambda f: f,
    ),
    "largest count, zero speed, huge distance": (
        lambda f: at_row("km_driven_90d", 1e300)(
            at_row("avg_speed_kmh_90d", 0.0)(at_row("overspeed_events_90d", MAX_COUNT)(f))
        ),
        lambda f: f,
    ),
    "names beyond ASCII": (at_row("name", "Zoë 李 🚚 \u2028 \u202e"), lambda f: f),
    "no rows at all": (lambda f: f.clear(), lambda f: f.clear()),
}


def sample_trucks() -> pl.DataFrame:
    return pl.read_parquet(SAMPLE_HISTORY_DIR / TRUCKS_FILE)


ACCEPTED_TRUCKS: dict[str, tuple[Change, dict[str, str], dict[str, str]]] = {
    # (the change, some trucks' expected classes, some trucks' expected depots)
    "the sample": (lambda f: f, {"T00003": "light"}, {"T00003": "Hamburg"}),
    "every depot null (type Null)": (lambda f: f.with_columns(depot=None), {"T00000": "heavy"}, {}),
    "no rows at all": (lambda f: f.clear(), {}, {}),
    "extra columns are ignored": (
        lambda f: f.with_columns(notes=pl.lit("a\nb"), axles=pl.lit(math.nan)),
        {"T00001": "medium"},
        {"T00001": "Leipzig"},
    ),
    "depots beyond ASCII, and empty": (
        lambda f: at_row("depot", "Zürich 🚚")(f).with_columns(
            pl.when(pl.col("truck_id") == "T00000")
            .then(pl.lit(""))
            .otherwise(pl.col("depot"))
            .alias("depot")
        ),
        {"T00003": "light"},
        {"T00003": "Zürich 🚚", "T00000": ""},
    ),
    "columns in another order": (
        lambda f: f.select("depot", "vehicle_class", "truck_id"),
        {"T00005": "medium"},
        {"T00005": "Munich"},
    ),
    "a truck that never had an assignment": (
        lambda f: pl.concat(
            [
                f,
                pl.DataFrame(
                    {"truck_id": ["T99999"], "vehicle_class": ["light"], "depot": ["Kiel"]}
                ),
            ]
        ),
        {"T99999": "light"},
        {"T99999": "Kiel"},
    ),
}


@pytest.mark.parametrize(
    ("change", "classes", "depots"), ACCEPTED_TRUCKS.values(), ids=ACCEPTED_TRUCKS.keys()
)
def test_trucks_files_that_fit_are_accepted(
    history_dir: Path, change: Change, classes: dict[str, str], depots: dict[str, str]
) -> None:
    frame = change(sample_trucks())
    write_atomically(frame, history_dir / TRUCKS_FILE)
    index = load_history_dir(history_dir)
    assert len(index.vehicle_classes) == frame.height
    assert index.vehicle_classes.items() >= classes.items()
    assert index.depots.items() >= depots.items()
    assert len(index.depots) == frame.height - frame["depot"].null_count(), "only known depots"
    assert set(index.vehicle_classes.values()) <= set(VEHICLE_CLASSES)


@pytest.mark.parametrize(("drivers", "assignments"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_edge_values_that_fit_are_accepted_and_make_alerts(
    history_dir: Path, drivers: Change, assignments: Change
) -> None:
    write_history(history_dir, drivers(sample_drivers()), assignments(sample_assignments()))
    index = load_history_dir(history_dir)
    with_driver = 0
    for hour in range(0, 24 * 11, 5):
        window_end = to_epoch_ms(datetime(2026, 11, 20, tzinfo=UTC)) + hour * 3_600_000
        for truck in ("T00000", "T00001", "T00002", "T00003"):
            readings = (Reading("e", truck, window_end, MAX_SPEED_KMH),)
            detection = Detection(Rule.SUSTAINED, truck, readings, 90.0)
            with_driver += assert_alert_is_sound(detection, index)
    assert with_driver or not index.drivers, "alerts with a driver were made"
    if index.drivers:
        assert date.fromisoformat(index.drivers[SAMPLE_DRIVER].hired_on)


def test_timestamps_in_other_units_and_zones_are_the_same_instants(history_dir: Path) -> None:
    reference = load_history_dir(SAMPLE_HISTORY_DIR)
    for zone, unit in (("Europe/Helsinki", "us"), ("America/St_Johns", "ns")):
        write_history(history_dir, sample_drivers(), in_zone(zone, unit)(sample_assignments()))
        index = load_history_dir(history_dir)
        for hour in range(0, 24 * 11):
            ts = to_epoch_ms(datetime(2026, 11, 20, tzinfo=UTC)) + hour * 3_600_000
            for truck in ("T00000", "T00001", "T00007"):
                assert index.driver_id_at(truck, ts) == reference.driver_id_at(truck, ts)


def test_integer_speeds_are_accepted_as_numbers(history_dir: Path) -> None:
    path = history_dir / DRIVERS_FILE
    write_atomically(
        pl.read_parquet(path).with_columns(pl.col("avg_speed_kmh_90d").cast(pl.Int32)), path
    )
    assert isinstance(
        next(iter(load_history_dir(history_dir).drivers.values())).avg_speed_kmh_90d, float
    )


# --- Anything the loader accepts makes an alert --------------------------------------------


def assert_alert_is_sound(detection: Detection, index: HistoryIndex) -> bool:
    """Build and encode the alert; its driver row must be as the contract says. True if it
    has one."""
    document = json.loads(encode_alert(build_alert(detection, MAX_EPOCH_MS, index)))
    driver = document["driver"]
    if document["driver_id"] not in index.drivers:
        assert driver is None
        return False
    assert date.fromisoformat(driver["hired_on"])
    for field in ("avg_speed_kmh_90d", "km_driven_90d", "speed_over_baseline_kmh"):
        assert isinstance(driver[field], float | int), f"{field} is a number, not null"
    assert isinstance(driver["overspeed_events_90d"], int)
    assert driver["risk_tier"] in RISK_TIERS
    assert driver["repeat_offender"] is (driver["overspeed_events_90d"] >= 3)
    assert isinstance(driver["name"], str)
    return True


UNITS_AND_RANGES = {
    "ms": (EARLIEST_MS, LATEST_MS),
    "us": (EARLIEST_MS, LATEST_MS),
    "ns": (-(2**63) // 1_000_000 + 1, (2**63 - 1) // 1_000_000),  # 1677..2262
}
ZONES = ["UTC", "Europe/Helsinki", "Asia/Kathmandu", "America/St_Johns", "Pacific/Kiritimati"]
TEXT = st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=6)
HOSTILE_TEXT = st.sampled_from(["", "\n", "a\r\nb", "\x00", "\x85", "extreme", "HIGH", " low"])
HOSTILE_NUMBER = st.sampled_from([math.nan, math.inf, -math.inf, -1e-9, -1.0, 400.000001, 1e308])


def _with_hostile(draw: st.DrawFn, columns: dict[str, list[Any]], hostile: dict[str, Any]) -> None:
    """Maybe replace one value of one column with a hostile one."""
    rows = len(next(iter(columns.values())))
    if rows and draw(st.booleans()):
        column = draw(st.sampled_from(sorted(hostile)))
        columns[column][draw(st.integers(0, rows - 1))] = draw(hostile[column])


@st.composite
def driver_frames(draw: st.DrawFn) -> pl.DataFrame:
    """Drivers across the whole range of every type, sometimes with one hostile value."""
    rows = draw(st.integers(0, 4))
    ids = draw(st.lists(TEXT.filter(bool), min_size=rows, max_size=rows, unique=True))

    def column(values: st.SearchStrategy[Any]) -> list[Any]:
        return draw(st.lists(values, min_size=rows, max_size=rows))

    columns: dict[str, list[Any]] = {
        "driver_id": ids,
        "name": column(TEXT),
        "hired_on": column(st.integers(FIRST_DAY_N, LAST_DAY_N)),  # days from 1970
        "overspeed_events_90d": column(st.integers(0, MAX_COUNT)),
        "avg_speed_kmh_90d": column(st.floats(0.0, MAX_SPEED_KMH)),
        "km_driven_90d": column(st.floats(0.0, allow_infinity=False)),
        "risk_tier": column(st.sampled_from(RISK_TIERS)),
    }
    _with_hostile(
        draw,
        columns,
        {
            "driver_id": st.one_of(st.none(), HOSTILE_TEXT, st.sampled_from(ids or ["x"])),
            "name": st.one_of(st.none(), HOSTILE_TEXT),
            "hired_on": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
            "overspeed_events_90d": st.one_of(st.none(), st.integers(-(2**100), 2**100)),
            "avg_speed_kmh_90d": st.one_of(st.none(), HOSTILE_NUMBER),
            "km_driven_90d": st.one_of(st.none(), HOSTILE_NUMBER),
            "risk_tier": st.one_of(st.none(), HOSTILE_TEXT),
        },
    )
    count_type = draw(st.sampled_from([pl.Int64, pl.UInt64, pl.Int128]))
    return pl.DataFrame(
        {
            "driver_id": pl.Series(columns["driver_id"], dtype=pl.String),
            "name": pl.Series(columns["name"], dtype=pl.String),
            "hired_on": pl.Series(columns["hired_on"], dtype=pl.Int32).cast(pl.Date),
            "overspeed_events_90d": pl.Series(
                columns["overspeed_events_90d"], dtype=pl.Int128
            ).cast(count_type, strict=False),
            "avg_speed_kmh_90d": pl.Series(columns["avg_speed_kmh_90d"], dtype=pl.Float64).cast(
                draw(st.sampled_from([pl.Float64, pl.Float32]))
            ),
            "km_driven_90d": pl.Series(columns["km_driven_90d"], dtype=pl.Float64),
            "risk_tier": pl.Series(columns["risk_tier"], dtype=pl.String),
        }
    )


@st.composite
def assignment_frames(draw: st.DrawFn, driver_ids: list[str]) -> pl.DataFrame:
    """Assignments of trucks T1, T2 to the drivers (and to one nobody knows), in a unit and
    zone, sometimes with one hostile value."""
    rows = draw(st.integers(0, 6))
    unit = draw(st.sampled_from(sorted(UNITS_AND_RANGES)))
    low, high = UNITS_AND_RANGES[unit]
    starts = draw(st.lists(st.integers(low, high), min_size=rows, max_size=rows))
    ends = [
        draw(st.one_of(st.none(), st.integers(start, high))) for start in starts
    ]  # valid_to >= valid_from
    columns: dict[str, list[Any]] = {
        "truck_id": draw(st.lists(st.sampled_from(["T1", "T2"]), min_size=rows, max_size=rows)),
        "driver_id": draw(
            st.lists(st.sampled_from([*driver_ids, "D-ghost"]), min_size=rows, max_size=rows)
        ),
        "valid_from": starts,
        "valid_to": ends,
    }
    instants = st.integers(-(2**62), 2**62) if unit == "ms" else st.integers(low, high)
    _with_hostile(
        draw,
        columns,
        {
            "truck_id": st.one_of(st.none(), HOSTILE_TEXT),
            "driver_id": st.one_of(st.none(), HOSTILE_TEXT),
            "valid_from": st.one_of(st.none(), instants),
            "valid_to": instants,
        },
    )
    zone = draw(st.sampled_from(ZONES))

    def timestamps(values: list[int | None]) -> pl.Series:
        ms = pl.Series(values, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC"))
        return ms.cast(pl.Datetime(unit, "UTC")).dt.convert_time_zone(zone)  # type: ignore[arg-type]

    return pl.DataFrame(
        {
            "truck_id": pl.Series(columns["truck_id"], dtype=pl.String),
            "driver_id": pl.Series(columns["driver_id"], dtype=pl.String),
            "valid_from": timestamps(columns["valid_from"]),
            "valid_to": timestamps(columns["valid_to"]),
        }
    )


@given(st.data())
def test_whatever_the_loader_accepts_makes_an_alert(data: st.DataObject) -> None:
    drivers = data.draw(driver_frames(), "drivers")
    assignments = data.draw(
        assignment_frames(drivers["driver_id"].drop_nulls().to_list()), "assignments"
    )
    try:
        index = build_index(drivers, assignments)
    except HistoryError:
        event("refused")
        return
    event("accepted")
    # Window ends where an assignment begins (within what a reading can carry), or anywhere.
    begins = [
        ms
        for ms in assignments["valid_from"].dt.epoch("ms").to_list()
        if MIN_EPOCH_MS <= ms <= MAX_EPOCH_MS
    ]
    for _ in range(3):
        end = data.draw(
            st.one_of(st.sampled_from(begins), st.integers(MIN_EPOCH_MS, MAX_EPOCH_MS))
            if begins
            else st.integers(MIN_EPOCH_MS, MAX_EPOCH_MS)
        )
        truck = data.draw(st.sampled_from(["T1", "T2", "T3"]))
        speeds = data.draw(st.lists(st.floats(0.0, MAX_SPEED_KMH), min_size=1, max_size=5))
        readings = tuple(
            Reading(f"e{i}", truck, max(MIN_EPOCH_MS, end - (len(speeds) - 1 - i)), speed)
            for i, speed in enumerate(speeds)
        )
        rule = data.draw(st.sampled_from(list(Rule)))
        assert_alert_is_sound(Detection(rule, truck, readings, 90.0), index)


@st.composite
def truck_frames(draw: st.DrawFn) -> pl.DataFrame:
    """Trucks with any class and depot, sometimes with one hostile value (or a repeated id)."""
    rows = draw(st.integers(0, 5))
    columns: dict[str, list[Any]] = {
        "truck_id": draw(st.lists(TEXT.filter(bool), min_size=rows, max_size=rows, unique=True)),
        "vehicle_class": draw(
            st.lists(st.sampled_from(VEHICLE_CLASSES), min_size=rows, max_size=rows)
        ),
        "depot": draw(st.lists(st.one_of(st.none(), TEXT), min_size=rows, max_size=rows)),
    }
    _with_hostile(
        draw,
        columns,
        {
            "truck_id": st.one_of(
                st.none(), HOSTILE_TEXT, st.sampled_from(columns["truck_id"] or ["x"])
            ),
            "vehicle_class": st.one_of(st.none(), HOSTILE_TEXT),
            "depot": st.sampled_from(["\n", "a\r\nb", "\x00", "\x85"]),
        },
    )
    return pl.DataFrame(
        {name: pl.Series(values, dtype=pl.String) for name, values in columns.items()}
    )


@given(truck_frames())
def test_whatever_the_loader_accepts_of_trucks_is_a_class_and_a_clean_depot(
    frame: pl.DataFrame,
) -> None:
    drivers, assignments = sample_drivers().clear(), sample_assignments().clear()
    try:
        index = build_index(drivers, assignments, trucks=frame)
    except HistoryError as exc:
        event("refused")
        refusal = str(exc)
    else:
        refusal = None
    if refusal is not None:
        assert refusal.startswith("trucks: column "), refusal
        return
    event("accepted")
    assert frame["truck_id"].n_unique() == frame.height == len(index.vehicle_classes)
    assert set(index.vehicle_classes.values()) <= set(VEHICLE_CLASSES)
    assert set(index.depots) <= set(index.vehicle_classes)
    for text in (*index.vehicle_classes, *index.depots.values()):
        assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text), repr(text)


# --- Reloading --------------------------------------------------------------------------


def test_store_reloads_replaced_files(history_dir: Path) -> None:
    store = HistoryStore.for_directory(history_dir, refresh_s=60)
    assert store.refresh()
    assert store.current().driver_id_at("T00009", NOON) is None
    drivers = pl.read_parquet(history_dir / DRIVERS_FILE)
    write_history(history_dir, drivers, one_assignment("T00009", "D00001"))  # atomic rename
    assert store.refresh()
    assert store.current().driver_id_at("T00009", NOON) == "D00001"
    assert not store.refresh(), "unchanged files are not reloaded"


def test_store_reloads_a_replaced_trucks_file(history_dir: Path) -> None:
    store = HistoryStore.for_directory(history_dir, refresh_s=60)
    assert store.refresh()
    assert store.current().vehicle_classes["T00000"] == "heavy"
    assert "T00008" not in store.current().vehicle_classes
    reclassified = pl.DataFrame(
        {
            "truck_id": ["T00000", "T00008"],
            "vehicle_class": ["light", "medium"],
            "depot": [None, "Kiel"],
        }
    )
    write_atomically(reclassified, history_dir / TRUCKS_FILE)  # atomic rename
    assert store.refresh()
    assert store.current().vehicle_classes == {"T00000": "light", "T00008": "medium"}
    assert store.current().depots == {"T00008": "Kiel"}
    assert not store.refresh(), "unchanged files are not reloaded"

    reclassified.with_columns(vehicle_class=pl.lit("heavy")).write_parquet(
        history_dir / TRUCKS_FILE
    )  # rewritten in place, same inode
    assert store.refresh()
    assert store.current().vehicle_classes == {"T00000": "heavy", "T00008": "heavy"}


def test_store_reloads_when_the_trucks_file_is_removed_or_added(history_dir: Path) -> None:
    store = HistoryStore.for_directory(history_dir, refresh_s=60)
    assert store.refresh()
    before = files_signature(history_dir)
    (history_dir / TRUCKS_FILE).unlink()
    assert files_signature(history_dir) != before
    assert store.refresh(), "removed: reloaded, no classes"
    assert (store.current().vehicle_classes, store.current().depots) == ({}, {})
    assert store.current().driver_id_at("T00000", NOON) is not None, "the drivers stay"
    shutil.copy(SAMPLE_HISTORY_DIR / TRUCKS_FILE, history_dir / TRUCKS_FILE)
    assert store.refresh(), "added: reloaded"
    assert store.current().vehicle_classes == load_history_dir(SAMPLE_HISTORY_DIR).vehicle_classes


def test_store_reloads_files_rewritten_in_place(history_dir: Path) -> None:
    store = HistoryStore.for_directory(history_dir, refresh_s=60)
    store.refresh()
    one_assignment("T00009", "D00002").write_parquet(history_dir / ASSIGNMENTS_FILE)  # same inode
    assert store.refresh()
    assert store.current().driver_id_at("T00009", NOON) == "D00002"


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "missing"])
def test_broken_file_keeps_the_last_good_data_and_warns_once(
    history_dir: Path, damage: str
) -> None:
    store = HistoryStore.for_directory(history_dir, refresh_s=60)
    store.refresh()
    good = store.current()
    path = history_dir / ASSIGNMENTS_FILE
    if damage == "corrupt":
        path.write_bytes(b"this is not parquet" * 100)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    failed_before = failures(history_dir)
    with structlog.testing.capture_logs() as logs:
        assert not store.refresh()
        assert not store.refresh()
        assert not store.refresh()
    assert store.current() is good
    assert [entry["event"] for entry in logs] == ["history_reload_failed"], "one error per change"
    assert failures(history_dir) == failed_before + 1


def test_store_starts_empty_when_the_first_load_fails(tmp_path: Path) -> None:
    store = HistoryStore.for_directory(tmp_path / "nothing-here", refresh_s=60).start()
    try:
        assert store.current().driver_id_at("T00000", NOON) is None
        assert len(store.current().drivers) == 0
    finally:
        store.stop()


def test_background_thread_picks_up_changes(history_dir: Path) -> None:
    store = HistoryStore.for_directory(history_dir, refresh_s=0.05).start()
    try:
        drivers = pl.read_parquet(history_dir / DRIVERS_FILE)
        write_history(history_dir, drivers, one_assignment("T00009", "D00003"))
        deadline = time.monotonic() + 5
        while (
            store.current().driver_id_at("T00009", NOON) != "D00003" and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        assert store.current().driver_id_at("T00009", NOON) == "D00003"
    finally:
        store.stop()


def test_background_thread_picks_up_a_replaced_trucks_file(history_dir: Path) -> None:
    store = HistoryStore.for_directory(history_dir, refresh_s=0.05).start()
    try:
        frame = sample_trucks().with_columns(vehicle_class=pl.lit("medium"))
        write_atomically(frame, history_dir / TRUCKS_FILE)
        deadline = time.monotonic() + 5
        while (
            store.current().vehicle_classes.get("T00000") != "medium"
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        assert set(store.current().vehicle_classes.values()) == {"medium"}
    finally:
        store.stop()


def test_hired_on_is_an_iso_date(history_dir: Path) -> None:
    driver = next(iter(load_history_dir(history_dir).drivers.values()))
    assert date.fromisoformat(driver.hired_on)
