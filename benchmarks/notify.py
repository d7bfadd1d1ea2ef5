"""Notifier throughput: alerts/s e-mailed against a fast local receiver (no delay).

``python -m benchmarks.notify [--alerts N]``: pre-fills ``fleet.alerts`` with N alerts,
runs ``dataflows.notify`` to the end of the topic (start-up included) and checks that the
receiver got each alert exactly once.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer

from devtools.email_receiver import EmailReceiver
from devtools.launcher import FlowProcess
from devtools.localbrokers import local_brokers
from domain.alerts import build_alert, encode_alert
from domain.readings import Reading
from domain.rules import Detection, Rule

ROOT = Path(__file__).resolve().parents[1]
SECRET = "benchmark-signing-secret-32-bytes!"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.notify", description=__doc__)
    parser.add_argument("--alerts", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "notify.json")
    args = parser.parse_args(argv)
    receiver = EmailReceiver(SECRET.encode()).start()
    try:
        with tempfile.TemporaryDirectory() as tmp, local_brokers(Path(tmp)) as brokers:
            producer = Producer({"bootstrap.servers": brokers.kafka_brokers})
            for n in range(args.alerts):
                reading = Reading(f"e{n}", f"T{n % 500:05d}", 1_795_514_400_000 + n, 140.0)
                value = encode_alert(
                    build_alert(Detection(Rule.INSTANT, reading.truck_id, (reading,), 130.0), 0)
                )
                producer.produce("bench.alerts", value, reading.truck_id)
            producer.flush()
            env = {
                "FLEET_KAFKA_BROKERS": brokers.kafka_brokers,
                "FLEET_TOPIC_ALERTS": "bench.alerts",
                "FLEET_KAFKA_TAIL": "false",
                "FLEET_NOTIFY_URL": receiver.url,
                "FLEET_NOTIFY_SECRET": SECRET,
                "FLEET_NOTIFY_CONCURRENCY": str(args.concurrency),
            }
            flow = FlowProcess("dataflows.notify", env, Path(tmp) / "notify.log")
            started = time.perf_counter()
            if flow.run(timeout_s=3600) != 0:
                raise RuntimeError(f"dataflows.notify failed:\n{flow.log_tail()}")
            seconds = time.perf_counter() - started
    finally:
        receiver.stop()
    if len(receiver.emails) != args.alerts:
        raise RuntimeError(f"{len(receiver.emails)} e-mails for {args.alerts} alerts")
    results = {
        "alerts": args.alerts,
        "seconds": round(seconds, 2),
        "alerts_per_s": round(args.alerts / seconds),
        "calls": len(receiver.calls),
    }
    for name, value in results.items():
        print(f"{name:16s} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
