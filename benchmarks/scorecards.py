"""What driver scorecards cost the alerts flow (issue 19): dataflows.alerts with the built-in
rules, without and with scorecards (``FLEET_SCORECARDS_OUT=kafka``), side by side on
pre-filled topics.

``python -m benchmarks.scorecards [--readings N] [--trucks N] [--rounds N] [--quick] [--out DIR]``

* The fleet: benchmarks/catalogue.py's (``fleet_readings``: ``--trucks`` trucks, default
  2,000, one reading every ~10 s each, speeds as benchmarks/alerts.py, positions on the
  roads of the Helsinki extract), moved in time so that the middle of the run is 22:00 UTC
  on 2026-11-24: local midnight in Helsinki and a shift change of the driver history, so
  each truck's readings go to two local days and, for most trucks, two drivers.
* The driver history: devtools/history_generator.py's for the same trucks (three 8-hour
  shifts a day, 06:00, 14:00 and 22:00 UTC; every 10th truck has no driver). Both
  contenders use it, and ``FLEET_TIMEZONE=Europe/Helsinki``.
* Contenders, each 1 process, ``FLEET_KAFKA_TAIL=false``, timed as whole processes
  (start-up included): the alerts flow as it runs without scorecards, and the same with
  ``FLEET_SCORECARDS_OUT=kafka``, where the rules' step also tallies each released reading
  (its driver, local day and the distance from the truck's previous reading) and a keyed
  step adds up the (driver, day) tallies. The bounded run closes every day at its end, so
  the scorecards all go out then.
* Two topics: all ``--readings`` (default 2,000,000) and their first fifth (the head).
  A run's time includes a fixed part (start-up, the first fetch, the end), 2-3 s here, which
  flatters the slower contender's whole-process rate; the marginal rate, the readings
  beyond the head over the time they added (best over all minus best over the head), is
  the steady rate of draining a backlog.
* Each round runs the head, then all, each contender in turn; ``--rounds`` rounds
  (default 3), and each contender's best run of each size counts. Every run of a size must
  give the same alerts (by rule); every run with scorecards must give scorecards, the same
  ones each round (their records, byte for byte), and their readings must add up to the
  topic's: each reading counted once. Other load (``pgrep -f pytest``, the load average) is
  recorded before and after.

The ratios, the flow with scorecards over the flow without, whole-process and marginal
(issue 19's aim: scorecards cost at most a third of the throughput, a ratio of 0.67 or
more).

``--quick``: 200,000 readings and 1 round, to check that it runs (its marginal rate is
noise). Writes ``DIR/scorecards.json`` and ``DIR/scorecards.md`` (benchmarks.report's
table).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks import report
from benchmarks.alerts import PARTITIONS, START_MS, timed
from benchmarks.catalogue import (
    INTERVAL_MS,
    Contender,
    alerts_by_rule_on_topic,
    fleet_readings,
    other_load,
    prefill,
)
from devtools.history_generator import HistoryShape
from devtools.history_generator import write as write_history
from devtools.launcher import FlowProcess
from devtools.localbrokers import local_brokers
from domain.readings import Rejection
from domain.scorecards import decode_scorecard
from domain.timestamps import format_rfc3339_ms

ROOT = Path(__file__).resolve().parents[1]
TIMEZONE = "Europe/Helsinki"
# Local midnight in Helsinki (UTC+2 in November) and the history's 22:00 shift change.
MIDDLE_MS = round(datetime(2026, 11, 24, 22, tzinfo=UTC).timestamp() * 1000)
WITHOUT, WITH = "alerts flow, built-in", "alerts flow, built-in + scorecards"


@dataclass(frozen=True)
class Scorecards:
    """What one run wrote to its scorecards topic."""

    count: int
    digest: str  # sha256 of the sorted records: the same content, whatever the order
    readings: int
    drivers: int  # distinct, a null driver counted as one
    days: dict[str, int]
    distance_km: float

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sha256": self.digest,
            "readings": self.readings,
            "drivers": self.drivers,
            "by_day": self.days,
            "distance_km": round(self.distance_km, 3),
        }


def scorecards_on_topic(bootstrap: str, topic: str) -> Scorecards:
    """Every scorecard on ``topic`` (read to its end); a record that does not decode fails."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    partitions = metadata.topics[topic].partitions
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "count", "enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    values: list[bytes] = []
    done = set[int]()
    while len(done) < len(partitions):
        for message in consumer.consume(10_000, 1.0):
            error = message.error()
            partition = message.partition()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                    done.add(partition)
                continue
            values.append(message.value() or b"")
    consumer.close()
    values.sort()
    cards = []
    for value in values:
        card = decode_scorecard(value)
        if isinstance(card, Rejection):
            raise RuntimeError(f"not a scorecard on {topic}: {card}: {value[:200]!r}")
        cards.append(card)
    return Scorecards(
        count=len(cards),
        digest=hashlib.sha256(b"\n".join(values)).hexdigest(),
        readings=sum(card.readings for card in cards),
        drivers=len({card.driver_id for card in cards}),
        days=dict(sorted(Counter(card.day for card in cards).items())),
        distance_km=sum(card.distance_km for card in cards),
    )


def _best(
    runs: list[dict[str, Any]], head_runs: list[dict[str, Any]], sizes: Sizes
) -> dict[str, Any]:
    """A contender's best run over all the readings and over the head, and the marginal
    rate between them: the readings beyond the head over the time they added."""
    seconds = min(run["seconds"] for run in runs)
    head_seconds = min(run["seconds"] for run in head_runs)
    if seconds <= head_seconds:
        raise RuntimeError(f"all the readings took no longer than the head: {runs} {head_runs}")
    alerts = runs[0]["alerts_by_rule"]
    return {
        "seconds": round(seconds, 2),
        "runs_s": [round(run["seconds"], 2) for run in runs],
        "per_s": round(sizes.all / seconds),
        "head_seconds": round(head_seconds, 2),
        "head_runs_s": [round(run["seconds"], 2) for run in head_runs],
        "marginal_per_s": round((sizes.all - sizes.head) / (seconds - head_seconds)),
        "alerts": sum(alerts.values()),
        "alerts_by_rule": dict(sorted(alerts.items())),
    }


@dataclass(frozen=True)
class Sizes:
    head: int
    all: int

    def items(self) -> list[tuple[str, int]]:
        return [("head", self.head), ("all", self.all)]


def _agreed(runs: list[dict[str, Any]], cards: list[Scorecards], readings: int) -> Scorecards:
    """Every run gave the same alerts; every run with scorecards the same scorecards, which
    count each reading once."""
    every = [run["alerts_by_rule"] for run in runs]
    if any(alerts != every[0] for alerts in every):
        raise RuntimeError(f"runs disagree on the alerts: {every}")
    if any(c != cards[0] for c in cards):
        raise RuntimeError(f"rounds disagree on the scorecards: {cards}")
    if cards[0].count == 0:
        raise RuntimeError("the flow with scorecards gave none")
    if cards[0].readings != readings:
        raise RuntimeError(f"the scorecards count {cards[0].readings} readings of {readings}")
    return cards[0]


def stream(
    tmp: Path, frame: pl.DataFrame, history: Path, rounds: int
) -> tuple[dict[str, Any], Scorecards]:
    sizes = Sizes(head=frame.height // 5, all=frame.height)
    topics = {"head": "bench.telemetry.head", "all": "bench.telemetry"}
    with local_brokers(tmp / "brokers") as brokers:
        bootstrap = brokers.kafka_brokers
        for size, readings in sizes.items():
            seconds = prefill(bootstrap, topics[size], frame[:readings])
            print(f"prefilled {readings} readings ({size}) in {seconds:.1f}s", flush=True)
        base = {
            "FLEET_KAFKA_BROKERS": bootstrap,
            "FLEET_KAFKA_TAIL": "false",
            "FLEET_TOPIC_PARTITIONS": str(PARTITIONS),
            "FLEET_HISTORY_DIR": str(history),
            "FLEET_TIMEZONE": TIMEZONE,
        }
        contenders = [
            Contender(WITHOUT, "dataflows.alerts", base),
            Contender(WITH, "dataflows.alerts", {**base, "FLEET_SCORECARDS_OUT": "kafka"}),
        ]
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {
            (c.label, size): [] for c in contenders for size, _ in sizes.items()
        }
        cards: dict[str, list[Scorecards]] = {size: [] for size, _ in sizes.items()}
        for round_ in range(rounds):
            for size, readings in sizes.items():
                for index, contender in enumerate(contenders):
                    name = f"{round_}.{size}.{index}"
                    run_env = {
                        **contender.env,
                        "FLEET_TOPIC_TELEMETRY": topics[size],
                        "FLEET_TOPIC_ALERTS": f"bench.alerts.{name}",
                        "FLEET_TOPIC_LATE": f"bench.late.{name}",
                        "FLEET_TOPIC_DLQ": f"bench.dlq.{name}",
                        "FLEET_TOPIC_SCORECARDS": f"bench.scorecards.{name}",
                    }
                    log = tmp / f"stream-{name}.log"
                    seconds = timed([FlowProcess(contender.module, run_env, log)])
                    alerts = alerts_by_rule_on_topic(bootstrap, f"bench.alerts.{name}")
                    found = {"seconds": seconds, "alerts_by_rule": alerts}
                    runs[contender.label, size].append(found)
                    line = (
                        f"stream {size:4s} {contender.label:36s} {seconds:6.2f}s "
                        f"{readings / seconds:8.0f}/s {sum(alerts.values())} alerts"
                    )
                    if contender.label == WITH:
                        written = scorecards_on_topic(bootstrap, f"bench.scorecards.{name}")
                        cards[size].append(written)
                        line += f", {written.count} scorecards"
                    print(line, flush=True)
    agreed = {
        size: _agreed(
            [run for c in contenders for run in runs[c.label, size]], cards[size], readings
        )
        for size, readings in sizes.items()
    }
    results = {
        c.label: _best(runs[c.label, "all"], runs[c.label, "head"], sizes) for c in contenders
    }
    return results, agreed["all"]


def run(readings: int, trucks: int, rounds: int) -> dict[str, Any]:
    started = time.monotonic()
    frame = fleet_readings(readings, trucks)
    # The middle of the run at MIDDLE_MS (each step is one reading of every truck).
    shift = MIDDLE_MS - (START_MS + frame.height // trucks // 2 * INTERVAL_MS)
    frame = frame.with_columns(pl.col("ts_ms") + shift)
    print(f"fleet of {frame.height} readings in {time.monotonic() - started:.1f}s", flush=True)
    results: dict[str, Any] = {
        "readings": readings,
        "head": readings // 5,
        "trucks": trucks,
        "rounds": rounds,
        "timezone": TIMEZONE,
        "first_ts": format_rfc3339_ms(int(frame["ts_ms"].min())),  # type: ignore[arg-type]
        "last_ts": format_rfc3339_ms(int(frame["ts_ms"].max())),  # type: ignore[arg-type]
        "load_before": other_load(),
    }
    with tempfile.TemporaryDirectory(prefix="fleetwatch-scorecards-") as name:
        tmp = Path(name)
        history = tmp / "history"
        write_history(HistoryShape(trucks=trucks, start=date(2026, 11, 20), days=11), history)
        results["stream"], cards = stream(tmp, frame, history, rounds)
    results["scorecards"] = cards.summary()
    results["load_after"] = other_load()
    rows = results["stream"]
    results["ratios"] = {
        "with_over_without": round(rows[WITH]["per_s"] / rows[WITHOUT]["per_s"], 3),
        "marginal_with_over_without": round(
            rows[WITH]["marginal_per_s"] / rows[WITHOUT]["marginal_per_s"], 3
        ),
    }
    for ratio, value in results["ratios"].items():
        print(f"ratio {ratio}: {value:.2f}")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scorecards", description=__doc__)
    parser.add_argument("--readings", type=int, help="default 2,000,000 (--quick: 200,000)")
    parser.add_argument("--trucks", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, help="default 3 (--quick: 1)")
    parser.add_argument("--quick", action="store_true", help="200,000 readings, 1 round")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args(argv)
    readings = args.readings or (200_000 if args.quick else 2_000_000)
    rounds = args.rounds or (1 if args.quick else 3)
    from benchmarks.__main__ import standalone  # not at the top: benchmarks.__main__ imports this

    return standalone(
        "scorecards",
        args.quick,
        args.out,
        lambda: run(readings, args.trucks, rounds),
        report.scorecards_markdown,
    )


if __name__ == "__main__":
    main()
