"""``python -m fleetwatch.history refresh`` into PostgreSQL (FLEET_HISTORY_DSN): the ``drivers``
table gets the figures the file would, in one transaction, its other columns kept, and the
flows' store reads them at its next reload. The lake and its answers are the unit test's
(tests/unit/test_history_refresh.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from connectors.history import HistoryStore
from fleetwatch import history as cli
from runtime.settings import Settings
from tests.integration.test_history_postgres import PgSchema, pg  # noqa: F401 (fixture)
from tests.unit.test_history_refresh import AS_OF, fleet, run  # noqa: F401 (fixture)

FIGURES = ("overspeed_events_90d", "avg_speed_kmh_90d", "km_driven_90d", "risk_tier")


def load_tables(db: PgSchema, history: Path) -> None:
    """The fleet's history as tables; drivers with a column of its own, and numeric km."""
    schema = db.name
    db.connection.execute(
        f"""CREATE TABLE {schema}.drivers (driver_id text PRIMARY KEY, name text, hired_on date,
            overspeed_events_90d integer, avg_speed_kmh_90d double precision,
            km_driven_90d numeric, risk_tier text, email text)"""
    )
    db.connection.execute(
        f"""CREATE TABLE {schema}.assignments (truck_id text, driver_id text,
            valid_from timestamptz NOT NULL, valid_to timestamptz)"""
    )
    drivers = pl.read_parquet(history / "drivers.parquet")
    assignments = pl.read_parquet(history / "assignments.parquet")
    with db.connection.cursor() as cursor:
        for table, frame in (("drivers", drivers), ("assignments", assignments)):
            with cursor.copy(f"COPY {schema}.{table} FROM STDIN") as copy:
                for row in frame.iter_rows():
                    copy.write_row(row)


def table_rows(db: PgSchema) -> dict[str, dict[str, Any]]:
    cursor = db.connection.execute(
        f"SELECT driver_id, {', '.join(FIGURES)}, email FROM {db.name}.drivers ORDER BY 1"
    )
    names = [d.name for d in cursor.description or ()]
    return {str(row[0]): dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def refresh_into(db: PgSchema, lake: Path) -> int:
    return cli.main(
        ["refresh", "--as-of", AS_OF.isoformat(), "--lake", str(lake)],
        settings_from_env=lambda: Settings.from_env({"FLEET_HISTORY_DSN": db.dsn}),
    )


def test_the_table_gets_the_files_figures(
    pg: PgSchema,  # noqa: F811
    fleet: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    lake, history = fleet
    load_tables(pg, history)
    store = HistoryStore.for_postgres(pg.dsn, refresh_s=10)
    assert store.refresh()
    assert store.current().drivers["D1"].overspeed_events_90d == 9

    assert refresh_into(pg, lake) == cli.EXIT_OK
    as_files = tmp_path / "as-files"
    shutil.copytree(history, as_files)
    assert run(lake, as_files) == cli.EXIT_OK
    expected = {
        row["driver_id"]: row
        for row in pl.read_parquet(as_files / "drivers.parquet").iter_rows(named=True)
    }
    rows = table_rows(pg)
    assert set(rows) == set(expected)
    for driver_id, row in rows.items():
        want = expected[driver_id]
        for column in ("overspeed_events_90d", "avg_speed_kmh_90d", "risk_tier"):
            assert row[column] == want[column], (driver_id, column)
        # numeric: PostgreSQL casts a double to 15 significant digits.
        assert float(row["km_driven_90d"]) == pytest.approx(want["km_driven_90d"], rel=1e-14)
        assert row["email"] == expected[driver_id]["email"]  # not the refresh's: kept
    assert rows["D1"]["overspeed_events_90d"] == 2

    assert store.refresh()  # the next reload of a running flow
    d1 = store.current().drivers["D1"]
    assert (d1.overspeed_events_90d, d1.avg_speed_kmh_90d, d1.risk_tier) == (2, 55.0, "high")
    assert d1.km_driven_90d == pytest.approx(expected["D1"]["km_driven_90d"], rel=1e-14)


def test_a_failed_refresh_leaves_the_table_as_it_was(
    pg: PgSchema,  # noqa: F811
    fleet: tuple[Path, Path],  # noqa: F811
) -> None:
    lake, history = fleet
    load_tables(pg, history)
    before = table_rows(pg)
    (lake / "date=2026-11-10" / "broken.parquet").write_bytes(b"not parquet")
    assert refresh_into(pg, lake) == cli.EXIT_FAILED
    assert table_rows(pg) == before
