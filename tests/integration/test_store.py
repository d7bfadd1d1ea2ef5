"""dataflows.store on a real DynamoDB-API server (dynalite, or FLEET_TEST_DYNAMODB_URL):
readings in -> items out, with disorder and duplicates; kill -9 and resume; throttling and
unprocessed items; a refused item dead-lettered."""

from __future__ import annotations

import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from bytewax.recovery import init_db_dir

from connectors.dynamodb import LATEST, history_key
from devtools.localdynamo import AWS_ENV
from domain.readings import Reading, encode_canonical
from tests.builders import BEGINNING_MS
from tests.integration.dynamo import ThrottlingProxy, scan_table
from tests.integration.flows import FlowProcess, Namespace, consume_until, produce, run_module

pytestmark = pytest.mark.integration


def store_env(namespace: Namespace, url: str, table: str, **overrides: str) -> dict[str, str]:
    return {
        **AWS_ENV,
        **namespace.env(
            FLEET_DYNAMODB_TABLE=table,
            FLEET_DYNAMODB_ENDPOINT_URL=url,
            FLEET_DYNAMODB_REGION="us-east-1",
            **overrides,
        ),
    }


def create_table(env: dict[str, str]) -> None:
    result = run_module("dataflows.store", ["--create-table"], env)
    assert result.returncode == 0, result.stdout + result.stderr


def fleet(trucks: int, per_truck: int, seed: int) -> list[Reading]:
    rng = random.Random(seed)
    return [
        Reading(
            f"T{t:03d}-{s}",
            f"T{t:03d}",
            BEGINNING_MS + s * 1000,
            round(rng.uniform(40, 120), 1),
            round(rng.uniform(-80, 80), 5),
            round(rng.uniform(-170, 170), 5),
        )
        for s in range(per_truck)
        for t in range(trucks)
    ]


def shuffled_with_repeats(readings: list[Reading], seed: int) -> list[Reading]:
    """Out of order (each truck's readings too) and a fifth of them sent twice."""
    rng = random.Random(seed)
    sent = readings + rng.sample(readings, len(readings) // 5)
    rng.shuffle(sent)
    return sent


def records(readings: list[Reading]) -> list[tuple[bytes | None, bytes]]:
    return [(r.truck_id.encode(), encode_canonical(r)) for r in readings]


def assert_table_holds(items: list[dict[str, Any]], readings: list[Reading]) -> None:
    history = [i for i in items if i["sk"] != LATEST]
    latest = {i["truck_id"]: i for i in items if i["sk"] == LATEST}
    distinct = {(r.truck_id, r.event_id): r for r in readings}
    assert len(history) == len(distinct)  # every reading once: no gap, no duplicate
    assert {(i["truck_id"], i["event_id"]) for i in history} == set(distinct)
    newest: dict[str, Reading] = {}
    for reading in distinct.values():
        current = newest.get(reading.truck_id)
        if current is None or history_key(reading) > history_key(current):
            newest[reading.truck_id] = reading
    assert {t: i["event_id"] for t, i in latest.items()} == {
        t: r.event_id for t, r in newest.items()
    }
    one = next(iter(history))
    reading = distinct[(one["truck_id"], one["event_id"])]
    assert one["speed_kmh"] == reading.speed_kmh
    assert one["lat"] == reading.lat
    assert one["expires_at"] == reading.ts_ms // 1000 + 90 * 86_400


def test_readings_in_items_out_whatever_the_order_and_repeats(
    namespace: Namespace, dynamodb_url: str, logs: Path
) -> None:
    table = f"t-{uuid.uuid4().hex[:12]}"
    env = store_env(namespace, dynamodb_url, table, FLEET_KAFKA_TAIL="false")
    create_table(env)
    create_table(env)  # a second time: it exists, nothing happens
    readings = fleet(trucks=20, per_truck=60, seed=1)
    produce(namespace.brokers.kafka_brokers, namespace.topic("telemetry"), records(readings))
    # In a second wave, older readings and repeats come after newer ones.
    late_wave = shuffled_with_repeats(readings, seed=2)
    produce(
        namespace.brokers.kafka_brokers,
        namespace.topic("telemetry"),
        [*records(late_wave), (b"T999", b"not a reading")],
    )
    flow = FlowProcess("dataflows.store", env, logs / "store.log", ["-w", "2"]).start()
    assert flow.wait(timeout_s=120) == 0, flow.log_tail()
    assert_table_holds(scan_table(dynamodb_url, table), readings)
    dead = consume_until(
        namespace.brokers.kafka_brokers, namespace.topic("dlq"), lambda r: len(r) >= 1, 20
    )
    assert [json.loads(d.value)["stage"] for d in dead] == ["store"]


def test_kill_9_and_resume_leaves_no_gap_and_no_duplicate(
    namespace: Namespace, dynamodb_url: str, logs: Path, tmp_path: Path
) -> None:
    table = f"t-{uuid.uuid4().hex[:12]}"
    env = store_env(namespace, dynamodb_url, table)
    create_table(env)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 2)
    args = ["-r", str(recovery), "-s", "1", "-b", "0"]
    readings = fleet(trucks=50, per_truck=200, seed=3)
    bootstrap, topic = namespace.brokers.kafka_brokers, namespace.topic("telemetry")
    chunks = [readings[i : i + 2_500] for i in range(0, len(readings), 2_500)]
    kills = 0
    for chunk in chunks[:-1]:
        produce(bootstrap, topic, records(chunk))
        flow = FlowProcess("dataflows.store", env, logs / "store.log", args).start()
        time.sleep(2.5)
        assert flow.process is not None
        assert flow.process.poll() is None, flow.log_tail()
        flow.kill()
        kills += 1
    produce(bootstrap, topic, records(chunks[-1]))
    final = FlowProcess(
        "dataflows.store", {**env, "FLEET_KAFKA_TAIL": "false"}, logs / "store.log", args
    ).start()
    assert final.wait(timeout_s=180) == 0, final.log_tail()
    assert kills >= 3
    assert_table_holds(scan_table(dynamodb_url, table), readings)


def test_throttling_and_unprocessed_items_are_retried_and_refused_items_dead_lettered(
    namespace: Namespace, dynamodb_url: str, logs: Path
) -> None:
    table = f"t-{uuid.uuid4().hex[:12]}"
    create_table(store_env(namespace, dynamodb_url, table))
    proxy = ThrottlingProxy(dynamodb_url, every=3, passes=7)
    try:
        env = store_env(namespace, proxy.url, table, FLEET_KAFKA_TAIL="false")
        readings = fleet(trucks=10, per_truck=40, seed=4)
        refused = Reading(proxy.reject_marker, "T001", BEGINNING_MS, 50.0)
        produce(
            namespace.brokers.kafka_brokers,
            namespace.topic("telemetry"),
            records([*readings, refused]),
        )
        flow = FlowProcess("dataflows.store", env, logs / "store.log").start()
        assert flow.wait(timeout_s=180) == 0, flow.log_tail()
    finally:
        proxy.close()
    assert proxy.throttled > 10
    assert proxy.unprocessed > 50
    assert_table_holds(scan_table(dynamodb_url, table), readings)
    dead = consume_until(
        namespace.brokers.kafka_brokers, namespace.topic("dlq"), lambda r: len(r) >= 1, 20
    )
    (letter,) = [json.loads(d.value) for d in dead]
    assert (letter["stage"], letter["reason"]) == ("store", "rejected_by_store")
    assert "maximum allowed size" in letter["detail"]
