"""Real brokers for integration tests: one Mosquitto (or amqtt) and one Tansu per session,
started on free ports; ``FLEET_TEST_KAFKA_BROKERS`` points the tests at an external Kafka or
Redpanda instead. Each test gets its own topics and MQTT namespace.

Two Kafka modes: ``brokers`` (every test but the fault drills) runs Tansu in memory;
``durable_brokers`` (the fault drills, tests/integration/test_drill_*.py) runs Tansu on
moto's S3, so that a drill can kill -9 and restart it without losing its records."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.localbrokers import LocalBrokers, local_brokers
from devtools.localdynamo import dynalite
from tests.integration.flows import Namespace

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBrokers]:
    with local_brokers(tmp_path_factory.mktemp("brokers"), os.environ) as started:
        yield started


@pytest.fixture
def namespace(brokers: LocalBrokers) -> Namespace:
    return Namespace(brokers)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def durable_brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBrokers]:
    """Tansu on moto's S3 (devtools.localbrokers, durable mode) and its own Mosquitto; always
    local, whatever FLEET_TEST_KAFKA_BROKERS says: its users restart ``durable_brokers.kafka``."""
    with local_brokers(tmp_path_factory.mktemp("durable"), os.environ, durable=True) as started:
        yield started


@pytest.fixture(scope="session")
def dynamodb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A DynamoDB-API server: dynalite (npm), or FLEET_TEST_DYNAMODB_URL."""
    external = os.environ.get("FLEET_TEST_DYNAMODB_URL", "").strip()
    if external:
        yield external
        return
    with dynalite(tmp_path_factory.mktemp("dynalite")) as url:
        yield url
