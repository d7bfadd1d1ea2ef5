"""The nightly history refresh (``python -m fleetwatch.history refresh``) on a large lake.

``python -m benchmarks.history_refresh [--rows N] [--trucks T] [--out DIR]``:

  * builds a lake of N readings over the 90 days of the window (plus the day before), each
    truck reporting every 10 s while it drives, positions along a line (a pair every
    reading), 1 % without a position, 0.5 % delivered twice; archived alerts (1 per 2,500
    readings); a history of 3 drivers per truck in daily 8-hour shifts (assignments:
    3 per truck and day);
  * runs the refresh as a process, as the CronJob does, and reads its time (wall, start-up
    included; and CPU, user + system, which the load of a shared machine changes least)
    and peak memory (the process's max RSS from ``os.wait4``);
  * next to it, the baseline: a plain Polars lazy scan of the same files that does the
    least a refresh must (filter the window, mean speed and count per truck), also a
    process of its own, timed and measured alike. The ratio says what the refresh's extra
    work costs: deduplication, the event-time sort and pairs, the as-of join, the alerts,
    loading and checking the history, the atomic write. The refresh sorts the window's
    readings in buckets of trucks (``BUCKET_ROWS``): memory is bounded by a bucket's.

Writes ``history_refresh.json`` and ``history_refresh.md`` into ``--out`` (default
build/bench).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
AS_OF = date(2026, 12, 1)
FIRST_DAY = AS_OF - timedelta(days=91)  # the day before the window: pairs across its start
DAY_MS = 86_400_000
INTERVAL_MS = 10_000
SHIFT_MS = 8 * 3_600_000


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def build_lake(lake: Path, rows: int, trucks: int) -> int:
    """Write ``rows`` readings (duplicates included) day by day; returns rows written."""
    days = (AS_OF - FIRST_DAY).days
    per_day = rows // days
    per_truck = per_day // trucks  # readings a truck sends a day, 10 s apart
    written = 0
    n = pl.col("n")
    for offset in range(days):
        day = FIRST_DAY + timedelta(days=offset)
        step = n // trucks  # the truck's reading number that day
        truck = n % trucks
        frame = pl.DataFrame({"n": pl.int_range(0, per_truck * trucks, eager=True)}).select(
            pl.format("e{}-{}", pl.lit(offset), n).alias("event_id"),
            pl.format("T{}", truck.cast(pl.String).str.zfill(5)).alias("truck_id"),
            # Trucks set out at different hours, so that every shift drives.
            (_ms(day) + (4 + truck % 16) * 3_600_000 + step * INTERVAL_MS + truck % 1_000)
            .cast(pl.Datetime("ms", "UTC"))
            .alias("ts"),
            (40.0 + (n * 7919 % 700) / 10.0).alias("speed_kmh"),
            pl.when(n % 100 == 7)
            .then(None)
            .otherwise(50.0 + step * 0.0003)
            .cast(pl.Float64)
            .alias("lat"),
            pl.when(n % 100 == 7)
            .then(None)
            .otherwise(5.0 + truck * 0.01)
            .cast(pl.Float64)
            .alias("lon"),
        )
        frame = pl.concat([frame, frame.filter(pl.col("event_id").str.ends_with("3"))[::20]])
        directory = lake / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        half = frame.height // 2
        frame[:half].write_parquet(directory / "p0000.parquet", compression="zstd")
        frame[half:].write_parquet(directory / "p0001.parquet", compression="zstd")
        written += frame.height
    return written


def build_alerts(lake: Path, count: int, trucks: int) -> None:
    from connectors.alert_lake import ALERT_SCHEMA, alerts_frame

    n = pl.col("n")
    days = (AS_OF - FIRST_DAY).days
    ends = _ms(FIRST_DAY) + (n * 7_777_777) % (days * DAY_MS)
    frame = pl.DataFrame({"n": pl.int_range(0, count, eager=True)}).select(
        pl.format("a{}", n).alias("alert_id"),
        pl.when(n % 5 == 0)
        .then(pl.lit("harsh_braking"))
        .otherwise(pl.lit("sustained_speeding"))
        .alias("rule"),
        pl.format("T{}", (n % trucks).cast(pl.String).str.zfill(5)).alias("truck_id"),
        pl.format("D{}", (n % (trucks * 3)).cast(pl.String).str.zfill(6)).alias("driver_id"),
        (ends - 60_000).alias("window_start"),
        ends.alias("window_end"),
        pl.lit(5).alias("count"),
        (ends + 500).alias("detected_at"),
        pl.when(n % 5 == 0)
        .then(pl.lit('{"kind": "deceleration"}'))
        .otherwise(pl.lit("{}"))
        .alias("details"),
    )
    rows = [
        {**dict.fromkeys(ALERT_SCHEMA), "event_ids": [], "schema_version": 1, **row}
        for row in frame.iter_rows(named=True)
    ]
    typed = alerts_frame(rows).with_columns(pl.col("window_end").dt.date().alias("day"))
    for (day,), part in typed.partition_by("day", as_dict=True, include_key=False).items():
        directory = lake / "alerts" / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        part.write_parquet(directory / "p0000-0.parquet")


def build_history(history: Path, trucks: int) -> int:
    """3 drivers per truck, one 8-hour shift each a day; returns the assignments."""
    history.mkdir(parents=True, exist_ok=True)
    drivers = trucks * 3
    pl.DataFrame(
        {
            "driver_id": [f"D{i:06d}" for i in range(drivers)],
            "name": [f"Driver {i}" for i in range(drivers)],
            "hired_on": [date(2020, 1, 1)] * drivers,
            "overspeed_events_90d": [0] * drivers,
            "avg_speed_kmh_90d": [0.0] * drivers,
            "km_driven_90d": [0.0] * drivers,
            "risk_tier": ["low"] * drivers,
        }
    ).write_parquet(history / "drivers.parquet")
    days = (AS_OF - FIRST_DAY).days + 1
    n = pl.col("n")
    shift = n % 3
    truck = (n // 3) % trucks
    day = n // (3 * trucks)
    start = _ms(FIRST_DAY) + day * DAY_MS + shift * SHIFT_MS
    assignments = pl.DataFrame({"n": pl.int_range(0, days * trucks * 3, eager=True)}).select(
        pl.format("T{}", truck.cast(pl.String).str.zfill(5)).alias("truck_id"),
        pl.format("D{}", (truck * 3 + shift).cast(pl.String).str.zfill(6)).alias("driver_id"),
        start.cast(pl.Datetime("ms", "UTC")).alias("valid_from"),
        (start + SHIFT_MS).cast(pl.Datetime("ms", "UTC")).alias("valid_to"),
    )
    assignments.write_parquet(history / "assignments.parquet")
    return assignments.height


BASELINE = """
import sys, polars as pl
from datetime import datetime, UTC
files = sys.argv[1:]
start = datetime(2026, 9, 2, tzinfo=UTC)
end = datetime(2026, 12, 1, tzinfo=UTC)
out = (
    pl.scan_parquet(files, hive_partitioning=False)
    .filter(pl.col("ts").is_between(start, end, closed="left"))
    .group_by("truck_id")
    .agg(pl.len(), pl.col("speed_kmh").filter(pl.col("speed_kmh") > 5).mean())
    .collect()
)
print(out.height, int(out["len"].sum()))
"""


def measured(argv: list[str]) -> tuple[float, float, float, str, str]:
    """Run ``argv`` to its end: wall seconds, CPU seconds (user + system: what a shared
    machine's other load changes least), peak RSS in MiB (its own, from wait4), out, err."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"{argv[:4]} exited {process.returncode}:\n{stderr[-3000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stdout, stderr


def markdown(results: dict[str, Any]) -> str:
    rows = results["lake_rows"]
    return "\n".join(
        [
            f"**History refresh** ({rows:,} lake rows over 91 days, {results['trucks']:,} "
            f"trucks, {results['assignments']:,} assignments, {results['alerts']:,} alerts; "
            "each a process of its own, wall time with start-up, peak RSS)",
            "",
            "| | seconds | CPU seconds | rows/s | peak RSS MiB |",
            "|---|---|---|---|---|",
            f"| `fleetwatch.history refresh` | {results['refresh_s']:.1f} "
            f"| {results['refresh_cpu_s']:.1f} | {rows / results['refresh_s']:,.0f} "
            f"| {results['refresh_peak_rss_mib']:,.0f} |",
            f"| baseline: Polars scan, window filter, mean per truck | {results['baseline_s']:.1f} "
            f"| {results['baseline_cpu_s']:.1f} | {rows / results['baseline_s']:,.0f} "
            f"| {results['baseline_peak_rss_mib']:,.0f} |",
            "",
            f"Refresh / baseline: {results['ratio_refresh_time_over_baseline']:.1f}x the time "
            f"({results['ratio_refresh_cpu_over_baseline']:.1f}x the CPU), "
            f"{results['ratio_refresh_rss_over_baseline']:.1f}x the memory. The refresh read "
            f"{results['refresh_summary'].get('readings', 0):,} distinct readings in the window.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.history_refresh", description=__doc__
    )
    parser.add_argument("--rows", type=int, default=50_000_000)
    parser.add_argument("--trucks", type=int, default=2_000)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"trucks": args.trucks}
    with tempfile.TemporaryDirectory(prefix="fleetwatch-history-") as tmp:
        lake, history = Path(tmp) / "lake", Path(tmp) / "history"
        started = time.perf_counter()
        results["lake_rows"] = build_lake(lake, args.rows, args.trucks)
        results["alerts"] = max(1, args.rows // 2_500)
        build_alerts(lake, results["alerts"], args.trucks)
        results["assignments"] = build_history(history, args.trucks)
        results["build_s"] = round(time.perf_counter() - started, 1)
        files = sorted(str(p) for p in lake.glob("date=*/*.parquet"))
        print(f"built {results['lake_rows']:,} rows in {results['build_s']} s", flush=True)

        base_s, base_cpu, base_rss, base_out, _ = measured([sys.executable, "-c", BASELINE, *files])
        command = [sys.executable, "-m", "fleetwatch.history", "refresh", "--as-of", str(AS_OF)]
        command += ["--lake", str(lake), "--history", str(history)]
        refresh_s, refresh_cpu, refresh_rss, _, err = measured(command)
        summary: dict[str, Any] = next(
            (json.loads(line) for line in err.splitlines() if '"history_refreshed"' in line), {}
        )
        results.update(
            refresh_s=round(refresh_s, 2),
            refresh_cpu_s=round(refresh_cpu, 1),
            refresh_peak_rss_mib=round(refresh_rss),
            refresh_summary=summary,
            baseline_s=round(base_s, 2),
            baseline_cpu_s=round(base_cpu, 1),
            baseline_peak_rss_mib=round(base_rss),
            baseline_output=base_out.strip(),
            ratio_refresh_time_over_baseline=round(refresh_s / base_s, 2),
            ratio_refresh_cpu_over_baseline=round(refresh_cpu / base_cpu, 2),
            ratio_refresh_rss_over_baseline=round(refresh_rss / base_rss, 2),
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "history_refresh.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "history_refresh.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
