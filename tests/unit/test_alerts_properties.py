"""Property and recovery tests of dataflows.alerts against the plain reference.

Random fleets with resends and disorder within ALLOWED_LATENESS, run through the real flow
on one and on two workers, give exactly the alerts of the same readings sorted; so does a
run aborted mid-stream and resumed from its recovery snapshots (repeats allowed)."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, TimeTestingGetter, cluster_main, run_main
from hypothesis import given
from hypothesis import strategies as st

from connectors.kafka import OutboundRecord
from dataflows.alerts import build_flow
from domain.readings import Reading
from domain.rules import RuleConfig
from domain.timestamps import from_epoch_ms
from tests.builders import BEGINNING_MS
from tests.reference import reference_alerts
from tests.unit.test_alerts_flow import CONFIG, TOPICS, alert_keys, message, on

SPEEDS = [60.0, 85.0, 90.0, 90.5, 95.0, 110.0, 130.0, 130.5, 145.0]


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[Reading], list[Reading]]:
    """(readings, arrival order with resends) with disorder within the allowed lateness."""
    seed = draw(st.integers(0, 2**32 - 1))
    trucks = draw(st.integers(1, 4))
    per_truck = draw(st.integers(1, 60))
    rng = random.Random(seed)
    lateness = CONFIG.allowed_lateness_ms
    readings: list[Reading] = []
    arrivals: list[tuple[int, int, Reading]] = []
    for t in range(trucks):
        ts = BEGINNING_MS
        for n in range(per_truck):
            ts += rng.choice([0, 1, 500, 3_000, 40_000, 150_000, 599_999, 600_000, 600_001])
            r = Reading(f"e{n:03d}{rng.choice('ab')}", f"T{t}", ts, rng.choice(SPEEDS))
            readings.append(r)
            # Delaying each reading by at most the lateness keeps every arrival within the
            # lateness of the newest reading that arrived before it.
            arrival = ts + rng.randint(0, lateness)
            arrivals.append((arrival, len(arrivals), r))
            if rng.random() < 0.15:  # a resend, possibly so late that it goes to the late topic
                arrivals.append((arrival + rng.randint(0, 3 * lateness), len(arrivals), r))
    return readings, [r for _, _, r in sorted(arrivals)]


def run_workers(arrivals: list[Reading], workers: int) -> list[OutboundRecord]:
    out: list[OutboundRecord] = []
    flow = build_flow(
        TestingSource([message(r) for r in arrivals]), TestingSink(out), TOPICS, CONFIG
    )
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return out


@given(fleets())
def test_one_worker_gives_the_sorted_reference(fleet: tuple[list[Reading], list[Reading]]) -> None:
    readings, arrivals = fleet
    assert alert_keys(run_workers(arrivals, 1)) == reference_alerts(readings, CONFIG)


@given(fleets())
def test_two_workers_give_the_sorted_reference(fleet: tuple[list[Reading], list[Reading]]) -> None:
    readings, arrivals = fleet
    records = run_workers(arrivals, 2)
    assert alert_keys(records) == reference_alerts(readings, CONFIG)
    assert len(on(records, "alerts")) == len(alert_keys(records)), (
        "no alert twice without a restart"
    )


def test_reference_agrees_on_a_known_case() -> None:
    """The reference itself can fail: five violations within 600 s is one alert."""
    readings = [Reading(f"e{i}", "T1", BEGINNING_MS + i * 150_000, 95.0) for i in range(5)]
    assert reference_alerts(readings, RuleConfig()) == {
        ("sustained_speeding", "T1", ("e0", "e1", "e2", "e3", "e4"))
    }
    assert reference_alerts(readings[:4], RuleConfig()) == set()


def test_abort_and_resume_from_recovery_gives_the_same_alerts(tmp_path: Path) -> None:
    rng = random.Random(5)
    readings = [
        Reading(f"e{n:04d}", f"T{n % 7}", BEGINNING_MS + n * 2_000, rng.choice(SPEEDS))
        for n in range(3_000)
    ]
    items: list[object] = [message(r) for r in readings]
    for cut in (700, 1_500, 2_300):  # abort three times; each resume starts from a snapshot
        items.insert(cut, TestingSource.ABORT())
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    source = TestingSource(items)
    out: list[OutboundRecord] = []
    clock = TimeTestingGetter(from_epoch_ms(BEGINNING_MS))
    seen_after_each_run = []
    for _ in range(4):  # three aborted executions, then one that reaches the end
        flow = build_flow(source, TestingSink(out), TOPICS, CONFIG, clock.get)
        run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
        seen_after_each_run.append(len(alert_keys(out)))
    expected = reference_alerts(readings, CONFIG)
    assert seen_after_each_run[0] < seen_after_each_run[2] < len(expected), (
        "the runs were cut short"
    )
    assert alert_keys(out) == expected
    assert alert_keys(out), "the data does produce alerts"
