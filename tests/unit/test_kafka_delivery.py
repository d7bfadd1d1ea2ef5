"""Kafka delivery failures (connectors/kafka.py): classification, dead-lettering a refused
reading, waiting out transient trouble, and stopping the process with one error line and
KAFKA_DELIVERY_EXIT_CODE. A scripted fake producer stands in for librdkafka; the real
broker is in tests/integration/test_broker_faults.py."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from structlog.testing import capture_logs

from connectors.kafka import (
    KAFKA_DELIVERY_EXIT_CODE,
    PRODUCER_DEFAULTS,
    ConfirmedKafkaSink,
    ConfirmedProducer,
    Failure,
    KafkaDeliveryError,
    OutboundRecord,
    classify,
    delivery_budget_s,
)
from connectors.kafka_keyed_sink import KafkaTopicSink
from connectors.mqtt import MqttMessage
from dataflows.bridge import BridgeRouter
from domain.dead_letters import DeadLetter
from runtime.settings import Topics
from tests.builders import RECEIVED_MS, payload

E = KafkaError

# What librdkafka hands the application, and what fleetwatch does with it.
CLASSIFICATION = [
    (E._MSG_TIMED_OUT, Failure.OUT_OF_BUDGET),
    (E._TIMED_OUT, Failure.OUT_OF_BUDGET),
    (E._TRANSPORT, Failure.OUT_OF_BUDGET),
    (E._ALL_BROKERS_DOWN, Failure.OUT_OF_BUDGET),
    (E.REQUEST_TIMED_OUT, Failure.OUT_OF_BUDGET),
    (E.NOT_ENOUGH_REPLICAS, Failure.OUT_OF_BUDGET),
    (E.NOT_ENOUGH_REPLICAS_AFTER_APPEND, Failure.OUT_OF_BUDGET),
    (E.LEADER_NOT_AVAILABLE, Failure.OUT_OF_BUDGET),
    (E.NOT_LEADER_FOR_PARTITION, Failure.OUT_OF_BUDGET),
    (E.KAFKA_STORAGE_ERROR, Failure.OUT_OF_BUDGET),
    (E.MSG_SIZE_TOO_LARGE, Failure.REFUSED),
    (E.INVALID_RECORD, Failure.REFUSED),
    (E.INVALID_MSG, Failure.REFUSED),
    (E.UNKNOWN_TOPIC_OR_PART, Failure.MISSING_TOPIC),
    (E._UNKNOWN_TOPIC, Failure.MISSING_TOPIC),
    (E._UNKNOWN_PARTITION, Failure.MISSING_TOPIC),
    (E.TOPIC_AUTHORIZATION_FAILED, Failure.NOT_AUTHORISED),
    (E.CLUSTER_AUTHORIZATION_FAILED, Failure.NOT_AUTHORISED),
    (E.OUT_OF_ORDER_SEQUENCE_NUMBER, Failure.PRODUCER_FATAL),
    (E.UNKNOWN_PRODUCER_ID, Failure.PRODUCER_FATAL),
    (E._FENCED, Failure.PRODUCER_FATAL),
    (E._PURGE_QUEUE, Failure.PRODUCER_FATAL),
    (E.RECORD_LIST_TOO_LARGE, Failure.PERMANENT),
    (E.INVALID_TIMESTAMP, Failure.PERMANENT),
    (E.INVALID_REQUIRED_ACKS, Failure.PERMANENT),
]


@pytest.mark.parametrize(("code", "expected"), CLASSIFICATION)
def test_classification(code: int, expected: Failure) -> None:
    assert classify(KafkaError(code)) is expected


def test_an_error_flagged_fatal_is_a_producer_failure_whatever_its_code() -> None:
    assert classify(KafkaError(E.MSG_SIZE_TOO_LARGE, "x", fatal=True)) is Failure.PRODUCER_FATAL


# -- a scripted producer ----------------------------------------------------------------

Outcome = KafkaError | BaseException | None
Script = Callable[[str, bytes], Outcome]


def delivered(_topic: str, _value: bytes) -> Outcome:
    return None


class FakeProducer:
    """librdkafka's contract as the sink sees it: ``produce`` queues a record (or raises,
    as the script says); ``poll``/``flush`` serve the queued delivery reports, each with
    the script's error or none. While ``held`` is set, nothing is confirmed (an outage)."""

    def __init__(self, config: dict[str, Any], script: Script) -> None:
        self.config = config
        self.script = script
        self.error_cb: Callable[[KafkaError], None] = config["error_cb"]
        self.produced: list[tuple[str, bytes | None, bytes]] = []
        self.held = threading.Event()
        self._pending: list[tuple[Callable[..., None], KafkaError | None]] = []
        self._lock = threading.Lock()

    def produce(
        self, topic: str, value: bytes, key: bytes | None, *, on_delivery: Callable[..., None]
    ) -> None:
        outcome = self.script(topic, value)
        if isinstance(outcome, BaseException):
            raise outcome
        with self._lock:
            self.produced.append((topic, key, value))
            self._pending.append((on_delivery, outcome))

    def poll(self, timeout: float) -> int:
        if self.held.is_set():
            time.sleep(min(timeout, 0.01))
            return 0
        with self._lock:
            reports, self._pending = self._pending, []
        for callback, error in reports:
            callback(error, None)
        if not reports:
            time.sleep(min(timeout, 0.005))
        return len(reports)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return len(self)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


class Harness:
    """A sink partition (or ConfirmedProducer) on a FakeProducer, with a recorded stop."""

    def __init__(self, script: Script = delivered) -> None:
        self.script = script
        self.producers: list[FakeProducer] = []
        self.stops: list[int] = []
        self.stopped = threading.Event()
        self.clock = 0.0

    def factory(self, config: dict[str, Any]) -> FakeProducer:
        producer = FakeProducer(config, self.script)
        self.producers.append(producer)
        return producer

    def stop(self, code: int) -> None:  # production: os._exit(code)
        self.stops.append(code)
        self.stopped.set()

    def now(self) -> float:
        return self.clock

    @property
    def producer(self) -> FakeProducer:
        [producer] = self.producers
        return producer

    def sink(self, wait_for_delivery: bool, config: dict[str, str] | None = None) -> Any:
        sink = ConfirmedKafkaSink(
            config or {"bootstrap.servers": "k:9092"},
            wait_for_delivery=wait_for_delivery,
            producer_factory=self.factory,
            stop=self.stop,
            now=self.now,
        )
        return sink.build("kafka_sink", 0, 1)


class Acks:
    def __init__(self) -> None:
        self.acked: list[str] = []

    def ack(self, name: str) -> Callable[[], None]:
        return lambda: self.acked.append(name)


def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with capture_logs() as captured:
        yield captured


def failing(topic: str, error: Outcome) -> Script:
    """Every record for ``topic`` fails with ``error``; others are delivered."""
    return lambda t, _v: error if t == topic else None


# -- confirmed, and the producer's configuration ------------------------------------------


def test_every_confirmed_record_is_acknowledged_once_and_nothing_stops() -> None:
    harness, acks = Harness(), Acks()
    partition = harness.sink(wait_for_delivery=True)
    partition.write_batch(
        [OutboundRecord("alerts", b"T1", b"a", acks.ack(f"a{i}")) for i in range(3)]
    )
    assert acks.acked == ["a0", "a1", "a2"]  # confirmed before write_batch returned
    partition.close()
    assert harness.stops == []


def test_the_producer_runs_with_the_budget_as_its_message_timeout() -> None:
    harness = Harness()
    harness.sink(True, {"bootstrap.servers": "k:9092", "message.timeout.ms": "42000"}).close()
    config = harness.producer.config
    assert config["message.timeout.ms"] == "42000"
    assert config["enable.idempotence"] == "true"  # librdkafka's retries keep the order
    assert delivery_budget_s(config) == 42
    assert delivery_budget_s({}) == 600  # the default budget, FLEET_KAFKA_DELIVERY_BUDGET_S
    assert PRODUCER_DEFAULTS["message.timeout.ms"] == "600000"


def test_a_full_local_queue_is_waited_for_not_a_failure() -> None:
    attempts: list[bytes] = []

    def script(_topic: str, value: bytes) -> Outcome:
        attempts.append(value)
        return BufferError() if len(attempts) == 1 else None

    harness, acks = Harness(script), Acks()
    partition = harness.sink(wait_for_delivery=True)
    partition.write_batch([OutboundRecord("alerts", None, b"a", acks.ack("a"))])
    assert acks.acked == ["a"]
    assert len(harness.producer.produced) == 1
    assert harness.stops == []
    partition.close()


# -- fatal: one error line, the exit code ------------------------------------------------


@pytest.mark.parametrize(
    ("error", "failure", "advice"),
    [
        (KafkaError(E.MSG_SIZE_TOO_LARGE), "refused", "max.message.bytes"),
        (KafkaError(E._MSG_TIMED_OUT), "out_of_budget", "budget of 600 s"),
        (KafkaError(E.UNKNOWN_TOPIC_OR_PART), "missing_topic", "create it"),
        (KafkaError(E.TOPIC_AUTHORIZATION_FAILED), "not_authorised", "grant"),
        (KafkaError(E.RECORD_LIST_TOO_LARGE), "permanent", "fix the cause"),
    ],
)
def test_a_failed_report_stops_the_process_with_one_clear_line(
    logs: list[dict[str, Any]], error: KafkaError, failure: str, advice: str
) -> None:
    harness, acks = Harness(failing("alerts", error)), Acks()
    partition = harness.sink(wait_for_delivery=True)
    with pytest.raises(KafkaDeliveryError, match="'alerts'"):
        partition.write_batch([OutboundRecord("alerts", b"T1", b"a", acks.ack("a"))])
    assert harness.stops == [KAFKA_DELIVERY_EXIT_CODE]
    assert acks.acked == []  # not confirmed: the input is not acknowledged, so not lost
    [line] = events(logs, "kafka_delivery_failed")
    assert line["log_level"] == "error"
    assert (line["topic"], line["error_code"], line["error_name"]) == (
        "alerts",
        error.code(),
        error.name(),
    )
    assert line["failure"] == failure
    assert line["exit_code"] == KAFKA_DELIVERY_EXIT_CODE
    assert advice in line["what_to_do"]
    assert "restart" in line["what_to_do"]


def test_a_record_refused_before_it_is_queued_stops_the_same_way(
    logs: list[dict[str, Any]],
) -> None:
    refused = KafkaException(KafkaError(E.MSG_SIZE_TOO_LARGE, "Message size too large"))
    harness = Harness(failing("alerts", refused))
    partition = harness.sink(wait_for_delivery=True)
    with pytest.raises(KafkaDeliveryError):
        partition.write_batch([OutboundRecord("alerts", None, b"a" * 2000)])
    assert harness.stops == [KAFKA_DELIVERY_EXIT_CODE]
    assert events(logs, "kafka_delivery_failed")[0]["error_name"] == "MSG_SIZE_TOO_LARGE"


def test_two_failures_make_one_line_and_one_stop(logs: list[dict[str, Any]]) -> None:
    harness = Harness(failing("alerts", KafkaError(E._MSG_TIMED_OUT)))
    partition = harness.sink(wait_for_delivery=True)
    with pytest.raises(KafkaDeliveryError):
        partition.write_batch(
            [OutboundRecord("alerts", None, b"a"), OutboundRecord("alerts", None, b"b")]
        )
    assert harness.stops == [KAFKA_DELIVERY_EXIT_CODE]
    assert len(events(logs, "kafka_delivery_failed")) == 1


def test_asynchronous_failure_stops_the_process_without_waiting_for_another_batch(
    logs: list[dict[str, Any]],
) -> None:
    """The bridge's path: reports are served by the poller thread; the MQTT input may send
    nothing more (its in-flight window is full), so the poller itself must stop the flow."""
    harness, acks = Harness(failing("telemetry", KafkaError(E._MSG_TIMED_OUT))), Acks()
    partition = harness.sink(wait_for_delivery=False)
    partition.write_batch(
        [
            OutboundRecord("dlq", None, b"d", acks.ack("d")),
            OutboundRecord("telemetry", b"T1", b"t", acks.ack("t")),
        ]
    )
    assert harness.stopped.wait(5), "the poller did not stop the process"
    assert harness.stops == [KAFKA_DELIVERY_EXIT_CODE]
    eventually(lambda: acks.acked == ["d"])  # the confirmed one only
    assert partition._poller.is_alive()  # the callback raised nothing into the poller
    assert events(logs, "kafka_delivery_failed")[0]["failure"] == "out_of_budget"


def test_a_fatal_producer_error_event_stops_the_process(logs: list[dict[str, Any]]) -> None:
    harness = Harness()
    partition = harness.sink(wait_for_delivery=False)
    harness.producer.error_cb(KafkaError(E.OUT_OF_ORDER_SEQUENCE_NUMBER, "desync", fatal=True))
    assert harness.stops == [KAFKA_DELIVERY_EXIT_CODE]
    [line] = events(logs, "kafka_delivery_failed")
    assert (line["failure"], line["error_name"]) == (
        "producer_fatal",
        "OUT_OF_ORDER_SEQUENCE_NUMBER",
    )
    with pytest.raises(KafkaDeliveryError):
        partition.write_batch([OutboundRecord("alerts", None, b"a")])


def test_secrets_in_librdkafka_text_are_masked(logs: list[dict[str, Any]]) -> None:
    secret = "s3cr3t-passw0rd"
    error = KafkaError(E.TOPIC_AUTHORIZATION_FAILED, f"denied for password {secret}")
    harness = Harness(failing("alerts", error))
    config = {"bootstrap.servers": "k:9092", "sasl.password": secret}
    with pytest.raises(KafkaDeliveryError) as raised:
        harness.sink(True, config).write_batch([OutboundRecord("alerts", None, b"a")])
    assert secret not in str(raised.value)
    assert secret not in json.dumps(events(logs, "kafka_delivery_failed"))


# -- transient: waited out, logged, rate-limited -----------------------------------------


def test_transient_trouble_is_waited_out_and_logged_at_most_every_15_s(
    logs: list[dict[str, Any]],
) -> None:
    harness, acks = Harness(), Acks()
    partition = harness.sink(wait_for_delivery=False)
    producer = harness.producer
    producer.held.set()  # the broker stops answering: librdkafka keeps retrying
    producer.error_cb(KafkaError(E._TRANSPORT, "127.0.0.1:9092/1: Connection refused"))
    partition.write_batch([OutboundRecord("telemetry", b"T1", b"t", acks.ack("t"))])

    def retrying() -> list[dict[str, Any]]:
        return events(logs, "kafka_delivery_retrying")

    for clock, expected in [(4.0, 0), (5.5, 1), (15.0, 1), (20.0, 1), (21.0, 2), (30.0, 2)]:
        harness.clock = clock
        time.sleep(0.05)  # a few poller rounds at this time
        eventually(lambda n=expected: len(retrying()) == n)  # type: ignore[misc]
    first = retrying()[0]
    assert first["log_level"] == "warning"
    assert first["waiting_records"] == 1
    assert first["unconfirmed_for_s"] == 5.5
    assert first["budget_s"] == 600
    assert "Connection refused" in first["last_error"]
    producer.held.clear()  # the broker is back
    eventually(lambda: acks.acked == ["t"])
    eventually(lambda: len(events(logs, "kafka_delivery_resumed")) == 1)
    partition.close()
    assert harness.stops == []
    assert events(logs, "kafka_delivery_failed") == []


# -- a refused reading is dead-lettered --------------------------------------------------

ROUTES = BridgeRouter("fleet/+/telemetry", Topics(telemetry="telemetry", dlq="dlq"))


def reading_record(acks: Acks, name: str = "m1") -> OutboundRecord:
    message = MqttMessage("fleet/T1/telemetry", payload(), RECEIVED_MS, acks.ack(name))
    return ROUTES.route_message(message)


def test_the_bridge_gives_a_reading_a_dead_letter_to_fall_back_on() -> None:
    acks = Acks()
    record = reading_record(acks)
    assert record.topic == "telemetry"
    assert record.if_refused is not None
    dead = record.if_refused("Kafka refused the record for telemetry: MSG_SIZE_TOO_LARGE (x)")
    assert (dead.topic, dead.key) == ("dlq", b"T1")
    assert dead.if_refused is None  # a refused dead letter stops the flow: no loop
    letter = json.loads(dead.value)
    assert (letter["stage"], letter["reason"]) == ("bridge", "refused_by_kafka")
    assert letter["detail"].startswith("Kafka refused the record for telemetry")
    assert base64.b64decode(letter["raw"]) == payload()  # the original, whole
    assert letter["source_topic"] == "fleet/T1/telemetry"
    assert dead.on_delivered is not None
    dead.on_delivered()
    assert acks.acked == ["m1"]  # the MQTT message is acknowledged by its dead letter


def test_bad_input_dead_letters_carry_no_fallback() -> None:
    message = MqttMessage("fleet/T1/telemetry", b"{not json", RECEIVED_MS, lambda: None)
    # A dead letter, not a telemetry record: nothing for Kafka to refuse and fall back from.
    assert isinstance(ROUTES.route_message(message), DeadLetter)


def test_a_refused_reading_is_dead_lettered_and_acknowledged_once_the_dlq_has_it(
    logs: list[dict[str, Any]],
) -> None:
    harness, acks = Harness(failing("telemetry", KafkaError(E.MSG_SIZE_TOO_LARGE))), Acks()
    partition = harness.sink(wait_for_delivery=False)
    partition.write_batch([reading_record(acks, "m1"), reading_record(acks, "m2")])
    eventually(lambda: sorted(acks.acked) == ["m1", "m2"])
    partition.close()
    assert harness.stops == []
    topics = [topic for topic, _key, _value in harness.producer.produced]
    assert topics == ["telemetry", "telemetry", "dlq", "dlq"]
    reasons = {json.loads(v)["reason"] for t, _k, v in harness.producer.produced if t == "dlq"}
    assert reasons == {"refused_by_kafka"}
    [warning] = events(logs, "kafka_record_refused")  # the second within 10 s: not logged
    assert (warning["topic"], warning["error_name"]) == ("telemetry", "MSG_SIZE_TOO_LARGE")


def test_a_refused_reading_whose_dead_letter_is_refused_too_stops_the_process(
    logs: list[dict[str, Any]],
) -> None:
    harness, acks = Harness(lambda _t, _v: KafkaError(E.MSG_SIZE_TOO_LARGE)), Acks()
    partition = harness.sink(wait_for_delivery=False)
    partition.write_batch([reading_record(acks)])
    assert harness.stopped.wait(5)
    time.sleep(0.1)
    assert [t for t, _k, _v in harness.producer.produced] == ["telemetry", "dlq"]  # no loop
    assert acks.acked == []
    assert events(logs, "kafka_delivery_failed")[0]["topic"] == "dlq"


def test_a_refused_record_without_a_fallback_is_not_dead_lettered() -> None:
    harness = Harness(failing("alerts", KafkaError(E.MSG_SIZE_TOO_LARGE)))
    with pytest.raises(KafkaDeliveryError):
        KafkaTopicSink({}, "alerts", producer_factory=harness.factory, stop=harness.stop).build(
            "out", 0, 1
        ).write_batch([("T1", b"alert")])
    assert [t for t, _k, _v in harness.producer.produced] == ["alerts"]
    assert harness.stops == [KAFKA_DELIVERY_EXIT_CODE]


# -- callbacks never raise ---------------------------------------------------------------


def test_an_acknowledgement_that_raises_does_not_end_the_poller(
    logs: list[dict[str, Any]],
) -> None:
    harness, acks = Harness(), Acks()

    def broken_ack() -> None:
        raise ConnectionError("paho: not connected")

    partition = harness.sink(wait_for_delivery=False)
    partition.write_batch([OutboundRecord("telemetry", None, b"1", broken_ack)])
    eventually(lambda: len(events(logs, "kafka_delivery_callback_failed")) == 1)
    partition.write_batch([OutboundRecord("telemetry", None, b"2", acks.ack("2"))])
    eventually(lambda: acks.acked == ["2"])
    assert partition._poller.is_alive()
    partition.close()
    assert harness.stops == []


# -- ConfirmedProducer (dead letters sent from inside a step) ------------------------------


def test_confirmed_producer_sends_and_waits() -> None:
    harness, acks = Harness(), Acks()
    producer = ConfirmedProducer({}, producer_factory=harness.factory, stop=harness.stop)
    producer.send_all([OutboundRecord("dlq", None, b"d", acks.ack("d"))])
    assert acks.acked == ["d"]
    assert harness.stops == []


def test_confirmed_producer_stops_the_process_on_a_refused_dead_letter(
    logs: list[dict[str, Any]],
) -> None:
    harness = Harness(failing("dlq", KafkaError(E.MSG_SIZE_TOO_LARGE)))
    producer = ConfirmedProducer({}, producer_factory=harness.factory, stop=harness.stop)
    with pytest.raises(KafkaDeliveryError):
        producer.send_all([OutboundRecord("dlq", None, b"d")])
    assert harness.stops == [KAFKA_DELIVERY_EXIT_CODE]
    assert events(logs, "kafka_delivery_failed")[0]["step"] == "dead-letters"


# -- the real exit -----------------------------------------------------------------------


def test_stop_process_exits_with_the_code_from_any_thread_and_flushes_stderr() -> None:
    code = """if True:
        import sys, threading
        from connectors.kafka import KAFKA_DELIVERY_EXIT_CODE, stop_process
        sys.stderr.write("last words")  # no newline: still buffered unless flushed
        t = threading.Thread(target=stop_process, args=(KAFKA_DELIVERY_EXIT_CODE,))
        t.start(); t.join()
        print("not reached")
    """
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == KAFKA_DELIVERY_EXIT_CODE == 69
    assert done.stderr.endswith("last words")
    assert "not reached" not in done.stdout
