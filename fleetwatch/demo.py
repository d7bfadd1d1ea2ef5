"""``make demo``: the pipeline on embedded brokers, live, ending by itself with a summary.

Starts an MQTT broker and a Kafka-protocol broker on free ports, the flows as real processes
(``python -m bytewax.run dataflows.<name>``), and a simulated fleet publishing over MQTT;
prints what flows through every few seconds, then stops everything it started (also on
Ctrl-C) and prints a summary that accounts for every published message.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from connectors.kafka_monitor import TopicTally
from connectors.mqtt_publisher import publish_paced
from domain.timestamps import to_epoch_ms
from fleetwatch.localbrokers import LocalBrokers, local_brokers
from fleetwatch.settings import MqttUrl
from fleetwatch.simulator import FleetConfig, FleetSimulator, SimulatedMessage

ROOT = Path(__file__).resolve().parents[1]


def _flow_env(brokers: LocalBrokers) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(
        {
            "FLEET_MQTT_URL": brokers.mqtt_url,
            "FLEET_MQTT_PROTOCOL": brokers.mqtt_protocol,
            "FLEET_MQTT_SHARE_GROUP": "fleetwatch-bridge" if brokers.shared_subscriptions else "",
            "FLEET_KAFKA_BROKERS": brokers.kafka_brokers,
            "FLEET_TOPIC_PARTITIONS": "4",
        }
    )
    return env


@contextmanager
def _flow(module: str, env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", module],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()  # SIGTERM: graceful, flushes and acknowledges what it has
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_for_log(
    log_path: Path, event: str, process: subprocess.Popen[bytes], timeout_s: float = 30
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if f'"event": "{event}"' in log_path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"flow exited early; see {log_path}")
        time.sleep(0.1)
    raise TimeoutError(f"no {event} in {log_path} after {timeout_s} s")


def run(duration_s: float, rate: float, trucks: int, workdir: Path) -> int:
    # A fresh run: old logs would satisfy the start-up checks below, old broker state would
    # replay an earlier run's sessions.
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    print(f"fleetwatch demo: {trucks} trucks, {rate:.0f} msgs/s for {duration_s:.0f} s")
    print(f"  logs in {workdir}/")
    with local_brokers(workdir / "brokers") as brokers:
        print(f"  MQTT  {brokers.mqtt.name} at {brokers.mqtt_url} (MQTT {brokers.mqtt_protocol})")
        print(f"  Kafka {'tansu' if brokers.kafka else 'external'} at {brokers.kafka_brokers}")
        env = _flow_env(brokers)
        config = FleetConfig(
            trucks=trucks,
            seed=42,
            start_ms=to_epoch_ms_now(),
            interval_s=trucks / rate,
            bad_share=0.02,
            resend_share=0.01,
            disorder_s=2.0,
            episode_chance=0.02,
        )
        messages = list(FleetSimulator(config).messages(int(rate * duration_s)))
        bridge_log = workdir / "bridge.log"
        with _flow("dataflows.bridge", env, bridge_log) as bridge:
            _wait_for_log(bridge_log, "mqtt_subscribed", bridge)
            print("  bridge subscribed; publishing\n")
            tally = TopicTally(
                brokers.kafka_brokers,
                ["fleet.telemetry", "fleet.dlq"],
                {"fleet.telemetry": "event_id"},
            ).start()
            published = _publish_with_progress(brokers, messages, rate, tally)
            _wait_until_accounted(tally, messages, timeout_s=30)
            tally.stop()
        return _summary(messages, published, tally)


def to_epoch_ms_now() -> int:
    return to_epoch_ms(datetime.now(UTC))


def _publish_with_progress(
    brokers: LocalBrokers, messages: list[SimulatedMessage], rate: float, tally: TopicTally
) -> int:
    result: list[int] = []
    publisher = threading.Thread(
        target=lambda: result.append(
            publish_paced(
                MqttUrl.parse(brokers.mqtt_url),
                brokers.mqtt_protocol,
                [(m.topic, m.payload) for m in messages],
                rate,
            )
        ),
        daemon=True,
    )
    started = time.monotonic()
    publisher.start()
    last_count, last_time = 0, started
    while publisher.is_alive():
        publisher.join(timeout=5)
        now = time.monotonic()
        count = tally.records["fleet.telemetry"]
        per_second = (count - last_count) / (now - last_time)
        dead = tally.records["fleet.dlq"]
        print(
            f"  t={now - started:5.1f}s  readings {count:7d} ({per_second:6.0f}/s)  dlq {dead:5d}",
            flush=True,
        )
        last_count, last_time = count, now
    return result[0] if result else 0


def _wait_until_accounted(
    tally: TopicTally, messages: list[SimulatedMessage], timeout_s: float
) -> None:
    expected_ids = {m.reading.event_id for m in messages if m.reading is not None}
    bad = sum(m.reading is None for m in messages)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if tally.distinct["fleet.telemetry"] >= expected_ids and tally.records["fleet.dlq"] >= bad:
            return
        time.sleep(0.2)


def _summary(messages: list[SimulatedMessage], published: int, tally: TopicTally) -> int:
    expected_ids = {m.reading.event_id for m in messages if m.reading is not None}
    bad = sum(m.reading is None for m in messages)
    missing = expected_ids - tally.distinct["fleet.telemetry"]
    resends = sum(m.is_resend for m in messages)
    telemetry = tally.records["fleet.telemetry"]
    distinct = len(tally.distinct["fleet.telemetry"])
    reasons = dict(sorted(tally.reasons.items()))
    rows = [
        ("published over MQTT", f"{published}"),
        (
            "readings on fleet.telemetry",
            f"{telemetry} ({distinct} distinct; {resends} resends sent)",
        ),
        ("dead letters on fleet.dlq", f"{tally.records['fleet.dlq']} of {bad} bad payloads"),
        ("dead letters by reason", f"{reasons}"),
        ("readings missing", f"{len(missing)}"),
    ]
    print("\nsummary")
    for label, value in rows:
        print(f"  {label:<28} {value}")
    ok = not missing and tally.records["fleet.dlq"] >= bad and published == len(messages)
    print("  result: every message accounted for" if ok else "  result: MESSAGES UNACCOUNTED FOR")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleetwatch.demo", description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of publishing")
    parser.add_argument("--rate", type=float, default=2_000.0, help="messages per second")
    parser.add_argument("--trucks", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=ROOT / "demo-run")
    args = parser.parse_args(argv)
    try:
        return run(args.duration, args.rate, args.trucks, args.workdir)
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
