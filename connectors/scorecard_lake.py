"""Archived scorecards: ``fleet.scorecards`` in the lake, ``<FLEET_LAKE_DIR>/scorecards/date=DAY/``.

dataflows.archive_alerts writes them beside the archived alerts, with the telemetry's
exactly-once scheme (connectors/lake.py: file names carry the Kafka offsets of each roll);
``date`` is the scorecard's ``day``: the driver's local day in FLEET_TIMEZONE, as on the
wire (not a UTC date: a scorecard belongs to one day, whole). One row per record of the
topic, flat, in ``SCORECARD_SCHEMA``:

- the scalar fields as they are on the wire, ``day`` as pl.Date;
- ``alerts`` (count by rule) as a list of struct{rule, count}, sorted by rule, empty for
  none. Not JSON text, as the alerts' ``details`` are: the keys are rule ids (data, not
  fields), so a list of pairs keeps one type in every file and reads with Polars' own
  operations: ``frame.explode("alerts").unnest("alerts")`` gives one row per (driver, day,
  rule) (and a null rule for a day without alerts);
  ``pl.col("alerts").list.eval(pl.element().struct.field("count")).list.sum()`` the day's
  alerts in all.

Records are stored as they came, duplicates included (the alerts flow delivers at least
once: a restart may send a scorecard again, with the same content): readers keep one per
(driver_id, day), and ``scan_scorecards`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from connectors.lake import Lake
from domain.scorecards import Scorecard

SCORECARDS_DIR = "scorecards"  # under FLEET_LAKE_DIR; readers of the telemetry skip it
DAY_COLUMN = "day"

ALERT_COUNT = pl.Struct({"rule": pl.String(), "count": pl.Int64()})
SCORECARD_SCHEMA = pl.Schema(
    {
        "driver_id": pl.String(),
        "day": pl.Date(),
        "trucks": pl.Int64(),
        "readings": pl.Int64(),
        "distance_km": pl.Float64(),
        "driving_s": pl.Float64(),
        "over_threshold_s": pl.Float64(),
        "max_speed_kmh": pl.Float64(),
        "alerts": pl.List(ALERT_COUNT),
        "events_per_1000km": pl.Float64(),
        "safety_score": pl.Float64(),
        "schema_version": pl.Int64(),
    }
)


def scorecards_root(lake_dir: Path) -> Path:
    """Where the archived scorecards of the lake in ``lake_dir`` live."""
    return lake_dir / SCORECARDS_DIR


def scorecard_lake(lake_dir: Path, *, writes_with: Lake | None = None) -> Lake:
    """The archived scorecards as a ``Lake``: rolls by Kafka partition, dated by ``day``.
    ``writes_with``: a lake the same process writes (``Lake``'s parameter)."""
    return Lake(scorecards_root(lake_dir), day_column=DAY_COLUMN, writes_with=writes_with)


def scorecard_row(card: Scorecard) -> dict[str, Any]:
    """One scorecard as a row of ``SCORECARD_SCHEMA``. Raises ValueError for a ``day`` that
    is not YYYY-MM-DD (``decode_scorecard`` admits none)."""
    row = {name: getattr(card, name) for name in SCORECARD_SCHEMA}
    row["day"] = date.fromisoformat(card.day)
    row["alerts"] = [{"rule": rule, "count": n} for rule, n in sorted(card.alerts.items())]
    return row


def scorecards_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """Rows of ``scorecard_row`` as a DataFrame in ``SCORECARD_SCHEMA`` (raises if a value
    does not fit its column, e.g. an integer beyond 64 bits)."""
    return pl.DataFrame(list(rows), schema=SCORECARD_SCHEMA, orient="row", strict=True)


def scorecards_of(frame: pl.DataFrame) -> list[Scorecard]:
    """Rows in ``SCORECARD_SCHEMA`` (extra columns ignored) back as the scorecards they were,
    field for field."""
    cards = []
    for row in frame.select(SCORECARD_SCHEMA.names()).iter_rows(named=True):
        row["day"] = row["day"].isoformat()
        row["alerts"] = {a["rule"]: a["count"] for a in row["alerts"]}
        cards.append(Scorecard(**row))
    return cards


def scorecard_files(lake_dir: Path) -> list[Path]:
    """The archived scorecards' Parquet files under ``lake_dir``, sorted (not the empty
    files of rolls whose every record was refused, in ``date=none``, nor temporary files)."""
    return sorted(
        path
        for path in scorecards_root(lake_dir).glob("date=*/*.parquet")
        if not path.name.startswith(".") and path.parent.name != "date=none"
    )


def scan_scorecards(
    lake_dir: Path,
    *,
    first_day: date | None = None,
    last_day: date | None = None,
    deduplicate: bool = True,
) -> pl.LazyFrame:
    """The archived scorecards of the lake in ``lake_dir``, lazily, in ``SCORECARD_SCHEMA``.

    ``first_day``/``last_day`` (inclusive) keep the scorecards of those days and read only
    their files (the partitions); filter on ``day`` this way rather than afterwards, where
    it would come after the deduplication and read every file. Deduplicated by
    (driver_id, day) (the default; a null driver_id is one driver, "no driver"): the
    copies of a scorecard are the same, the first in file order is kept, and the rows come
    sorted by day then driver_id (nulls first). ``deduplicate=False``: every record as it
    was on the topic, in file order. No lake or no scorecards: an empty frame."""
    files = scorecard_files(lake_dir)
    if not files:
        return pl.LazyFrame(schema=SCORECARD_SCHEMA)
    frame = pl.scan_parquet(
        files, schema=SCORECARD_SCHEMA, hive_partitioning=True, hive_schema={"date": pl.Date()}
    )
    # On the partition column: the files of other days are not opened.
    if first_day is not None:
        frame = frame.filter(pl.col("date") >= first_day)
    if last_day is not None:
        frame = frame.filter(pl.col("date") <= last_day)
    frame = frame.drop("date")  # the same as day
    if not deduplicate:
        return frame
    return frame.unique(["driver_id", "day"], keep="first", maintain_order=True).sort(
        "day", "driver_id", nulls_last=False, maintain_order=True
    )
