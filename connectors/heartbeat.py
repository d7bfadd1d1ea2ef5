"""Bridge heartbeats on Kafka: how the alerts flow tells a quiet fleet from a stalled bridge.

Every second each bridge worker writes one record to ``FLEET_TOPIC_HEARTBEATS`` (key: its
MQTT client id; value JSON): ``{"bridge", "at", "mqtt_connected", "unconfirmed",
"oldest_unconfirmed_s", "leaving"}``. A bridge that is down writes nothing, one cut off from
Mosquitto says ``mqtt_connected: false``, one whose readings wait for Kafka's confirmation
says how long. A worker that retires (``FLEET_MQTT_LEAVE_ON_STOP``) says ``leaving: true``
last, so nobody waits for it. The alerts flow reads the topic (``HeartbeatMonitor``) into
``connectors.liveness.InputLiveness``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog
from confluent_kafka import OFFSET_END, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.liveness import InputLiveness
from domain.timestamps import to_epoch_ms

log = structlog.get_logger(__name__)

HEARTBEAT_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class BridgeStatus:
    """One bridge worker's state, as its heartbeat reports it."""

    mqtt_connected: bool
    unconfirmed: int
    oldest_unconfirmed_s: float


class HeartbeatSource(Protocol):
    """A bridge worker (connectors/mqtt.py ``_MqttPartition``), as ``HeartbeatPublisher``
    calls it: ``status()`` every ``interval_s`` from the publisher's thread while registered,
    and once more from ``unregister(leaving=True)`` on the worker's own thread. It must be
    cheap and safe to call from another thread."""

    client_id: str

    def status(self) -> BridgeStatus: ...


class HeartbeatPublisher:
    """Writes each registered bridge worker's heartbeat every ``interval_s``, from a thread.
    Heartbeats are best effort: a lost one only pauses the alerts flow's quiet-truck clock."""

    def __init__(
        self,
        config: Mapping[str, str],
        topic: str,
        now: Callable[[], datetime],
        interval_s: float = HEARTBEAT_INTERVAL_S,
    ) -> None:
        # A heartbeat is useless late: no long retries, no idempotence needed.
        self._producer = Producer(
            {**config, "linger.ms": "0", "message.timeout.ms": "5000", "acks": "1"}
        )
        self._topic = topic
        self._now = now
        self._interval_s = interval_s
        self._sources: dict[str, HeartbeatSource] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, source: HeartbeatSource) -> None:
        with self._lock:
            self._sources[source.client_id] = source
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="fleetwatch-heartbeats", daemon=True
            )
            self._thread.start()

    def unregister(self, source: HeartbeatSource, *, leaving: bool) -> None:
        """A worker stops; ``leaving``: it retires, and says so (waited for, 5 s at most)."""
        with self._lock:
            self._sources.pop(source.client_id, None)
        if leaving:
            self._send(source.client_id, source.status(), leaving=True)
            self._producer.flush(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                sources = list(self._sources.values())
            for source in sources:
                self._send(source.client_id, source.status(), leaving=False)
            self._producer.poll(0)

    def _send(self, client_id: str, status: BridgeStatus, *, leaving: bool) -> None:
        value = {
            "bridge": client_id,
            "at": to_epoch_ms(self._now()),
            "mqtt_connected": status.mqtt_connected,
            "unconfirmed": status.unconfirmed,
            "oldest_unconfirmed_s": round(status.oldest_unconfirmed_s, 3),
            "leaving": leaving,
        }
        try:
            self._producer.produce(self._topic, json.dumps(value).encode(), client_id.encode())
        except (BufferError, ValueError) as exc:  # a full queue while Kafka is away
            log.debug("heartbeat_not_sent", bridge=client_id, error=str(exc))

    def close(self) -> None:
        self._stop.set()
        self._producer.flush(2.0)


class HeartbeatMonitor:
    """Reads ``FLEET_TOPIC_HEARTBEATS`` in a thread into ``liveness``. It starts ``lookback_s``
    back, so bridges that were up lately are known (and waited for) from the start: the
    heartbeats already there at start count by age (the record's timestamp against the wall
    clock), the ones after that by when they arrive, so that neither clock differences
    between hosts nor a step of this host's clock can make a live bridge look silent."""

    def __init__(
        self,
        config: Mapping[str, str],
        topic: str,
        liveness: InputLiveness,
        now: Callable[[], datetime],
        lookback_s: float = 600.0,
    ) -> None:
        self._config: dict[str, str | int | float | bool] = dict(config)
        self._topic = topic
        self._liveness = liveness
        self._now = now
        self._lookback_s = lookback_s
        self._stop = threading.Event()
        self._backlog_end: dict[int, int] = {}  # per partition: where the start-up backlog ends
        self._thread = threading.Thread(target=self._run, name="fleetwatch-heartbeat-monitor")
        self._thread.daemon = True

    def start(self) -> HeartbeatMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        try:
            consumer = self._consumer()
        except Exception as exc:  # no topic yet, Kafka away: the partitions' state says so
            log.warning("heartbeat_monitor_failed", topic=self._topic, error=str(exc))
            return
        try:
            while not self._stop.is_set():
                for message in consumer.consume(1000, 0.2):
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.debug("heartbeat_monitor_error", error=error.str())
                        continue
                    offset, partition = message.offset() or 0, message.partition() or 0
                    backlog = offset < self._backlog_end.get(partition, 0)
                    self._take(message.value(), message.timestamp()[1], backlog=backlog)
        finally:
            consumer.close()

    def _consumer(self) -> Consumer:
        consumer = Consumer(
            {
                **self._config,
                "group.id": "fleetwatch-heartbeats-unused",
                "enable.auto.commit": "false",
                "fetch.wait.max.ms": "100",
            }
        )
        metadata = AdminClient(self._config).list_topics(self._topic, timeout=30)
        partitions = sorted(metadata.topics[self._topic].partitions)
        since = to_epoch_ms(self._now()) - int(self._lookback_s * 1000)
        wanted = [TopicPartition(self._topic, p, since) for p in partitions]
        offsets = consumer.offsets_for_times(wanted, timeout=30)
        for partition in partitions:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(self._topic, partition), timeout=30
            )
            self._backlog_end[partition] = high
        consumer.assign(
            [TopicPartition(self._topic, o.partition, o.offset if o.offset >= 0 else OFFSET_END)
             for o in offsets]
        )  # fmt: skip
        return consumer

    def _take(self, value: bytes | None, timestamp_ms: int, *, backlog: bool) -> None:
        try:
            heartbeat: dict[str, Any] = json.loads(value or b"")
            bridge = str(heartbeat["bridge"])
        except (ValueError, KeyError, TypeError):
            return  # not ours: ignored
        age_s = 0.0
        if backlog and timestamp_ms > 0:
            age_s = max(to_epoch_ms(self._now()) - timestamp_ms, 0) / 1000
        self._liveness.report_bridge(bridge, heartbeat, age_s=age_s)


def heartbeat_status(
    connected: bool, received: int, acknowledged: int, since: float, now: float | None = None
) -> BridgeStatus:
    """The status from a worker's counters: ``since`` is the monotonic time of the last
    progress (a confirmation, or the first reading of a new backlog)."""
    unconfirmed = max(received - acknowledged, 0)
    moment = time.monotonic() if now is None else now
    stalled = moment - since if unconfirmed else 0.0
    return BridgeStatus(connected, unconfirmed, max(stalled, 0.0))
