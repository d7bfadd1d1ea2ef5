"""Backfill and archive throughput.

``python -m benchmarks.lake [--rows N]``:
  * builds a lake of N readings (Hive-partitioned by date, several files a day);
  * backfill: ``python -m bytewax.run dataflows.backfill`` over it (wall time, start-up
    included), next to a pure-Polars vectorized computation of the sustained rule's
    violation counts (violations per truck in a rolling 600 s window) over the same lake,
    run in the same invocation; the ratio is Polars time / backfill time;
  * archive: ``dataflows.archive`` draining N readings from Kafka into a lake (readings/s).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import polars as pl

from benchmarks.alerts import prefill
from devtools.launcher import FlowProcess
from devtools.localbrokers import local_brokers

ROOT = Path(__file__).resolve().parents[1]
START = 1_795_478_400_000  # 2026-11-24T00:00:00Z


def build_lake(root: Path, rows: int, trucks: int = 5_000, files_per_day: int = 4) -> float:
    """Readings one every 10 s per truck; about 1 in 12 over 90 km/h, in short episodes."""
    started = time.perf_counter()
    n = pl.col("n")
    frame = pl.DataFrame({"n": pl.int_range(0, rows, eager=True)}).select(
        pl.format("e{}", n).alias("event_id"),
        pl.format("T{}", (n % trucks).cast(pl.String).str.zfill(5)).alias("truck_id"),
        (START + (n // trucks) * 10_000 + (n * 7919) % 3_000)
        .cast(pl.Datetime("ms", "UTC"))
        .alias("ts"),
        pl.when(((n // trucks) + n % 97) % 12 < 1)
        .then(91.0 + (n * 13 % 50))
        .otherwise(55.0 + (n * 17 % 33))
        .cast(pl.Float64)
        .alias("speed_kmh"),
        pl.lit(52.5).alias("lat"),
        pl.lit(13.4).alias("lon"),
        (n % files_per_day).alias("file"),
    )
    frame = frame.with_columns(pl.col("ts").dt.date().alias("date"))
    for (day, file), part in frame.partition_by("date", "file", as_dict=True).items():
        directory = root / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        part.drop("date", "file").write_parquet(
            directory / f"part-{file}.parquet", compression="zstd"
        )
    return time.perf_counter() - started


def polars_violation_counts(root: Path) -> tuple[float, int]:
    """The sustained rule's vectorized core: violations per truck within 600 s windows."""
    started = time.perf_counter()
    counts = (
        pl.scan_parquet(root / "**" / "*.parquet", hive_partitioning=False)
        .filter(pl.col("speed_kmh") > 90.0)
        .sort("truck_id", "ts")
        .rolling(index_column="ts", period="600s", group_by="truck_id")
        .agg(pl.len().alias("violations"))
        .filter(pl.col("violations") >= 5)
        .collect()
    )
    return time.perf_counter() - started, counts.height


def run_flow(module: str, env: dict[str, str], log: Path) -> float:
    """Run ``module`` to its end; its wall time in s, start-up included."""
    started = time.perf_counter()
    flow = FlowProcess(module, env, log)
    if flow.run(timeout_s=3600) != 0:
        raise RuntimeError(f"{module} failed:\n{flow.log_tail()}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lake", description=__doc__)
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--archive-rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "lake.json")
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fleetwatch-lake-") as tmp:
        lake = Path(tmp) / "lake"
        results["lake_build_s"] = round(build_lake(lake, args.rows), 2)
        polars_s, windows = polars_violation_counts(lake)
        env = {
            "FLEET_BACKFILL_INPUT": str(lake),
            "FLEET_ALERTS_OUT": str(Path(tmp) / "alerts.jsonl"),
        }
        backfill_s = run_flow("dataflows.backfill", env, Path(tmp) / "backfill.log")
        alerts = sum(1 for _ in (Path(tmp) / "alerts.jsonl").open())
        results.update(
            rows=args.rows,
            polars_s=round(polars_s, 2),
            polars_windows_with_5_violations=windows,
            backfill_s=round(backfill_s, 2),
            backfill_rows_per_s=round(args.rows / backfill_s),
            backfill_alerts=alerts,
            ratio_polars_time_over_backfill_time=round(polars_s / backfill_s, 3),
        )
        with local_brokers(Path(tmp) / "brokers") as brokers:
            prefill(brokers.kafka_brokers, "bench.telemetry", args.archive_rows, 2_000)
            env = {
                "FLEET_KAFKA_BROKERS": brokers.kafka_brokers,
                "FLEET_TOPIC_TELEMETRY": "bench.telemetry",
                "FLEET_KAFKA_TAIL": "false",
                "FLEET_LAKE_DIR": str(Path(tmp) / "archived"),
            }
            archive_s = run_flow("dataflows.archive", env, Path(tmp) / "archive.log")
            stored = (
                pl.scan_parquet(Path(tmp) / "archived" / "**" / "*.parquet")
                .select(pl.len())
                .collect()
                .item()
            )
        if stored != args.archive_rows:
            raise RuntimeError(f"archive stored {stored} of {args.archive_rows} readings")
        results.update(
            archive_rows=args.archive_rows,
            archive_s=round(archive_s, 2),
            archive_rows_per_s=round(args.archive_rows / archive_s),
        )
    for name, value in results.items():
        print(f"{name:40s} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
