"""Kafka output with a delivery report for every record, topic set-up and config checks.

Bytewax 0.21.1's ``KafkaSink`` ignores delivery reports, so a failed produce would pass
unnoticed. ``ConfirmedKafkaSink`` calls each record's ``on_delivered`` only once the broker
confirmed it; ``ConfirmedProducer`` does the same for a few records sent from inside a step.

**Delivery failures** (README "Delivery failures"). Transient trouble (a broker restarting
or unreachable, a leader moving, too few in-sync replicas, a request timing out) is retried
by librdkafka itself, in order and without duplicates (idempotence), for up to the
delivery budget: ``message.timeout.ms``, set from FLEET_KAFKA_DELIVERY_BUDGET_S (600 s by
default). fleetwatch does not re-produce on top of that: a record re-produced after
librdkafka gave up on it would land behind records produced after it, and readings out of
order are late readings (CONTRACT.md section 4). While records wait without a single
confirmation, ``kafka_delivery_retrying`` is logged (a warning, every 15 s at most). So a
delivery report with an error is final, and ``classify`` sorts it:

* the budget ran out (``_MSG_TIMED_OUT``, or a transient error librdkafka stopped retrying),
  the topic is missing, access is denied, the producer hit a fatal error, or anything else
  librdkafka calls permanent: the process stops, see ``stop_process``;
* Kafka refuses the record itself (too large, invalid): it is dead-lettered if it carries
  an ``if_refused`` fallback (the bridge's readings: a record that cannot be stored must
  not make the bridge crash-loop on it), otherwise the process stops. A dead letter that is
  refused in turn stops the process: there is no loop.

Stopping means one ``kafka_delivery_failed`` error line (topic, error code and name, what
to do) and exit code ``KAFKA_DELIVERY_EXIT_CODE``, never a Rust panic: see ``stop_process``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import structlog
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from typing_extensions import override

from runtime.redaction import is_secret_name, redact_text
from runtime.settings import DEFAULT_DELIVERY_BUDGET_S, KafkaSettings, SettingsError

log = structlog.get_logger(__name__)

# The exit code of a flow stopped by a Kafka delivery failure: sysexits' EX_UNAVAILABLE
# ("a service is unavailable"), distinct from 1 (a Python error) and from 101/134 (a Rust
# panic). Kubernetes restarts the pod; an operator's alert can key on it. Documented in the
# README ("Delivery failures"); defined here only.
KAFKA_DELIVERY_EXIT_CODE = 69

# Defaults that favour safety and batching; FLEET_KAFKA_<PROPERTY> variables override them.
# ``message.timeout.ms`` is the delivery budget (Settings.kafka_producer_config() sets it from
# FLEET_KAFKA_DELIVERY_BUDGET_S; this default serves producers built without it).
PRODUCER_DEFAULTS: Mapping[str, str] = {
    "acks": "all",
    "enable.idempotence": "true",
    "linger.ms": "5",
    "batch.num.messages": "10000",
    "message.timeout.ms": str(round(DEFAULT_DELIVERY_BUDGET_S * 1000)),
}

# No confirmation for this long while records wait: log ``kafka_delivery_retrying``, then
# again at most every _RETRYING_EVERY_S while it lasts.
_STALLED_AFTER_S = 5.0
_RETRYING_EVERY_S = 15.0
# Refused records dead-lettered: one ``kafka_record_refused`` warning per this interval.
_REFUSED_LOG_EVERY_S = 10.0


class KafkaDeliveryError(RuntimeError):
    """A record could not be delivered to Kafka. In production the process has exited by
    then (``stop_process``); only a test's stop function returns and lets this be raised."""


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    """A record to produce; ``on_delivered`` runs once the broker confirmed it.

    ``if_refused``, when given, turns a record Kafka refuses for itself (``Failure.REFUSED``)
    into the record to send instead, typically a dead letter carrying the same
    ``on_delivered``; it receives a one-line description of the refusal."""

    topic: str
    key: bytes | None
    value: bytes
    on_delivered: Callable[[], None] | None = None
    if_refused: Callable[[str], OutboundRecord] | None = None


class Failure(StrEnum):
    """What a failed delivery report (or a failed ``produce`` call) means."""

    REFUSED = "refused"  # this record: Kafka will never take it as it is
    OUT_OF_BUDGET = "out_of_budget"  # transient, but retried for the whole budget in vain
    MISSING_TOPIC = "missing_topic"
    NOT_AUTHORISED = "not_authorised"
    PRODUCER_FATAL = "producer_fatal"  # the idempotent producer cannot go on
    PERMANENT = "permanent"  # any other error librdkafka does not retry


_E = KafkaError
_REFUSED = frozenset({_E.MSG_SIZE_TOO_LARGE, _E.INVALID_RECORD, _E.INVALID_MSG})
# librdkafka retries these itself until message.timeout.ms (INTRODUCTION.md, "Producer
# message delivery failure"); one in a delivery report means the budget is spent.
_TRANSIENT = frozenset(
    {
        _E._MSG_TIMED_OUT,
        _E._TIMED_OUT,
        _E._TIMED_OUT_QUEUE,
        _E._TRANSPORT,
        _E._ALL_BROKERS_DOWN,
        _E._RESOLVE,
        _E.REQUEST_TIMED_OUT,
        _E.NOT_ENOUGH_REPLICAS,
        _E.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        _E.LEADER_NOT_AVAILABLE,
        _E.NOT_LEADER_FOR_PARTITION,
        _E.NETWORK_EXCEPTION,
        _E.KAFKA_STORAGE_ERROR,
        _E.BROKER_NOT_AVAILABLE,
        _E.REPLICA_NOT_AVAILABLE,
        _E.THROTTLING_QUOTA_EXCEEDED,
        _E.FENCED_LEADER_EPOCH,
        _E.UNKNOWN_LEADER_EPOCH,
    }
)
_MISSING_TOPIC = frozenset({_E.UNKNOWN_TOPIC_OR_PART, _E._UNKNOWN_TOPIC, _E._UNKNOWN_PARTITION})
_NOT_AUTHORISED = frozenset(
    {
        _E.TOPIC_AUTHORIZATION_FAILED,
        _E.CLUSTER_AUTHORIZATION_FAILED,
        _E.SASL_AUTHENTICATION_FAILED,
        _E._AUTHENTICATION,
    }
)
# INTRODUCTION.md, "Idempotent Producer" / "Fatal producer errors": after one of these the
# producer guarantees nothing more, and what it still had queued is purged.
_PRODUCER_FATAL = frozenset(
    {
        _E._FATAL,
        _E._FENCED,
        _E._GAPLESS_GUARANTEE,
        _E._PURGE_QUEUE,
        _E._PURGE_INFLIGHT,
        _E.OUT_OF_ORDER_SEQUENCE_NUMBER,
        _E.UNKNOWN_PRODUCER_ID,
        _E.INVALID_PRODUCER_EPOCH,
        _E.INVALID_PRODUCER_ID_MAPPING,
        _E.PRODUCER_FENCED,
    }
)

_WHAT_TO_DO = {
    Failure.REFUSED: (
        "Kafka refuses this record itself (size: the producer's message.max.bytes, "
        "FLEET_KAFKA_MESSAGE_MAX_BYTES, and the topic's max.message.bytes); fix the limit or "
        "the topic and restart"
    ),
    Failure.OUT_OF_BUDGET: (
        "Kafka did not confirm the record within the delivery budget of {budget_s:g} s "
        "(FLEET_KAFKA_DELIVERY_BUDGET_S): check that the brokers are up and reachable and "
        "that the partition has a leader, then restart"
    ),
    Failure.MISSING_TOPIC: (
        "the topic or partition does not exist: create it (a flow creates its topics when "
        "it starts) and restart"
    ),
    Failure.NOT_AUTHORISED: (
        "the client may not write to this topic or cluster: grant it (ACLs, credentials) "
        "and restart"
    ),
    Failure.PRODUCER_FATAL: (
        "the idempotent producer hit a fatal error and cannot go on: restart (a new "
        "producer re-sends what was not confirmed)"
    ),
    Failure.PERMANENT: "Kafka refused the delivery: fix the cause above and restart",
}
_NOTHING_LOST = (
    "nothing is lost: the record was not confirmed, so its input was not acknowledged or "
    "committed and is processed again after the restart"
)


def classify(error: KafkaError) -> Failure:
    """Sort an error from a delivery report or from ``produce`` (see the module docstring).
    ``KafkaError.retriable()`` does not help here: librdkafka sets it only on errors of its
    newer APIs (transactions), never in a delivery report."""
    code = error.code()
    if error.fatal() or code in _PRODUCER_FATAL:
        return Failure.PRODUCER_FATAL
    if code in _REFUSED:
        return Failure.REFUSED
    if code in _TRANSIENT:
        return Failure.OUT_OF_BUDGET
    if code in _MISSING_TOPIC:
        return Failure.MISSING_TOPIC
    if code in _NOT_AUTHORISED:
        return Failure.NOT_AUTHORISED
    return Failure.PERMANENT


def stop_process(code: int) -> None:
    """Exit the process at once with ``code``, from any thread, without a Rust panic.

    Inside a Bytewax flow there is no clean way out of a sink: an exception raised by
    ``write_batch`` or ``close`` becomes a Rust panic (a backtrace, then exit 1, or 134 when
    it cannot unwind), ``sys.exit`` in a sink is the same exception, and in a helper thread
    it ends only that thread. ``os._exit`` skips every flush and close on purpose, and
    loses nothing: no input is acknowledged before its records are confirmed. The bridge
    acknowledges an MQTT message in its record's delivery callback, so the unconfirmed
    one is redelivered to the restarted bridge; synchronous sinks hold the epoch until
    their batch is confirmed, so no recovery snapshot (nor the Kafka offsets in it) covers
    it; the archive's lake files and the store's table are written before their offsets
    move on. Confirmed records may be produced again after the restart: delivery is
    at-least-once, and consumers keep event_ids and alert_ids."""
    for stream in (sys.stderr, sys.stdout):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


class ProducerLike(Protocol):
    """What fleetwatch uses of ``confluent_kafka.Producer`` (tests script a fake)."""

    def produce(self, topic: str, value: bytes, key: bytes | None, *, on_delivery: Any) -> None: ...

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...

    def __len__(self) -> int: ...


ProducerFactory = Callable[[dict[str, Any]], ProducerLike]


def _new_producer(config: dict[str, Any]) -> ProducerLike:
    producer: ProducerLike = Producer(config)
    return producer


def delivery_budget_s(config: Mapping[str, Any]) -> float:
    """The delivery budget a producer built from ``config`` (defaults included) runs with."""
    merged = {**PRODUCER_DEFAULTS, **config}
    timeout_ms = merged.get("delivery.timeout.ms", merged["message.timeout.ms"])
    return int(timeout_ms) / 1000


class _Deliveries:
    """One producer whose every record is confirmed, dead-lettered, or stops the process.

    Delivery callbacks run in whichever thread calls ``poll``/``flush`` and never raise: an
    exception there would end that thread (confluent-kafka re-raises it from ``poll``)."""

    def __init__(
        self,
        config: Mapping[str, str],
        name: str,
        producer_factory: ProducerFactory,
        stop: Callable[[int], None],
        now: Callable[[], float],
    ) -> None:
        merged: dict[str, Any] = {**PRODUCER_DEFAULTS, **config}
        self.name = name
        self.budget_s = delivery_budget_s(merged)
        self._secrets = [v for k, v in merged.items() if is_secret_name(k)]
        self._stop = stop
        self._now = now
        self._lock = threading.Lock()
        self.failure: KafkaDeliveryError | None = None
        # Dead letters of refused records, produced by the next thread to serve the
        # producer: not from inside a delivery callback, where a full queue cannot be waited.
        self._instead: deque[OutboundRecord] = deque()
        self._reports = 0  # delivery reports served: progress, for the stall watch
        self._seen_reports = 0
        self._progress_at = now()
        self._retrying_logged_at: float | None = None
        self._last_error: str | None = None
        self._refused = 0
        self._refused_logged_at: float | None = None
        self.producer = producer_factory({**merged, "error_cb": self._on_error})

    # -- producing --------------------------------------------------------------------

    def produce(self, record: OutboundRecord) -> None:
        def report(error: KafkaError | None, _message: Message) -> None:
            self._reports += 1
            if error is None:
                self._confirmed(record)
            else:
                self._failed(record, error)

        while True:
            try:
                self.producer.produce(record.topic, record.value, record.key, on_delivery=report)
                return
            except BufferError:
                # The local queue is full: wait for deliveries to drain it.
                self.producer.poll(0.1)
                self.check()
                self.raise_if_failed()
            except KafkaException as exc:  # refused before queueing (e.g. over max size)
                self._failed(record, exc.args[0])
                return

    def serve(self, timeout_s: float) -> None:
        """Serve delivery reports for up to ``timeout_s``, then send dead letters, watch."""
        self.producer.poll(timeout_s)
        self.check()

    def flush(self) -> None:
        """Wait until every record produced so far is confirmed (or the process stopped)."""
        while True:
            left = self.producer.flush(1.0)
            self.check()
            self.raise_if_failed()
            if left == 0 and not self._instead:
                return

    def check(self) -> None:
        """Send pending dead letters; log while deliveries stall. Called after serving."""
        while True:
            try:
                record = self._instead.popleft()
            except IndexError:  # empty (another thread may have taken the last one)
                break
            self.produce(record)
        self._watch(len(self.producer))

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure

    # -- outcomes (in delivery callbacks: never raise) --------------------------------

    def _confirmed(self, record: OutboundRecord) -> None:
        if record.on_delivered is None:
            return
        try:
            record.on_delivered()
        except Exception as exc:
            # The record is in Kafka; only its acknowledgement failed, so at worst its input
            # comes again (a duplicate, which consumers drop). Say so and carry on.
            with contextlib.suppress(Exception):
                log.error(
                    "kafka_delivery_callback_failed",
                    step=self.name,
                    topic=record.topic,
                    error=f"{type(exc).__name__}: {exc}",
                    exc_info=exc,
                )

    def _failed(self, record: OutboundRecord, error: KafkaError) -> None:
        try:
            failure = classify(error)
            reason = redact_text(error.str(), secrets=self._secrets)
            if failure is Failure.REFUSED and record.if_refused is not None:
                detail = f"Kafka refused the record for {record.topic}: {error.name()} ({reason})"
                self._instead.append(record.if_refused(detail))
                self._log_refused(record, error, reason)
                return
            what_to_do = _WHAT_TO_DO[failure].format(budget_s=self.budget_s)
            self.fail(
                f"delivery to Kafka topic {record.topic!r} failed: {error.name()} ({reason})",
                topic=record.topic,
                error_code=error.code(),
                error_name=error.name(),
                error=reason,
                failure=str(failure),
                what_to_do=f"{what_to_do}; {_NOTHING_LOST}",
            )
        except Exception as exc:  # e.g. a fallback that raised: the record is not stored
            self.fail(
                f"handling a failed delivery to {record.topic!r} raised: {exc!r}",
                topic=record.topic,
                error=f"{type(exc).__name__}: {exc}",
                failure=str(Failure.PERMANENT),
                what_to_do=f"a bug: report it, and restart; {_NOTHING_LOST}",
            )

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error events (``error_cb``): a connection lost, all brokers down, a
        fatal producer error. The first kinds are retried by librdkafka and only remembered
        for ``kafka_delivery_retrying``; a fatal one stops the process."""
        try:
            reason = redact_text(error.str(), secrets=self._secrets)
            if not error.fatal():
                self._last_error = f"{error.name()}: {reason}"
                return
            self.fail(
                f"the Kafka producer failed: {error.name()} ({reason})",
                topic=None,
                error_code=error.code(),
                error_name=error.name(),
                error=reason,
                failure=str(Failure.PRODUCER_FATAL),
                what_to_do=f"{_WHAT_TO_DO[Failure.PRODUCER_FATAL]}; {_NOTHING_LOST}",
            )
        except Exception:  # never out of a callback
            return

    def fail(self, message: str, **fields: Any) -> None:
        """Log the one ``kafka_delivery_failed`` line and stop the process
        (``stop_process``). The first failure wins; a later one is not logged."""
        with self._lock:
            if self.failure is not None:
                return
            self.failure = KafkaDeliveryError(message)
        try:
            log.error(
                "kafka_delivery_failed",
                step=self.name,
                exit_code=KAFKA_DELIVERY_EXIT_CODE,
                **fields,
            )
        finally:
            self._stop(KAFKA_DELIVERY_EXIT_CODE)

    # -- logs -------------------------------------------------------------------------

    def _watch(self, waiting: int) -> None:
        now = self._now()
        if waiting == 0 or self._reports != self._seen_reports:
            if self._retrying_logged_at is not None:
                log.info(
                    "kafka_delivery_resumed",
                    step=self.name,
                    unconfirmed_for_s=round(now - self._progress_at, 1),
                )
                self._retrying_logged_at = None
            self._seen_reports = self._reports
            self._progress_at = now
            return
        stalled_s = now - self._progress_at
        last = self._retrying_logged_at
        if stalled_s >= _STALLED_AFTER_S and (last is None or now - last >= _RETRYING_EVERY_S):
            self._retrying_logged_at = now
            log.warning(
                "kafka_delivery_retrying",
                step=self.name,
                waiting_records=waiting,
                unconfirmed_for_s=round(stalled_s, 1),
                budget_s=self.budget_s,
                last_error=self._last_error,
                what_happens=(
                    "librdkafka retries in order; a record still unconfirmed when the "
                    "budget runs out stops the flow"
                ),
            )

    def _log_refused(self, record: OutboundRecord, error: KafkaError, reason: str) -> None:
        self._refused += 1
        now = self._now()
        last = self._refused_logged_at
        if last is not None and now - last < _REFUSED_LOG_EVERY_S:
            return
        self._refused_logged_at = now
        log.warning(
            "kafka_record_refused",
            step=self.name,
            topic=record.topic,
            error_code=error.code(),
            error_name=error.name(),
            error=reason,
            refused_records=self._refused,
            action="dead-lettered (reason refused_by_kafka)",
        )
        self._refused = 0


class ConfirmedKafkaSink(DynamicSink[OutboundRecord]):
    """Produce ``OutboundRecord``s, one producer per worker, every delivery confirmed.

    With ``wait_for_delivery`` each batch is flushed before ``write_batch`` returns, so a
    recovery snapshot taken after it never covers an unconfirmed record. Without it, records
    are confirmed asynchronously (their ``on_delivered`` callbacks carry the guarantee).
    A delivery failure stops the process (module docstring); ``producer_factory``, ``stop``
    and ``now`` are for tests.
    """

    def __init__(
        self,
        config: Mapping[str, str],
        *,
        wait_for_delivery: bool,
        producer_factory: ProducerFactory = _new_producer,
        stop: Callable[[int], None] = stop_process,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = dict(config)
        self._wait_for_delivery = wait_for_delivery
        self._producer_factory = producer_factory
        self._stop = stop
        self._now = now

    @override
    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[OutboundRecord]:
        name = f"{step_id}-{worker_index}"
        deliveries = _Deliveries(self._config, name, self._producer_factory, self._stop, self._now)
        return _ConfirmedKafkaPartition(deliveries, self._wait_for_delivery)


class _ConfirmedKafkaPartition(StatelessSinkPartition[OutboundRecord]):
    def __init__(self, deliveries: _Deliveries, wait_for_delivery: bool) -> None:
        self._deliveries = deliveries
        self._wait_for_delivery = wait_for_delivery
        self._stopping = threading.Event()
        # Delivery reports are served here, so acknowledgements flow even while no new
        # batch arrives (MQTT stops sending once its in-flight window is unacknowledged),
        # and a failure stops the process even then.
        self._poller = threading.Thread(
            target=self._poll_forever, name=f"kafka-{deliveries.name}", daemon=True
        )
        self._poller.start()

    def _poll_forever(self) -> None:
        deliveries = self._deliveries
        while not self._stopping.is_set():
            try:
                deliveries.serve(0.05)
            except Exception as exc:  # the poller must not die silently
                deliveries.fail(
                    f"serving Kafka delivery reports failed: {type(exc).__name__}: {exc}",
                    topic=None,
                    error=f"{type(exc).__name__}: {exc}",
                    failure=str(Failure.PERMANENT),
                    what_to_do=f"a bug: report it, and restart; {_NOTHING_LOST}",
                )
                return

    @override
    def write_batch(self, items: list[OutboundRecord]) -> None:
        deliveries = self._deliveries
        deliveries.raise_if_failed()
        for record in items:
            deliveries.produce(record)
        if self._wait_for_delivery:
            deliveries.flush()
        deliveries.raise_if_failed()

    @override
    def close(self) -> None:
        try:
            self._deliveries.flush()
        finally:
            self._stopping.set()
            self._poller.join(timeout=1.0)
        self._deliveries.raise_if_failed()


class ConfirmedProducer:
    """Produce a few records and wait until Kafka confirmed every one; a failure stops the
    process as in ``ConfirmedKafkaSink`` (these are dead letters: none has a fallback)."""

    def __init__(
        self,
        config: Mapping[str, str],
        *,
        name: str = "dead-letters",
        producer_factory: ProducerFactory = _new_producer,
        stop: Callable[[int], None] = stop_process,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._deliveries = _Deliveries(config, name, producer_factory, stop, now)

    def send_all(self, records: Iterable[OutboundRecord]) -> None:
        deliveries = self._deliveries
        deliveries.raise_if_failed()
        for record in records:
            deliveries.produce(record)
        deliveries.flush()
        deliveries.raise_if_failed()


def ensure_configured_topics(kafka: KafkaSettings, topics: Iterable[str]) -> None:
    """``ensure_topics`` with the partitions, replication and patience ``kafka`` gives."""
    ensure_topics(
        kafka.config(),
        topics,
        kafka.topic_partitions,
        kafka.topic_replication_factor,
        timeout_s=kafka.startup_timeout_s,
    )


def check_kafka_properties(kafka: KafkaSettings) -> None:
    """Fail fast on a bad FLEET_KAFKA_<PROPERTY> value, naming the variable."""
    for prop, value in kafka.properties.items():
        try:
            Producer({"bootstrap.servers": kafka.config()["bootstrap.servers"], prop: value})
        except KafkaException as exc:
            variable = kafka.property_variables[prop]
            # librdkafka quotes the value in some messages: never a secret's.
            reason = redact_text(str(exc), secrets=[value] if is_secret_name(prop) else [])
            raise SettingsError(f"{variable} (librdkafka {prop!r}) is invalid: {reason}") from None


class KafkaUnreachable(RuntimeError):
    """No Kafka broker answered within the start-up timeout."""


def ensure_topics(
    config: Mapping[str, str],
    topics: Iterable[str],
    partitions: int,
    replication_factor: int,
    timeout_s: float = 120.0,
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    While no broker answers, retry with backoff (1 s doubling to 15 s), logging each
    attempt, for up to ``timeout_s``; then raise ``KafkaUnreachable`` naming the brokers."""
    admin = AdminClient(dict(config))
    wanted = sorted(set(topics))
    deadline = time.monotonic() + timeout_s
    delay = 1.0
    while True:
        try:
            existing = admin.list_topics(
                timeout=min(10.0, max(1.0, deadline - time.monotonic()))
            ).topics
        except KafkaException as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                brokers = config.get("bootstrap.servers")
                raise KafkaUnreachable(
                    f"no Kafka broker at {brokers} answered for {timeout_s:.0f} s: {exc}"
                ) from None
            log.warning(
                "kafka_unreachable",
                brokers=config.get("bootstrap.servers"),
                retry_in_s=delay,
                error=str(exc),
            )
            time.sleep(min(delay, max(left, 0.1)))
            delay = min(delay * 2, 15.0)
            continue
        missing = [t for t in wanted if t not in existing or existing[t].error is not None]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kafka topics {missing} still missing after {timeout_s:.0f} s")
        new = [
            NewTopic(t, num_partitions=partitions, replication_factor=replication_factor)
            for t in missing
        ]
        for topic, future in admin.create_topics(new, request_timeout=30).items():
            try:
                future.result()
                log.info("kafka_topic_created", topic=topic, partitions=partitions)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        time.sleep(0.2)
