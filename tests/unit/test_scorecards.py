"""Driver scorecards (CONTRACT.md section 11) through the real flows: dataflows.alerts (1 and
2 workers, readings in disorder and resent) and dataflows.backfill over a Parquet lake, each
against the independent reference (tests/reference_scorecards.py). Named instants around
local midnight and the DST changes of Europe/Helsinki (a 25-hour and a 23-hour day), a
driver change mid-day, readings without a position, gaps of 60 s and just over, ties."""

from __future__ import annotations

import itertools
import json
import math
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, TimeTestingGetter, cluster_main, run_main
from hypothesis import given
from hypothesis import strategies as st

from connectors.jsonl_sink import JsonlSink
from connectors.kafka import OutboundRecord
from connectors.kafka_source import Fetch
from connectors.parquet_input import ParquetReadingsSource, resolve_inputs
from dataflows import alerts as alerts_flow
from dataflows import backfill as backfill_flow
from dataflows.scorecards import ScorecardStep
from domain.catalogue import Prefilter
from domain.history import Assignment, HistoryIndex
from domain.readings import Reading, encode_canonical
from domain.rules import RuleConfig
from domain.scorecards import (
    LocalDays,
    ScoreKeeper,
    ScoreWeights,
    _exact_add,
    _exact_partials,
)
from domain.timestamps import from_epoch_ms, to_epoch_ms
from runtime.clock import utc_now
from runtime.progress import Progress
from runtime.settings import Topics
from tests.reference_scorecards import AssignmentRow, assert_same_scorecards, reference_scorecards

TOPICS = Topics(telemetry="telemetry", alerts="alerts", dlq="dlq", late="late")
CONFIG = RuleConfig()  # threshold 90, 5 within 10 min, critical 130, lateness 10 s
HELSINKI = "Europe/Helsinki"
ZONE = ZoneInfo(HELSINKI)


def local(text: str) -> int:
    """Epoch ms of a Helsinki wall-clock time 'YYYY-MM-DD HH:MM:SS[.fff]' (fold 0)."""
    return to_epoch_ms(datetime.fromisoformat(text).replace(tzinfo=ZONE))


@dataclass
class Fleet:
    readings: list[Reading]
    assignments: list[AssignmentRow] = field(default_factory=list)
    timezone: str = HELSINKI

    def history(self) -> HistoryIndex:
        return HistoryIndex.build([], [Assignment(*row) for row in self.assignments])

    def keeper(self) -> ScoreKeeper:
        history = self.history()
        return ScoreKeeper(
            LocalDays(ZoneInfo(self.timezone)),
            CONFIG.threshold_kmh,
            ScoreWeights(),
            lambda: history,
        )

    def step(self, quiet: Any, *, wall_clock: bool) -> ScorecardStep:
        """Notifications on Bytewax's own clock; the time since a tally on ``quiet`` (a
        frozen test clock: no day closes before the end of input)."""
        return ScorecardStep(
            LocalDays(ZoneInfo(self.timezone)),
            ScoreWeights(),
            timedelta(minutes=10),
            utc_now,
            wall_clock=wall_clock,
            flow="alerts" if wall_clock else "backfill",
            quiet_clock=quiet,
        )


def arrivals(readings: Sequence[Reading], seed: int) -> list[Fetch]:
    """Each reading delayed within the lateness, some resent; fetches of 1-4 records."""
    rng = random.Random(seed)
    timed = []
    for r in readings:
        arrival = r.ts_ms + rng.randint(0, CONFIG.allowed_lateness_ms)
        timed.append((arrival, len(timed), r))
        if rng.random() < 0.1:
            timed.append((arrival + rng.randint(0, 2_000), len(timed), r))
    timed.sort()
    out: list[Fetch] = []
    values: list[bytes] = []
    stamps: list[int] = []
    for arrived, _, r in timed:
        values.append(encode_canonical(r))
        stamps.append(arrived)
        if len(values) >= rng.randint(1, 4):
            out.append(Fetch(0, 0, len(values) - 1, values, stamps))
            values, stamps = [], []
    if values:
        out.append(Fetch(0, 0, len(values) - 1, values, stamps))
    return out


def alerts_flow_of(fleet: Fleet, source: TestingSource, out: list[OutboundRecord]) -> Any:
    """dataflows.alerts with scorecards on a frozen clock (only the end of input closes)."""
    first = min(r.ts_ms for r in fleet.readings)
    clock = TimeTestingGetter(from_epoch_ms(first))
    history = fleet.history()
    return alerts_flow.build_flow(
        source,
        TestingSink(out),
        TOPICS,
        CONFIG,
        clock.get,
        history=lambda: history,
        scoring=fleet.keeper(),
        scorecard_step=fleet.step(clock.get, wall_clock=True),
    )


def documents(out: list[OutboundRecord], topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in out if r.topic == topic]


def stream(
    fleet: Fleet, seed: int, workers: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """dataflows.alerts with scorecards: (alerts, scorecards) as JSON documents."""
    out: list[OutboundRecord] = []
    flow = alerts_flow_of(fleet, TestingSource(arrivals(fleet.readings, seed)), out)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return documents(out, TOPICS.alerts), documents(out, TOPICS.scorecards)


def backfill(fleet: Fleet) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """dataflows.backfill with scorecards over a lake of the readings (resends included)."""
    with tempfile.TemporaryDirectory() as directory:
        lake = Path(directory) / "lake" / "date=2026-10-25"
        lake.mkdir(parents=True)
        rows = fleet.readings + fleet.readings[::7]  # some twice: the lake dedupes
        pl.DataFrame(
            {
                "event_id": [r.event_id for r in rows],
                "truck_id": [r.truck_id for r in rows],
                "ts": pl.Series([r.ts_ms for r in rows], dtype=pl.Int64).cast(
                    pl.Datetime("ms", "UTC")
                ),
                "speed_kmh": [r.speed_kmh for r in rows],
                "lat": pl.Series([r.lat for r in rows], dtype=pl.Float64),
                "lon": pl.Series([r.lon for r in rows], dtype=pl.Float64),
            }
        ).write_parquet(lake / "part-0.parquet")
        alerts_path = Path(directory) / "alerts.jsonl"
        cards_path = Path(directory) / "scorecards.jsonl"
        progress = Progress(interval_s=3600)
        source = ParquetReadingsSource(
            resolve_inputs(str(Path(directory) / "lake")),
            Prefilter(float("-inf")),
            progress=progress,
        )
        keeper = fleet.keeper()
        flow = backfill_flow.build_flow(
            source,
            JsonlSink(alerts_path),
            JsonlSink(backfill_flow.dead_letter_path(alerts_path)),
            CONFIG,
            fleet.history(),
            progress,
            scorecards_out=(
                keeper,
                fleet.step(utc_now, wall_clock=False),
                JsonlSink(cards_path),
            ),
        )
        run_main(flow)

        def lines(path: Path) -> list[dict[str, Any]]:
            return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

        return lines(alerts_path), lines(cards_path)


def check(fleet: Fleet, seed: int = 1) -> list[dict[str, Any]]:
    """Stream on 1 and 2 workers and the backfill give the reference's scorecards; the
    stream's scorecards (1 worker) for further checks."""
    alerts, cards = stream(fleet, seed, workers=1)
    expected = reference_scorecards(fleet.readings, fleet.assignments, alerts, fleet.timezone)
    assert_same_scorecards(cards, expected)
    alerts_2, cards_2 = stream(fleet, seed + 1, workers=2)
    assert {a["alert_id"] for a in alerts_2} == {a["alert_id"] for a in alerts}
    assert_same_scorecards(cards_2, expected)
    filled_alerts, filled = backfill(fleet)
    assert {a["alert_id"] for a in filled_alerts} == {a["alert_id"] for a in alerts}
    assert_same_scorecards(filled, expected)
    return cards


def on(cards: list[dict[str, Any]], driver: str | None, day: str) -> dict[str, Any]:
    [card] = [c for c in cards if c["driver_id"] == driver and c["day"] == day]
    return card


def reading(
    event_id: str, ts: int, speed: float, pos: tuple[float, float] | None, truck: str = "T1"
) -> Reading:
    lat, lon = pos if pos is not None else (None, None)
    return Reading(event_id, truck, ts, speed, lat, lon)


A, B, C = (60.1700, 24.9400), (60.1710, 24.9400), (60.1720, 24.9400)  # ~111 m apart


def test_a_pair_across_local_midnight_belongs_to_its_second_readings_day() -> None:
    readings = [
        reading("a", local("2026-10-24 23:59:30"), 40, A),
        reading("b", local("2026-10-25 00:00:10"), 40, B),  # pair a-b: 40 s, 25 Oct
        reading("c", local("2026-10-25 00:01:10"), 40, C),  # b-c: exactly 60 s, a pair
        reading("d", local("2026-10-25 00:02:10.001"), 40, A),  # c-d: 60.001 s, no pair
    ]
    cards = check(Fleet(readings, [("T1", "D1", 0, None)]))
    assert on(cards, "D1", "2026-10-24")["distance_km"] == 0.0
    assert on(cards, "D1", "2026-10-24")["events_per_1000km"] is None
    late = on(cards, "D1", "2026-10-25")
    assert (late["readings"], late["driving_s"]) == (3, 100.0)
    assert late["distance_km"] == pytest.approx(0.2223, abs=1e-3)


def test_the_day_the_clocks_go_back_has_25_hours_and_the_day_they_go_forward_23() -> None:
    # 25 Oct 2026: 04:00 EEST becomes 03:00 EET. 29 Mar 2026: 03:00 EET becomes 04:00 EEST.
    fall = [
        reading("f0", local("2026-10-25 00:00:00"), 10, A),
        reading("f1", local("2026-10-25 23:59:59"), 10, A),  # 25 h after midnight - 1 s
        reading("f2", local("2026-10-26 00:00:00"), 10, A),
    ]
    spring = [
        reading("s0", local("2026-03-29 00:00:00"), 10, A, "T2"),
        reading("s1", local("2026-03-29 23:59:59.999"), 10, A, "T2"),
        reading("s2", local("2026-03-30 00:00:00"), 10, A, "T2"),
    ]
    assert local("2026-10-26 00:00:00") - local("2026-10-25 00:00:00") == 25 * 3_600_000
    assert local("2026-03-30 00:00:00") - local("2026-03-29 00:00:00") == 23 * 3_600_000
    cards = check(Fleet(fall + spring, [("T1", "D1", 0, None), ("T2", "D2", 0, None)]))
    assert on(cards, "D1", "2026-10-25")["readings"] == 2
    assert on(cards, "D1", "2026-10-26")["readings"] == 1
    assert on(cards, "D2", "2026-03-29")["readings"] == 2
    assert on(cards, "D2", "2026-03-30")["readings"] == 1


def test_a_driver_change_mid_day_splits_the_day_and_the_pair_goes_with_its_second_reading() -> None:
    change = local("2026-10-25 12:00:00")
    readings = [
        reading("a", change - 20_000, 95, A),
        reading("b", change - 10_000, 95, B),  # D1: a-b, 10 s over 90
        reading("c", change, 95, C),  # D2 from here: b-c is D2's, whole
        reading("d", change + 10_000, 3, C),  # c-d driving (c over 5), not over 90
    ]
    assignments = [("T1", "D1", 0, change), ("T1", "D2", change, None)]
    cards = check(Fleet(readings, assignments))
    d1, d2 = on(cards, "D1", "2026-10-25"), on(cards, "D2", "2026-10-25")
    assert (d1["readings"], d1["over_threshold_s"], d1["driving_s"]) == (2, 10.0, 10.0)
    assert (d2["readings"], d2["over_threshold_s"], d2["driving_s"]) == (2, 10.0, 20.0)
    assert d2["max_speed_kmh"] == 95


def test_a_reading_without_position_breaks_the_chain_and_ties_make_a_pair_of_0_s() -> None:
    t = local("2026-10-25 08:00:00")
    readings = [
        reading("a", t, 50, A),
        reading("b", t + 5_000, 50, None),  # no position: no pair a-b, none b-c
        reading("c", t + 10_000, 50, B),
        reading("d", t + 10_000, 50, C),  # the same ts as c: a pair of 0 s (c-d by event_id)
        reading("e", t + 20_000, 50, B),  # d-e 10 s
    ]
    cards = check(Fleet(readings, []))  # no assignments: driver_id null
    card = on(cards, None, "2026-10-25")
    assert (card["readings"], card["driving_s"]) == (5, 10.0)
    assert card["distance_km"] == pytest.approx(0.2223, abs=1e-3)


def test_alerts_count_for_the_driver_and_day_of_their_window_end() -> None:
    t = local("2026-10-25 23:59:00")
    readings = [reading(f"r{i}", t + i * 10_000, 140, A) for i in range(8)]  # across midnight
    cards = check(Fleet(readings, [("T1", "D1", 0, None)]))
    day1, day2 = on(cards, "D1", "2026-10-25"), on(cards, "D1", "2026-10-26")
    total = {**day1["alerts"]}
    for rule, count in day2["alerts"].items():
        total[rule] = total.get(rule, 0) + count
    assert total["instant_overspeed"] >= 1
    assert day1["safety_score"] < 100.0


def random_fleet(rng: random.Random) -> Fleet:
    """A few trucks over two local days around the autumn DST change, drivers switching."""
    start = local("2026-10-24 22:00:00")
    readings: list[Reading] = []
    assignments: list[AssignmentRow] = []
    for truck in ["T1", "T2", "T3"][: rng.randint(1, 3)]:
        ts = start + rng.randint(0, 3_600_000)
        lat, lon = 60.17 + rng.uniform(-0.01, 0.01), 24.94 + rng.uniform(-0.01, 0.01)
        for n in range(rng.randint(5, 60)):
            ts += rng.choice([0, 1_000, 30_000, 60_000, 60_001, 600_000, 3_600_000])
            lat += rng.uniform(-0.001, 0.001)
            lon += rng.uniform(-0.001, 0.001)
            pos = None if rng.random() < 0.1 else (lat, lon)
            speed = rng.choice([0.0, 4.0, 5.0, 5.001, 60.0, 90.0, 90.001, 135.0])
            readings.append(reading(f"e{n:03d}", ts, speed, pos, truck))
        for _ in range(rng.randint(0, 3)):
            begins = start + rng.randint(-3_600_000, 30 * 3_600_000)
            ends = None if rng.random() < 0.3 else begins + rng.randint(1, 20 * 3_600_000)
            assignments.append((truck, rng.choice(["D1", "D2", "D3"]), begins, ends))
    return Fleet(readings, assignments)


@pytest.mark.parametrize("seed", range(8))
def test_random_fleets_give_the_references_scorecards(seed: int) -> None:
    check(random_fleet(random.Random(seed)), seed)


def test_kill_and_resume_gives_the_same_scorecards(tmp_path: Path) -> None:
    """Aborted twice mid-stream and resumed from the snapshots each time: the scorecards of
    an uninterrupted run (the day tallies and each truck's last reading are in the
    snapshot). Days close at the end of input here, so each comes out once."""
    fleet = random_fleet(random.Random(99))
    while len(fleet.readings) < 60:
        fleet = random_fleet(random.Random(len(fleet.readings) + 100))
    items: list[object] = list(arrivals(fleet.readings, 5))
    cuts = (len(items) // 3, 2 * len(items) // 3)
    for cut in reversed(cuts):
        items.insert(cut, TestingSource.ABORT())
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    source = TestingSource(items)
    out: list[OutboundRecord] = []
    for _ in range(3):  # aborted, aborted, then to the end
        run_main(
            alerts_flow_of(fleet, source, out),
            epoch_interval=timedelta(0),
            recovery_config=recovery,
        )
    alerts = documents(out, TOPICS.alerts)
    expected = reference_scorecards(fleet.readings, fleet.assignments, alerts, fleet.timezone)
    assert_same_scorecards(documents(out, TOPICS.scorecards), expected)


@given(
    st.lists(
        st.floats(min_value=-1e300, max_value=1e300, allow_nan=False)
        | st.floats(min_value=0, max_value=1e-300),
        max_size=80,
    )
)
def test_exact_partials_hold_the_exact_sum(values: list[float]) -> None:
    """A tally's distance is the pairs' exact sum, whatever the grouping: the partials made
    in one go (``_exact_partials``) sum to the values exactly, are non-overlapping and
    smallest first, and ``_exact_add`` of the same values one by one rounds the same."""
    partials = _exact_partials(values)
    assert sum(map(Fraction, partials), Fraction(0)) == sum(map(Fraction, values), Fraction(0))
    assert all(abs(a) < abs(b) for a, b in itertools.pairwise(partials))
    assert 0.0 not in partials
    one_by_one: list[float] = []
    for value in values:
        _exact_add(one_by_one, value)
    assert math.fsum(partials) == math.fsum(one_by_one) == math.fsum(values)
