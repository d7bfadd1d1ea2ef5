"""Drill: the wall clock steps forward an hour, then back an hour, under the alerts flow
(issue 15). The steps are injected through the flow's ``now`` getter, the only place it
reads the wall clock for its results; quiet trucks are timed on the input clock (monotonic,
connectors/liveness.py) and Bytewax schedules on its own clock. Readings are fed in real
time, 20 trucks at 1 Hz, disordered within the lateness; some trucks go quiet right before
each step with an over-speed pending, which only the quiet-truck flush can release.

Checked: no reading late (all disorder is within the lateness), the alerts are exactly the
sorted reference's, each quiet truck's alert comes after ALLOWED_LATENESS of real time, not
before (a forward step must not flush early) and not much after (a backward step must not
hold it back), and ``detected_at`` follows the stepped clock (it is processing time)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from connectors.kafka import OutboundRecord
from connectors.kafka_source import Fetch
from connectors.liveness import InputClock
from dataflows.alerts import build_flow
from domain.readings import Reading, encode_canonical
from domain.rules import RuleConfig
from domain.timestamps import parse_rfc3339_ms, to_epoch_ms
from runtime.settings import Topics
from tests.integration.reports import report
from tests.reference import reference_alerts

pytestmark = pytest.mark.integration

LATENESS_S = 4.0
STEP = timedelta(hours=1)
FORWARD_AT_S, BACK_AT_S, END_S = 6.0, 14.0, 24.0
QUIET_TRUCKS = {"Q1": FORWARD_AT_S - 0.5, "Q2": BACK_AT_S - 0.5}  # last reading, then silence
CONFIG = RuleConfig(allowed_lateness_ms=int(LATENESS_S * 1000), cooldown_ms=0)
TOPICS = Topics(telemetry="telemetry", alerts="alerts", dlq="dlq", late="late")


@dataclass
class SteppingClock:
    """The wall clock, stepped by ``offset`` at the given moments (monotonic, from start)."""

    started: float = field(default_factory=time.monotonic)
    steps: list[tuple[float, timedelta]] = field(default_factory=list)

    def __call__(self) -> datetime:
        elapsed = time.monotonic() - self.started
        offset = sum((o for at, o in self.steps if elapsed >= at), timedelta())
        return datetime.now(UTC) + offset


@dataclass(frozen=True)
class Feed:
    at_s: float  # when to hand it to the flow, from start
    reading: Reading


def feeds(start_ms: int, seed: int = 5) -> list[Feed]:
    rng = random.Random(seed)
    out: list[Feed] = []
    for second in range(int(END_S) - 2):
        for t in range(20):
            truck = f"T{t:02d}"
            speed = rng.choice([60.0, 95.0, 100.0, 140.0])
            r = Reading(f"{truck}-{second}", truck, start_ms + second * 1000, speed)
            out.append(Feed(second + rng.uniform(0, LATENESS_S - 1.5), r))  # disorder
    for truck, last_s in QUIET_TRUCKS.items():
        for second in range(int(last_s)):
            r = Reading(f"{truck}-{second}", truck, start_ms + second * 1000, 60.0)
            out.append(Feed(second, r))
        over = Reading(f"{truck}-last", truck, start_ms + int(last_s * 1000), 150.0)
        out.append(Feed(last_s, over))
    return sorted(out, key=lambda f: f.at_s)


class PacedSource(DynamicSource[Fetch]):
    def __init__(self, items: list[Feed], started: float) -> None:
        self._items, self._started = items, started

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Paced:
        return _Paced(self._items, self._started)


class _Paced(StatelessSourcePartition[Fetch]):
    def __init__(self, items: list[Feed], started: float) -> None:
        self._items, self._started, self._next = items, started, 0

    def next_batch(self) -> list[Fetch]:
        elapsed = time.monotonic() - self._started
        if elapsed >= END_S:
            raise StopIteration
        due = []
        while self._next < len(self._items) and self._items[self._next].at_s <= elapsed:
            due.append(self._items[self._next].reading)
            self._next += 1
        if not due:
            time.sleep(0.02)
            return []
        values = [encode_canonical(r) for r in due]
        return [Fetch(0, 0, 0, values, [r.ts_ms for r in due])]


class TimedSink(DynamicSink[OutboundRecord]):
    """Keeps each record with the moment (monotonic, from start) it was written."""

    def __init__(self, started: float) -> None:
        self.started, self.records = started, list[tuple[float, OutboundRecord]]()
        self._lock = threading.Lock()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Timed:
        return _Timed(self)


class _Timed(StatelessSinkPartition[OutboundRecord]):
    def __init__(self, sink: TimedSink) -> None:
        self._sink = sink

    def write_batch(self, items: list[OutboundRecord]) -> None:
        at = time.monotonic() - self._sink.started
        with self._sink._lock:
            self._sink.records.extend((at, item) for item in items)


def test_wall_clock_steps_forward_and_back(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    clock = SteppingClock(started, [(FORWARD_AT_S, STEP), (BACK_AT_S, -STEP)])
    items = feeds(to_epoch_ms(datetime.now(UTC)))
    quiet: Callable[[], datetime] = InputClock(lambda: True, clock).start().now
    sink = TimedSink(started)
    flow = build_flow(PacedSource(items, started), sink, TOPICS, CONFIG, clock, quiet_clock=quiet)
    run_main(flow)

    records = [(at, r) for at, r in sink.records]
    assert [r for _, r in records if r.topic == TOPICS.late] == [], "no reading late"
    alerts = [(at, json.loads(r.value)) for at, r in records if r.topic == TOPICS.alerts]
    keys = {(a["rule"], a["truck_id"], tuple(a["event_ids"])) for _, a in alerts}
    assert keys == reference_alerts([f.reading for f in items], CONFIG)

    delays = {}
    for truck, last_s in QUIET_TRUCKS.items():
        [(at, _alert)] = [(at, a) for at, a in alerts if a["truck_id"] == truck]
        delays[truck] = round(at - last_s, 2)
        assert LATENESS_S - 0.3 <= at - last_s <= LATENESS_S + 2.5, (truck, at - last_s)
    # detected_at is processing time: it follows the stepped clock.
    during = [a for at, a in alerts if FORWARD_AT_S + 0.5 < at < BACK_AT_S - 0.5]
    real_now = to_epoch_ms(datetime.now(UTC))
    assert during, "alerts while the clock was an hour ahead"
    assert all(parse_rfc3339_ms(a["detected_at"]) > real_now + 3_000_000 for a in during)
    report(
        "drill_clock_steps",
        {
            "steps": "+1h at 6 s, -1h at 14 s",
            "readings": len(items),
            "alerts": len(alerts),
            "late": 0,
            "quiet_flush_delay_s": delays,
            "lateness_s": LATENESS_S,
        },
        capsys,
    )
