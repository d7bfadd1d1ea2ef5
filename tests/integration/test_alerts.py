"""dataflows.alerts on real brokers: simulator -> Mosquitto -> bridge -> Kafka -> alerts,
compared with the plain sorted reference; live, and bounded on 1 worker, 2 workers and 2
processes, all giving the same alerts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.history import load_history_dir
from devtools.localbrokers import LocalBrokers
from devtools.mqtt_publisher import publish_paced
from devtools.simulator import FleetConfig, FleetSimulator, SimulatedMessage
from domain.history import driver_context
from domain.rules import RuleConfig
from domain.timestamps import parse_rfc3339_ms
from runtime.settings import SAMPLE_HISTORY_DIR, MqttUrl
from tests.integration.flows import (
    FlowProcess,
    Namespace,
    Record,
    cluster_addresses,
    cluster_args,
    consume_until,
)
from tests.reference import AlertKey, reference_alerts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def telemetry(
    tmp_path_factory: pytest.TempPathFactory, brokers: LocalBrokers
) -> tuple[Namespace, list[SimulatedMessage]]:
    """One simulated fleet bridged onto a telemetry topic, shared by the tests below."""
    namespace = Namespace(brokers)
    config = FleetConfig(
        trucks=30,
        seed=17,
        bad_share=0.02,
        resend_share=0.03,
        disorder_s=5.0,
        episode_chance=0.03,
        spike_chance=0.004,
        topic_template=namespace.mqtt_topic_template,
    )
    messages = list(FleetSimulator(config).messages(6_000))
    logs = tmp_path_factory.mktemp("bridge")
    bridge = FlowProcess("dataflows.bridge", namespace.env(), logs / "bridge.log").start()
    try:
        bridge.wait_for_event("mqtt_subscribed")
        url = MqttUrl.parse(brokers.mqtt_url)
        publish_paced(url, brokers.mqtt_protocol, [(m.topic, m.payload) for m in messages], 0)
        valid = sum(m.reading is not None for m in messages)
        consume_until(
            brokers.kafka_brokers, namespace.topic("telemetry"), lambda r: len(r) >= valid
        )
    finally:
        bridge.stop()
    return namespace, messages


def expected_alerts(messages: list[SimulatedMessage]) -> set[AlertKey]:
    readings = [m.reading for m in messages if m.reading is not None]
    return reference_alerts(readings, RuleConfig())


def alert_keys(records: list[Record]) -> set[AlertKey]:
    return {
        (str(d["rule"]), str(d["truck_id"]), tuple(d["event_ids"]))
        for d in (r.json() for r in records)
    }  # type: ignore[arg-type]


def without_detected_at(records: list[Record]) -> dict[str, dict[str, object]]:
    return {
        str(d["alert_id"]): {k: v for k, v in d.items() if k != "detected_at"}
        for d in (r.json() for r in records)
    }


def run_bounded(
    namespace: Namespace, alerts_topic: str, logs: Path, args_per_process: list[list[str]]
) -> list[Record]:
    env = namespace.env(
        FLEET_TOPIC_ALERTS=alerts_topic,
        FLEET_TOPIC_LATE=alerts_topic + ".late",
        FLEET_KAFKA_TAIL="false",
    )
    processes = [
        FlowProcess("dataflows.alerts", env, logs / f"alerts-{i}.log", args).start()
        for i, args in enumerate(args_per_process)
    ]
    for process in processes:
        assert process.wait(timeout_s=120) == 0, process.log_tail()
    return consume_until(
        namespace.brokers.kafka_brokers, alerts_topic, lambda r: False, timeout_s=5, settle_s=0
    )


def test_live_alerts_equal_the_reference(
    telemetry: tuple[Namespace, list[SimulatedMessage]], logs: Path
) -> None:
    namespace, messages = telemetry
    expected = expected_alerts(messages)
    assert len(expected) > 10, "the fleet must produce alerts of both rules"
    assert {rule for rule, _, _ in expected} == {"sustained_speeding", "instant_overspeed"}
    env = namespace.env(FLEET_TOPIC_ALERTS=namespace.topic("alerts-live"))
    alerts = FlowProcess("dataflows.alerts", env, logs / "alerts.log").start()
    try:
        # The last readings of each truck are released by wall time once the trucks are quiet.
        records = consume_until(
            namespace.brokers.kafka_brokers,
            namespace.topic("alerts-live"),
            lambda r: alert_keys(r) >= expected,
            timeout_s=90,
        )
    finally:
        alerts.stop()
    assert alert_keys(records) == expected
    assert all(r.key == str(r.json()["truck_id"]).encode() for r in records)
    assert_driver_fields(records)


def assert_driver_fields(records: list[Record]) -> None:
    """Each alert names the driver the shipped sample history gives at its window end."""
    history = load_history_dir(SAMPLE_HISTORY_DIR)
    kinds = set()
    for document in (r.json() for r in records):
        window_end = parse_rfc3339_ms(str(document["window_end"]))
        context = driver_context(
            history, str(document["truck_id"]), window_end, float(document["max_speed_kmh"])
        )  # type: ignore[arg-type]
        assert document["driver_id"] == context.driver_id
        assert document["driver"] == context.driver
        critical = document["rule"] == "instant_overspeed" or context.high_risk
        assert document["severity"] == ("critical" if critical else "warning")
        kinds.add(
            "driver"
            if context.driver
            else "no assignment"
            if context.driver_id is None
            else "unknown"
        )
    assert {"driver", "no assignment"} <= kinds, "the fleet covers trucks with and without drivers"


def test_bounded_runs_agree_across_layouts(
    telemetry: tuple[Namespace, list[SimulatedMessage]], logs: Path
) -> None:
    namespace, messages = telemetry
    expected = expected_alerts(messages)
    one = run_bounded(namespace, namespace.topic("alerts-w1"), logs, [[]])
    two_workers = run_bounded(namespace, namespace.topic("alerts-w2"), logs, [["-w", "2"]])
    addresses = cluster_addresses(2)
    two_processes = run_bounded(
        namespace,
        namespace.topic("alerts-p2"),
        logs,
        [cluster_args(0, addresses), cluster_args(1, addresses)],
    )
    assert alert_keys(one) == expected
    assert without_detected_at(two_workers) == without_detected_at(one)
    assert without_detected_at(two_processes) == without_detected_at(one)
    assert len(one) == len(expected), "each alert once in a run without restarts"


def test_archive_then_backfill_equals_the_stream(
    telemetry: tuple[Namespace, list[SimulatedMessage]], logs: Path, tmp_path: Path
) -> None:
    """The same readings, live (bridge -> alerts) and through archive -> lake -> backfill,
    give the same alerts, field for field but detected_at (processing time live, the window
    end in a backfill)."""
    namespace, messages = telemetry
    live = run_bounded(namespace, namespace.topic("alerts-eq"), logs, [[]])
    lake, out = tmp_path / "lake", tmp_path / "backfill.jsonl"
    archive_env = namespace.env(
        FLEET_LAKE_DIR=str(lake), FLEET_KAFKA_TAIL="false", FLEET_LAKE_ROLL_MB="0.2"
    )
    archive = FlowProcess("dataflows.archive", archive_env, logs / "archive.log").start()
    assert archive.wait(timeout_s=120) == 0, archive.log_tail()
    assert len(list(lake.rglob("*.parquet"))) > 1
    backfill_env = namespace.env(FLEET_BACKFILL_INPUT=str(lake), FLEET_ALERTS_OUT=str(out))
    backfill = FlowProcess(
        "dataflows.backfill", backfill_env, logs / "backfill.log", ["-w", "2"]
    ).start()
    assert backfill.wait(timeout_s=120) == 0, backfill.log_tail()
    assert "backfill done:" in backfill.log_tail()
    replayed = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {
        str(a["alert_id"]): {k: v for k, v in a.items() if k != "detected_at"} for a in replayed
    }
    assert by_id == without_detected_at(live)
    assert len(replayed) == len(expected_alerts(messages))
