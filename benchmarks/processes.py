"""Flow processes for the benchmarks (devtools/launcher.py): their settings; start one and
wait for a log event."""

from __future__ import annotations

from devtools.launcher import FlowProcess
from devtools.localbrokers import LocalBrokers

# A benchmark's flow may take longer to stop than a test's: it can be flushing a backlog.
STOP_TIMEOUT_S = 30.0


def start_until(flow: FlowProcess, event: str, timeout_s: float = 60) -> FlowProcess:
    """Start ``flow`` and return once it logged ``event``; stopped again if it does not."""
    flow.start()
    try:
        flow.wait_for_event(event, timeout_s=timeout_s)
    except (RuntimeError, TimeoutError):
        flow.kill()
        raise
    return flow


def pipeline_env(brokers: LocalBrokers, name: str, **overrides: str) -> dict[str, str]:
    """The brokers and topics named ``name``: MQTT ``name/+/telemetry`` read without a share
    group, Kafka ``name.*``; then ``overrides``. The launcher adds the inherited environment
    (without FLEET_*)."""
    return {
        "FLEET_MQTT_URL": brokers.mqtt_url,
        "FLEET_MQTT_PROTOCOL": brokers.mqtt_protocol,
        "FLEET_MQTT_TOPIC": f"{name}/+/telemetry",
        "FLEET_MQTT_SHARE_GROUP": "",
        "FLEET_MQTT_CLIENT_ID": f"{name}-bridge",
        "FLEET_KAFKA_BROKERS": brokers.kafka_brokers,
        "FLEET_TOPIC_TELEMETRY": f"{name}.telemetry",
        "FLEET_TOPIC_ALERTS": f"{name}.alerts",
        "FLEET_TOPIC_DLQ": f"{name}.dlq",
        "FLEET_TOPIC_LATE": f"{name}.late",
        "FLEET_TOPIC_HEARTBEATS": f"{name}.heartbeats",
        **overrides,
    }
