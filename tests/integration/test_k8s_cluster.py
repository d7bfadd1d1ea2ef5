"""The alerts StatefulSet, run as Kubernetes would run it, on this machine.

Each pod is a local process started with the command and environment rendered from the
Kustomize manifests: its init container first, on its own "volume" (a directory), then the
flow, with its process id taken from its pod name by Bytewax and the headless Service's
names in BYTEWAX_ADDRESSES mapped to 127.0.0.1 ports. Three pods give the reference alerts;
then the cluster is scaled to two by the documented procedure (stop, rebalance the
recovery partitions, change replicas and addresses) and resumes on the same partitions."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from devtools.localbrokers import free_port
from domain.alerts import alert_id
from domain.readings import Reading, encode_canonical
from domain.rules import RuleConfig
from fleetwatch.recovery_layout import partitions_in
from runtime.settings import SAMPLE_HISTORY_DIR
from tests.builders import BEGINNING_MS
from tests.integration.flows import (
    FlowProcess,
    Namespace,
    alert_ids,
    consume_alerts,
    produce,
    scrape,
    value,
)
from tests.kube import K8S, Container, Manifest, build, find, pod_containers
from tests.reference import reference_alerts

pytestmark = pytest.mark.integration

STATEFULSET = "fleetwatch-alerts"
SECRETS: dict[str, dict[str, str]] = {}  # the alerts pods need none (Kafka has no SASL here)


def fleet(trucks: int = 30, seconds: int = 600, seed: int = 8) -> list[Reading]:
    """Every truck at 1 Hz; speeding episodes and spikes, enough for both rules."""
    rng = random.Random(seed)
    readings, episode = [], dict.fromkeys(range(trucks), 0)
    for second in range(seconds):
        for truck in range(trucks):
            if episode[truck] == 0 and rng.random() < 0.01:
                episode[truck] = rng.randint(3, 8)
            speed = rng.uniform(50, 88)
            if episode[truck]:
                episode[truck] -= 1
                speed = rng.uniform(92, 125)
            if rng.random() < 0.0015:
                speed = 141.0
            name = f"T{truck:03d}"
            readings.append(Reading(f"{name}-{second}", name, BEGINNING_MS + second * 1000, speed))
    return readings


def reference_ids(readings: list[Reading]) -> set[str]:
    return {
        alert_id(rule, truck, events[0])
        for rule, truck, events in reference_alerts(readings, RuleConfig())
    }


def scaled_overlay(tmp_path: Path, replicas: int) -> Path:
    """What the scaling procedure has the operator write: replicas and addresses together."""
    overlay = tmp_path / f"overlay-{replicas}"
    overlay.mkdir()
    addresses = ";".join(f"{STATEFULSET}-{i}.{STATEFULSET}:9999" for i in range(replicas))
    (overlay / "kustomization.yaml").write_text(
        textwrap.dedent(f"""\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        resources:
          - {os.path.relpath(K8S / "base", overlay)}
        patches:
          - patch: |-
              apiVersion: apps/v1
              kind: StatefulSet
              metadata:
                name: {STATEFULSET}
              spec:
                replicas: {replicas}
                template:
                  spec:
                    containers:
                      - name: alerts
                        env:
                          - name: BYTEWAX_ADDRESSES
                            value: "{addresses}"
        """)
    )
    return overlay


class LocalPods:
    """Pods of one StatefulSet as local processes: DNS names -> 127.0.0.1 ports, volumes ->
    directories, the API port -> a free port each, the ConfigMap's brokers and topics ->
    this test's."""

    def __init__(self, manifests: list[Manifest], namespace: Namespace, tmp_path: Path) -> None:
        self.statefulset = find(manifests, "StatefulSet", STATEFULSET)
        self.replicas = int(self.statefulset["spec"]["replicas"])
        self.manifests = manifests
        self.namespace = namespace
        self.tmp_path = tmp_path
        self.worker_ports = {i: free_port() for i in range(self.replicas)}
        volumes = self.statefulset["spec"]["template"]["spec"]["volumes"]
        self.config_maps = {v["name"]: v["configMap"]["name"] for v in volumes if "configMap" in v}
        self.api_ports = {i: free_port() for i in range(self.replicas)}

    def volume(self, ordinal: int, name: str) -> Path:
        if name == "history":
            return SAMPLE_HISTORY_DIR
        path = self.tmp_path / "volumes" / f"{name}-{STATEFULSET}-{ordinal}"
        path.mkdir(parents=True, exist_ok=True)
        if name in self.config_maps:  # the ConfigMap's keys as files, as the kubelet writes them
            for key, text in find(self.manifests, "ConfigMap", self.config_maps[name])[
                "data"
            ].items():
                (path / key).write_text(text)
        return path

    def localize(self, ordinal: int, container: Container) -> tuple[list[str], dict[str, str]]:
        env = dict(container.env)
        for key, original in container.env.items():  # each path moved once, longest mount first
            for mount_path in sorted(container.mounts, key=len, reverse=True):
                if original == mount_path or original.startswith(mount_path + "/"):
                    local = self.volume(ordinal, container.mounts[mount_path])
                    env[key] = str(local) + original[len(mount_path) :]
                    break
        if "BYTEWAX_ADDRESSES" in env:
            addresses = env["BYTEWAX_ADDRESSES"].split(";")
            assert addresses == [
                f"{STATEFULSET}-{i}.{STATEFULSET}:9999" for i in range(self.replicas)
            ], "every pod, by its headless-Service name, in ordinal order"
            env["BYTEWAX_ADDRESSES"] = ";".join(
                f"127.0.0.1:{self.worker_ports[i]}" for i in range(self.replicas)
            )
        if "BYTEWAX_DATAFLOW_API_PORT" in env:
            env["BYTEWAX_DATAFLOW_API_PORT"] = str(self.api_ports[ordinal])
        if "FLEET_KAFKA_BROKERS" in env:
            env.update(self.namespace.env())  # brokers, topics, partitions: this test's
            env["FLEET_TOPIC_REPLICATION_FACTOR"] = "-1"  # one broker here, not three
            env = {k: v for k, v in env.items() if not k.startswith("FLEET_MQTT")}
        command = list(container.command)
        assert command[:3] == ["python", "-m", command[2]]
        return [sys.executable, *command[1:]], env

    def init(self, ordinal: int) -> str:
        inits, _ = pod_containers(self.manifests, self.statefulset, ordinal, SECRETS)
        outputs = []
        for container in inits:
            command, env = self.localize(ordinal, container)
            result = subprocess.run(
                command, env={**_base_env(), **env}, capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout)
        return "".join(outputs)

    def start(self, ordinal: int, logs: Path) -> FlowProcess:
        _, main = pod_containers(self.manifests, self.statefulset, ordinal, SECRETS)
        command, env = self.localize(ordinal, main)
        assert command[1:3] == ["-m", "bytewax.run"]
        return FlowProcess(
            command[3], env, logs / f"{STATEFULSET}-{ordinal}.log", command[4:]
        ).start()


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "BYTEWAX_"))}


def test_alerts_statefulset_runs_as_rendered_and_scales_from_3_to_2(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    readings = fleet()
    first_half = [r for r in readings if r.ts_ms < BEGINNING_MS + 300_000]
    second_half = [r for r in readings if r.ts_ms >= BEGINNING_MS + 300_000]
    expected_first, expected_all = reference_ids(first_half), reference_ids(readings)
    assert len(expected_first) > 10
    assert expected_first < expected_all
    bootstrap = namespace.brokers.kafka_brokers

    # Three pods, as the base renders them.
    pods = LocalPods(build(K8S / "base"), namespace, tmp_path)
    assert pods.replicas == 3
    init_logs = [pods.init(i) for i in range(3)]
    assert all("prepared; created partitions" in line for line in init_logs), init_logs
    volumes = [pods.volume(i, "recovery") for i in range(3)]
    assert [len(partitions_in(v)) for v in volumes] == [4, 4, 4]  # 12 partitions over 3
    processes = [pods.start(i, logs) for i in range(3)]
    try:
        for process in processes:
            process.wait_for_event("history_loaded", timeout_s=60)
        produce(bootstrap, namespace.topic("telemetry"), _records(first_half))
        records = consume_alerts(bootstrap, namespace.topic("alerts"), expected_first, 90)
        assert set(alert_ids(records)) == expected_first
        taken_in = sum(
            value(scrape(pods.api_ports[i]), "fleetwatch_readings_in_total", flow="alerts")
            for i in range(3)
        )
        assert taken_in == len(first_half)  # one cluster: each reading read by exactly one pod
        _sleep_past_snapshot(pods)  # so the last snapshot covers all the input
    finally:
        for process in processes:
            process.stop()  # SIGTERM, as the kubelet stops a pod

    # Scale to 2: rebalance the partitions the way k8s/ops/recovery-rebalance-job.yaml does.
    rebalanced = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetwatch.recovery_layout",
            "rebalance",
            "--replicas",
            "2",
            *map(str, volumes),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rebalanced.returncode == 0, rebalanced.stderr
    assert [len(partitions_in(v)) for v in volumes] == [6, 6, 0]

    pods = LocalPods(build(scaled_overlay(tmp_path, 2)), namespace, tmp_path)
    assert pods.replicas == 2
    assert all("already prepared" in pods.init(i) for i in range(2))
    processes = [pods.start(i, logs) for i in range(2)]
    try:
        produce(bootstrap, namespace.topic("telemetry"), _records(second_half))
        records = consume_alerts(bootstrap, namespace.topic("alerts"), expected_all, 120)
        taken_in = sum(
            value(scrape(pods.api_ports[i]), "fleetwatch_readings_in_total", flow="alerts")
            for i in range(2)
        )
    finally:
        for process in processes:
            process.stop()
    assert set(alert_ids(records)) == expected_all  # nothing lost, nothing extra
    # Resumed from the partitions, not from the beginning of the topic: only the new half
    # was read, and the rule state of the first half carried over (alerts spanning halves).
    assert taken_in == len(second_half)


def _records(readings: list[Reading]) -> list[tuple[bytes | None, bytes]]:
    return [(r.truck_id.encode(), encode_canonical(r)) for r in readings]


def _sleep_past_snapshot(pods: LocalPods) -> None:
    interval = float(
        next(
            v["value"]
            for v in pods.statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
            if v["name"] == "BYTEWAX_SNAPSHOT_INTERVAL"
        )
    )
    time.sleep(interval + 1)
