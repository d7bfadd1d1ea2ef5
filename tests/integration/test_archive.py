"""dataflows.archive on a real broker: the lake holds each reading exactly once, in the
contract's layout and schema, across reruns and kill -9, and readers never see partial files."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from connectors.parquet import READING_SCHEMA
from domain.readings import Reading, encode_canonical
from domain.timestamps import to_epoch_ms
from tests.integration.flows import FlowProcess, Namespace, produce

# Readings that cross midnight, so rolls span two dates.
START = to_epoch_ms(datetime(2026, 11, 24, 23, 50, tzinfo=UTC))


def readings(count: int, first: int = 0, trucks: int = 50) -> list[Reading]:
    rng = random.Random(first)
    return [
        Reading(
            f"T{n % trucks:03d}-{n}",
            f"T{n % trucks:03d}",
            START + n * 60,
            round(rng.uniform(40, 140), 1),
            52.0,
            None,
        )
        for n in range(first, first + count)
    ]


def publish(namespace: Namespace, batch: list[Reading]) -> None:
    records = [(r.truck_id.encode(), encode_canonical(r)) for r in batch]
    for offset in range(0, len(records), 20_000):
        produce(
            namespace.brokers.kafka_brokers,
            namespace.topic("telemetry"),
            records[offset : offset + 20_000],
        )


def run_archive(namespace: Namespace, lake: Path, logs: Path, roll_mb: str = "0.3") -> FlowProcess:
    env = namespace.env(
        FLEET_LAKE_DIR=str(lake), FLEET_KAFKA_TAIL="false", FLEET_LAKE_ROLL_MB=roll_mb
    )
    return FlowProcess("dataflows.archive", env, logs / "archive.log").start()


def lake_frame(lake: Path) -> pl.DataFrame:
    return pl.read_parquet(lake / "**" / "*.parquet", hive_partitioning=True)


def test_lake_layout_schema_and_idempotent_reruns(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    first = readings(12_000)
    publish(namespace, first)
    assert run_archive(namespace, lake, logs).wait(timeout_s=120) == 0

    frame = lake_frame(lake)
    assert frame.height == len(first)
    assert frame["event_id"].n_unique() == len(first)
    assert frame.drop("date").schema == READING_SCHEMA
    assert (frame["date"].cast(pl.String) == frame["ts"].dt.date().cast(pl.String)).all(), (
        "hive date = ts date"
    )
    assert {str(d) for d in frame["date"].unique()} == {"2026-11-24", "2026-11-25"}
    stored = frame.filter(pl.col("event_id") == first[7].event_id).row(0, named=True)
    assert to_epoch_ms(stored["ts"]) == first[7].ts_ms
    assert stored["speed_kmh"] == first[7].speed_kmh
    assert stored["lon"] is None
    files = sorted(lake.rglob("*.parquet"))
    assert 4 < len(files) < 100, "rolled by size: neither one file nor one per reading"

    # A rerun archives nothing twice; new readings are appended.
    assert run_archive(namespace, lake, logs).wait(timeout_s=120) == 0
    assert sorted(lake.rglob("*.parquet")) == files
    publish(namespace, readings(3_000, first=12_000))
    assert run_archive(namespace, lake, logs).wait(timeout_s=120) == 0
    frame = lake_frame(lake)
    assert frame.height == 15_000
    assert frame["event_id"].n_unique() == 15_000

    # DuckDB reads the lake as is, date partitions included.
    source = f"read_parquet('{lake}/**/*.parquet', hive_partitioning=true)"
    assert duckdb.sql(f"SELECT count(*), count(DISTINCT date) FROM {source}").fetchall() == [
        (15_000, 2)
    ]


def test_kill_9_mid_run_stores_each_reading_exactly_once(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    batch = readings(150_000, trucks=200)
    publish(namespace, batch)
    failures: list[str] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            for path in list(lake.rglob("*.parquet")):
                try:
                    pl.read_parquet(path)
                    reads += 1
                except FileNotFoundError:
                    continue  # an incomplete roll removed after the kill: gone, never partial
                except Exception as exc:
                    failures.append(f"{path.name}: {exc}")

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        kills = 0
        for _ in range(2):
            archive = run_archive(namespace, lake, logs, roll_mb="0.5")
            deadline = time.monotonic() + 60
            before = len(list(lake.rglob("*.parquet")))
            while len(list(lake.rglob("*.parquet"))) < before + 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert archive.process is not None
            assert archive.process.poll() is None, "killed mid-run, not after it finished"
            archive.kill()
            kills += 1
        assert run_archive(namespace, lake, logs, roll_mb="0.5").wait(timeout_s=180) == 0
    finally:
        stop.set()
        watcher.join()
    frame = lake_frame(lake)
    assert kills == 2
    assert frame["event_id"].n_unique() == len(batch), "no reading missing"
    assert frame.height == len(batch), "none stored twice"
    assert not failures, failures[:3]
    assert reads > 0
    assert not list(lake.rglob("*.tmp")), "no temporary files left"
