"""Network faults between the flows and their brokers (issue 15, item 4b), under steady load
with real processes: the network between a flow and Kafka, or between the bridge and
Mosquitto, is stalled (a blackhole), reset or dropped by a TCP proxy (tests/integration/
proxy.py), shorter and longer than the clients' timeouts, then restored. Nothing is lost,
no flow exits, and the flows' logs and metrics say what happened. Figures go to
build/reports/drill-network-*.json.

Kafka: a Tansu of the drills' own advertises the proxy, so every Kafka connection, the
test's included, goes through it; the flow under test has its own ``client.id``
(FLEET_KAFKA_CLIENT_ID) and only its connections are faulted. MQTT: the bridge's
FLEET_MQTT_URL is the proxy; the publishers connect to Mosquitto directly.

The "long" stalls outlast the clients' timeouts. In CI those timeouts are lowered with the
pass-through variables (socket.timeout.ms, socket.connection.setup.timeout.ms) to keep the
file short; FLEET_DRILL_LONG=1 runs them with librdkafka's and paho's defaults instead
(a 75 s Kafka stall, past socket.timeout.ms = 60 s; a 70 s MQTT stall, past Mosquitto's
1.5 x 30 s keep-alive and paho's wait for a PINGRESP), which takes about 4 minutes more.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from devtools.localbrokers import BrokerProcess, LocalBrokers, free_port, tansu_broker
from devtools.mqtt_publisher import publish_paced
from devtools.simulator import FleetConfig, FleetSimulator, SimulatedMessage
from domain.alerts import alert_id
from domain.readings import Reading, encode_canonical
from domain.rules import RuleConfig
from runtime.settings import MqttUrl
from tests.builders import BEGINNING_MS
from tests.integration.flows import FlowProcess, Namespace, Record, Samples, scrape
from tests.integration.load import SteadyLoad
from tests.integration.proxy import FaultProxy, Mode, kafka_client_id
from tests.integration.reports import report
from tests.reference import reference_alerts

pytestmark = pytest.mark.integration

K = TypeVar("K", str, bytes)

LONG = os.environ.get("FLEET_DRILL_LONG", "").lower() in {"1", "true", "yes"}

# The Kafka client ids of the flows under test: the proxy faults only these connections.
ALERTS_CLIENT = "drill-alerts"
BRIDGE_CLIENT = "drill-bridge"


# -- fixtures ------------------------------------------------------------------------------


@dataclass
class ProxiedKafka:
    proxy: FaultProxy
    kafka: BrokerProcess


@pytest.fixture(scope="module")
def proxied_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedKafka]:
    """A Tansu that advertises the proxy in front of it: all Kafka traffic passes the proxy."""
    port = free_port()
    with FaultProxy(("127.0.0.1", port), identify=kafka_client_id, name="kafka-proxy") as proxy:
        kafka = tansu_broker(tmp_path_factory.mktemp("tansu"), port, advertised=proxy.address)
        kafka.start()
        try:
            yield ProxiedKafka(proxy, kafka)
        finally:
            kafka.stop()


@pytest.fixture
def kafka_proxy(proxied_kafka: ProxiedKafka) -> Iterator[FaultProxy]:
    """The proxy, counting afresh for this test, and passing everything after it."""
    proxied_kafka.proxy.reset_stats()
    yield proxied_kafka.proxy
    proxied_kafka.proxy.set_mode(Mode.PASS)


@pytest.fixture
def proxied_namespace(
    namespace: Namespace, proxied_kafka: ProxiedKafka, tmp_path: Path
) -> Namespace:
    """The test's namespace on the proxied Kafka (MQTT stays the session's)."""
    brokers = namespace.brokers
    return Namespace(
        LocalBrokers(tmp_path, brokers.mqtt, proxied_kafka.kafka, proxied_kafka.proxy.address)
    )


# -- watching what comes out ---------------------------------------------------------------


@dataclass
class Arrival:
    at: float  # time.monotonic() when the test's consumer received it
    topic: str
    record: Record


def as_arrival(message: Message) -> Arrival | None:
    """A consumed record, stamped now; None for an event (e.g. a transport error)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    value = message.value()
    if message.error() is not None or topic is None or partition is None or offset is None:
        return None
    return Arrival(time.monotonic(), topic, Record(message.key(), value or b"", partition, offset))


@dataclass
class Watcher:
    """Reads topics from the beginning on a thread, noting when each record arrived."""

    bootstrap: str
    topics: list[str]
    arrivals: list[Arrival] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        assignment: list[TopicPartition] = []
        while not self._stop.is_set():
            metadata = admin.list_topics(timeout=10).topics
            if all(t in metadata and metadata[t].error is None for t in self.topics):
                assignment = [
                    TopicPartition(t, p, 0) for t in self.topics for p in metadata[t].partitions
                ]
                break
            time.sleep(0.2)  # the flow creates its topics when it starts
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "fleetwatch-drills",
                "enable.auto.commit": False,
            }
        )
        consumer.assign(assignment)
        try:
            while not self._stop.is_set():
                for message in consumer.consume(10_000, 0.1):
                    arrival = as_arrival(message)
                    if arrival is not None:
                        self.arrivals.append(arrival)
        finally:
            consumer.close()

    def records(self, topic: str) -> list[Record]:
        return [a.record for a in list(self.arrivals) if a.topic == topic]

    def wait_until(self, done: Callable[[], bool], timeout_s: float, settle_s: float = 1.0) -> None:
        """Until ``done()`` or the timeout (the caller asserts), then ``settle_s`` for copies."""
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(settle_s)

    def first_after(self, moment: float, topic: str) -> float | None:
        """Seconds from ``moment`` to the first record on ``topic`` that arrived after it."""
        later = [a.at for a in list(self.arrivals) if a.topic == topic and a.at > moment]
        return round(min(later) - moment, 2) if later else None

    def count_between(self, start: float, end: float, topic: str) -> int:
        return sum(start < a.at <= end for a in list(self.arrivals) if a.topic == topic)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@dataclass
class MetricsSampler:
    """Scrapes a flow's metrics endpoint every ``interval_s`` on a thread."""

    port: int
    interval_s: float = 0.25
    samples: list[tuple[float, Samples]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> MetricsSampler:
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append((time.monotonic(), scrape(self.port)))
            except OSError:
                continue  # not serving yet, or a slow answer: the next one will do

    def series(self, name: str) -> list[tuple[float, float]]:
        """(time, sum over label sets) of metric ``name``, from the scrapes that had it."""
        series = []
        for at, samples in list(self.samples):
            values = [v for (n, _labels), v in samples.items() if n == name]
            if values:
                series.append((at, sum(values)))
        return series

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def first_time(
    series: list[tuple[float, float]], after: float, test: Callable[[float], bool]
) -> float | None:
    """Seconds from ``after`` to the first sample after it whose value passes ``test``."""
    for at, sample in series:
        if at > after and test(sample):
            return round(at - after, 2)
    return None


def value_at(series: list[tuple[float, float]], moment: float) -> float:
    """The last sampled value at or before ``moment`` (0 before the first)."""
    earlier = [v for at, v in series if at <= moment]
    return earlier[-1] if earlier else 0.0


def librdkafka_lines(flow: FlowProcess, *words: str) -> list[str]:
    """librdkafka's own log lines (``%<level>|...``, on stderr) that contain any of ``words``."""
    text = flow.log_path.read_text(errors="replace")
    return [
        line
        for line in text.splitlines()
        if line.startswith("%") and any(w.lower() in line.lower() for w in words)
    ]


def events(flow: FlowProcess) -> Counter[str]:
    return Counter(str(e.get("event")) for e in flow.log_events())


def assert_alive(flow: FlowProcess) -> None:
    assert flow.process is not None
    assert flow.process.poll() is None, f"{flow.module} exited:\n{flow.log_tail(60)}"


# -- (1) the alerts flow <-> Kafka, stalled ------------------------------------------------


@dataclass(frozen=True)
class Stall:
    name: str
    seconds: float
    # librdkafka settings of the flow (FLEET_KAFKA_<PROPERTY>): the timeouts the stall is
    # measured against.
    client_env: dict[str, str]
    beyond_timeouts: bool


SHORT_STALL = Stall("short", 5.0, {}, beyond_timeouts=False)  # < socket.timeout.ms (60 s)
LONG_STALL = (
    Stall("long-default-timeouts", 75.0, {}, beyond_timeouts=True)
    if LONG
    else Stall(
        "long",
        20.0,
        {
            "FLEET_KAFKA_SOCKET_TIMEOUT_MS": "6000",
            "FLEET_KAFKA_SOCKET_CONNECTION_SETUP_TIMEOUT_MS": "4000",
        },
        beyond_timeouts=True,
    )
)


class DisorderedLoad(SteadyLoad):
    """``SteadyLoad``'s readings (100 trucks at 1 Hz of event time), each block of
    ``disorder_s`` seconds of event time sent shuffled: disorder within the allowed lateness
    (10 s), so every reading is on time and the alerts are those of the readings sorted."""

    def __init__(self, bootstrap: str, topic: str, count: int, rate: float) -> None:
        super().__init__(bootstrap, topic, count, rate, trucks=100, seed=15)
        self.disorder_s = 3

    def _run(self) -> None:  # SteadyLoad's thread body, with the shuffling
        block: list[Reading] = []
        episodes: dict[str, int] = {}
        started = time.monotonic()
        for n in range(self._count):
            truck = f"T{n % self._trucks:03d}"
            ts_ms = BEGINNING_MS + (n // self._trucks) * 1_000
            block.append(Reading(f"{truck}-{n}", truck, ts_ms, self._speed(episodes, truck)))
            if len(block) < self._trucks * self.disorder_s and n < self._count - 1:
                continue
            self._rng.shuffle(block)
            for k, reading in enumerate(block, start=n + 1 - len(block)):
                self.readings.append(reading)
                self._producer.produce(
                    self._topic,
                    encode_canonical(reading),
                    reading.truck_id.encode(),
                    on_delivery=lambda e, _m: self.failures.append(str(e)) if e else None,
                )
                self._producer.poll(0)
                delay = started + (k + 1) / self._rate - time.monotonic()
                if delay > 0.002:
                    time.sleep(delay)
            block = []
        self._producer.flush(30)


def expected_alert_ids(load: SteadyLoad) -> set[str]:
    """The alerts of the load's readings by tests/reference.py (section 4 from its text)."""
    return {
        alert_id(rule, truck, events[0])
        for rule, truck, events in reference_alerts(load.readings, RuleConfig())
    }


@pytest.mark.parametrize("stall", [SHORT_STALL, LONG_STALL], ids=lambda s: s.name)
def test_alerts_flow_rides_out_a_kafka_blackhole(
    stall: Stall,
    proxied_namespace: Namespace,
    kafka_proxy: FaultProxy,
    logs: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace = proxied_namespace
    bootstrap = kafka_proxy.address
    rate, before_s, after_s = 1_000, 4.0, 8.0
    count = int(rate * (before_s + stall.seconds + after_s))
    metrics_port = free_port()
    env = namespace.env(
        FLEET_KAFKA_CLIENT_ID=ALERTS_CLIENT,
        BYTEWAX_DATAFLOW_API_ENABLED="true",
        BYTEWAX_DATAFLOW_API_PORT=str(metrics_port),
        **stall.client_env,
    )
    topics = [namespace.topic(kind) for kind in ("alerts", "late", "dlq")]
    flow = FlowProcess("dataflows.alerts", env, logs / "alerts.log").start()
    watcher = Watcher(bootstrap, topics).start()
    sampler = MetricsSampler(metrics_port).start()
    try:
        flow.wait_for_event("history_loaded", timeout_s=60)
        load = DisorderedLoad(bootstrap, namespace.topic("telemetry"), count, rate).start()
        time.sleep(before_s)
        connections = kafka_proxy.connections(ALERTS_CLIENT)
        kafka_proxy.set_mode(Mode.STALL, clients={ALERTS_CLIENT})
        stalled_at = time.monotonic()
        time.sleep(stall.seconds)
        assert_alive(flow)
        kafka_proxy.set_mode(Mode.PASS, clients={ALERTS_CLIENT})
        restored_at = time.monotonic()
        produced_by_restore = len(load.readings)
        load.join(timeout_s=before_s + stall.seconds + after_s + 60)
        expected = expected_alert_ids(load)
        alerts_topic = namespace.topic("alerts")
        watcher.wait_until(
            lambda: {str(r.json()["alert_id"]) for r in watcher.records(alerts_topic)} >= expected,
            timeout_s=90,
        )
        deadline = time.monotonic() + 30
        while True:  # until everything is read and the metrics have settled
            readings_in = sampler.series("fleetwatch_readings_in_total")
            lag = sampler.series("fleetwatch_consumer_lag_records")
            input_live = sampler.series("fleetwatch_input_live")
            settled = (
                bool(readings_in and lag)
                and readings_in[-1][1] >= count
                and lag[-1][1] == 0
                and (not input_live or input_live[-1][1] == 1)
            )
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert_alive(flow)
    finally:
        kafka_proxy.set_mode(Mode.PASS)
        sampler.stop()
        watcher.stop()
        flow.stop()

    got = Counter(str(r.json()["alert_id"]) for r in watcher.records(alerts_topic))
    late = watcher.records(namespace.topic("late"))
    dead = watcher.records(namespace.topic("dlq"))
    read_at_restore = value_at(readings_in, restored_at)
    alerts_made = sampler.series("fleetwatch_alerts_total")
    seen = events(flow)
    timeouts = librdkafka_lines(flow, "timed out", "REQTMOUT")
    figures: dict[str, object] = {
        "stall_s": stall.seconds,
        "client_timeouts": stall.client_env or "librdkafka defaults",
        "readings": count,
        "alerts_expected": len(expected),
        "alerts_missing": len(expected - set(got)),
        "alerts_unexpected": len(set(got) - expected),
        "alert_duplicates": sum(n - 1 for n in got.values()),
        "late": len(late),
        "dead_letters": len(dead),
        "readings_read": readings_in[-1][1] if readings_in else None,
        "flow_connections_before": connections,
        "flow_connections_accepted": kafka_proxy.stats.accepted[ALERTS_CLIENT],
        "first_read_after_restore_s": first_time(
            readings_in, restored_at, lambda v: v > read_at_restore
        ),
        "backlog_read_after_restore_s": first_time(
            readings_in, restored_at, lambda v: v >= produced_by_restore
        ),
        "first_alert_after_restore_s": watcher.first_after(restored_at, alerts_topic),
        "alerts_during_stall": watcher.count_between(stalled_at + 1, restored_at, alerts_topic),
        # Alerts the flow made while its input stood still: quiet trucks flushed meanwhile.
        "alerts_made_during_stall": value_at(alerts_made, restored_at)
        - value_at(alerts_made, stalled_at + 0.5),
        "lag_max_during_stall": max(
            (v for at, v in lag if stalled_at < at <= restored_at), default=None
        ),
        "lag_max_after_restore": max((v for at, v in lag if at > restored_at), default=None),
        # fleetwatch_input_live, where the flow has it: 0 while its input does not flow.
        "input_live_min_during_stall": min(
            (v for at, v in input_live if stalled_at + 2 < at <= restored_at), default=None
        ),
        "lag_final": lag[-1][1] if lag else None,
        "log_events": {k: v for k, v in seen.items() if "kafka" in k},
        "librdkafka_timeouts_logged": len(timeouts),
    }
    report(f"drill-network-alerts-stall-{stall.name}", figures, capsys)
    assert len(expected) > 10
    assert not expected - set(got), f"alerts lost: {sorted(expected - set(got))[:5]}"
    assert set(got) == expected
    assert late == [], "an outage made on-time readings late"
    assert dead == []
    assert readings_in, "no metrics scraped"
    assert readings_in[-1][1] >= count, "the flow did not read every reading"
    assert lag, "no consumer-lag metric"
    assert lag[-1][1] == 0, "consumer lag did not recover"
    # The lag gauge cannot show a stall (it is computed from the high watermark of the last
    # fetch answered); fleetwatch_input_live (connectors/liveness.py) does.
    assert figures["input_live_min_during_stall"] == 0, "the metrics did not show the stall"
    assert input_live, "no fleetwatch_input_live metric"
    assert input_live[-1][1] == 1, "fleetwatch_input_live did not recover"
    if stall.beyond_timeouts:
        # The requests in flight timed out and the connections were remade: the log says so.
        assert seen["kafka_consumer_retrying"] > 0 or timeouts, flow.log_tail(60)


# -- (2) the bridge <-> Kafka, reset -------------------------------------------------------


def fleet_messages(namespace: Namespace, count: int, seed: int) -> list[SimulatedMessage]:
    config = FleetConfig(
        trucks=50,
        seed=seed,
        bad_share=0.01,
        resend_share=0.01,
        topic_template=namespace.mqtt_topic_template,
    )
    return list(FleetSimulator(config).messages(count))


@dataclass
class Accounting:
    """Where every published message ended: valid readings on telemetry (by event_id), bad
    payloads on the DLQ (by their original bytes). Resends count once as published."""

    lost: list[str]  # event ids, or the first bytes of a bad payload
    duplicates: list[str]  # each extra copy: "<id> @<partition>:<offset>"

    @classmethod
    def of(cls, messages: list[SimulatedMessage], watcher: Watcher, ns: Namespace) -> Accounting:
        published_ids = Counter(m.reading.event_id for m in messages if m.reading is not None)
        published_bad = Counter(m.payload for m in messages if m.reading is None)
        ids: dict[str, list[Record]] = {}
        for record in watcher.records(ns.topic("telemetry")):
            ids.setdefault(str(record.json()["event_id"]), []).append(record)
        raws: dict[bytes, list[Record]] = {}
        for record in watcher.records(ns.topic("dlq")):
            raws.setdefault(base64.b64decode(str(record.json()["raw"])), []).append(record)
        lost = sorted(published_ids.keys() - ids.keys()) + sorted(
            repr(raw[:60]) for raw in published_bad.keys() - raws.keys()
        )
        duplicates = extra_copies(ids, published_ids) + extra_copies(raws, published_bad)
        return cls(lost, duplicates)


def extra_copies(found: dict[K, list[Record]], published: Counter[K]) -> list[str]:
    """Copies beyond the number published, each as "<key> @<partition>:<offset>"."""
    return [
        f"{key!r:.60} @{r.partition}:{r.offset}"
        for key, records in found.items()
        for r in records[published[key] :]
    ]


def publisher_thread(
    namespace: Namespace, messages: list[SimulatedMessage], rate: float, url: str | None = None
) -> tuple[threading.Thread, list[int]]:
    published: list[int] = []
    target = MqttUrl.parse(url or namespace.brokers.mqtt_url)
    thread = threading.Thread(
        target=lambda: published.append(
            publish_paced(
                target,
                namespace.brokers.mqtt_protocol,
                [(m.topic, m.payload) for m in messages],
                rate=rate,
            )
        ),
        name="publisher",
    )
    thread.start()
    return thread, published


def test_bridge_rides_out_kafka_connections_reset(
    proxied_namespace: Namespace,
    kafka_proxy: FaultProxy,
    logs: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace = proxied_namespace
    bootstrap = kafka_proxy.address
    rate, before_s, reset_s, after_s = 1_000, 4.0, 6.0, 4.0
    messages = fleet_messages(namespace, int(rate * (before_s + reset_s + after_s)), seed=31)
    env = namespace.env(FLEET_KAFKA_CLIENT_ID=BRIDGE_CLIENT)
    bridge = FlowProcess("dataflows.bridge", env, logs / "bridge.log").start()
    watcher = Watcher(bootstrap, [namespace.topic("telemetry"), namespace.topic("dlq")]).start()
    try:
        bridge.wait_for_event("mqtt_subscribed", timeout_s=60)
        publisher, published = publisher_thread(namespace, messages, rate)
        time.sleep(before_s)
        connections = kafka_proxy.connections(BRIDGE_CLIENT)
        kafka_proxy.set_mode(Mode.RESET, clients={BRIDGE_CLIENT})
        reset_at = time.monotonic()
        time.sleep(reset_s)  # new connections are reset too, as they come
        assert_alive(bridge)
        kafka_proxy.set_mode(Mode.PASS, clients={BRIDGE_CLIENT})
        restored_at = time.monotonic()
        publisher.join(timeout=120)
        assert published == [len(messages)], "the broker acknowledged every publish"
        watcher.wait_until(
            lambda: not Accounting.of(messages, watcher, namespace).lost, timeout_s=90
        )
        assert_alive(bridge)
    finally:
        kafka_proxy.set_mode(Mode.PASS)
        watcher.stop()
        bridge.stop()
    telemetry_topic = namespace.topic("telemetry")
    accounting = Accounting.of(messages, watcher, namespace)
    resets = librdkafka_lines(bridge, "reset", "disconnected")
    stats = kafka_proxy.stats
    figures: dict[str, object] = {
        "published": len(messages),
        "reset_s": reset_s,
        "flow_connections_reset": stats.reset[BRIDGE_CLIENT],
        "flow_connections_refused": stats.refused[BRIDGE_CLIENT],
        "flow_connections_before": connections,
        "records_during_reset": watcher.count_between(reset_at + 1, restored_at, telemetry_topic),
        "first_record_after_restore_s": watcher.first_after(restored_at, telemetry_topic),
        "lost": len(accounting.lost),
        "duplicates": len(accounting.duplicates),
        "lost_examples": accounting.lost[:10],
        "duplicate_examples": accounting.duplicates[:10],
        "log_events": {k: v for k, v in events(bridge).items() if "kafka" in k},
        "librdkafka_disconnects_logged": len(resets),
    }
    report("drill-network-bridge-kafka-reset", figures, capsys)
    assert stats.reset[BRIDGE_CLIENT] > 0, "the bridge had no Kafka connection to reset"
    assert not accounting.lost, figures
    assert resets, bridge.log_tail(60)


# -- (3) the bridge <-> Mosquitto, stalled and reset ---------------------------------------


@dataclass(frozen=True)
class MqttFault:
    mode: Mode
    seconds: float
    then_s: float  # how long to let things recover before the next fault


MQTT_FAULTS = [
    MqttFault(Mode.STALL, 5.0, 5.0),  # < the 30 s keep-alive: nobody notices but the clock
    MqttFault(Mode.RESET, 5.0, 6.0),
    MqttFault(Mode.DROP, 3.0, 5.0),
]
if LONG:  # past Mosquitto's 1.5 x keep-alive (45 s) and paho's own PINGRESP timeout
    MQTT_FAULTS.insert(1, MqttFault(Mode.STALL, 70.0, 10.0))


def test_bridge_rides_out_mosquitto_stalled_and_reset(
    namespace: Namespace, logs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    brokers = namespace.brokers
    rate, before_s = 800, 3.0
    duration = before_s + sum(f.seconds + f.then_s for f in MQTT_FAULTS)
    messages = fleet_messages(namespace, int(rate * duration), seed=32)
    with FaultProxy(("127.0.0.1", brokers.mqtt.port), name="mqtt-proxy") as proxy:
        env = namespace.env(FLEET_MQTT_URL=f"mqtt://{proxy.address}")
        bridge = FlowProcess("dataflows.bridge", env, logs / "bridge.log").start()
        telemetry_topic = namespace.topic("telemetry")
        watcher = Watcher(brokers.kafka_brokers, [telemetry_topic, namespace.topic("dlq")])
        watcher.start()
        faults: list[dict[str, object]] = []
        try:
            bridge.wait_for_event("mqtt_subscribed", timeout_s=60)
            publisher, published = publisher_thread(namespace, messages, rate)
            time.sleep(before_s)
            for fault in MQTT_FAULTS:
                disconnects = events(bridge)["mqtt_disconnected"]
                proxy.set_mode(fault.mode)
                started = time.monotonic()
                time.sleep(fault.seconds)
                assert_alive(bridge)
                proxy.set_mode(Mode.PASS)
                restored = time.monotonic()
                time.sleep(fault.then_s)
                faults.append(
                    {
                        "mode": str(fault.mode),
                        "seconds": fault.seconds,
                        "records_during": watcher.count_between(
                            started + 1, restored, telemetry_topic
                        ),
                        "first_record_after_restore_s": watcher.first_after(
                            restored, telemetry_topic
                        ),
                        "mqtt_disconnected_logged": events(bridge)["mqtt_disconnected"]
                        - disconnects,
                    }
                )
            publisher.join(timeout=120)
            assert published == [len(messages)], "the broker acknowledged every publish"
            watcher.wait_until(
                lambda: not Accounting.of(messages, watcher, namespace).lost, timeout_s=90
            )
            assert_alive(bridge)
        finally:
            proxy.set_mode(Mode.PASS)
            watcher.stop()
            bridge.stop()
    accounting = Accounting.of(messages, watcher, namespace)
    seen = events(bridge)
    figures: dict[str, object] = {
        "published": len(messages),
        "faults": faults,
        "lost": len(accounting.lost),
        "duplicates": len(accounting.duplicates),
        "lost_examples": accounting.lost[:10],
        "duplicate_examples": accounting.duplicates[:10],
        "log_events": {k: v for k, v in seen.items() if k.startswith("mqtt")},
    }
    report("drill-network-bridge-mosquitto" + ("-long" if LONG else ""), figures, capsys)
    assert not accounting.lost, figures
    by_mode = {str(f["mode"]): f for f in faults}
    for mode in ("reset", "drop"):
        assert by_mode[mode]["mqtt_disconnected_logged"], f"no mqtt_disconnected after {mode}"
    if LONG:
        long_stall = faults[1]
        assert long_stall["mqtt_disconnected_logged"], "a stall past keep-alive went unnoticed"
