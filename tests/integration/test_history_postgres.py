"""Driver history from a real PostgreSQL server (FLEET_TEST_POSTGRES_DSN, default the local
one on 127.0.0.1:5432, database test). Each test gets a schema of its own. The trucks table
is optional: without it no truck has a class."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import polars as pl
import psycopg
import pytest
import structlog

from connectors.history import (
    ASSIGNMENTS_FILE,
    DRIVERS_FILE,
    TRUCKS_FILE,
    HistoryError,
    HistoryStore,
    load_history_dir,
    load_history_postgres,
)
from domain.timestamps import to_epoch_ms
from runtime.metrics import HISTORY_RELOADS
from runtime.settings import SAMPLE_HISTORY_DIR

BASE_DSN = os.environ.get("FLEET_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
NOON = to_epoch_ms(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))


def _reachable() -> str | None:
    try:
        with psycopg.connect(BASE_DSN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc)


@dataclass
class PgSchema:
    connection: psycopg.Connection[tuple[object, ...]]
    name: str
    dsn: str

    def load_sample(self, trucks: bool = True) -> None:
        load_sample_into(self.connection, self.name, trucks)


@pytest.fixture
def pg() -> Iterator[PgSchema]:
    problem = _reachable()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL must be reachable in CI at {BASE_DSN}: {problem}")
        pytest.skip(
            f"no PostgreSQL server reachable at {BASE_DSN} ({problem}); set FLEET_TEST_POSTGRES_DSN"
        )
    schema = f"fleet_{uuid.uuid4().hex[:10]}"
    connection = psycopg.connect(BASE_DSN, autocommit=True)
    connection.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in BASE_DSN else "?"
    dsn = f"{BASE_DSN}{separator}options={quote(f'-csearch_path={schema}')}"
    try:
        yield PgSchema(connection, schema, dsn)
    finally:
        connection.execute(f"DROP SCHEMA {schema} CASCADE")
        connection.close()


def load_sample_into(
    connection: psycopg.Connection[tuple[object, ...]], schema: str, trucks: bool = True
) -> None:
    connection.execute(
        f"""CREATE TABLE {schema}.drivers (driver_id text PRIMARY KEY, name text, hired_on date,
            overspeed_events_90d integer, avg_speed_kmh_90d double precision,
            km_driven_90d double precision, risk_tier text)"""
    )
    connection.execute(
        f"""CREATE TABLE {schema}.assignments (truck_id text, driver_id text,
            valid_from timestamptz NOT NULL, valid_to timestamptz)"""
    )
    drivers = pl.read_parquet(SAMPLE_HISTORY_DIR / DRIVERS_FILE)
    assignments = pl.read_parquet(SAMPLE_HISTORY_DIR / ASSIGNMENTS_FILE)
    with connection.cursor() as cursor:
        with cursor.copy(f"COPY {schema}.drivers FROM STDIN") as copy:
            for row in drivers.iter_rows():
                copy.write_row(row)
        with cursor.copy(f"COPY {schema}.assignments FROM STDIN") as copy:
            for row in assignments.iter_rows():
                copy.write_row(row)
    if trucks:
        load_sample_trucks(connection, schema)


def load_sample_trucks(connection: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    connection.execute(
        f"""CREATE TABLE {schema}.trucks (truck_id text PRIMARY KEY, vehicle_class text,
            depot text)"""
    )
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY {schema}.trucks FROM STDIN") as copy,
    ):
        for row in pl.read_parquet(SAMPLE_HISTORY_DIR / TRUCKS_FILE).iter_rows():
            copy.write_row(row)


def test_postgres_history_equals_the_parquet_history(pg: PgSchema) -> None:
    pg.load_sample()
    from_postgres = load_history_postgres(pg.dsn)
    from_files = load_history_dir(SAMPLE_HISTORY_DIR)
    assert dict(from_postgres.drivers) == dict(from_files.drivers)
    assert from_postgres.assignments == from_files.assignments
    assert dict(from_postgres.vehicle_classes) == dict(from_files.vehicle_classes)
    assert dict(from_postgres.depots) == dict(from_files.depots)
    assert len(from_postgres.vehicle_classes) > len(from_postgres.depots) > 0
    for truck in ("T00000", "T00001", "T00003", "T00007", "T00009"):
        for hour in range(0, 48, 1):
            ts = NOON + hour * 3_600_000 - 60_000
            assert from_postgres.driver_id_at(truck, ts) == from_files.driver_id_at(truck, ts)


def test_postgres_changes_are_picked_up_on_refresh(pg: PgSchema) -> None:
    connection, schema, dsn = pg.connection, pg.name, pg.dsn
    pg.load_sample()
    store = HistoryStore.for_postgres(dsn, refresh_s=60)
    assert store.refresh()
    assert store.current().driver_id_at("T00009", NOON) is None
    row = "('T00009', 'D00001', '2026-01-01T00:00:00Z', NULL)"
    connection.execute(f"INSERT INTO {schema}.assignments VALUES {row}")
    assert store.refresh()
    assert store.current().driver_id_at("T00009", NOON) == "D00001"
    connection.execute(f"ALTER TABLE {schema}.assignments DROP COLUMN valid_to")
    good = store.current()
    assert not store.refresh(), "a broken table keeps the last good data"
    assert store.current() is good


def test_without_a_trucks_table_no_truck_has_a_class(pg: PgSchema) -> None:
    pg.load_sample(trucks=False)
    index = load_history_postgres(pg.dsn)
    assert (index.vehicle_classes, index.depots) == ({}, {})
    assert index.assignments == load_history_dir(SAMPLE_HISTORY_DIR).assignments


def test_a_trucks_table_created_dropped_or_changed_is_picked_up_on_refresh(pg: PgSchema) -> None:
    pg.load_sample(trucks=False)
    store = HistoryStore.for_postgres(pg.dsn, refresh_s=60)
    assert store.refresh()
    assert store.current().vehicle_classes == {}
    load_sample_trucks(pg.connection, pg.name)
    assert store.refresh()
    assert store.current().vehicle_classes["T00003"] == "light"
    assert store.current().depots["T00003"] == "Hamburg"
    pg.connection.execute(
        f"UPDATE {pg.name}.trucks SET vehicle_class = 'heavy', depot = NULL "
        "WHERE truck_id = 'T00003'"
    )
    assert store.refresh()
    assert store.current().vehicle_classes["T00003"] == "heavy"
    assert "T00003" not in store.current().depots
    pg.connection.execute(f"DROP TABLE {pg.name}.trucks")
    assert store.refresh()
    assert store.current().vehicle_classes == {}


def test_a_trucks_table_outside_the_search_path_is_not_used(pg: PgSchema) -> None:
    """Found as the drivers and assignments tables are: through the connection's search_path."""
    pg.load_sample(trucks=False)
    other = f"{pg.name}_other"
    pg.connection.execute(f"CREATE SCHEMA {other}")
    try:
        load_sample_trucks(pg.connection, other)
        assert load_history_postgres(pg.dsn).vehicle_classes == {}
    finally:
        pg.connection.execute(f"DROP SCHEMA {other} CASCADE")


def test_schema_mismatch_names_the_table_and_column(pg: PgSchema) -> None:
    connection, schema, dsn = pg.connection, pg.name, pg.dsn
    pg.load_sample()
    connection.execute(f"ALTER TABLE {schema}.drivers ALTER COLUMN hired_on TYPE text")
    with pytest.raises(HistoryError, match="PostgreSQL table drivers: column 'hired_on'"):
        load_history_postgres(dsn)


def test_unreachable_server_is_a_history_error() -> None:
    with pytest.raises(HistoryError, match="PostgreSQL"):
        load_history_postgres("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")


def failures() -> float:
    return HISTORY_RELOADS.labels("postgresql", "failed")._value.get()  # type: ignore[no-any-return]


# The sample's drivers in key order: D00003 is row 3; so is T00003 in trucks.
ROW_3 = "row 3 (driver_id 'D00003')"
TRUCK_ROW_3 = "row 3 (truck_id 'T00003')"


@pytest.mark.parametrize(
    ("statements", "message"),
    [
        pytest.param(
            ["UPDATE drivers SET avg_speed_kmh_90d = NULL WHERE driver_id = 'D00003'"],
            f"drivers: column 'avg_speed_kmh_90d' must not be null; {ROW_3} has null",
            id="null in a column without NOT NULL",
        ),
        pytest.param(
            ["UPDATE drivers SET overspeed_events_90d = NULL WHERE driver_id = 'D00003'"],
            f"drivers: column 'overspeed_events_90d' must not be null; {ROW_3}",
            id="null count",
        ),
        pytest.param(
            [
                "ALTER TABLE drivers DROP CONSTRAINT drivers_pkey",
                "INSERT INTO drivers SELECT * FROM drivers WHERE driver_id = 'D00003'",
            ],
            "drivers: column 'driver_id' must be unique; 'D00003' is at rows 3 and 4",
            id="duplicate driver id",
        ),
        pytest.param(
            ["UPDATE drivers SET km_driven_90d = 'NaN' WHERE driver_id = 'D00003'"],
            f"drivers: column 'km_driven_90d' must be a finite number ≥ 0; {ROW_3} has nan",
            id="NaN",
        ),
        pytest.param(
            [
                "ALTER TABLE drivers ALTER COLUMN km_driven_90d TYPE numeric",
                "UPDATE drivers SET km_driven_90d = 'NaN' WHERE driver_id = 'D00003'",
            ],
            f"drivers: column 'km_driven_90d' must be a finite number ≥ 0; {ROW_3} has nan",
            id="numeric NaN (Polars panics on it)",
        ),
        pytest.param(
            [
                "ALTER TABLE drivers ALTER COLUMN avg_speed_kmh_90d TYPE numeric",
                "UPDATE drivers SET avg_speed_kmh_90d = 1e400 WHERE driver_id = 'D00003'",
            ],
            f"column 'avg_speed_kmh_90d' must be a finite number ≥ 0 and ≤ 400; {ROW_3} has inf",
            id="numeric beyond float range",
        ),
        pytest.param(
            ["UPDATE drivers SET overspeed_events_90d = -1 WHERE driver_id = 'D00003'"],
            f"column 'overspeed_events_90d' must be an integer from 0 to 2**63-1; {ROW_3}",
            id="negative count",
        ),
        pytest.param(
            ["UPDATE drivers SET hired_on = 'infinity' WHERE driver_id = 'D00003'"],
            f"column 'hired_on' must be a date from 0001-01-01 to 9999-12-31; {ROW_3}",
            id="infinite date",
        ),
        pytest.param(
            ["UPDATE drivers SET hired_on = '0044-03-15 BC' WHERE driver_id = 'D00003'"],
            f"column 'hired_on' must be a date from 0001-01-01 to 9999-12-31; {ROW_3}",
            id="date BC",
        ),
        pytest.param(
            ["UPDATE assignments SET valid_to = '10000-01-01Z' WHERE truck_id = 'T00001'"],
            "assignments: column 'valid_to' must be an instant from 0001-01-01",
            id="timestamp after 9999",
        ),
        pytest.param(
            ["UPDATE drivers SET risk_tier = 'extreme' WHERE driver_id = 'D00003'"],
            f"column 'risk_tier' must be one of low, medium, high; {ROW_3} has 'extreme'",
            id="unknown risk tier",
        ),
        pytest.param(
            ["UPDATE drivers SET name = E'Kemal\\nJansen' WHERE driver_id = 'D00003'"],
            f"column 'name' must hold no control characters (line breaks, tabs, NUL); {ROW_3}",
            id="line break",
        ),
        pytest.param(
            ["UPDATE assignments SET valid_to = valid_from - interval '1 ms'"],
            "assignments: column 'valid_to' must not be before valid_from; row 0 (truck_id",
            id="valid_to before valid_from",
        ),
        pytest.param(
            ["ALTER TABLE assignments ALTER COLUMN valid_from TYPE timestamp"],
            "assignments: column 'valid_from' is timestamp, expected timestamp UTC",
            id="naive timestamp",
        ),
        pytest.param(
            ["ALTER TABLE drivers ALTER COLUMN overspeed_events_90d TYPE real"],
            "drivers: column 'overspeed_events_90d' is float4, expected integer",
            id="count of a float type",
        ),
        pytest.param(
            ["UPDATE trucks SET vehicle_class = 'huge' WHERE truck_id = 'T00003'"],
            "trucks: column 'vehicle_class' must be one of heavy, medium, light; "
            f"{TRUCK_ROW_3} has 'huge'",
            id="unknown vehicle class",
        ),
        pytest.param(
            ["UPDATE trucks SET vehicle_class = NULL WHERE truck_id = 'T00003'"],
            f"trucks: column 'vehicle_class' must not be null; {TRUCK_ROW_3} has null",
            id="null vehicle class",
        ),
        pytest.param(
            ["UPDATE trucks SET depot = E'Ham\\nburg' WHERE truck_id = 'T00003'"],
            f"trucks: column 'depot' must hold no control characters (line breaks, tabs, NUL); "
            f"{TRUCK_ROW_3}",
            id="line break in a depot",
        ),
        pytest.param(
            ["UPDATE trucks SET truck_id = '' WHERE truck_id = 'T00003'"],
            "trucks: column 'truck_id' must not be empty; row 0",
            id="empty truck id",
        ),
        pytest.param(
            [
                "ALTER TABLE trucks DROP CONSTRAINT trucks_pkey",
                "INSERT INTO trucks SELECT truck_id, 'light', depot FROM trucks "
                "WHERE truck_id = 'T00003'",
            ],
            "trucks: column 'truck_id' must be unique; 'T00003' is at rows 3 and 4",
            id="duplicate truck id",
        ),
        pytest.param(
            ["ALTER TABLE trucks DROP COLUMN depot"],
            'trucks: column "depot" does not exist',
            id="missing depot column",
        ),
        pytest.param(
            ["ALTER TABLE trucks ALTER COLUMN depot TYPE integer USING 0"],
            "trucks: column 'depot' is int4, expected string",
            id="depot of an integer type",
        ),
    ],
)
def test_hostile_tables_are_refused_and_the_last_good_data_stays(
    pg: PgSchema, statements: list[str], message: str
) -> None:
    pg.load_sample()
    store = HistoryStore.for_postgres(pg.dsn, refresh_s=60)
    assert store.refresh()
    good = store.current()
    pg.connection.execute(f"SET search_path TO {pg.name}")
    for statement in statements:
        pg.connection.execute(statement)
    with pytest.raises(HistoryError) as caught:
        load_history_postgres(pg.dsn)
    assert message in str(caught.value)
    assert str(caught.value).startswith("PostgreSQL table ")
    failed_before = failures()
    with structlog.testing.capture_logs() as logs:
        assert not store.refresh()
    assert store.current() is good
    assert failures() == failed_before + 1
    assert [(e["event"], e["error"]) for e in logs] == [
        ("history_reload_failed", str(caught.value))
    ]


def test_open_ended_assignments_only_are_accepted(pg: PgSchema) -> None:
    """Every valid_to null: a column of nulls, which is fine where nulls are allowed."""
    pg.load_sample()
    pg.connection.execute(f"UPDATE {pg.name}.assignments SET valid_to = NULL")
    index = load_history_postgres(pg.dsn)
    assert index.assignments == load_history_dir(SAMPLE_HISTORY_DIR).assignments
