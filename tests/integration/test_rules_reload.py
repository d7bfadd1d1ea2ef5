"""The rule catalogue (FLEET_RULES, CONTRACT.md section 9) changed under a running alerts flow
(``python -m bytewax.run dataflows.alerts`` on real brokers), and between two runs of one
recovery store.

- While running: a new version file is used for readings from its effective_from; a broken
  file is refused (a ``rule_file_refused`` line naming the file, the rule and the field) and
  the flow keeps judging with the versions in force; a version that drops a rule ends it.
- Restarted from a snapshot with a changed directory: a rule whose definition changed starts
  empty (its partial count from before is not carried into the new version), while a rule
  changed only in severity carries on, exactly as a live change would do.
"""

from __future__ import annotations

import pickle
import sqlite3
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from bytewax.recovery import init_db_dir

from devtools.launcher import FlowProcess
from domain.readings import Reading, encode_canonical
from domain.rules import TruckState
from domain.timestamps import format_rfc3339_ms, to_epoch_ms
from tests.integration.flows import Namespace, Record, consume_until, produce

# Readings an hour old (never "from the future"), on a whole minute.
T0 = to_epoch_ms((datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0))
LONG_AGO = T0 - 86_400_000
S = 1_000  # ms


def at(offset_s: float) -> str:
    return format_rfc3339_ms(T0 + round(offset_s * S))


def write_version(
    directory: Path, name: str, version: int, effective_from: str, rules: list[dict[str, Any]]
) -> float:
    """Write a version file whole (beside it, then renamed into place); the monotonic time."""
    text = yaml.safe_dump(
        {"version": version, "effective_from": effective_from, "rules": rules}, sort_keys=False
    )
    spare = directory / f".{name}.tmp"
    spare.write_text(text)
    spare.replace(directory / name)
    return time.monotonic()


def instant(rule_id: str, speed: float, **extra: Any) -> dict[str, Any]:
    rule = {"id": rule_id, "kind": "instant_over", "speed_over_kmh": speed, "cooldown_s": 0}
    return {**rule, **extra}


def readings(namespace: Namespace, truck: str, *items: tuple[str, float, float]) -> None:
    """Produce (event_id, seconds after T0, speed) readings of one truck, in that order."""
    produce(
        namespace.brokers.kafka_brokers,
        namespace.topic("telemetry"),
        [
            (truck.encode(), encode_canonical(Reading(event_id, truck, T0 + round(s * S), speed)))
            for event_id, s, speed in items
        ],
    )


def start_flow(
    namespace: Namespace, rules: Path, log: Path, args: Iterable[str] = ()
) -> FlowProcess:
    env = namespace.env(
        FLEET_RULES=str(rules),
        FLEET_RULES_REFRESH_S="0.2",
        # A quiet truck's readings are judged a second after they arrive.
        FLEET_ALLOWED_LATENESS_S="1",
    )
    flow = FlowProcess("dataflows.alerts", env, log, list(args)).start()
    flow.wait_for_event("rules_loaded", timeout_s=30)
    return flow


Key = tuple[str, int, tuple[str, ...]]


def key(alert: dict[str, Any]) -> Key:
    """(rule, rule_version, covered event_ids)."""
    return (str(alert["rule"]), int(alert["rule_version"]), tuple(alert["event_ids"]))


def alerts(namespace: Namespace, count: int, settle_s: float = 1.5) -> list[dict[str, Any]]:
    """The alerts topic once it holds ``count`` alerts, and ``settle_s`` more."""
    records: list[Record] = consume_until(
        namespace.brokers.kafka_brokers,
        namespace.topic("alerts"),
        lambda found: len(found) >= count,
        timeout_s=30,
        settle_s=settle_s,
    )
    return [r.json() for r in records]


def events(flow: FlowProcess, name: str) -> list[dict[str, object]]:
    return [e for e in flow.log_events() if e.get("event") == name]


def test_rules_change_while_the_flow_runs(
    namespace: Namespace, logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    truck = "TRULES1"  # not in the driver history: severity is the rule's own
    write_version(rules, "v1.yaml", 1, format_rfc3339_ms(LONG_AGO), [instant("fast", 130)])
    flow = start_flow(namespace, rules, logs / "alerts.log")
    timings: dict[str, float] = {}
    try:
        # Version 1: over 130.
        readings(namespace, truck, ("a1", 0, 140.0), ("a2", 10, 120.0))
        assert {key(a) for a in alerts(namespace, 1)} == {("fast", 1, ("a1",))}

        # Version 2 from T0+60 s: fast over 100, and a new rule.
        written = write_version(
            rules,
            "v2.yaml",
            2,
            at(60),
            [instant("fast", 100), instant("very_fast", 150, severity="critical")],
        )
        flow.wait_for_event("rules_loaded", count=2, timeout_s=10)
        timings["v2_used_after_s"] = time.monotonic() - written
        readings(namespace, truck, ("b1", 70, 120.0), ("b2", 80, 160.0))
        found = alerts(namespace, 4)
        assert {key(a) for a in found} == {
            ("fast", 1, ("a1",)),
            ("fast", 2, ("b1",)),
            ("fast", 2, ("b2",)),
            ("very_fast", 2, ("b2",)),
        }
        severity = {key(a): a["severity"] for a in found}
        assert severity[("very_fast", 2, ("b2",))] == "critical"
        assert severity[("fast", 2, ("b2",))] == "warning"
        [very_fast] = [a for a in found if a["rule"] == "very_fast"]
        assert very_fast["threshold_kmh"] == 150
        assert very_fast["details"] == {"kind": "instant_over"}

        # A broken version 3 (a typo: cooldown for cooldown_s): refused, named, and the flow
        # goes on judging with version 2.
        broken = {"id": "fast", "kind": "instant_over", "speed_over_kmh": 50, "cooldown": 0}
        written = write_version(rules, "v3.yaml", 3, at(120), [broken])
        flow.wait_for_event("rule_file_refused", timeout_s=10)
        timings["v3_refused_after_s"] = time.monotonic() - written
        [refused] = events(flow, "rule_file_refused")
        assert (refused["file"], refused["rule"], refused["field"]) == (
            "v3.yaml",
            "fast",
            "cooldown",
        )
        assert refused["level"] == "error", refused
        assert refused["keeping"] == "the versions in force"
        readings(namespace, truck, ("c1", 130, 90.0), ("c2", 140, 110.0))
        found = alerts(namespace, 5)
        assert len(found) == 5, "c1 (90) is over version 3's 50, but version 3 is refused"
        assert key(found[-1]) == ("fast", 2, ("c2",))
        assert flow.process is not None
        assert flow.process.poll() is None, flow.log_tail()

        # Version 4 from T0+180 s drops very_fast.
        write_version(rules, "v4.yaml", 4, at(180), [instant("fast", 100)])
        flow.wait_for_event("rules_loaded", count=3, timeout_s=10)
        readings(namespace, truck, ("d1", 190, 170.0), ("d2", 200, 95.0))
        found = alerts(namespace, 6, settle_s=2.5)
        assert {key(a) for a in found[5:]} == {("fast", 4, ("d1",))}
        assert len(found) == 6, [key(a) for a in found]
        assert flow.process.poll() is None, flow.log_tail()
    finally:
        flow.stop()
    with capsys.disabled():
        print(f"\nrules reload: {', '.join(f'{k}={v:.2f}' for k, v in timings.items())}")
    assert all(seconds < 60 for seconds in timings.values()), timings  # section 9


def held_in_snapshot(recovery: Path, truck: str, rule: str) -> int | None:
    """How many readings ``rule`` holds for ``truck`` in the newest recovery snapshot of the
    rules step (None: no snapshot of the truck yet)."""
    with sqlite3.connect(recovery / "part-0.sqlite3") as db:
        row = db.execute(
            "SELECT ser_change FROM snaps WHERE step_id LIKE '%speeding_rules%' AND state_key = ?"
            " ORDER BY snap_epoch DESC LIMIT 1",
            (truck,),
        ).fetchone()
    if row is None or row[0] is None:
        return None
    state = pickle.loads(row[0])
    assert isinstance(state, TruckState), type(state)
    rule_state = state.rules.get(rule)
    return None if rule_state is None else len(rule_state.held)


def wait_for_snapshot(recovery: Path, truck: str, rule: str, held: int) -> None:
    deadline = time.monotonic() + 20
    while held_in_snapshot(recovery, truck, rule) != held:
        assert time.monotonic() < deadline, held_in_snapshot(recovery, truck, rule)
        time.sleep(0.2)
    time.sleep(2.5)  # two more 1 s epochs: the snapshot's epoch is committed


SUSTAINED = {
    "id": "sustained",
    "kind": "count_over",
    "speed_over_kmh": 90,
    "count": 5,
    "within_s": 600,
}


@pytest.mark.parametrize(
    ("change", "carries_on"),
    [({"within_s": 900}, False), ({"severity": "critical"}, True)],
    ids=["definition_changed", "severity_only"],
)
def test_restart_from_recovery_with_a_changed_directory(
    namespace: Namespace,
    logs: Path,
    tmp_path: Path,
    change: dict[str, Any],
    carries_on: bool,
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)  # type: ignore[no-untyped-call]
    args = ["-r", str(recovery), "-s", "1", "-b", "0"]
    truck = "TRULES2"
    write_version(rules, "v1.yaml", 1, format_rfc3339_ms(LONG_AGO), [SUSTAINED])

    # 3 of the 5 violations, in a snapshot; then the process dies.
    flow = start_flow(namespace, rules, logs / "first.log", args)
    try:
        readings(namespace, truck, ("x1", 0, 100.0), ("x2", 10, 100.0), ("x3", 20, 100.0))
        wait_for_snapshot(recovery, truck, "sustained", held=3)
    finally:
        flow.kill()

    # Version 2 from T0+60 s, then the restart.
    write_version(rules, "v2.yaml", 2, at(60), [{**SUSTAINED, **change}])
    flow = start_flow(namespace, rules, logs / "second.log", args)
    try:
        loaded = events(flow, "rules_loaded")
        assert len(loaded[-1]["versions"]) == 2, loaded  # type: ignore[arg-type]
        readings(namespace, truck, ("x4", 70, 100.0), ("x5", 80, 100.0))
        if carries_on:
            [alert] = alerts(namespace, 1, settle_s=2)
            assert key(alert) == ("sustained", 2, ("x1", "x2", "x3", "x4", "x5"))
            assert alert["severity"] == "critical"  # version 2's, which judged x5
            assert alert["details"] == {"kind": "count_over", "within_s": 600}
        else:
            # The partial count of version 1 is gone: x4, x5 are the first two of version 2.
            # Three more make five.
            readings(namespace, truck, ("x6", 90, 100.0), ("x7", 100, 100.0), ("x8", 110, 100.0))
            [alert] = alerts(namespace, 1, settle_s=2)
            assert key(alert) == ("sustained", 2, ("x4", "x5", "x6", "x7", "x8"))
            assert alert["severity"] == "warning"
            assert alert["details"] == {"kind": "count_over", "within_s": 900}
        assert flow.process is not None
        assert flow.process.poll() is None, flow.log_tail()
    finally:
        flow.stop()
