"""MQTT input for Bytewax: a shared, persistent QoS 1 subscription acknowledged on demand.

Each worker runs one paho client (``<client_id>-<worker_index>``) in a persistent session
that joins the shared subscription ``$share/<group>/<filter>``, so the broker spreads
messages over workers and keeps unacknowledged ones for the session. A message is
acknowledged to the broker only when downstream calls ``MqttMessage.ack`` (paho's
``manual_ack``), i.e. after Kafka confirmed it; until then the broker redelivers it after
any crash. Nothing here blocks ``next_batch``: paho's network thread fills a deque. On a
graceful stop (SIGTERM) a worker keeps its session, unless it is retiring: see
``_ready_to_stop``.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from typing_extensions import override

from connectors.heartbeat import BridgeStatus, HeartbeatPublisher, heartbeat_status
from domain.timestamps import to_epoch_ms
from runtime.clock import utc_now
from runtime.settings import MqttSettings
from runtime.shutdown import shutdown_requested

log = structlog.get_logger(__name__)

_MAX_BATCH = 5_000
_QUIET_BEFORE_LEAVING_S = 0.5
_MAX_LEAVING_S = 10.0


@dataclass(frozen=True, slots=True)
class MqttMessage:
    """One message as received; call ``ack()`` once it is safely stored downstream."""

    topic: str
    payload: bytes
    received_at_ms: int
    ack: Callable[[], None]


def new_client(
    sub: MqttSettings, client_id: str, *, manual_ack: bool
) -> tuple[mqtt.Client, Properties | None]:
    """A paho client set up from ``sub`` (TLS, credentials, backoff), not yet connected.

    Returns the client and the CONNECT properties to pass to ``connect`` (MQTT 5 only).
    """
    v5 = sub.protocol == "5"
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,
        manual_ack=manual_ack,
        reconnect_on_failure=True,
    )
    if sub.url.username:
        client.username_pw_set(sub.url.username, sub.url.password)
    if sub.url.tls:
        ca_file = str(sub.ca_file) if sub.ca_file is not None else None
        client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    if not v5:
        return client, None
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = sub.session_expiry_s
    properties.ReceiveMaximum = sub.receive_maximum
    return client, properties


class MqttSource(DynamicSource[MqttMessage]):
    """Every worker joins the shared subscription with its own persistent session."""

    def __init__(
        self,
        subscription: MqttSettings,
        now: Callable[[], datetime] = utc_now,
        heartbeats: HeartbeatPublisher | None = None,
    ) -> None:
        self._subscription = subscription
        self._now = now
        self._heartbeats = heartbeats

    @override
    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSourcePartition[MqttMessage]:
        if worker_count > 1 and not self._subscription.share_group and worker_index > 0:
            # Without a shared subscription every worker would receive every message.
            log.warning("mqtt_worker_idle", worker=worker_index, why="no share group set")
            return _IdlePartition()
        client_id = f"{self._subscription.client_id}-{worker_index}"
        partition = _MqttPartition(self._subscription, client_id, self._now, self._heartbeats)
        if self._heartbeats is not None:
            self._heartbeats.register(partition)
        return partition


class _IdlePartition(StatelessSourcePartition[MqttMessage]):
    @override
    def next_batch(self) -> list[MqttMessage]:
        raise StopIteration


class _MqttPartition(StatelessSourcePartition[MqttMessage]):
    def __init__(
        self,
        sub: MqttSettings,
        client_id: str,
        now: Callable[[], datetime],
        heartbeats: HeartbeatPublisher | None = None,
    ) -> None:
        self.client_id = client_id
        self._heartbeats = heartbeats
        self._connected = False
        # Monotonic time of the last progress towards Kafka: a confirmation, or the arrival
        # of the first message of a new backlog (for the heartbeat's stall measure).
        self._progress_at = time.monotonic()
        self._sub = sub
        self._now = now
        self._inbox: deque[MqttMessage] = deque()
        # Acks are only valid on the connection that received the message: after a reconnect
        # the broker redelivers unacknowledged messages, possibly reusing packet ids, so an
        # ack from an older connection could acknowledge a different, unstored message.
        self._connection = 0
        # Written by one thread each (paho's network thread / Kafka's delivery thread), so the
        # difference is the number of messages awaiting acknowledgement without a lock.
        self._received = 0
        self._acknowledged = 0
        self._last_message_at = time.monotonic()
        self._leaving_since: float | None = None
        self._unsubscribed = threading.Event()
        self._log = log.bind(client_id=client_id, subscription=sub.subscription)
        self._client, properties = new_client(sub, client_id, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_unsubscribe = lambda *_args: self._unsubscribed.set()
        self._client.connect_async(
            sub.url.host,
            sub.url.port,
            keepalive=sub.keepalive_s,
            clean_start=False if sub.protocol == "5" else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client.loop_start()

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            self._log.error("mqtt_connect_refused", reason=str(reason))
            return
        self._connection += 1
        self._connected = True
        self._log.info("mqtt_connected", session_present=bool(flags.session_present))
        if self._leaving_since is None:
            client.subscribe(self._sub.subscription, qos=1)

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: Any, _props: Any
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self._log.error("mqtt_subscribe_refused", reasons=failed)
        else:
            self._log.info("mqtt_subscribed")

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._connected = False
        self._log.warning("mqtt_disconnected", reason=str(reason), reconnecting=True)

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        ack = _NO_ACK
        if message.qos > 0:
            if self._received == self._acknowledged:
                self._progress_at = time.monotonic()  # a new backlog starts now
            self._received += 1
            ack = _Ack(self, client, message.mid, message.qos, self._connection)
        self._last_message_at = time.monotonic()
        # Not ``message.topic``: it raises on a topic that is not UTF-8 (MQTT requires it,
        # but a broker may pass one on), and an exception here would end paho's network
        # thread. Such a topic names no truck; the bridge dead-letters it as a mismatch.
        topic = bytes(message._topic).decode("utf-8", "replace")
        self._inbox.append(
            MqttMessage(topic, bytes(message.payload), to_epoch_ms(self._now()), ack)
        )

    def acknowledge(self, client: mqtt.Client, mid: int, qos: int, connection: int) -> None:
        if connection == self._connection:
            client.ack(mid, qos)
        self._acknowledged += 1
        self._progress_at = time.monotonic()

    def status(self) -> BridgeStatus:
        """For the heartbeat (connectors/heartbeat.py): read without a lock, from counters
        each written by one thread; a heartbeat a moment stale is harmless."""
        return heartbeat_status(
            self._connected, self._received, self._acknowledged, self._progress_at
        )

    @override
    def next_batch(self) -> list[MqttMessage]:
        inbox = self._inbox
        if shutdown_requested() and not inbox and self._ready_to_stop():
            raise StopIteration
        count = min(len(inbox), _MAX_BATCH)
        return [inbox.popleft() for _ in range(count)]

    def _ready_to_stop(self) -> bool:
        """By default a stopping worker keeps its session and subscription: the broker queues
        its share while it is away, so even stopping every bridge loses nothing.

        A retiring worker (``leave_on_stop``) must instead leave the share group: brokers,
        Mosquitto included, keep assigning shared-subscription messages to an offline
        member's session, which would hoard them until it expired. It unsubscribes, then
        keeps reading until the broker has been quiet for a moment.
        """
        if not self._sub.leave_on_stop:
            return True
        now = time.monotonic()
        if self._leaving_since is None:
            self._leaving_since = now
            self._client.unsubscribe(self._sub.subscription)
            self._log.info("mqtt_leaving")
            return False
        quiet = now - self._last_message_at >= _QUIET_BEFORE_LEAVING_S
        waited_too_long = now - self._leaving_since >= _MAX_LEAVING_S
        return (self._unsubscribed.is_set() and quiet) or waited_too_long

    @override
    def close(self, ack_timeout_s: float = 10.0) -> None:
        # Give Kafka's confirmations of the last records time to arrive. A retiring worker
        # that got every message acknowledged ends its session (expiry 0): nothing is left
        # behind. Otherwise the session stays, and the broker redelivers what is
        # unacknowledged, and what it queued meanwhile, when this client id returns.
        deadline = time.monotonic() + ack_timeout_s
        while self._received > self._acknowledged and time.monotonic() < deadline:
            time.sleep(0.01)
        unacked = self._received - self._acknowledged
        properties = None
        if unacked == 0 and self._sub.protocol == "5" and self._unsubscribed.is_set():
            properties = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 0
        if self._heartbeats is not None:
            # A retiring worker says so, so the alerts flow stops waiting for it; one that
            # only stops is waited for: the broker queues its share until it is back.
            self._heartbeats.unregister(self, leaving=self._sub.leave_on_stop)
        self._client.disconnect(properties=properties)
        self._client.loop_stop()
        self._log.info("mqtt_closed", unacknowledged=unacked, session_ended=properties is not None)


class _Ack:
    __slots__ = ("_client", "_connection", "_mid", "_partition", "_qos")

    def __init__(
        self, partition: _MqttPartition, client: mqtt.Client, mid: int, qos: int, connection: int
    ) -> None:
        self._partition = partition
        self._client = client
        self._mid = mid
        self._qos = qos
        self._connection = connection

    def __call__(self) -> None:
        self._partition.acknowledge(self._client, self._mid, self._qos, self._connection)


def _no_ack() -> None:
    return None


_NO_ACK: Callable[[], None] = _no_ack
