"""Bridge throughput: dataflows.bridge vs a bare paho -> confluent-kafka forwarder.

``python -m benchmarks.bridge [--messages N]``. For each contender: create its persistent
MQTT session, stop it, publish N messages (Mosquitto queues them for the offline session),
start it again and measure how fast it drains them into Kafka, from the producer timestamps
of the first and last record. Every message must arrive (zero loss), or the run fails.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks.processes import STOP_TIMEOUT_S, pipeline_env, start_until
from devtools.launcher import FlowProcess
from devtools.localbrokers import LocalBrokers, local_brokers
from devtools.mqtt_publisher import publish_paced
from devtools.simulator import FleetConfig, FleetSimulator
from runtime.settings import MqttUrl

ROOT = Path(__file__).resolve().parents[1]
# label: (module, what runs it: bytewax.run, or None for ``python -m module``)
CONTENDERS: dict[str, tuple[str, str | None]] = {
    "bridge (bytewax)": ("dataflows.bridge", "bytewax.run"),
    "bare forwarder": ("benchmarks.bare_forwarder", None),
}


def _env(brokers: LocalBrokers, name: str) -> dict[str, str]:
    return pipeline_env(brokers, name, FLEET_TOPIC_PARTITIONS="8")


def _drain_span(bootstrap: str, topic: str, expected: int, timeout_s: float) -> tuple[int, float]:
    """Count records on ``topic``; return (count, seconds between first and last produce)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    while topic not in admin.list_topics(timeout=10).topics:
        time.sleep(0.1)
    partitions = admin.list_topics(timeout=10).topics[topic].partitions
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    count, first, last = 0, None, None
    deadline = time.monotonic() + timeout_s
    while count < expected and time.monotonic() < deadline:
        for message in consumer.consume(10_000, 0.5):
            if message.error() is None:
                count += 1
                stamp = message.timestamp()[1]
                first = stamp if first is None else min(first, stamp)
                last = stamp if last is None else max(last, stamp)
    consumer.close()
    span = ((last or 0) - (first or 0)) / 1000
    return count, span


def run(messages: int, trucks: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="fleetwatch-bench-") as tmp,
        local_brokers(Path(tmp)) as brokers,
    ):
        for index, (label, (module, runner)) in enumerate(CONTENDERS.items()):
            name = f"bench{index}"
            env = _env(brokers, name)
            # First a run that creates the persistent session (its own log: the drain's wait
            # below must not be satisfied by this run's subscription).
            session = FlowProcess(module, env, Path(tmp) / f"{name}-session.log", runner=runner)
            start_until(session, "mqtt_subscribed").stop(STOP_TIMEOUT_S)
            config = FleetConfig(
                trucks=trucks, seed=9, topic_template=f"{name}/{{truck_id}}/telemetry"
            )
            batch = [(m.topic, m.payload) for m in FleetSimulator(config).messages(messages)]
            publish_paced(MqttUrl.parse(brokers.mqtt_url), brokers.mqtt_protocol, batch, rate=0)
            drain = FlowProcess(module, env, Path(tmp) / f"{name}.log", runner=runner)
            start_until(drain, "mqtt_subscribed")
            try:
                count, span = _drain_span(brokers.kafka_brokers, f"{name}.telemetry", messages, 300)
            finally:
                drain.stop(STOP_TIMEOUT_S)
            if count < messages:
                raise RuntimeError(f"{label}: only {count} of {messages} messages arrived")
            results[label] = {
                "messages": count,
                "seconds": round(span, 3),
                "per_second": round(count / span),
            }
            print(
                f"{label:20s} {count} messages in {span:6.2f} s = {count / span:8.0f}/s", flush=True
            )
    bridge, bare = results["bridge (bytewax)"], results["bare forwarder"]
    ratio = bridge["per_second"] / bare["per_second"]
    print(f"ratio bridge / bare forwarder: {ratio:.2f}")
    results["ratio"] = {"bridge_over_bare": round(ratio, 3)}
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bridge", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--trucks", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "bridge.json")
    args = parser.parse_args(argv)
    results = run(args.messages, args.trucks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
