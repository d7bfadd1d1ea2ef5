"""dataflows.archive_alerts and fleet.scorecards on a real broker: the records land in the
lake's ``scorecards/date=<day>/`` exactly once across kill -9 and restarts, duplicates as
they came (``scan_scorecards`` keeps one), bad records on the DLQ with stage
``archive_scorecards``; the archived alerts beside them are stored once too."""

from __future__ import annotations

import base64
from datetime import date, timedelta
from pathlib import Path

import polars as pl
from msgspec.structs import replace

from connectors.alert_lake import scan_alerts
from connectors.scorecard_lake import (
    SCORECARD_SCHEMA,
    scan_scorecards,
    scorecards_of,
    scorecards_root,
)
from domain.scorecards import Scorecard, encode_scorecard
from tests.integration.flows import Namespace, produce
from tests.integration.test_archive_alerts import (
    alerts,
    archived_dead_letters,
    kill_mid_run,
    publish,
    reading_all_along,
    records_of,
    run_archive,
)

FIRST_DAY = date(2026, 11, 20)


def scorecards(count: int, drivers: int = 50) -> list[Scorecard]:
    """``count`` scorecards: ``drivers`` drivers (every tenth day's first is no driver) by
    day from FIRST_DAY; distinct (driver_id, day) each."""
    made = []
    for n in range(count):
        day, d = divmod(n, drivers)
        km = 40.0 + n % 300 + 0.125
        alerts = {} if n % 3 else {"sustained_speeding": 1 + n % 4, "city_speeding": 1}
        made.append(
            Scorecard(
                driver_id=None if d == 0 and day % 10 == 0 else f"D{d:04d}",
                day=(FIRST_DAY + timedelta(days=day)).isoformat(),
                trucks=1 + n % 2,
                readings=3_000 + n,
                distance_km=km,
                driving_s=9_000.5,
                over_threshold_s=float(n % 600),
                max_speed_kmh=None if n % 17 == 0 else 80.0 + n % 60,
                alerts=dict(sorted(alerts.items())),
                events_per_1000km=sum(alerts.values()) * 1000 / km,
                safety_score=max(0.0, 100.0 - sum(alerts.values()) * 1000 / max(km, 100.0)),
            )
        )
    return made


BAD = [
    b"not json",
    b"{}",
    encode_scorecard(replace(scorecards(1)[0], day="2026-11-31")),
    b"\xff",
]


def publish_scorecards(namespace: Namespace, records: list[tuple[bytes | None, bytes]]) -> None:
    for offset in range(0, len(records), 5_000):
        produce(
            namespace.brokers.kafka_brokers,
            namespace.topic("scorecards"),
            records[offset : offset + 5_000],
        )


def card_records(batch: list[Scorecard]) -> list[tuple[bytes | None, bytes]]:
    return [((c.driver_id or "").encode(), encode_scorecard(c)) for c in batch]


def by_key(cards: list[Scorecard]) -> list[Scorecard]:
    return sorted(cards, key=lambda c: (c.day, c.driver_id or ""))


def test_scorecards_land_once_by_day_duplicates_kept_bad_ones_dead_lettered(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    batch = scorecards(300)  # 6 days
    resent = batch[40:60]  # the alerts flow restarted: the same scorecards again
    published = [*card_records(batch), *((None, b) for b in BAD), *card_records(resent)]
    publish_scorecards(namespace, published)
    assert run_archive(namespace, lake, logs).wait(timeout_s=120) == 0

    every = scan_scorecards(lake, deduplicate=False).collect()
    assert every.height == len(batch) + len(resent), "each record once, duplicates as they came"
    assert every.schema == SCORECARD_SCHEMA
    days = sorted(p.name for p in scorecards_root(lake).iterdir())
    assert days == [f"date={FIRST_DAY + timedelta(days=n)}" for n in range(6)]
    for directory in scorecards_root(lake).iterdir():  # date= is the scorecards' day
        stored = pl.read_parquet(directory / "*.parquet")["day"].unique().to_list()
        assert stored == [date.fromisoformat(directory.name.removeprefix("date="))]
    distinct = scan_scorecards(lake).collect()
    assert scorecards_of(distinct) == by_key(batch), "one per (driver, day), field for field"

    dead = archived_dead_letters(namespace, len(BAD), stage="archive_scorecards")
    assert sorted(base64.b64decode(str(d.json()["raw"])) for d in dead) == sorted(BAD)
    assert {d.json()["source_topic"] for d in dead} == {namespace.topic("scorecards")}
    assert {d.json()["reason"] for d in dead} == {"invalid_json", "schema", "bad_timestamp"}

    # A rerun archives nothing twice; new records are appended.
    files = sorted(lake.rglob("*.parquet"))
    assert run_archive(namespace, lake, logs).wait(timeout_s=120) == 0
    assert sorted(lake.rglob("*.parquet")) == files
    more = scorecards(350)[300:]
    publish_scorecards(namespace, card_records(more))
    assert run_archive(namespace, lake, logs).wait(timeout_s=120) == 0
    assert scorecards_of(scan_scorecards(lake).collect()) == by_key([*batch, *more])
    assert len(archived_dead_letters(namespace, len(BAD), "archive_scorecards")) == len(BAD)


def test_kill_9_mid_run_stores_each_scorecard_and_alert_exactly_once(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    batch = scorecards(20_000, drivers=400)  # 50 days
    publish_scorecards(namespace, card_records(batch))
    alert_batch = alerts(3_000, trucks=50)
    publish(namespace, records_of(alert_batch))

    with reading_all_along(scorecards_root(lake)) as failures:
        kill_mid_run(namespace, lake, logs, scorecards_root(lake), kills=2)
    every = scan_scorecards(lake, deduplicate=False).collect()
    assert every.height == len(batch), "none missing, none stored twice"
    assert scorecards_of(every.sort("day", "driver_id", nulls_last=False)) == by_key(batch)
    assert not failures, failures[:3]
    assert not list(lake.rglob("*.tmp")), "no temporary files left"
    archived = scan_alerts(lake, deduplicate=False).collect()
    assert sorted(archived["alert_id"]) == sorted(a.alert_id for a in alert_batch)
