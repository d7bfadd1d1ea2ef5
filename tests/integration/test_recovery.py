"""dataflows.alerts with Bytewax recovery under faults: repeated kill -9, downtime longer
than the allowed lateness, and rescaling between runs; compared with uninterrupted runs."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from bytewax.recovery import init_db_dir

from domain.rules import RuleConfig
from tests.integration.flows import (
    FlowProcess,
    Namespace,
    alert_ids,
    cluster_addresses,
    cluster_args,
    consume_alerts,
    consume_until,
    uninterrupted_alert_ids,
)
from tests.integration.load import SteadyLoad
from tests.integration.reports import report
from tests.reference import reference_alerts


def recovery_dir(tmp_path: Path, partitions: int = 1) -> Path:
    directory = tmp_path / "recovery"
    directory.mkdir()
    init_db_dir(directory, partitions)
    return directory


def test_kill_loop_loses_no_alert(
    namespace: Namespace, logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recovery = recovery_dir(tmp_path)
    args = ["-r", str(recovery), "-s", "1", "-b", "0"]
    load = SteadyLoad(
        namespace.brokers.kafka_brokers, namespace.topic("telemetry"), count=36_000, rate=2_000
    ).start()
    env = namespace.env()
    flow = FlowProcess("dataflows.alerts", env, logs / "alerts.log", args).start()
    flow.wait_for_event("history_loaded")  # each start counts one: the loop waits for the next
    rng = random.Random(7)
    kills, recoveries = 0, []
    while load.running or kills < 10:
        time.sleep(rng.uniform(0.8, 2.0))
        assert flow.process is not None
        assert flow.process.poll() is None, flow.log_tail()
        flow.kill()
        kills += 1
        restarted = time.monotonic()
        flow = FlowProcess("dataflows.alerts", env, logs / "alerts.log", args).start()
        flow.wait_for_event("history_loaded", count=kills + 1)
        recoveries.append(time.monotonic() - restarted)
    load.join()
    expected = uninterrupted_alert_ids(namespace, logs)
    assert expected == {  # the uninterrupted run itself agrees with the sorted reference
        str(i) for i in _reference_ids(load)
    }
    try:
        records = consume_until(
            namespace.brokers.kafka_brokers,
            namespace.topic("alerts"),
            lambda r: set(alert_ids(r)) >= expected,
            timeout_s=60,
            settle_s=2,
        )
    finally:
        flow.stop()
    got = alert_ids(records)
    lost = expected - set(got)
    duplicates = sum(got.values()) - len(got)
    report(
        "alerts-kill-loop",
        {
            "readings": len(load.readings),
            "kills": kills,
            "alerts": len(expected),
            "lost": len(lost),
            "duplicates": duplicates,
            "unexpected": len(set(got) - expected),
            "restart_to_running_s_max": round(max(recoveries), 2),
        },
        capsys,
    )
    assert kills >= 10
    assert not lost
    assert set(got) == expected
    assert_nothing_late(namespace)


def assert_nothing_late(namespace: Namespace) -> None:
    """The load is in event-time order: any late reading would be a misclassification."""
    late = consume_until(
        namespace.brokers.kafka_brokers,
        namespace.topic("late"),
        lambda r: False,
        timeout_s=2,
        settle_s=0,
    )
    assert late == []


def test_downtime_longer_than_the_lateness_misclassifies_nothing(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    lateness = {"FLEET_ALLOWED_LATENESS_S": "2"}
    recovery = recovery_dir(tmp_path)
    args = ["-r", str(recovery), "-s", "1", "-b", "0"]
    load = SteadyLoad(
        namespace.brokers.kafka_brokers,
        namespace.topic("telemetry"),
        count=30_000,
        rate=2_000,
        seed=3,
    ).start()
    env = namespace.env(**lateness)
    flow = FlowProcess("dataflows.alerts", env, logs / "alerts.log", args).start()
    time.sleep(4)
    flow.kill()
    time.sleep(9)  # more than four times the allowed lateness, while readings keep arriving
    flow = FlowProcess("dataflows.alerts", env, logs / "alerts.log", args).start()
    load.join()
    expected = uninterrupted_alert_ids(namespace, logs, **lateness)
    try:
        records = consume_alerts(
            namespace.brokers.kafka_brokers, namespace.topic("alerts"), expected
        )
    finally:
        flow.stop()
    assert set(alert_ids(records)) == expected
    assert len(expected) > 10
    assert_nothing_late(namespace)


def _reference_ids(load: SteadyLoad) -> set[str]:
    from domain.alerts import alert_id

    return {
        alert_id(rule, truck, events[0])
        for rule, truck, events in reference_alerts(load.readings, RuleConfig())
    }


def test_rescale_on_resume_gives_the_same_alerts(
    namespace: Namespace, logs: Path, tmp_path: Path
) -> None:
    """1 -> 2 -> 3 -> 1 processes on the same recovery partitions, each stopped with kill -9."""
    recovery = recovery_dir(tmp_path, partitions=3)
    load = SteadyLoad(
        namespace.brokers.kafka_brokers,
        namespace.topic("telemetry"),
        count=36_000,
        rate=2_000,
        seed=5,
    ).start()
    env = namespace.env()
    layouts = [1, 2, 3]
    for processes in layouts:
        addresses = cluster_addresses(processes)
        flows = [
            FlowProcess(
                "dataflows.alerts",
                env,
                logs / f"alerts-{processes}-{i}.log",
                [
                    "-r",
                    str(recovery),
                    "-s",
                    "1",
                    "-b",
                    "0",
                    *(cluster_args(i, addresses) if processes > 1 else []),
                ],
            ).start()
            for i in range(processes)
        ]
        for flow in flows:
            flow.wait_for_event("history_loaded")
        time.sleep(4)
        for flow in flows:
            assert flow.process is not None
            assert flow.process.poll() is None, flow.log_tail()
            flow.kill()
    final = FlowProcess(
        "dataflows.alerts",
        env,
        logs / "alerts-final.log",
        ["-r", str(recovery), "-s", "1", "-b", "0"],
    ).start()
    load.join()
    expected = uninterrupted_alert_ids(namespace, logs)
    try:
        records = consume_alerts(
            namespace.brokers.kafka_brokers, namespace.topic("alerts"), expected
        )
    finally:
        final.stop()
    assert set(alert_ids(records)) == expected
    assert_nothing_late(namespace)
