"""``python -m fleetwatch.history refresh``: recompute the drivers' 90-day figures (CONTRACT.md
section 11) from the lake and the archived alerts, and replace them where the flows read them.

    python -m fleetwatch.history refresh [--as-of YYYY-MM-DD] [--lake DIR]
        [--history DIR | --dsn DSN]

- ``--as-of`` (default: today in FLEET_TIMEZONE): the figures cover the 90 local days before
  that day (FLEET_TIMEZONE, default UTC), not the day itself; docs/history.md has every
  definition and the risk tiers' cut-offs.
- ``--lake`` (default FLEET_LAKE_DIR): the lake of readings, with the archived alerts in its
  ``alerts/``.
- ``--history DIR`` or ``--dsn DSN`` (default: FLEET_HISTORY_DSN, else FLEET_HISTORY_DIR, as the
  flows): where drivers.parquet (or the ``drivers`` table) is read and written. Prefer the
  environment variable to ``--dsn`` for a DSN with a password (a command line is visible to
  other processes). The bundled sample history is never written: name a directory.

drivers.parquet is replaced atomically, every other column and row kept; the ``drivers``
table is updated in one transaction. The running flows pick the new figures up within
FLEET_HISTORY_REFRESH_S (section 6). Re-running for the same day gives the same figures.

One log line says what was done (``history_refreshed``: drivers updated, readings and rows
read, seconds) or why not (``history_refresh_failed``). Exit codes: 0 written; 1 nothing
written: no readings in the window, a lake file or the history cannot be read (the line
names it), the file was replaced meanwhile; 2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import structlog

from connectors.history import (
    DRIVERS_FILE,
    HistoryError,
    load_history_dir,
    load_history_postgres,
)
from connectors.history_refresh import (
    RefreshError,
    Window,
    driver_stats,
    file_signature,
    refreshed,
    unknown_drivers,
    write_drivers_file,
    write_drivers_postgres,
)
from domain.history import DRIVER_COLUMNS, HistoryIndex
from runtime.clock import utc_now
from runtime.logs import configure_logging
from runtime.settings import SAMPLE_HISTORY_DIR, Settings, SettingsError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

log = structlog.get_logger(__name__)


class UsageError(ValueError):
    """Bad arguments or settings (exit 2)."""


@dataclass(frozen=True)
class Target:
    """Where the drivers are read and written: a directory, or a PostgreSQL DSN."""

    directory: Path | None
    dsn: str | None

    def __str__(self) -> str:
        return str(self.directory) if self.directory is not None else "postgresql"


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day YYYY-MM-DD") from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fleetwatch.history",
        description="The driver history the system keeps (CONTRACT.md section 11).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    refresh = commands.add_parser(
        "refresh", help="recompute drivers.parquet's 90-day figures from the lake"
    )
    refresh.add_argument(
        "--as-of",
        type=_day,
        metavar="YYYY-MM-DD",
        help="the figures cover the 90 days before this day (default: today, FLEET_TIMEZONE)",
    )
    refresh.add_argument("--lake", type=Path, metavar="DIR", help="default: FLEET_LAKE_DIR")
    where = refresh.add_mutually_exclusive_group()
    where.add_argument("--history", type=Path, metavar="DIR", help="default: FLEET_HISTORY_DIR")
    where.add_argument("--dsn", metavar="DSN", help="default: FLEET_HISTORY_DSN")
    return parser.parse_args(argv)


def target_of(args: argparse.Namespace, settings: Settings) -> Target:
    if args.history is not None or (args.dsn is None and settings.history.dsn is None):
        directory = args.history if args.history is not None else settings.history.dir
        if args.history is None and directory.resolve() == SAMPLE_HISTORY_DIR.resolve():
            raise UsageError(
                "FLEET_HISTORY_DIR is the bundled sample, which is never written: "
                "set FLEET_HISTORY_DIR or give --history DIR"
            )
        if not directory.is_dir():
            raise UsageError(f"{directory}: the history directory does not exist")
        return Target(directory, None)
    return Target(None, args.dsn if args.dsn is not None else settings.history.dsn)


def drivers_frame(index: HistoryIndex) -> pl.DataFrame:
    """The drivers of a loaded history as a frame of the contract's columns (PostgreSQL:
    only those are written back)."""
    columns = [c.name for c in DRIVER_COLUMNS]
    rows = [tuple(getattr(d, c) for c in columns) for d in index.drivers.values()]
    frame = pl.DataFrame(rows, schema=columns, orient="row")
    return frame.with_columns(pl.col("hired_on").str.to_date("%Y-%m-%d"))


def refresh(
    args: argparse.Namespace, settings: Settings, now: Callable[[], datetime]
) -> dict[str, object]:
    """Read, compute, write; the summary's fields. Raises UsageError, HistoryError or
    RefreshError, having written nothing."""
    started = time.perf_counter()
    zone = ZoneInfo(settings.scorecards.timezone)
    lake = args.lake if args.lake is not None else settings.lake.dir
    if lake is None:
        raise UsageError("no lake: set FLEET_LAKE_DIR or give --lake DIR")
    if not lake.is_dir():
        raise UsageError(f"{lake}: the lake directory does not exist")
    target = target_of(args, settings)
    as_of: date = args.as_of if args.as_of is not None else now().astimezone(zone).date()
    window = Window.as_of_day(as_of, zone)

    if target.directory is not None:
        path = target.directory / DRIVERS_FILE
        read_as = file_signature(path) if path.is_file() else None
        index = load_history_dir(target.directory)
        drivers = pl.read_parquet(path)
        if file_signature(path) != read_as:
            raise RefreshError(f"{path}: replaced while it was read; run the refresh again")
    else:
        assert target.dsn is not None
        index = load_history_postgres(target.dsn)
        drivers = drivers_frame(index)

    stats = driver_stats(lake, index, window)
    new = refreshed(drivers, stats)
    unknown = unknown_drivers(drivers, stats)
    if target.directory is not None:
        write_drivers_file(target.directory, new, read_as)
        updated = new.height
    else:
        assert target.dsn is not None
        updated = write_drivers_postgres(target.dsn, new)
    tiers = new.get_column("risk_tier").value_counts().rows()
    return {
        "as_of": as_of.isoformat(),
        "days": f"{window.first_day}..{window.last_day}",
        "timezone": settings.scorecards.timezone,
        "target": str(target),
        "drivers_updated": updated,
        "drivers_with_data": int(
            stats.by_driver.filter(pl.col("driver_id").is_in(drivers["driver_id"].implode())).height
        ),
        "unknown_drivers": len(unknown),
        "unknown_driver_ids": unknown[:10],
        "files": stats.files,
        "rows_read": stats.rows_read,
        "readings": stats.readings,
        "unattributed_readings": stats.unattributed,
        "alerts": stats.alerts,
        "overspeed_events": int(new["overspeed_events_90d"].sum()),
        "risk_tiers": dict(sorted((str(t), int(n)) for t, n in tiers)),
        "seconds": round(time.perf_counter() - started, 3),
    }


def main(
    argv: Sequence[str] | None = None,
    *,
    settings_from_env: Callable[[], Settings] = Settings.from_env,
    now: Callable[[], datetime] = utc_now,
) -> int:
    configure_logging()
    args = parse_args(argv)
    try:
        summary = refresh(args, settings_from_env(), now)
    except (SettingsError, UsageError) as error:
        log.error("history_refresh_failed", error=str(error), exit=EXIT_USAGE)
        return EXIT_USAGE
    except (HistoryError, RefreshError) as error:
        log.error("history_refresh_failed", error=str(error), exit=EXIT_FAILED, written=False)
        return EXIT_FAILED
    log.info("history_refreshed", **summary)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
