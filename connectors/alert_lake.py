"""Archived alerts: ``fleet.alerts`` in the lake, ``<FLEET_LAKE_DIR>/alerts/date=YYYY-MM-DD/``.

dataflows.archive_alerts writes them with the telemetry's exactly-once scheme
(connectors/lake.py: file names carry the Kafka offsets of each roll); ``date`` is the UTC
date of the alert's ``window_end`` (event time: every copy of an alert lands on the same
date, and beside the readings that made it fire). One row per record of the topic, flat,
in ``ALERT_SCHEMA``:

- the alert's scalar fields as they are on the wire, the three times as timestamp[ms, UTC];
- ``event_ids`` a list of str; ``driver`` a struct with the fields of the alert's driver
  (null without one; ``hired_on`` as the wire's ``YYYY-MM-DD`` text);
- ``position`` flattened to ``lat``/``lon`` (both null without one), as in the telemetry;
- ``details`` the JSON text of the object, because its fields differ by rule kind and a
  struct's would differ from file to file (``pl.col("details").str.json_path_match(...)``).

Records are stored as they came, duplicates included (delivery is at-least-once): readers
deduplicate by ``alert_id``, and ``scan_alerts`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from connectors.lake import Lake
from domain.alerts import Alert
from domain.timestamps import parse_rfc3339_ms

ALERTS_DIR = "alerts"  # under FLEET_LAKE_DIR; readers of the telemetry skip it
DAY_COLUMN = "window_end"

DRIVER = pl.Struct(
    {
        "driver_id": pl.String(),
        "name": pl.String(),
        "hired_on": pl.String(),
        "overspeed_events_90d": pl.Int64(),
        "avg_speed_kmh_90d": pl.Float64(),
        "km_driven_90d": pl.Float64(),
        "risk_tier": pl.String(),
        "speed_over_baseline_kmh": pl.Float64(),
        "repeat_offender": pl.Boolean(),
    }
)
_TIME = pl.Datetime("ms", "UTC")
ALERT_SCHEMA = pl.Schema(
    {
        "alert_id": pl.String(),
        "rule": pl.String(),
        "truck_id": pl.String(),
        "driver_id": pl.String(),
        "window_start": _TIME,
        "window_end": _TIME,
        "count": pl.Int64(),
        "event_ids": pl.List(pl.String()),
        "max_speed_kmh": pl.Float64(),
        "mean_speed_kmh": pl.Float64(),
        "threshold_kmh": pl.Float64(),
        "severity": pl.String(),
        "driver": DRIVER,
        "detected_at": _TIME,
        "schema_version": pl.Int64(),
        "rule_version": pl.Int64(),
        "lat": pl.Float64(),
        "lon": pl.Float64(),
        "details": pl.String(),
    }
)
_TIMES = ("window_start", "window_end", "detected_at")
_INT64 = (-(2**63), 2**63 - 1)
_JSON = msgspec.json.Encoder()


def alerts_root(lake_dir: Path) -> Path:
    """Where the archived alerts of the lake in ``lake_dir`` live."""
    return lake_dir / ALERTS_DIR


def alert_lake(lake_dir: Path) -> Lake:
    """The archived alerts as a ``Lake``: rolls by Kafka partition, dated by window_end."""
    return Lake(alerts_root(lake_dir), day_column=DAY_COLUMN)


def alert_row(alert: Alert) -> dict[str, Any]:
    """One alert as a row of ``ALERT_SCHEMA`` (times as epoch ms; ``alerts_frame`` types
    them). Raises OverflowError for an integer beyond 64 bits (``decode_alert`` limits only
    some), ValueError for a time that is not RFC 3339 (``decode_alert`` admits none)."""
    integers = {"schema_version": alert.schema_version}
    if alert.driver is not None:
        integers["driver.overspeed_events_90d"] = alert.driver.overspeed_events_90d
    for name, value in integers.items():
        if not _INT64[0] <= value <= _INT64[1]:
            raise OverflowError(f"{name} {value} does not fit a 64-bit integer")
    row: dict[str, Any] = {
        name: getattr(alert, name)
        for name in ALERT_SCHEMA
        if name not in ("severity", "driver", "lat", "lon", "details")
    }
    for name in _TIMES:
        row[name] = parse_rfc3339_ms(row[name])
    row["severity"] = str(alert.severity)
    row["driver"] = None if alert.driver is None else msgspec.structs.asdict(alert.driver)
    row["lat"] = None if alert.position is None else alert.position.lat
    row["lon"] = None if alert.position is None else alert.position.lon
    row["details"] = _JSON.encode(alert.details).decode()
    return row


def alerts_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """Rows of ``alert_row`` as a DataFrame in ``ALERT_SCHEMA`` (raises if a value does not
    fit its column, e.g. an integer beyond 64 bits)."""
    untimed = pl.Schema({n: pl.Int64() if n in _TIMES else t for n, t in ALERT_SCHEMA.items()})
    frame = pl.DataFrame(list(rows), schema=untimed, orient="row", strict=True)
    return frame.with_columns(pl.col(*_TIMES).cast(_TIME))


def alert_files(lake_dir: Path) -> list[Path]:
    """The archived alerts' Parquet files under ``lake_dir``, sorted (not the empty files
    of rolls whose every record was refused, in ``date=none``, nor temporary files)."""
    root = alerts_root(lake_dir)
    return sorted(
        path
        for path in root.glob("date=*/*.parquet")
        if not path.name.startswith(".") and path.parent.name != "date=none"
    )


def scan_alerts(
    lake_dir: Path,
    *,
    first_day: date | None = None,
    last_day: date | None = None,
    deduplicate: bool = True,
) -> pl.LazyFrame:
    """The archived alerts of the lake in ``lake_dir``, lazily: ``ALERT_SCHEMA`` plus
    ``date`` (pl.Date, the UTC date of ``window_end``: the partition).

    ``first_day``/``last_day`` (inclusive) keep the alerts of those dates and read only
    their files; filter on ``date`` this way rather than afterwards, where it would come
    after the deduplication and read every file. Deduplicated by ``alert_id`` (the
    default): of several copies the one with the earliest ``window_end``, then
    ``detected_at``, is kept (the first the alerts flow sent), and the rows come sorted by
    ``window_end`` then ``alert_id``. ``deduplicate=False``: every record as it was on the
    topic, in file order. No lake or no alerts: an empty frame."""
    files = alert_files(lake_dir)
    if not files:
        return pl.LazyFrame(schema={**ALERT_SCHEMA, "date": pl.Date()})
    frame = pl.scan_parquet(
        files,
        schema=ALERT_SCHEMA,
        hive_partitioning=True,
        hive_schema={"date": pl.Date()},
    )
    # Exact before deduplicating: every copy of an alert has the same window_end.
    if first_day is not None:
        frame = frame.filter(pl.col("date") >= first_day)
    if last_day is not None:
        frame = frame.filter(pl.col("date") <= last_day)
    if not deduplicate:
        return frame
    return frame.sort("window_end", "alert_id", "detected_at", maintain_order=True).unique(
        "alert_id", keep="first", maintain_order=True
    )
