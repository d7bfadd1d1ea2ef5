"""Loading driver history from Parquet through Polars, and reloading it while in use."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
import structlog

from connectors.history import (
    ASSIGNMENTS_FILE,
    DRIVERS_FILE,
    HistoryError,
    HistoryStore,
    load_history_dir,
)
from connectors.parquet import write_atomically
from domain.timestamps import to_epoch_ms
from fleetwatch.history_generator import HistoryShape, generate
from fleetwatch.metrics import HISTORY_RELOADS
from fleetwatch.settings import SAMPLE_HISTORY_DIR

NOON = to_epoch_ms(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))


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


@pytest.fixture
def history_dir(tmp_path: Path) -> Path:
    shutil.copytree(SAMPLE_HISTORY_DIR, tmp_path / "history")
    return tmp_path / "history"


def test_shipped_sample_is_what_the_generator_makes() -> None:
    drivers, assignments = generate(HistoryShape())
    assert pl.read_parquet(SAMPLE_HISTORY_DIR / DRIVERS_FILE).equals(drivers)
    assert pl.read_parquet(SAMPLE_HISTORY_DIR / ASSIGNMENTS_FILE).equals(assignments)


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


@pytest.mark.parametrize(
    ("table", "change", "message"),
    [
        (DRIVERS_FILE, lambda f: f.drop("risk_tier"), "missing column 'risk_tier'"),
        (
            DRIVERS_FILE,
            lambda f: f.with_columns(pl.col("hired_on").cast(pl.String)),
            "column 'hired_on' is String",
        ),
        (
            DRIVERS_FILE,
            lambda f: f.with_columns(pl.col("name").cast(pl.Categorical)),
            "column 'name'",
        ),
        (
            DRIVERS_FILE,
            lambda f: f.with_columns(pl.lit("extreme").alias("risk_tier")),
            "'risk_tier' has values",
        ),
        (
            DRIVERS_FILE,
            lambda f: f.with_columns(pl.lit(None, pl.String).alias("driver_id")),
            "'driver_id' has",
        ),
        (
            ASSIGNMENTS_FILE,
            lambda f: f.with_columns(pl.col("valid_from").dt.replace_time_zone(None)),
            "column 'valid_from' is Datetime",
        ),
        (ASSIGNMENTS_FILE, lambda f: f.drop("valid_to"), "missing column 'valid_to'"),
    ],
    ids=[
        "missing column",
        "wrong type",
        "categorical",
        "bad tier",
        "null id",
        "naive timestamp",
        "no valid_to",
    ],
)
def test_schema_errors_name_the_file_and_column(
    history_dir: Path, table: str, change, message: str
) -> None:  # type: ignore[no-untyped-def]
    path = history_dir / table
    write_atomically(change(pl.read_parquet(path)), path)
    with pytest.raises(HistoryError, match=message) as caught:
        load_history_dir(history_dir)
    assert table in str(caught.value)


def test_integer_speeds_are_accepted_as_numbers(history_dir: Path) -> None:
    path = history_dir / DRIVERS_FILE
    write_atomically(
        pl.read_parquet(path).with_columns(pl.col("avg_speed_kmh_90d").cast(pl.Int32)), path
    )
    assert isinstance(
        next(iter(load_history_dir(history_dir).drivers.values())).avg_speed_kmh_90d, float
    )


def test_store_reloads_replaced_files(history_dir: Path) -> None:
    store = HistoryStore.for_directory(history_dir, refresh_s=60)
    assert store.refresh()
    assert store.current().driver_id_at("T00009", NOON) is None
    drivers = pl.read_parquet(history_dir / DRIVERS_FILE)
    write_history(history_dir, drivers, one_assignment("T00009", "D00001"))  # atomic rename
    assert store.refresh()
    assert store.current().driver_id_at("T00009", NOON) == "D00001"
    assert not store.refresh(), "unchanged files are not reloaded"


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
    failed_before = HISTORY_RELOADS.labels(str(history_dir), "failed")._value.get()
    with structlog.testing.capture_logs() as logs:
        assert not store.refresh()
        assert not store.refresh()
        assert not store.refresh()
    assert store.current() is good
    assert [entry["event"] for entry in logs] == ["history_reload_failed"], "one warning per change"
    assert HISTORY_RELOADS.labels(str(history_dir), "failed")._value.get() == failed_before + 1


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


def test_hired_on_is_an_iso_date(history_dir: Path) -> None:
    driver = next(iter(load_history_dir(history_dir).drivers.values()))
    assert date.fromisoformat(driver.hired_on)
