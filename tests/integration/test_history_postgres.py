"""Driver history from a real PostgreSQL server (FLEET_TEST_POSTGRES_DSN, default the local
one on 127.0.0.1:5432, database test). Each test gets a schema of its own."""

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

from connectors.history import (
    ASSIGNMENTS_FILE,
    DRIVERS_FILE,
    HistoryError,
    HistoryStore,
    load_history_dir,
    load_history_postgres,
)
from domain.timestamps import to_epoch_ms
from fleetwatch.settings import SAMPLE_HISTORY_DIR

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

    def load_sample(self) -> None:
        load_sample_into(self.connection, self.name)


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


def load_sample_into(connection: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
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


def test_postgres_history_equals_the_parquet_history(pg: PgSchema) -> None:
    pg.load_sample()
    from_postgres = load_history_postgres(pg.dsn)
    from_files = load_history_dir(SAMPLE_HISTORY_DIR)
    assert dict(from_postgres.drivers) == dict(from_files.drivers)
    assert from_postgres.assignments == from_files.assignments
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


def test_schema_mismatch_names_the_table_and_column(pg: PgSchema) -> None:
    connection, schema, dsn = pg.connection, pg.name, pg.dsn
    pg.load_sample()
    connection.execute(f"ALTER TABLE {schema}.drivers ALTER COLUMN hired_on TYPE text")
    with pytest.raises(HistoryError, match="PostgreSQL table drivers: column 'hired_on'"):
        load_history_postgres(dsn)


def test_unreachable_server_is_a_history_error() -> None:
    with pytest.raises(HistoryError, match="PostgreSQL"):
        load_history_postgres("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
