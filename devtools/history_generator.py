"""Deterministic driver history for the simulator's trucks (CONTRACT.md section 6).

``python -m devtools.history_generator --out DIR --start 2026-11-20 --days 11``

Three 8-hour shifts a day (06:00, 14:00, 22:00 UTC), each a new assignment, so drivers
change at shift boundaries. Some trucks keep one driver open-ended; every 10th truck has
no assignment at all; some handovers overlap by 15 minutes (the later driver wins); one
truck in 50 names a driver who is not in drivers.parquet. trucks.parquet gives most trucks
a vehicle class (a mix of heavy, medium and light) and most a depot; every 10th truck
(T00008, T00018, ...) is not listed, so it has no class. The shipped sample
(``runtime/sample_history``) is this script's output with its defaults.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

SHIFT_STARTS_H = (6, 14, 22)
# Classes in the proportions of a mixed fleet: half heavy, the rest medium and light.
CLASS_CYCLE = ("heavy", "medium", "heavy", "light", "heavy", "medium")
DEPOTS = ("Hamburg", "Leipzig", "Munich")
FIRST_NAMES = (
    "Ana",
    "Ben",
    "Chloe",
    "Dmitri",
    "Eva",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kemal",
    "Lena",
)
LAST_NAMES = (
    "Adler",
    "Berg",
    "Costa",
    "Dietz",
    "Engel",
    "Fischer",
    "Gruber",
    "Horvat",
    "Iversen",
    "Jansen",
)


@dataclass(frozen=True)
class HistoryShape:
    trucks: int = 500
    start: date = date(2026, 11, 20)
    days: int = 11
    seed: int = 7
    truck_prefix: str = "T"


def generate(shape: HistoryShape) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(drivers, assignments) in the contract's schema."""
    rng = random.Random(shape.seed)
    driver_count = max(3, shape.trucks * 4 // 3)
    drivers = _drivers(rng, driver_count)
    ids = drivers["driver_id"].to_list()
    rows: list[tuple[str, str, datetime, datetime | None]] = []
    first_day = datetime(shape.start.year, shape.start.month, shape.start.day, tzinfo=UTC)
    for n in range(shape.trucks):
        truck = f"{shape.truck_prefix}{n:05d}"
        if n % 10 == 9:
            continue  # a truck with no assignment
        if n % 7 == 3:  # one driver, open-ended
            rows.append((truck, ids[n % len(ids)], first_day - timedelta(days=30), None))
            continue
        overlap = timedelta(minutes=15) if n % 5 == 1 else timedelta(0)
        for day in range(shape.days):
            for shift, hour in enumerate(SHIFT_STARTS_H):
                begins = first_day + timedelta(days=day, hours=hour)
                driver = ids[(n * 3 + shift + day * 7) % len(ids)]
                if n % 50 == 7 and shift == 1:
                    driver = f"D-unknown-{n}"
                rows.append((truck, driver, begins - overlap, begins + timedelta(hours=8)))
    assignments = pl.DataFrame(
        rows,
        schema={
            "truck_id": pl.String,
            "driver_id": pl.String,
            "valid_from": pl.Datetime("ms", "UTC"),
            "valid_to": pl.Datetime("ms", "UTC"),
        },
        orient="row",
    )
    return drivers, assignments


def generate_trucks(shape: HistoryShape) -> pl.DataFrame:
    """trucks.parquet in the contract's schema: T00008, T00018, ... are not listed; every 4th
    truck from T00002 on has no depot."""
    rows: list[tuple[str, str, str | None]] = []
    for n in range(shape.trucks):
        if n % 10 == 8:
            continue  # not listed: no vehicle class
        depot = None if n % 4 == 2 else DEPOTS[n % len(DEPOTS)]
        rows.append((f"{shape.truck_prefix}{n:05d}", CLASS_CYCLE[n % len(CLASS_CYCLE)], depot))
    return pl.DataFrame(
        rows,
        schema={"truck_id": pl.String, "vehicle_class": pl.String, "depot": pl.String},
        orient="row",
    )


def _drivers(rng: random.Random, count: int) -> pl.DataFrame:
    rows = []
    for n in range(count):
        events = min(int(rng.expovariate(0.6)), 12)
        tier = "high" if events >= 5 else "medium" if events >= 2 else "low"
        hired = date(2010, 1, 1) + timedelta(days=rng.randrange(15 * 365))
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        rows.append(
            (
                f"D{n:05d}",
                name,
                hired,
                events,
                round(rng.uniform(68, 88), 1),
                round(rng.uniform(1500, 16000), 1),
                tier,
            )
        )
    return pl.DataFrame(
        rows,
        schema={
            "driver_id": pl.String,
            "name": pl.String,
            "hired_on": pl.Date,
            "overspeed_events_90d": pl.Int64,
            "avg_speed_kmh_90d": pl.Float64,
            "km_driven_90d": pl.Float64,
            "risk_tier": pl.String,
        },
        orient="row",
    )


def write(shape: HistoryShape, out: Path) -> None:
    from connectors.parquet import write_atomically

    drivers, assignments = generate(shape)
    write_atomically(drivers, out / "drivers.parquet")
    write_atomically(assignments, out / "assignments.parquet")
    write_atomically(generate_trucks(shape), out / "trucks.parquet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.history_generator", description=__doc__
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trucks", type=int, default=HistoryShape.trucks)
    parser.add_argument("--start", type=date.fromisoformat, default=HistoryShape.start)
    parser.add_argument("--days", type=int, default=HistoryShape.days)
    parser.add_argument("--seed", type=int, default=HistoryShape.seed)
    args = parser.parse_args(argv)
    write(HistoryShape(args.trucks, args.start, args.days, args.seed), args.out)
    print(f"wrote {args.out}/drivers.parquet, assignments.parquet and trucks.parquet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
