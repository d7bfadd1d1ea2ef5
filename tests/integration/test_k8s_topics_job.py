"""The topics Job as rendered: its command and ConfigMap environment, run locally against
the test broker, create the contract's topics with the configured partitions; a second run
changes nothing; a bad setting fails with exit 2 and the variable's name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from tests.integration.flows import Namespace
from tests.kube import K8S, build, find

pytestmark = pytest.mark.integration


def job_run(namespace: Namespace, **overrides: str) -> subprocess.CompletedProcess[str]:
    manifests = build(K8S / "base")
    (container,) = find(manifests, "Job", "fleetwatch-topics")["spec"]["template"]["spec"][
        "containers"
    ]
    env = dict(find(manifests, "ConfigMap", "fleetwatch-config")["data"])
    env.update(namespace.env(FLEET_TOPIC_REPLICATION_FACTOR="-1", **overrides))
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    command = container["command"]
    assert command[0] == "python"
    return subprocess.run(
        [sys.executable, *command[1:]],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_topics_job_creates_the_contract_topics(namespace: Namespace) -> None:
    first = job_run(namespace)
    assert first.returncode == 0, first.stdout + first.stderr
    admin = AdminClient({"bootstrap.servers": namespace.brokers.kafka_brokers})
    topics = admin.list_topics(timeout=10).topics
    for kind in ("telemetry", "alerts", "dlq", "late"):
        assert len(topics[namespace.topic(kind)].partitions) == namespace.partitions
    assert "kafka_topic_created" in first.stdout + first.stderr
    again = job_run(namespace)
    assert again.returncode == 0
    assert "kafka_topic_created" not in again.stdout + again.stderr


def test_a_bad_setting_fails_the_job_clearly(namespace: Namespace) -> None:
    result = job_run(namespace, FLEET_TOPIC_PARTITIONS="many")
    assert result.returncode == 2
    assert "FLEET_TOPIC_PARTITIONS" in result.stdout + result.stderr
