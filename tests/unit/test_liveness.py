"""Input liveness and the input clock (connectors/liveness.py), with a driven monotonic
clock; and the quiet-truck flush measured on that clock (dataflows/speeding.py)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import structlog.testing
from bytewax.testing import TimeTestingGetter

from connectors.heartbeat import heartbeat_status
from connectors.liveness import (
    STALE_S,
    InputClock,
    InputLiveness,
    PartitionReading,
    caught_up,
    read_statistics,
)
from dataflows.speeding import Arrivals, SpeedingRulesStep
from domain.rules import RuleConfig
from tests.builders import BEGINNING, reading, seconds


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def statistics(
    *, state: str = "UP", rxidle_us: int = 10_000, high: int = 100, low: int = 0, leader: int = 1
) -> dict[str, Any]:
    return {
        "brokers": {
            "b:9092/1": {"nodeid": 1, "state": state, "rxidle": rxidle_us},
            "GroupCoordinator": {"nodeid": -1, "state": "UP", "rxidle": 5},
        },
        "topics": {
            "t": {"partitions": {"0": {"leader": leader, "hi_offset": high, "lo_offset": low}}}
        },
    }


@pytest.mark.parametrize(
    ("document", "reachable"),
    [
        (statistics(), True),
        (statistics(state="DOWN"), False),
        (statistics(state="CONNECT"), False),
        (statistics(rxidle_us=2_000_000), True),
        (statistics(rxidle_us=2_000_001), False),  # a blackholed connection stays UP
        (statistics(rxidle_us=-1), False),  # never received
        (statistics(leader=7), False),  # the leader is not a broker it knows
        ({"brokers": {}, "topics": {}}, False),
    ],
)
def test_reachable_from_statistics(document: dict[str, Any], reachable: bool) -> None:
    assert read_statistics(document, "t", 0, 100).reachable is reachable


def test_before_the_first_read_the_position_is_the_low_watermark() -> None:
    assert read_statistics(statistics(high=5, low=5), "t", 0, -2).position == 5
    assert read_statistics(statistics(high=9, low=5), "t", 0, -2).position == 5


@pytest.mark.parametrize(
    ("high", "position", "previous_high", "interval_s", "expected"),
    [
        (100, 100, -1, 0.0, True),  # at the end
        (100, 200, 90, 1.0, True),  # beyond (the watermark of an older fetch)
        (100, 95, 90, 1.0, True),  # 5 behind, 10 arrive per second: within 2 s
        (100, 80, 90, 1.0, True),  # 20 behind: exactly 2 s of arrivals
        (100, 79, 90, 1.0, False),  # 21 behind: more than 2 s
        (100, 50, 100, 1.0, False),  # behind, and nothing arrives: a backlog, not pace
        (100, 50, -1, 0.0, False),  # behind, no rate known yet
        (-1, 0, -1, 0.0, False),  # no watermark known
    ],
)
def test_caught_up_means_within_two_seconds_of_arrivals(
    high: int, position: int, previous_high: int, interval_s: float, expected: bool
) -> None:
    assert caught_up(PartitionReading(True, high, position), previous_high, interval_s) is expected


def test_an_unreachable_partition_is_never_caught_up() -> None:
    assert not caught_up(PartitionReading(False, 100, 100), 100, 1.0)


def test_the_input_is_live_only_while_every_partition_and_bridge_is() -> None:
    clock = Monotonic()
    liveness = InputLiveness(monotonic=clock, forget_s=60)
    assert liveness.live(), "nothing read, no bridge: nothing to wait for"
    liveness.register("t", 0)
    assert not liveness.live(), "a partition with no statistics yet"
    liveness.report_statistics("t", 0, json.dumps(statistics()), 100)
    assert liveness.live()
    clock.now += STALE_S + 0.1
    assert not liveness.live(), "statistics stopped coming"
    liveness.report_statistics("t", 0, json.dumps(statistics(state="DOWN")), 100)
    assert not liveness.live()
    liveness.report_statistics("t", 0, json.dumps(statistics()), 100)
    assert liveness.live()
    liveness.report_bridge("b-0", {"mqtt_connected": True, "oldest_unconfirmed_s": 0.1})
    assert liveness.live()
    liveness.report_bridge("b-1", {"mqtt_connected": False})
    assert not liveness.live(), "a bridge cut off from MQTT"
    liveness.report_bridge("b-1", {"mqtt_connected": True, "oldest_unconfirmed_s": 2.5})
    assert not liveness.live(), "a bridge whose readings wait for Kafka"
    liveness.report_bridge("b-1", {"mqtt_connected": True, "leaving": True})
    assert liveness.live(), "a retired bridge is not waited for"
    clock.now += 1.0
    liveness.report_statistics("t", 0, json.dumps(statistics()), 100)
    clock.now += STALE_S  # b-0 silent since
    liveness.report_statistics("t", 0, json.dumps(statistics()), 100)
    assert not liveness.live(), "a bridge that went silent"
    clock.now += 60
    liveness.report_statistics("t", 0, json.dumps(statistics()), 100)
    assert liveness.live(), "silent for forget_s: assumed gone"


def test_an_old_heartbeat_read_back_at_start_counts_by_its_age() -> None:
    clock = Monotonic()
    liveness = InputLiveness(monotonic=clock)
    liveness.report_bridge("b-0", {"mqtt_connected": True}, age_s=30.0)
    assert not liveness.live(), "known, but silent for 30 s: waited for"


def test_the_input_clock_stands_still_while_the_input_does_not_flow() -> None:
    clock = Monotonic()
    live = [True]
    input_clock = InputClock(lambda: live[0], lambda: BEGINNING, monotonic=clock)
    clock.now += 3
    input_clock.tick()
    assert input_clock.now() == BEGINNING + seconds(3)
    live[0] = False
    clock.now += 60
    input_clock.tick()
    assert input_clock.now() == BEGINNING + seconds(3)
    live[0] = True
    clock.now += 2
    input_clock.tick()
    assert input_clock.now() == BEGINNING + seconds(5)


def test_a_bridge_status_measures_the_stall_from_its_last_progress() -> None:
    assert heartbeat_status(True, 10, 10, since=0.0, now=100.0).oldest_unconfirmed_s == 0.0
    status = heartbeat_status(True, 12, 10, since=97.5, now=100.0)
    assert (status.unconfirmed, status.oldest_unconfirmed_s) == (2, 2.5)


def test_a_truck_is_not_flushed_while_its_input_clock_stands_still() -> None:
    wall, quiet = TimeTestingGetter(BEGINNING), TimeTestingGetter(BEGINNING)
    config = RuleConfig(allowed_lateness_ms=10_000)
    logic = SpeedingRulesStep(config, wall.get, quiet_clock=quiet.get).build(None)
    pending = [reading(at=BEGINNING + seconds(s), speed=140) for s in (0, 1)]
    logic.on_batch([Arrivals(pending, [b"", b""])])
    wall.advance(timedelta(hours=1))  # an hour of outage: the wall clock runs, the input's not
    quiet.advance(seconds(3))
    assert logic.notify_at() == wall.get() + seconds(7), "due once 7 s more of input time pass"
    outcomes, _ = logic.on_notify()
    assert outcomes == [], "nothing flushed during the outage"
    quiet.advance(seconds(7))
    outcomes, _ = logic.on_notify()
    assert len(outcomes) == 1, "flushed once the input was quiet for the lateness"


def test_a_stall_is_logged_once_when_it_starts_and_once_when_it_ends() -> None:
    clock = Monotonic()
    liveness = InputLiveness(monotonic=clock)
    liveness.register("t", 0)
    with structlog.testing.capture_logs() as logs:
        liveness.report_statistics("t", 0, json.dumps(statistics()), 100)
        liveness.live()
        liveness.report_statistics("t", 0, json.dumps(statistics(state="DOWN")), 100)
        liveness.live()
        liveness.live()
        liveness.report_statistics("t", 0, json.dumps(statistics()), 100)
        liveness.live()
    events = [(e["event"], e["log_level"]) for e in logs if e["log_level"] != "debug"]
    assert events == [("input_stalled", "warning"), ("input_flowing", "info")]
    assert next(e for e in logs if e["event"] == "input_stalled")["partitions"] == ["t[0]"]
