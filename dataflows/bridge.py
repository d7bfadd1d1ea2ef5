"""dataflows.bridge: MQTT telemetry -> validated canonical readings on Kafka.

Input:  MQTT ``FLEET_MQTT_TOPIC`` (default ``fleet/+/telemetry``), QoS 1, through the shared
        subscription ``$share/FLEET_MQTT_SHARE_GROUP/...`` with one persistent session per
        worker (client id ``FLEET_MQTT_CLIENT_ID-<worker>``).
Output: ``FLEET_TOPIC_TELEMETRY`` (key truck_id, canonical JSON) for valid readings;
        ``FLEET_TOPIC_DLQ`` (key: the topic's truck id) for everything else, with a reason.
Guarantee: every MQTT message ends up in exactly one of the two topics, at least once. A
        message is acknowledged to MQTT only after Kafka confirmed its delivery, so a crash
        at any moment loses nothing (the broker redelivers; duplicates keep their event_id).
        A Kafka delivery that fails for good (README "Delivery failures") stops the flow,
        exit code 69, instead of acknowledging; a valid reading Kafka refuses for itself
        is dead-lettered (``refused_by_kafka``).
Knobs:  FLEET_MQTT_* and FLEET_KAFKA_*, FLEET_TOPIC_PARTITIONS (used when creating topics),
        FLEET_MAX_FUTURE_S (a reading whose ts is further ahead of its receipt is
        ``bad_timestamp``).
Scale:  ``-w N`` / ``-i/-a``: every worker joins the shared subscription; no state to recover.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from connectors.heartbeat import HeartbeatPublisher
from connectors.kafka import (
    ConfirmedKafkaSink,
    OutboundRecord,
)
from connectors.mqtt import MqttMessage, MqttSource
from dataflows._dead_letters import output_dead_letters, split_dead_letters, to_kafka
from dataflows._entry import lazy_flow, prepare
from dataflows._guard import unprocessable
from domain.dead_letters import DeadLetter, Reason, Stage
from domain.readings import Reading, decode_reading, encode_canonical, truck_id_from_topic
from runtime.clock import utc_now
from runtime.metrics import READINGS_IN
from runtime.settings import Settings, Topics
from runtime.shutdown import install_graceful_shutdown

_MESSAGES_IN = READINGS_IN.labels("bridge")


@dataclass(frozen=True)
class BridgeRouter:
    """Where the bridge writes, and how it reads truck ids from MQTT topics."""

    topic_filter: str
    topics: Topics
    # FLEET_MAX_FUTURE_S in ms: a reading further ahead of its receipt is bad_timestamp, so a
    # wrong device clock cannot push its truck's watermark years ahead (CONTRACT.md section 3).
    max_future_ms: int = 300_000

    def route_batch(self, messages: list[MqttMessage]) -> list[OutboundRecord | DeadLetter]:
        """Route a batch: one Python call per batch, not per message."""
        _MESSAGES_IN.inc(len(messages))
        route = self.route_message
        return [route(message) for message in messages]

    def route_message(self, message: MqttMessage) -> OutboundRecord | DeadLetter:
        """A valid reading goes to telemetry in canonical form; anything else is a dead
        letter. Either is acknowledged to MQTT once Kafka confirmed it."""
        try:
            return self._route(message)
        except Exception as error:  # the last line of defence: see dataflows/_guard.py
            return unprocessable(
                Stage.BRIDGE,
                error,
                message.topic,
                message.payload,
                message.received_at_ms,
                message.ack,
            )

    def _route(self, message: MqttMessage) -> OutboundRecord | DeadLetter:
        topic_truck = truck_id_from_topic(message.topic, self.topic_filter)
        outcome = decode_reading(
            message.payload,
            topic_truck_id=topic_truck or "",
            not_after_ms=message.received_at_ms + self.max_future_ms,
        )
        if isinstance(outcome, Reading):
            return OutboundRecord(
                self.topics.telemetry,
                outcome.truck_id.encode(),
                encode_canonical(outcome),
                message.ack,
                partial(self.refused_by_kafka, message),
            )
        return DeadLetter(
            Stage.BRIDGE,
            outcome.reason,
            outcome.detail,
            message.topic,
            message.payload,
            message.received_at_ms,
            topic_truck.encode() if topic_truck else None,
            message.ack,
        )

    def refused_by_kafka(self, message: MqttMessage, detail: str) -> OutboundRecord:
        """The dead letter for a valid reading that Kafka refuses to store (too large for
        the topic, say). That is this record's problem, not an outage: stopping would meet it
        again at every redelivery, a crash loop. Acknowledged once the DLQ has it; a dead
        letter Kafka refuses in turn stops the bridge (connectors/kafka.py). Made inside the
        telemetry sink, where the refusal is learnt: written by it, counted here."""
        topic_truck = truck_id_from_topic(message.topic, self.topic_filter)
        letter = DeadLetter(
            Stage.BRIDGE,
            Reason.REFUSED_BY_KAFKA,
            detail,
            message.topic,
            message.payload,
            message.received_at_ms,
            topic_truck.encode() if topic_truck else None,
            message.ack,
        )
        return to_kafka(self.topics.dlq)(letter)


def build_flow(
    source: Source[MqttMessage],
    sink: Sink[OutboundRecord],
    dead_letters: Sink[OutboundRecord],
    routes: BridgeRouter,
) -> Dataflow:
    """The bridge: no keyed step, so every message stays on the worker that received it
    (and whose MQTT connection must acknowledge it)."""
    flow = Dataflow("bridge")
    messages = op.input("mqtt_source", flow, source)  # MqttMessage
    routed = op.flat_map_batch("route_batch", messages, routes.route_batch)
    split = split_dead_letters("split_dead_letters", routed)  # OutboundRecord | DeadLetter
    op.output("kafka_sink", split.oks, sink)  # readings to telemetry, acked when confirmed
    output_dead_letters("dead_letters", to_kafka(routes.topics.dlq), dead_letters, split.errs)
    return flow


def flow_from_settings(settings: Settings) -> Dataflow:
    """Plug the real MQTT source and Kafka sink into ``build_flow``."""
    topics = settings.topics
    used = [topics.telemetry, topics.dlq, topics.heartbeats]
    prepare("bridge", settings, ["mqtt", "kafka", "topics", "stream"], used)
    install_graceful_shutdown()
    routes = BridgeRouter(
        settings.mqtt.topic_filter, topics, max_future_ms=settings.stream.max_future_ms
    )
    # Asynchronous confirmation: each record's MQTT ack is its delivery callback.
    sink = ConfirmedKafkaSink(settings.kafka.producer_config(), wait_for_delivery=False)
    dead_letters = ConfirmedKafkaSink(settings.kafka.producer_config(), wait_for_delivery=False)
    # Heartbeats tell the alerts flow this bridge is up and keeping pace (connectors/heartbeat.py).
    heartbeats = HeartbeatPublisher(settings.kafka.config(), topics.heartbeats, utc_now)
    source = MqttSource(settings.mqtt, heartbeats=heartbeats)
    return build_flow(source, sink, dead_letters, routes)


__getattr__ = lazy_flow(flow_from_settings)
