"""Real brokers for integration tests: one Mosquitto (or amqtt) and one Tansu per session,
started on free ports; ``FLEET_TEST_KAFKA_BROKERS`` points the tests at an external Kafka or
Redpanda instead. Each test gets its own topics and MQTT namespace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetwatch.localbrokers import LocalBrokers, local_brokers
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
