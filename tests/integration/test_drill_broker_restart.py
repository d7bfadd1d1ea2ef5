"""Drill (issue 15): the Kafka broker is killed (kill -9) and restarted several times, at
random moments, under steady MQTT load, with the bridge, alerts, archive, store and notify
running together as real processes.

Most restarts are quick (down 0-3 s); one in three is a long outage (12-16 s, longer than
ALLOWED_LATENESS), as when a pod is rescheduled. Kafka is Tansu in durable mode
(``durable_brokers``: its records live in moto's S3, so the restarted broker has them all).
Every client runs with idempotence off and one request in flight: Tansu's S3 store can lose
acknowledged records of an idempotent producer killed at the wrong moment (docs/faults.md).
Topics have one partition and fetches wait up to 500 ms, as moto serves ~100 requests/s and
Tansu lists a partition's objects on every fetch.

Must hold: every reading on fleet.telemetry once or more; every alert once or more, always
with the same id, exactly the alerts of the readings sorted, and no reading late; the lake
holds each record of fleet.telemetry exactly once; one e-mail per alert; the store holds
every reading. Figures: build/reports/drill-broker-restart.json (-x<scale>.json if scaled).

FLEET_DRILL_SCALE (default 1: 45 s of load, 3 restarts, about 2 minutes in all) multiplies
the load's duration and the number of restarts, for the figures quoted in docs/faults.md;
FLEET_DRILL_SEED replays a run's random moments.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import polars as pl
import pytest
from bytewax.recovery import init_db_dir
from confluent_kafka import Consumer, TopicPartition

from connectors.dynamodb import LATEST, newest_per_truck
from devtools.email_receiver import EmailReceiver
from devtools.localbrokers import LocalBrokers
from devtools.localdynamo import AWS_ENV
from devtools.mqtt_publisher import MqttPublisher
from devtools.simulator import FleetConfig, FleetSimulator, SimulatedMessage
from domain.readings import Reading
from domain.rules import RuleConfig
from runtime.settings import MqttUrl
from tests.integration.dynamo import scan_table
from tests.integration.flows import (
    FlowProcess,
    Namespace,
    Record,
    consume_until,
    produce,
    run_module,
)
from tests.integration.reports import report
from tests.reference import reference_alerts

pytestmark = pytest.mark.integration

SCALE = float(os.environ.get("FLEET_DRILL_SCALE", "1"))
SEED = int(os.environ.get("FLEET_DRILL_SEED", "0")) or random.randrange(1, 1_000_000)
RATE = 100.0  # readings/s over MQTT
LOAD_S = 45.0 * SCALE
RESTARTS = max(1, round(3 * SCALE))
WARM_UP_S = 4.0  # load before the first kill
MIN_UP_S = 3.0  # the broker is up at least this long between two kills
LAST_QUIET_S = 8.0  # load after the last restart
# How long the broker stays down, drawn per restart: mostly a quick restart; one restart in
# three (at random) is a long outage, longer than ALLOWED_LATENESS (10 s), as a rescheduled
# pod's: no reading may be made late by it (CONTRACT.md section 4).
SHORT_DOWN_S = (0.0, 3.0)
LONG_DOWN_S = (12.0, 16.0)
SECRET = "a-test-signing-secret-of-32-bytes"

# Client settings for a broker that is going to be killed (module docstring); production
# keeps librdkafka's idempotent producer (connectors/kafka.py PRODUCER_DEFAULTS).
DURABLE_CLIENT = {
    "FLEET_KAFKA_ENABLE_IDEMPOTENCE": "false",
    "FLEET_KAFKA_MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION": "1",
    "FLEET_KAFKA_FETCH_WAIT_MAX_MS": "500",
}


class MqttLoad:
    """Publishes messages over MQTT at ``rate`` per second from a thread (QoS 1, every PUBACK
    awaited at the end), noting when each reading was first published."""

    def __init__(
        self, url: MqttUrl, protocol: str, messages: Sequence[SimulatedMessage], rate: float
    ) -> None:
        self._url = url
        self._protocol = protocol
        self._messages = messages
        self._rate = rate
        self.published_at: dict[str, float] = {}  # event_id -> monotonic time
        self.started_at = self.finished_at = 0.0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mqtt-load", daemon=True)

    def start(self) -> MqttLoad:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            publisher = MqttPublisher(self._url, self._protocol)
            try:
                self.started_at = time.monotonic()
                for index, message in enumerate(self._messages):
                    delay = self.started_at + index / self._rate - time.monotonic()
                    if delay > 0.002:
                        time.sleep(delay)
                    publisher.publish(message.topic, message.payload)
                    if message.reading is not None:
                        self.published_at.setdefault(message.reading.event_id, time.monotonic())
                self.finished_at = time.monotonic()
                publisher.wait_for_acks(len(self._messages), timeout_s=60)
            finally:
                publisher.close()
        except BaseException as error:
            self.error = error

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the MQTT load did not finish"
        assert self.error is None, repr(self.error)

    @property
    def rate_held(self) -> float:
        return len(self._messages) / max(self.finished_at - self.started_at, 1e-9)


class ArrivalMonitor:
    """Reads a topic from its start in a thread, as any consumer would through the restarts,
    noting when each event_id first arrived."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "drill-monitor",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": int(DURABLE_CLIENT["FLEET_KAFKA_FETCH_WAIT_MAX_MS"]),
                "log_level": 2,  # not a line per refused reconnect while the broker is down
            }
        )
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.first_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arrival-monitor", daemon=True)

    def start(self) -> ArrivalMonitor:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for message in self._consumer.consume(10_000, 0.2):
                    value = message.value()
                    if message.error() is None and value is not None:
                        event_id = str(json.loads(value)["event_id"])
                        self.first_seen.setdefault(event_id, time.monotonic())
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@dataclass
class Fault:
    """One kill -9 and restart of the broker, in the test's monotonic time."""

    killed_at: float
    back_at: float = 0.0

    @property
    def down_s(self) -> float:
        """From the kill until the restarted broker accepted connections."""
        return self.back_at - self.killed_at

    def first_new_record_s(self, load: MqttLoad, monitor: ArrivalMonitor) -> float | None:
        """From the broker's return until the first reading published after it was on
        fleet.telemetry (MQTT -> bridge -> Kafka -> a consumer)."""
        arrivals = [
            monitor.first_seen[e]
            for e, at in load.published_at.items()
            if at >= self.back_at and e in monitor.first_seen
        ]
        return round(min(arrivals) - self.back_at, 2) if arrivals else None

    def backlog_cleared_s(self, load: MqttLoad, monitor: ArrivalMonitor) -> float | None:
        """From the broker's return until every reading published before it was there."""
        before = [e for e, at in load.published_at.items() if at < self.back_at]
        if not all(e in monitor.first_seen for e in before):
            return None
        return round(max(0.0, *(monitor.first_seen[e] - self.back_at for e in before)), 2)


@dataclass
class FaultInjector:
    """Kills and restarts the broker at random moments of the load, in a thread."""

    brokers: LocalBrokers
    rng: random.Random
    started_at: float
    faults: list[Fault] = field(default_factory=list)
    error: BaseException | None = None

    def schedule(self) -> list[tuple[float, float]]:
        """(pause, down time) for each restart. The pause before a kill runs from the load's
        start (the first) or the broker's return (the others): at least MIN_UP_S, plus a
        random share of the time the load leaves after the warm-up, the down times and the
        last quiet part."""
        longs = set(self.rng.sample(range(RESTARTS), max(1, RESTARTS // 3)))
        downs = [
            self.rng.uniform(*(LONG_DOWN_S if k in longs else SHORT_DOWN_S))
            for k in range(RESTARTS)
        ]
        spare = LOAD_S - WARM_UP_S - LAST_QUIET_S - sum(downs) - RESTARTS * MIN_UP_S
        assert spare > 0, "the load is too short for its restarts"
        weights = [self.rng.random() for _ in range(RESTARTS)]
        pauses = [MIN_UP_S + spare * w / sum(weights) for w in weights]
        pauses[0] += WARM_UP_S
        return list(zip(pauses, downs, strict=True))

    def run(self) -> None:
        kafka = self.brokers.kafka
        assert kafka is not None
        try:
            since = self.started_at
            for pause, down_s in self.schedule():
                time.sleep(max(0.0, since + pause - time.monotonic()))
                fault = Fault(killed_at=time.monotonic())
                kafka.restart(down_s=down_s)
                fault.back_at = since = time.monotonic()
                self.faults.append(fault)
        except BaseException as error:
            self.error = error


def create_table(env: dict[str, str]) -> None:
    result = run_module("dataflows.store", ["--create-table"], env)
    assert result.returncode == 0, result.stdout + result.stderr


def create_topics(env: dict[str, str]) -> None:
    """As the Kubernetes Job does, before the flows start."""
    result = run_module("fleetwatch.topics", [], env)
    assert result.returncode == 0, result.stdout + result.stderr


def lake_event_ids(lake: Path) -> list[str]:
    if not any(lake.rglob("*.parquet")):
        return []
    frame = pl.read_parquet(lake / "**" / "*.parquet", hive_partitioning=True)
    return [str(e) for e in frame["event_id"].to_list()]


def wait_until(condition: Callable[[], bool], timeout_s: float, every_s: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every_s)
    return True


def test_s3_server_applies_conditional_puts_one_at_a_time(durable_brokers: LocalBrokers) -> None:
    """Tansu assigns offsets by conditional PUTs: of concurrent PUTs If-Match one ETag,
    exactly one may succeed."""
    s3 = durable_brokers.s3
    assert s3 is not None
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        region_name="us-east-1",
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=botocore.config.Config(max_pool_connections=32, retries={"max_attempts": 0}),
    )
    key = f"cas-{uuid.uuid4().hex}"
    for round_ in range(5):
        etag = client.put_object(Bucket=s3.bucket, Key=key, Body=f"r{round_}".encode())["ETag"]
        assert _race_if_match(client, s3.bucket, key, etag, 16) == {
            "ok": 1,
            "PreconditionFailed": 15,
        }


def _race_if_match(client: Any, bucket: str, key: str, etag: str, writers: int) -> Counter[str]:
    """``writers`` threads PUT the key at once, each If-Match ``etag``: their outcomes."""
    barrier = threading.Barrier(writers)
    outcomes: list[str] = []

    def put(writer: int) -> None:
        body = f"w{writer}".encode() * 1000
        barrier.wait()
        try:
            client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=etag)
            outcomes.append("ok")
        except botocore.exceptions.ClientError as error:
            outcomes.append(str(error.response["Error"]["Code"]))

    threads = [threading.Thread(target=put, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return Counter(outcomes)


def test_durable_broker_keeps_its_records_across_kill_9(
    durable_brokers: LocalBrokers, logs: Path
) -> None:
    namespace = Namespace(durable_brokers, partitions=1)
    kafka = durable_brokers.kafka
    assert kafka is not None
    values = [f"record-{n}".encode() for n in range(300)]
    # One key: one partition of the auto-created topic, so the order is Kafka's to keep.
    produce(durable_brokers.kafka_brokers, namespace.topic("keep"), [(b"k", v) for v in values])
    kafka.restart()
    records = consume_until(
        durable_brokers.kafka_brokers,
        namespace.topic("keep"),
        lambda r: len(r) >= len(values),
        timeout_s=60,
        settle_s=0.5,
    )
    assert [r.value for r in records] == values


@pytest.mark.timeout(int(240 + 90 * SCALE))  # the suite's 300 s would cut a scaled run short
def test_kafka_broker_kill_9_and_restart_under_the_whole_pipeline(
    durable_brokers: LocalBrokers,
    dynamodb_url: str,
    logs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    brokers = durable_brokers
    namespace = Namespace(brokers, partitions=1)
    rng = random.Random(SEED)
    config = FleetConfig(
        trucks=20,
        seed=SEED,
        interval_s=1.0,
        disorder_s=3.0,  # within ALLOWED_LATENESS (10 s)
        resend_share=0.01,
        episode_chance=0.02,
        topic_template=namespace.mqtt_topic_template,
    )
    messages = list(FleetSimulator(config).messages(int(RATE * LOAD_S)))
    readings: list[Reading] = [m.reading for m in messages if m.reading is not None]
    expected_ids = {r.event_id for r in readings}
    expected_alerts = reference_alerts(readings, RuleConfig())
    assert len(expected_alerts) > 5

    table = f"drill-{uuid.uuid4().hex[:12]}"
    lake = tmp_path / "lake"
    env = namespace.env(FLEET_LAKE_DIR=str(lake), FLEET_LAKE_ROLL_S="1", **DURABLE_CLIENT)
    store_env = {
        **AWS_ENV,
        **env,
        "FLEET_DYNAMODB_TABLE": table,
        "FLEET_DYNAMODB_ENDPOINT_URL": dynamodb_url,
        "FLEET_DYNAMODB_REGION": "us-east-1",
    }
    create_topics(env)
    create_table(store_env)
    receiver = EmailReceiver(SECRET.encode()).start()
    notify_env = env | {"FLEET_NOTIFY_URL": receiver.url, "FLEET_NOTIFY_SECRET": SECRET}

    def recovery(name: str) -> list[str]:
        directory = tmp_path / f"recovery-{name}"
        directory.mkdir()
        init_db_dir(directory, 1)
        return ["-r", str(directory), "-s", "1", "-b", "0"]

    flows = [
        FlowProcess("dataflows.bridge", env, logs / "bridge.log"),
        FlowProcess("dataflows.alerts", env, logs / "alerts.log", recovery("alerts")),
        FlowProcess("dataflows.archive", env, logs / "archive.log"),
        FlowProcess("dataflows.store", store_env, logs / "store.log", recovery("store")),
        FlowProcess("dataflows.notify", notify_env, logs / "notify.log", recovery("notify")),
    ]
    monitor = ArrivalMonitor(brokers.kafka_brokers, namespace.topic("telemetry"), 1)
    began = time.monotonic()
    try:
        for flow in flows:
            flow.start()
        flows[0].wait_for_event("mqtt_subscribed", timeout_s=60)
        monitor.start()
        load = MqttLoad(
            MqttUrl.parse(brokers.mqtt_url), brokers.mqtt_protocol, messages, RATE
        ).start()
        while not load.started_at:
            time.sleep(0.01)
        injector = FaultInjector(brokers, rng, load.started_at)
        faults_thread = threading.Thread(target=injector.run, name="faults", daemon=True)
        faults_thread.start()
        load.join(timeout_s=LOAD_S + 90)
        faults_thread.join(60)
        assert injector.error is None, repr(injector.error)
        drained_at = time.monotonic()

        # Everything through, or a bounded wait: the assertions below say what is missing.
        telemetry_complete = wait_until(lambda: expected_ids <= monitor.first_seen.keys(), 60)
        telemetry = consume_until(
            brokers.kafka_brokers,
            namespace.topic("telemetry"),
            lambda r: {str(x.json()["event_id"]) for x in r} >= expected_ids,
            timeout_s=30 if telemetry_complete else 5,
            settle_s=0.5,
        )
        # Quiet trucks flush ALLOWED_LATENESS after their last reading; alerts follow.
        alerts = consume_until(
            brokers.kafka_brokers,
            namespace.topic("alerts"),
            lambda r: {_key(x) for x in r} >= expected_alerts,
            timeout_s=60,
            settle_s=2,
        )
        wait_until(lambda: len(lake_event_ids(lake)) >= len(telemetry), 40)
        wait_until(lambda: len(scan_table(dynamodb_url, table)) >= len(expected_ids), 40, 2.0)
        wait_until(lambda: len(receiver.emails) >= len({_id(a) for a in alerts}), 30)
        time.sleep(2)  # extra copies, if any, show up
        settled_at = time.monotonic()
        late = consume_until(
            brokers.kafka_brokers, namespace.topic("late"), lambda r: False, 3, settle_s=0
        )
        exited = {
            f.module: code
            for f in flows
            if f.process is not None and (code := f.process.poll()) is not None
        }
    finally:
        monitor.stop()
        codes = [flow.stop() for flow in flows]
        receiver.stop()
    lake_ids = lake_event_ids(lake)
    items = scan_table(dynamodb_url, table)

    telemetry_ids = Counter(str(r.json()["event_id"]) for r in telemetry)
    lost = expected_ids - telemetry_ids.keys()
    alert_docs = [r.json() for r in alerts]
    ids_per_key: dict[tuple[str, str, tuple[str, ...]], set[str]] = {}
    for record in alerts:
        ids_per_key.setdefault(_key(record), set()).add(_id(record))
    emails_ok = Counter(c.key for c in receiver.calls if 200 <= c.status < 300)
    history = [i for i in items if i["sk"] != LATEST]
    latest = {i["truck_id"]: i["event_id"] for i in items if i["sk"] == LATEST}
    figures: dict[str, object] = {
        "seed": SEED,
        "scale": SCALE,
        "load_readings_per_s": round(load.rate_held, 1),
        "readings": len(expected_ids),
        "mqtt_messages": len(messages),
        "load_s": round(load.finished_at - load.started_at, 1),
        "faults": len(injector.faults),
        "down_s": [round(f.down_s, 2) for f in injector.faults],
        "first_new_record_s": [f.first_new_record_s(load, monitor) for f in injector.faults],
        "backlog_cleared_s": [f.backlog_cleared_s(load, monitor) for f in injector.faults],
        "readings_lost": len(lost),
        "telemetry_records": len(telemetry),
        # Copies beyond one record per MQTT message (a device's resend is a message of its own).
        "telemetry_duplicates": len(telemetry) - sum(m.reading is not None for m in messages),
        "resends": sum(m.is_resend for m in messages),
        "alerts_expected": len(expected_alerts),
        "alerts_missing": len(expected_alerts - ids_per_key.keys()),
        "alerts_unexpected": len(ids_per_key.keys() - expected_alerts),
        "alert_records": len(alert_docs),
        "alert_duplicates": len(alert_docs) - len(ids_per_key),
        "late_records": len(late),
        "lake_rows": len(lake_ids),
        "lake_exact": Counter(lake_ids) == telemetry_ids,
        "emails": len(receiver.emails),
        "emails_per_alert_max": max(emails_ok.values(), default=0),
        "store_history_items": len(history),
        "store_complete": {(i["truck_id"], i["event_id"]) for i in history}
        == {(r.truck_id, r.event_id) for r in readings},
        "settle_after_load_s": round(settled_at - drained_at, 1),
        "wall_s": round(time.monotonic() - began, 1),
        "flows_exited": exited,
    }
    report("drill-broker-restart" + (f"-x{SCALE:g}" if SCALE != 1 else ""), figures, capsys)

    for flow in flows:
        assert flow.module not in exited, (
            f"{flow.module} exited {exited[flow.module]} during the drill:\n{flow.log_tail(40)}"
        )
    assert len(injector.faults) == RESTARTS
    # Every reading on fleet.telemetry once or more.
    assert not lost, f"{len(lost)} readings lost, e.g. {sorted(lost)[:5]}"
    # Every alert once or more, always with the same id; no reading made late.
    assert set(ids_per_key) == expected_alerts
    assert all(len(ids) == 1 for ids in ids_per_key.values())
    assert late == [], [r.json()["event_id"] for r in late[:5]]
    # The lake: each record of fleet.telemetry exactly once.
    assert Counter(lake_ids) == telemetry_ids
    # One e-mail per alert.
    assert emails_ok == Counter({_id(r) for r in alerts})
    # The store: every reading once, the latest item per truck its newest reading.
    assert figures["store_complete"], f"{len(history)} items for {len(expected_ids)} readings"
    assert len(history) == len(expected_ids)
    assert latest == {r.truck_id: r.event_id for r in newest_per_truck(readings)}
    # SIGTERM at the end: the bridge stops gracefully (0); the others are simply ended.
    assert codes[0] == 0, flows[0].log_tail()


def _key(record: Record) -> tuple[str, str, tuple[str, ...]]:
    document = record.json()
    return (
        str(document["rule"]),
        str(document["truck_id"]),
        tuple(str(e) for e in document["event_ids"]),  # type: ignore[attr-defined]
    )


def _id(record: Record) -> str:
    return str(record.json()["alert_id"])
