"""Flow processes for the benchmarks: their environment; start one and wait for a log
event; stop one."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from devtools.localbrokers import LocalBrokers

ROOT = Path(__file__).resolve().parents[1]


def start_until(
    command: list[str], env: dict[str, str], log: Path, event: str, timeout_s: float = 60
) -> subprocess.Popen[bytes]:
    """Start ``command`` (output to ``log``) and return once it logged ``event``."""
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while f'"event": "{event}"' not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{command} did not log {event}; see {log}")
        time.sleep(0.05)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def pipeline_env(brokers: LocalBrokers, name: str, **overrides: str) -> dict[str, str]:
    """This process's environment without FLEET_*, plus the brokers and topics named
    ``name``: MQTT ``name/+/telemetry`` read without a share group, Kafka ``name.*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(
        FLEET_MQTT_URL=brokers.mqtt_url,
        FLEET_MQTT_PROTOCOL=brokers.mqtt_protocol,
        FLEET_MQTT_TOPIC=f"{name}/+/telemetry",
        FLEET_MQTT_SHARE_GROUP="",
        FLEET_MQTT_CLIENT_ID=f"{name}-bridge",
        FLEET_KAFKA_BROKERS=brokers.kafka_brokers,
        FLEET_TOPIC_TELEMETRY=f"{name}.telemetry",
        FLEET_TOPIC_ALERTS=f"{name}.alerts",
        FLEET_TOPIC_DLQ=f"{name}.dlq",
        FLEET_TOPIC_LATE=f"{name}.late",
        FLEET_TOPIC_HEARTBEATS=f"{name}.heartbeats",
        **overrides,
    )
    return env
