"""Baseline for benchmarks/bridge.py: the bridge's work without Bytewax.

One paho client (same persistent session, manual ack) -> ``decode_reading`` -> confluent-kafka
producer, acknowledging each message from its delivery report. Configured by the same
FLEET_* variables as dataflows.bridge; stops on SIGTERM.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, Message, Producer

from connectors.kafka import PRODUCER_DEFAULTS
from connectors.mqtt import new_client
from domain.readings import Reading, decode_reading, encode_canonical, truck_id_from_topic
from runtime.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    sub = settings.mqtt
    producer = Producer({**PRODUCER_DEFAULTS, **settings.kafka.config()})
    client, properties = new_client(sub, f"{sub.client_id}-0", manual_ack=True)
    stop = threading.Event()

    def on_message(client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        payload = bytes(message.payload)
        topic_truck = truck_id_from_topic(message.topic, sub.topic_filter)
        outcome = decode_reading(payload, topic_truck_id=topic_truck)
        mid, qos = message.mid, message.qos

        def acked(error: KafkaError | None, _msg: Message) -> None:
            if error is None:
                client.ack(mid, qos)

        if isinstance(outcome, Reading):
            value, topic = encode_canonical(outcome), settings.topics.telemetry
        else:
            value, topic = payload, settings.topics.dlq
        while True:
            try:
                producer.produce(topic, value, on_delivery=acked)
                break
            except BufferError:
                producer.poll(0.05)

    def on_connect(client: mqtt.Client, *_args: Any) -> None:
        client.subscribe(sub.subscription, qos=1)
        print('{"event": "mqtt_subscribed"}', flush=True)

    client.on_message = on_message
    client.on_connect = on_connect
    client.connect(sub.url.host, sub.url.port, clean_start=False, properties=properties)
    client.loop_start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.is_set():
        producer.poll(0.05)
    producer.flush(10)
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
