"""Driver scorecards on real brokers (CONTRACT.md section 11): ``python -m bytewax.run
dataflows.alerts -w 2`` with FLEET_SCORECARDS_OUT=kafka over a bounded topic (the end of
input closes every day), then the same readings archived to the lake and replayed by
``dataflows.backfill`` with FLEET_SCORECARDS_OUT=<.jsonl>: the two give the same scorecards
as the independent reference, in Europe/Helsinki days, with the sample history's shift
changes (one at local midnight)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from devtools.launcher import FlowProcess
from domain.readings import Reading, encode_canonical
from domain.timestamps import to_epoch_ms
from runtime.settings import SAMPLE_HISTORY_DIR
from tests.integration.flows import Namespace, consume_until, produce
from tests.reference_scorecards import AssignmentRow, assert_same_scorecards, reference_scorecards

TIMEZONE = "Europe/Helsinki"
# T00000 changes drivers at 14:00 and 22:00 UTC (22:00 UTC is midnight in Helsinki);
# T00003 has one driver throughout; T09999 is in no assignment (driver null).
TRUCKS = ["T00000", "T00003", "T09999"]
START = to_epoch_ms(datetime(2026, 11, 20, 20, 0, tzinfo=UTC))


def fleet() -> list[Reading]:
    rng = random.Random(19)
    readings = []
    for truck in TRUCKS:
        lat, lon, ts = 60.17, 24.94, START + rng.randint(0, 9_000)
        for n in range(1_200):  # every ~10 s for ~3.5 h, across local midnight
            ts += rng.choice([10_000, 10_000, 10_000, 61_000, 0])
            lat += rng.uniform(-0.0005, 0.0005)
            lon += rng.uniform(-0.0005, 0.0005)
            speed = rng.choice([0.0, 3.0, 40.0, 80.0, 95.0, 95.0, 135.0])
            position = (None, None) if rng.random() < 0.05 else (lat, lon)
            readings.append(Reading(f"{truck}-{n:05d}", truck, ts, speed, *position))
    return readings


def sample_assignments() -> list[AssignmentRow]:
    frame = pl.read_parquet(SAMPLE_HISTORY_DIR / "assignments.parquet").filter(
        pl.col("truck_id").is_in(TRUCKS)
    )
    return [
        (t, d, to_epoch_ms(start), None if end is None else to_epoch_ms(end))
        for t, d, start, end in frame.select(
            "truck_id", "driver_id", "valid_from", "valid_to"
        ).iter_rows()
    ]


def test_stream_and_backfill_give_the_references_scorecards(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    readings = fleet()
    produce(
        namespace.brokers.kafka_brokers,
        namespace.topic("telemetry"),
        [(r.truck_id.encode(), encode_canonical(r)) for r in readings],
    )
    common = {"FLEET_TIMEZONE": TIMEZONE, "FLEET_KAFKA_TAIL": "false"}
    scorecards_topic = namespace.topic("scorecards")
    alerts = FlowProcess(
        "dataflows.alerts",
        namespace.env(
            **common, FLEET_SCORECARDS_OUT="kafka", FLEET_TOPIC_SCORECARDS=scorecards_topic
        ),
        logs / "alerts.log",
        ["-w", "2"],
    ).start()
    assert alerts.wait(timeout_s=180) == 0, alerts.log_tail()
    brokers = namespace.brokers.kafka_brokers
    streamed_alerts = [
        r.json()
        for r in consume_until(
            brokers, namespace.topic("alerts"), lambda r: False, timeout_s=5, settle_s=0
        )
    ]
    streamed = [
        r.json()
        for r in consume_until(brokers, scorecards_topic, lambda r: False, timeout_s=5, settle_s=0)
    ]
    expected = reference_scorecards(readings, sample_assignments(), streamed_alerts, TIMEZONE)
    drivers = {driver for driver, _ in expected}
    assert {"D00001", "D00002", None} <= drivers, "the shift change and the unassigned truck"
    assert len({day for _, day in expected}) == 2, "the readings cross local midnight"
    assert_same_scorecards(streamed, expected)

    lake, out = tmp_path / "lake", tmp_path / "alerts.jsonl"
    archive = FlowProcess(
        "dataflows.archive",
        namespace.env(**common, FLEET_LAKE_DIR=str(lake)),
        logs / "archive.log",
    ).start()
    assert archive.wait(timeout_s=120) == 0, archive.log_tail()
    cards_path = tmp_path / "scorecards.jsonl"
    backfill = FlowProcess(
        "dataflows.backfill",
        namespace.env(
            **common,
            FLEET_BACKFILL_INPUT=str(lake),
            FLEET_ALERTS_OUT=str(out),
            FLEET_SCORECARDS_OUT=str(cards_path),
        ),
        logs / "backfill.log",
        ["-w", "2"],
    ).start()
    assert backfill.wait(timeout_s=120) == 0, backfill.log_tail()
    replayed = [json.loads(line) for line in cards_path.read_text().splitlines()]
    assert_same_scorecards(replayed, expected)
    assert sorted(replayed, key=lambda c: (str(c["driver_id"]), c["day"])) == sorted(
        streamed, key=lambda c: (str(c["driver_id"]), c["day"])
    ), "stream and backfill, field for field"
