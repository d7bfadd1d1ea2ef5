"""End-to-end latency at a fixed offered rate (OpenMessaging-style): a publisher process
sends readings over MQTT at RATE/s -> Mosquitto -> dataflows.bridge -> Kafka ->
dataflows.alerts -> the alerts topic, where this process timestamps each alert on arrival.

``python -m benchmarks.latency [--rates 1000,10000,30000] [--seconds 20]``. Latency is an
alert's arrival minus the publish time of the reading that fired it (both ``time.time()``
on this machine). Each reading's ``ts`` is its publish time, so event time follows wall
time; 1% of readings are critical, and FLEET_COOLDOWN_S=0 makes every one fire, which
gives enough alerts for a p99.9 and a loss check (instant alerts = critical readings). Runs
at FLEET_ALLOWED_LATENESS_S=0 (the input is in order: one bridge keeps MQTT's order) and at
the default 10 s, where an alert waits for its truck's watermark (or the quiet-truck flush).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks.processes import STOP_TIMEOUT_S, pipeline_env, start_until
from connectors.kafka_source import FETCH_WAIT_MAX_MS
from devtools.launcher import FlowProcess
from devtools.localbrokers import LocalBrokers, local_brokers

ROOT = Path(__file__).resolve().parents[1]
TRUCKS = 1_000
PARTITIONS = 8
WARMUP_S = 2.0


@dataclass
class AlertClock:
    """Reads an alerts topic from the start in a thread; stamps each alert on arrival."""

    bootstrap: str
    topic: str
    arrivals: list[tuple[float, float, dict[str, Any]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> AlertClock:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        partitions = admin.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        consumer = Consumer(  # an alerts reader as the flows read: the same fetch wait
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "latency",
                "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
            }
        )
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])

        def run() -> None:
            while not self._stop.is_set():
                for message in consumer.consume(1_000, 0.05):
                    value = message.value()
                    if message.error() is None and value is not None:
                        produced = message.timestamp()[1] / 1000  # the flow's produce() call
                        self.arrivals.append((time.time(), produced, json.loads(value)))
            consumer.close()

        self._thread = threading.Thread(target=run, name="alert-clock", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def run_one(
    brokers: LocalBrokers, workdir: Path, rate: int, seconds: float, lateness: float
) -> dict[str, Any]:
    name = f"lat{int(lateness)}r{rate}"
    env = pipeline_env(
        brokers,
        name,
        FLEET_TOPIC_PARTITIONS=str(PARTITIONS),
        FLEET_ALLOWED_LATENESS_S=str(lateness),
        FLEET_COOLDOWN_S="0",
    )
    bridge = start_until(
        FlowProcess("dataflows.bridge", env, workdir / f"{name}-bridge.log"), "mqtt_subscribed"
    )
    alerts = start_until(
        FlowProcess("dataflows.alerts", env, workdir / f"{name}-alerts.log"), "history_loaded"
    )
    clock = AlertClock(brokers.kafka_brokers, f"{name}.alerts").start()
    published = workdir / f"{name}-published.json"
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.latency_publisher",
                brokers.mqtt_url,
                brokers.mqtt_protocol,
                f"{name}/{{truck_id}}/telemetry",
                str(rate),
                str(seconds + lateness),  # the last `lateness` s are not measured (below)
                str(TRUCKS),
                str(published),
            ],
            cwd=ROOT,
            check=True,
            timeout=(seconds + lateness) * 20 + 120,
        )
        load = json.loads(published.read_text())
        critical: dict[str, float] = load["critical"]
        deadline = time.monotonic() + lateness + 60
        while time.monotonic() < deadline:
            instant = sum(a["rule"] == "instant_overspeed" for _, _, a in clock.arrivals)
            if instant >= len(critical):
                break
            time.sleep(0.2)
        time.sleep(1.0)  # stragglers and repeats
    finally:
        clock.stop()
        alerts.stop(STOP_TIMEOUT_S)
        bridge.stop(STOP_TIMEOUT_S)
    # Steady state only: not the first WARMUP_S seconds (consumers starting, caches cold),
    # and not the last ALLOWED_LATENESS + 1 s, whose readings wait for the quiet-truck flush
    # (no newer reading comes to move their truck's watermark once the load stops).
    measured_from = min(critical.values(), default=0.0) + WARMUP_S
    measured_until = max(critical.values(), default=0.0) - lateness - 1
    critical = {e: t for e, t in critical.items() if measured_from <= t <= measured_until}
    bridged = _produce_times(brokers.kafka_brokers, f"{name}.telemetry", set(critical))
    fired = [
        (arrived, produced, critical[a["event_ids"][-1]], bridged.get(a["event_ids"][-1]))
        for arrived, produced, a in clock.arrivals
        if a["event_ids"][-1] in critical
    ]
    latencies = sorted((arrived - published) * 1000 for arrived, _, published, _ in fired)
    hops = {
        "mqtt_to_kafka": [(b - p) * 1000 for _, _, p, b in fired if b is not None],
        "kafka_to_alert": [(a - b) * 1000 for _, a, _, b in fired if b is not None],
        "alert_to_consumer": [(t - a) * 1000 for t, a, _, _ in fired],
    }
    instant_ids = {
        a["alert_id"]
        for _, _, a in clock.arrivals
        if a["rule"] == "instant_overspeed" and a["event_ids"][-1] in critical
    }
    result: dict[str, Any] = {
        "rate": rate,
        "allowed_lateness_s": lateness,
        "achieved_rate": round(load["achieved_rate"]),
        "readings": load["published"],
        "alerts": len(latencies),
        "lost_instant_alerts": len(critical) - len(instant_ids),
    }
    if latencies:
        result.update(
            p50_ms=round(percentile(latencies, 50), 1),
            p99_ms=round(percentile(latencies, 99), 1),
            p999_ms=round(percentile(latencies, 99.9), 1),
            max_ms=round(latencies[-1], 1),
            mean_ms=round(statistics.fmean(latencies), 1),
            hop_p50_ms={
                hop: round(statistics.median(values), 1) for hop, values in hops.items() if values
            },
            hop_p99_ms={
                hop: round(percentile(sorted(values), 99), 1)
                for hop, values in hops.items()
                if values
            },
        )
    return result


def _produce_times(bootstrap: str, topic: str, event_ids: set[str]) -> dict[str, float]:
    """When the bridge produced each of ``event_ids`` to Kafka (record CreateTime)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "latency", "enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    found: dict[str, float] = {}
    ended: set[int] = set()
    deadline = time.monotonic() + 60
    while len(ended) < len(partitions) and time.monotonic() < deadline:
        for message in consumer.consume(10_000, 0.5):
            value = message.value()
            if message.error() is not None or value is None:
                ended.add(message.partition() or 0)
                continue
            event_id = json.loads(value)["event_id"]
            if event_id in event_ids:
                found[event_id] = message.timestamp()[1] / 1000
    consumer.close()
    return found


def run(rates: list[int], seconds: float, latenesses: list[float]) -> list[dict[str, Any]]:
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="fleetwatch-latency-") as tmp,
        local_brokers(Path(tmp)) as brokers,
    ):
        for lateness in latenesses:
            for rate in rates:
                result = run_one(brokers, Path(tmp), rate, seconds, lateness)
                results.append(result)
                print(
                    f"lateness {lateness:4.0f}s  offered {rate:6d}/s  achieved "
                    f"{result['achieved_rate']:6d}/s  alerts {result['alerts']:5d}  "
                    f"p50 {result.get('p50_ms', 0):8.1f}  p99 {result.get('p99_ms', 0):8.1f}  "
                    f"p99.9 {result.get('p999_ms', 0):8.1f} ms  "
                    f"lost {result['lost_instant_alerts']}\n    hops p50 {result.get('hop_p50_ms')}"
                    f"\n    hops p99 {result.get('hop_p99_ms')}",
                    flush=True,
                )
    return results


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__)
    parser.add_argument("--rates", default="1000,10000,30000")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--lateness", default="0,10")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "latency.json")
    args = parser.parse_args(argv)
    results = run(
        [int(r) for r in args.rates.split(",")],
        args.seconds,
        [float(x) for x in args.lateness.split(",")],
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
