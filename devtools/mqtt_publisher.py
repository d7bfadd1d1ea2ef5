"""Publishing over MQTT at a chosen rate, QoS 1, waiting for every PUBACK (simulator, tests)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from connectors.mqtt import new_client
from runtime.settings import MqttSettings, MqttUrl

_MAX_OUTSTANDING = 50_000


class MqttPublisher:
    """A connected QoS 1 publisher that counts the broker's acknowledgements."""

    def __init__(
        self,
        url: MqttUrl,
        protocol: str = "5",
        client_id: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        client_id = client_id or f"fleetwatch-sim-{uuid.uuid4().hex[:8]}"
        sub = MqttSettings(
            url, "#", "", client_id, protocol, ca_file=Path(ca_file) if ca_file else None
        )
        self._client, properties = new_client(sub, sub.client_id, manual_ack=False)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._acked = 0
        self._published = 0
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._client.on_publish = self._on_publish
        self._client.on_connect = self._on_connect
        self._client.connect(url.host, url.port, keepalive=30, properties=properties)
        self._client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError(f"no CONNACK from {url.redacted()}")

    def _on_connect(self, *_args: Any) -> None:
        self._connected.set()

    def _on_publish(self, *_args: Any) -> None:
        with self._cond:
            self._acked += 1
            self._cond.notify_all()

    @property
    def acked(self) -> int:
        return self._acked

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Queue one message; blocks while too many await the broker's acknowledgement
        (packet ids are 16-bit, so at most 65,535 can be outstanding)."""
        if qos > 0:
            with self._cond:
                if self._published - self._acked >= _MAX_OUTSTANDING:
                    self._cond.wait_for(
                        lambda: self._published - self._acked < _MAX_OUTSTANDING, 60
                    )
            self._published += 1
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")

    def wait_for_acks(self, count: int, timeout_s: float = 60.0) -> None:
        """Block until the broker acknowledged ``count`` messages in all."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._acked < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"broker acknowledged {self._acked} of {count} messages")
                self._cond.wait(left)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def publish_paced(
    url: MqttUrl,
    protocol: str,
    messages: Sequence[tuple[str, bytes]],
    rate: float,
    stop: threading.Event | None = None,
) -> int:
    """Publish ``messages`` at ``rate`` per second (0: as fast as possible); return the count
    the broker acknowledged. ``stop`` ends publishing early."""
    publisher = MqttPublisher(url, protocol)
    started = time.monotonic()
    sent = 0
    try:
        for index, (topic, payload) in enumerate(messages):
            if stop is not None and stop.is_set():
                break
            if rate > 0:
                delay = started + index / rate - time.monotonic()
                if delay > 0.002:
                    time.sleep(delay)
            publisher.publish(topic, payload)
            sent += 1
        publisher.wait_for_acks(sent)
        return sent
    finally:
        publisher.close()
