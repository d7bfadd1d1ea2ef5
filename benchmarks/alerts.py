"""Alerts throughput: dataflows.alerts (1 process; 2 processes) vs a plain confluent-kafka
loop running the same decoder and rule functions, side by side on one pre-filled topic.

``python -m benchmarks.alerts [--readings N]``. Each contender reads the whole topic from
the beginning and stops at its end (FLEET_KAFKA_TAIL=false); its time is the process's
wall time, start-up included. Every contender must produce the same number of alerts.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.kafka import ensure_topics
from devtools.launcher import FlowProcess
from devtools.localbrokers import free_port, local_brokers
from domain.readings import Reading, encode_canonical

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 16
START_MS = 1_795_514_400_000


def prefill(bootstrap: str, topic: str, readings: int, trucks: int) -> float:
    """Produce ``readings`` canonical readings (1 per truck per 10 s, some speeding)."""
    ensure_topics({"bootstrap.servers": bootstrap}, [topic], PARTITIONS, 1)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": "100",
            "batch.num.messages": "100000",
            "batch.size": "16000000",
            "queue.buffering.max.messages": "2000000",
            "queue.buffering.max.kbytes": "2000000",
        }
    )
    rng = random.Random(3)
    speeding = {f"T{t:05d}": 0 for t in range(trucks)}
    started = time.monotonic()
    for n in range(readings):
        truck = f"T{n % trucks:05d}"
        if speeding[truck] == 0 and rng.random() < 0.01:
            speeding[truck] = rng.randint(4, 10)
        if speeding[truck]:
            speeding[truck] -= 1
            speed = rng.uniform(91, 140)
        else:
            speed = rng.uniform(50, 89)
        ts = START_MS + (n // trucks) * 10_000 + rng.randint(0, 3_000)
        value = encode_canonical(Reading(f"{truck}-{n}", truck, ts, round(speed, 1)))
        while True:
            try:
                producer.produce(topic, value, truck)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush()
    return time.monotonic() - started


def count(bootstrap: str, topic: str) -> int:
    partitions = (
        AdminClient({"bootstrap.servers": bootstrap})
        .list_topics(topic, timeout=10)
        .topics[topic]
        .partitions
    )
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "count", "enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    total, done = 0, set[int]()
    while len(done) < len(partitions):
        for message in consumer.consume(10_000, 1.0):
            partition = message.partition()
            if message.error() and partition is not None:
                done.add(partition)
            else:
                total += 1
    consumer.close()
    return total


def timed(flows: list[FlowProcess], timeout_s: float = 1800) -> float:
    """Start ``flows`` together and wait until every one ended; their wall time in s."""
    started = time.monotonic()
    for flow in flows:
        flow.start()
    try:
        for flow in flows:
            if flow.wait(timeout_s) != 0:
                raise RuntimeError(f"{flow.command!r} failed; see {flow.log_path}")
        return time.monotonic() - started
    finally:
        for flow in flows:
            flow.kill()  # only those still running: after a failure or a timeout


def run(readings: int, trucks: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="fleetwatch-bench-") as tmp,
        local_brokers(Path(tmp)) as brokers,
    ):
        bootstrap = brokers.kafka_brokers
        seconds = prefill(bootstrap, "bench.telemetry", readings, trucks)
        shape = f"{trucks} trucks, {PARTITIONS} partitions"
        print(f"prefilled {readings} readings ({shape}) in {seconds:.1f}s")
        base_env = {
            "FLEET_KAFKA_BROKERS": bootstrap,
            "FLEET_TOPIC_TELEMETRY": "bench.telemetry",
            "FLEET_KAFKA_TAIL": "false",
            "FLEET_TOPIC_PARTITIONS": str(PARTITIONS),
        }
        addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(2))
        # label: its processes, each (module, arguments, runner: None for python -m module)
        contenders: dict[str, list[tuple[str, list[str], str | None]]] = {
            "plain loop": [("benchmarks.plain_alerts", [], None)],
            "alerts flow, 1 process": [("dataflows.alerts", [], "bytewax.run")],
            "alerts flow, 2 processes": [
                ("dataflows.alerts", ["-i", str(i), "-a", addresses], "bytewax.run")
                for i in range(2)
            ],
        }
        for index, (label, commands) in enumerate(contenders.items()):
            env = {
                **base_env,
                "FLEET_TOPIC_ALERTS": f"bench.alerts.{index}",
                "FLEET_TOPIC_LATE": f"bench.late.{index}",
            }
            log = Path(tmp) / f"contender-{index}.log"
            seconds = timed([FlowProcess(m, env, log, args, runner=r) for m, args, r in commands])
            alerts = count(bootstrap, f"bench.alerts.{index}")
            rate = readings / seconds
            results[label] = {
                "seconds": round(seconds, 2),
                "readings_per_s": round(rate),
                "per_process": round(rate / len(commands)),
                "alerts": alerts,
            }
            per_process = rate / len(commands)
            line = f"{label:26s} {seconds:6.2f}s {rate:8.0f}/s ({per_process:6.0f}/proc)"
            print(f"{line} {alerts} alerts", flush=True)
    base = results["plain loop"]["readings_per_s"]
    for label in ("alerts flow, 1 process", "alerts flow, 2 processes"):
        results[label]["ratio_to_plain"] = round(results[label]["readings_per_s"] / base, 3)
        print(f"ratio {label} / plain loop: {results[label]['ratio_to_plain']:.2f}")
    alert_counts = {r["alerts"] for r in results.values()}
    if len(alert_counts) != 1:
        raise RuntimeError(f"contenders disagree on the alerts: {alert_counts}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.alerts", description=__doc__)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--trucks", type=int, default=2_000)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "alerts.json")
    args = parser.parse_args(argv)
    results = run(args.readings, args.trucks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
