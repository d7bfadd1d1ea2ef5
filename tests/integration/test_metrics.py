"""The metrics endpoint (Bytewax's API server, BYTEWAX_DATAFLOW_API_ENABLED) serves
fleetwatch's metrics with the right counts after a small run; consumer lag follows a real
partition's backlog."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from connectors.kafka import ensure_topics
from connectors.kafka_source import KafkaBatchSource
from devtools.localbrokers import free_port
from domain.readings import Reading, encode_canonical
from domain.rules import RuleConfig
from runtime.metrics import CONSUMER_LAG
from tests.builders import BEGINNING_MS, payload
from tests.integration.flows import FlowProcess, Namespace, consume_until, produce, scrape, value
from tests.reference import reference_alerts

pytestmark = pytest.mark.integration


def fleet_readings() -> list[Reading]:
    """Three trucks at 1 Hz for 5 minutes; T0 speeds for a minute, T1 spikes once."""
    readings = []
    for second in range(300):
        for truck in ("T0", "T1", "T2"):
            speed = 70.0
            if truck == "T0" and 60 <= second < 120:
                speed = 100.0
            if truck == "T1" and second == 200:
                speed = 145.0
            readings.append(
                Reading(f"{truck}-{second}", truck, BEGINNING_MS + second * 1000, speed)
            )
    return readings


def test_the_alerts_flow_serves_its_counts(namespace: Namespace, logs: Path) -> None:
    readings = fleet_readings()
    late = Reading("T2-late", "T2", BEGINNING_MS + 5_000, 50.0)  # minutes behind T2's watermark
    records: list[tuple[bytes | None, bytes]] = [
        (r.truck_id.encode(), encode_canonical(r)) for r in readings
    ]
    records += [
        (b"T2", encode_canonical(late)),
        (b"T9", b"{not json"),
        (b"T9", payload(speed_kmh="fast")),
    ]
    bootstrap = namespace.brokers.kafka_brokers
    expected = reference_alerts(readings, RuleConfig())
    assert {rule for rule, _, _ in expected} == {"sustained_speeding", "instant_overspeed"}

    port = free_port()
    env = namespace.env(BYTEWAX_DATAFLOW_API_ENABLED="true", BYTEWAX_DATAFLOW_API_PORT=str(port))
    flow = FlowProcess("dataflows.alerts", env, logs / "alerts.log").start()
    try:
        flow.wait_for_event("history_loaded")  # its topics exist, with their partitions
        produce(bootstrap, namespace.topic("telemetry"), records)
        alerts = consume_until(
            bootstrap,
            namespace.topic("alerts"),
            lambda got: len(got) >= len(expected),
            timeout_s=60,
        )
        late_records = consume_until(
            bootstrap, namespace.topic("late"), lambda got: len(got) >= 1, timeout_s=20
        )
        samples = scrape(port)
    finally:
        flow.stop()

    assert value(samples, "fleetwatch_readings_in_total", flow="alerts") == len(records)
    assert (
        value(samples, "fleetwatch_dead_letters_total", stage="alerts", reason="invalid_json") == 1
    )
    assert value(samples, "fleetwatch_dead_letters_total", stage="alerts", reason="schema") == 1
    assert value(samples, "fleetwatch_late_readings_total", flow="alerts") == len(late_records) == 1
    emitted = Counter((str(a.json()["rule"]), str(a.json()["severity"])) for a in alerts)
    assert len(alerts) == len(expected)
    for (rule, severity), count in emitted.items():
        assert (
            value(samples, "fleetwatch_alerts_total", flow="alerts", rule=rule, severity=severity)
            == count
        )
    history_ok = [
        v
        for (name, labels), v in samples.items()
        if name == "fleetwatch_history_reloads_total" and ("outcome", "ok") in labels
    ]
    assert history_ok == [1.0]
    lags = {
        labels: v
        for (name, labels), v in samples.items()
        if name == "fleetwatch_consumer_lag_records"
    }
    assert len(lags) == namespace.partitions  # one per partition of the telemetry topic
    assert set(lags.values()) == {0.0}  # all read
    assert any(name.startswith("bytewax_") for name, _ in samples)  # Bytewax's own, alongside


def test_consumer_lag_is_the_backlog_of_the_partition(namespace: Namespace) -> None:
    topic = namespace.topic("lagging")
    bootstrap = namespace.brokers.kafka_brokers
    ensure_topics({"bootstrap.servers": bootstrap}, [topic], partitions=1, replication_factor=-1)
    produce(bootstrap, topic, [(None, b"x%d" % i) for i in range(1_000)])
    source = KafkaBatchSource({"bootstrap.servers": bootstrap}, topic, tail=True, batch_size=100)
    (partition,) = source.list_parts()
    reader = source.build_part("lag", partition, None)
    read = 0
    deadline = time.monotonic() + 20
    while read < 300 and time.monotonic() < deadline:
        read += sum(len(fetch.values) for fetch in reader.next_batch())
        time.sleep(1.1)  # the gauge is refreshed at most once a second
    reader.close()
    gauge = CONSUMER_LAG.labels(topic, partition)._value.get()
    assert read >= 300
    assert gauge == 1_000 - read
