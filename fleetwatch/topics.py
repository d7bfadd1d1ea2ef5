"""``python -m fleetwatch.topics``: create the contract's Kafka topics before the flows run.

Creates FLEET_TOPIC_TELEMETRY, _ALERTS, _DLQ and _LATE that do not exist yet, with
FLEET_TOPIC_PARTITIONS partitions and FLEET_TOPIC_REPLICATION_FACTOR replicas; existing
topics are left as they are, so running it again is harmless. Waits for Kafka up to
FLEET_KAFKA_STARTUP_TIMEOUT_S. The Kubernetes Job ``fleetwatch-topics`` runs it.
"""

from __future__ import annotations

import sys

import structlog

from connectors.kafka import KafkaUnreachable, check_kafka_properties, ensure_configured_topics
from runtime.logs import configure_logging
from runtime.settings import Settings, SettingsError


def contract_topics(settings: Settings) -> list[str]:
    return [
        settings.topics.telemetry,
        settings.topics.alerts,
        settings.topics.dlq,
        settings.topics.late,
        settings.topics.heartbeats,
        settings.topics.scorecards,
    ]


def main() -> int:
    configure_logging()
    log = structlog.get_logger("fleetwatch.topics")
    try:
        settings = Settings.from_env()
        check_kafka_properties(settings.kafka)
        topics = contract_topics(settings)
        ensure_configured_topics(settings.kafka, topics)
    except (SettingsError, KafkaUnreachable) as error:
        log.error("topics_not_created", error=str(error))
        return 2
    log.info("topics_ready", topics=topics, partitions=settings.kafka.topic_partitions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
