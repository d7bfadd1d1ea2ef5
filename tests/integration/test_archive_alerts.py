"""dataflows.archive_alerts on a real broker: the records of fleet.alerts land in the lake's
``alerts/date=<window_end's UTC date>/`` exactly once across kill -9 and restarts,
duplicates as they came, bad records on the DLQ; the telemetry archive shares the lake."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from msgspec.structs import replace

from connectors.alert_lake import ALERT_SCHEMA, alerts_root, scan_alerts
from domain.alerts import Alert, AlertDriver, Position, Severity, alert_id, encode_alert
from domain.readings import Reading, encode_canonical
from domain.timestamps import format_rfc3339_ms, to_epoch_ms
from tests.integration.flows import FlowProcess, Namespace, Record, consume_until, produce

# Alerts whose windows end on both sides of midnight (UTC): two dates.
START = to_epoch_ms(datetime(2026, 11, 24, 23, 0, tzinfo=UTC))
BAD = [b"not json", b"{}", b'{"alert_id": "x"}', b"\xff"]


def alerts(count: int, trucks: int = 40) -> list[Alert]:
    made = []
    for n in range(count):
        truck = f"T{n % trucks:03d}"
        first = f"{truck}-{n}"
        end = START + n * 10_000  # one every 10 s from 23:00: the first 600 cross midnight
        made.append(
            Alert(
                alert_id=alert_id("sustained_speeding", truck, first),
                rule="sustained_speeding",
                truck_id=truck,
                driver_id=None if n % 5 == 0 else f"D{n % trucks:03d}",
                window_start=format_rfc3339_ms(end - 4_000),
                window_end=format_rfc3339_ms(end),
                count=5,
                event_ids=[first, *(f"{truck}-{n}-{k}" for k in range(1, 5))],
                max_speed_kmh=110.0 + n % 20,
                mean_speed_kmh=100.5,
                threshold_kmh=90.0,
                severity=Severity.WARNING,
                driver=None
                if n % 5 == 0
                else AlertDriver(
                    f"D{n % trucks:03d}",
                    "Ana Berg",
                    "2019-04-01",
                    2,
                    81.5,
                    9000.0,
                    "low",
                    28.5,
                    False,
                ),
                detected_at=format_rfc3339_ms(end + 700),
                rule_version=3,
                position=None if n % 7 == 0 else Position(60.17, 24.94),
                details={} if n % 2 else {"road_name": "Mannerheimintie", "osm_way_id": n},
            )
        )
    return made


def publish(namespace: Namespace, records: list[tuple[bytes | None, bytes]]) -> None:
    for offset in range(0, len(records), 5_000):
        produce(
            namespace.brokers.kafka_brokers,
            namespace.topic("alerts"),
            records[offset : offset + 5_000],
        )


def records_of(batch: list[Alert]) -> list[tuple[bytes | None, bytes]]:
    return [(a.truck_id.encode(), encode_alert(a)) for a in batch]


def run_archive(namespace: Namespace, lake: Path, logs: Path, roll_mb: str = "0.05") -> FlowProcess:
    env = namespace.env(
        FLEET_LAKE_DIR=str(lake), FLEET_KAFKA_TAIL="false", FLEET_LAKE_ROLL_MB=roll_mb
    )
    return FlowProcess("dataflows.archive_alerts", env, logs / "archive_alerts.log").start()


def archived_dead_letters(
    namespace: Namespace, expected: int, stage: str = "archive_alerts"
) -> list[Record]:
    records = consume_until(
        namespace.brokers.kafka_brokers,
        namespace.topic("dlq"),
        lambda found: len([r for r in found if r.json()["stage"] == stage]) >= expected,
        timeout_s=30,
    )
    return [r for r in records if r.json()["stage"] == stage]


@contextmanager
def reading_all_along(directory: Path) -> Iterator[list[str]]:
    """Reads every Parquet file under ``directory`` over and over while the block runs; the
    list yielded gets the files that could not be read (a partial file would be one)."""
    failures: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for path in list(directory.rglob("*.parquet")):
                try:
                    pl.read_parquet(path)
                except FileNotFoundError:
                    continue  # an incomplete roll removed after the kill: gone, never partial
                except Exception as exc:
                    failures.append(f"{path.name}: {exc}")

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        yield failures
    finally:
        stop.set()
        watcher.join()


def kill_mid_run(namespace: Namespace, lake: Path, logs: Path, watched: Path, kills: int) -> None:
    """Start the archive and kill -9 it once ``watched`` has 3 more files, ``kills`` times
    (each kill is mid-run: asserted); then run it to the end of its topics."""
    for _ in range(kills):
        archive = run_archive(namespace, lake, logs)
        deadline = time.monotonic() + 60
        before = len(list(watched.rglob("*.parquet")))
        while len(list(watched.rglob("*.parquet"))) < before + 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert archive.process is not None
        assert archive.process.poll() is None, "killed mid-run, not after it finished"
        archive.kill()
    assert run_archive(namespace, lake, logs).wait(timeout_s=180) == 0


def test_alerts_land_once_by_window_end_date_duplicates_kept_bad_ones_dead_lettered(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    batch = alerts(600)
    resent = [replace(a, detected_at=format_rfc3339_ms(START + 9_999_000)) for a in batch[:25]]
    published = [*records_of(batch), *((None, b) for b in BAD), *records_of(resent)]
    publish(namespace, published)
    assert run_archive(namespace, lake, logs).wait(timeout_s=120) == 0

    every = scan_alerts(lake, deduplicate=False).collect()
    assert every.height == len(batch) + len(resent), "each record once, duplicates as they came"
    assert every.drop("date").schema == ALERT_SCHEMA
    assert (every["date"] == every["window_end"].dt.date()).all(), "date = window_end's UTC date"
    assert {str(d) for d in every["date"].unique()} == {"2026-11-24", "2026-11-25"}
    distinct = scan_alerts(lake).collect()
    assert distinct["alert_id"].to_list() == [a.alert_id for a in batch], "deduplicated, in order"
    kept = distinct.filter(pl.col("alert_id") == batch[3].alert_id).row(0, named=True)
    assert kept["detected_at"] == datetime.fromisoformat(batch[3].detected_at)
    assert kept["driver"]["driver_id"] == "D003"

    dead = archived_dead_letters(namespace, len(BAD))
    assert sorted(base64.b64decode(str(d.json()["raw"])) for d in dead) == sorted(BAD)
    assert {d.json()["source_topic"] for d in dead} == {namespace.topic("alerts")}

    # A rerun archives nothing twice; new records are appended.
    files = sorted(lake.rglob("*.parquet"))
    assert run_archive(namespace, lake, logs).wait(timeout_s=120) == 0
    assert sorted(lake.rglob("*.parquet")) == files
    more = alerts(650)[600:]
    publish(namespace, records_of(more))
    assert run_archive(namespace, lake, logs).wait(timeout_s=120) == 0
    assert scan_alerts(lake).collect().height == 650
    assert len(archived_dead_letters(namespace, len(BAD))) == len(BAD), "none refused twice"


def test_kill_9_mid_run_stores_each_alert_exactly_once_beside_the_telemetry(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    batch = alerts(20_000, trucks=200)
    publish(namespace, records_of(batch))
    # The telemetry archive writes the same lake: each reads and resumes its own part.
    readings = [Reading(f"T1-{n}", "T1", START + n * 1_000, 50.0, None, None) for n in range(2_000)]
    produce(
        namespace.brokers.kafka_brokers,
        namespace.topic("telemetry"),
        [(b"T1", encode_canonical(r)) for r in readings],
    )
    telemetry_env = namespace.env(FLEET_LAKE_DIR=str(lake), FLEET_KAFKA_TAIL="false")
    telemetry = FlowProcess("dataflows.archive", telemetry_env, logs / "archive.log").start()

    with reading_all_along(alerts_root(lake)) as failures:
        kill_mid_run(namespace, lake, logs, alerts_root(lake), kills=2)
        assert telemetry.wait(timeout_s=120) == 0
    every = scan_alerts(lake, deduplicate=False).collect()
    assert every["alert_id"].n_unique() == len(batch), "no alert missing"
    assert every.height == len(batch), "none stored twice"
    assert not failures, failures[:3]
    assert not list(lake.rglob("*.tmp")), "no temporary files left"
    telemetry_files = sorted(lake.glob("date=*/*.parquet"))
    stored = pl.read_parquet(telemetry_files)
    assert sorted(stored["event_id"]) == sorted(r.event_id for r in readings)
