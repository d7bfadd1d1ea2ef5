"""Drill (issue 15): the e-mail API is down for longer than the notifier's retry budget.

A real Kafka broker and the local receiver (devtools.email_receiver), answering every
call 503 while it is down. Expected: every alert is on the DLQ as ``undeliverable``, none
lost, none e-mailed; once the API is back, ``python -m fleetwatch.replay`` puts them on a
replay topic and a one-shot notifier e-mails each exactly once; a second replay makes calls
that the API answers as repeats (same Idempotency-Key): no alert is e-mailed twice.

The replay goes to its own topic because a notifier that dead-lettered an alert remembers
its alert_id (connectors/notify_sink.py, for FLEET_NOTIFY_RETENTION_S) and skips the same
alert when it comes again on ``fleet.alerts``: the last test here shows it, and is expected
to fail until the notifier forgets what it could not deliver.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from bytewax.recovery import init_db_dir

from connectors.kafka import ensure_topics
from devtools.email_receiver import EmailReceiver, Fail
from domain.alerts import build_alert, encode_alert
from domain.dead_letters import Stage, dead_letter
from domain.readings import Reading
from domain.rules import Detection, Rule
from tests.builders import BEGINNING_MS
from tests.integration.flows import FlowProcess, Namespace, consume_until, produce, run_module
from tests.integration.reports import report

SECRET = "a-drill-signing-secret-of-32-bytes"
ALERTS = 24
MAX_ATTEMPTS = 3


def alert(n: int) -> bytes:
    reading = Reading(f"e{n}", f"T{n % 7}", BEGINNING_MS + n * 1_000, 140.0)
    return encode_alert(
        build_alert(Detection(Rule.INSTANT, reading.truck_id, (reading,), 130.0), BEGINNING_MS)
    )


def alert_id(raw: bytes) -> str:
    return str(json.loads(raw)["alert_id"])


@pytest.fixture
def receiver() -> Iterator[EmailReceiver]:
    started = EmailReceiver(SECRET.encode()).start()
    try:
        yield started
    finally:
        started.stop()


def notify_env(namespace: Namespace, receiver: EmailReceiver, **extra: str) -> dict[str, str]:
    return namespace.env(
        FLEET_NOTIFY_URL=receiver.url,
        FLEET_NOTIFY_SECRET=SECRET,
        FLEET_NOTIFY_TIMEOUT_S="1",
        FLEET_NOTIFY_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        FLEET_KAFKA_TAIL="false",
        **extra,
    )


def recovery(directory: Path) -> list[str]:
    directory.mkdir()
    init_db_dir(directory, 1)  # type: ignore[no-untyped-call]
    return ["-r", str(directory), "-s", "1", "-b", "0"]


def replay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m fleetwatch.replay`` as an operator runs it, settings from ``env``."""
    return run_module("fleetwatch.replay", list(args), env, timeout_s=120)


def successes(receiver: EmailReceiver) -> tuple[Counter[str], Counter[str]]:
    """Per alert_id: the calls that sent an e-mail, and the successes answered as repeats."""
    sent = Counter(c.key for c in receiver.calls if c.status == 200 and not c.duplicate)
    repeats = Counter(c.key for c in receiver.calls if c.status == 200 and c.duplicate)
    return sent, repeats


def outage(
    namespace: Namespace, receiver: EmailReceiver, logs: Path, tmp_path: Path
) -> tuple[list[bytes], float, list[str]]:
    """Alerts on the topic, the API down, the notifier run to the end of the topic: returns
    the alerts, how long the run took and the notifier's recovery arguments."""
    alerts = [alert(n) for n in range(ALERTS)]
    produce(
        namespace.brokers.kafka_brokers,
        namespace.topic("alerts"),
        [(json.loads(a)["truck_id"].encode(), a) for a in alerts],
    )
    receiver.outage = Fail(503)
    args = recovery(tmp_path / "notify-recovery")
    started = time.monotonic()
    notify = FlowProcess(
        "dataflows.notify", notify_env(namespace, receiver), logs / "notify.log", args
    ).start()
    assert notify.wait(timeout_s=120) == 0, notify.log_tail()
    return alerts, time.monotonic() - started, args


def test_email_api_down_dead_letters_every_alert_and_the_replay_emails_each_once(
    namespace: Namespace,
    receiver: EmailReceiver,
    logs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    alerts, outage_s, _ = outage(namespace, receiver, logs, tmp_path)
    ids = {alert_id(a) for a in alerts}
    bootstrap = namespace.brokers.kafka_brokers

    # Down: nothing e-mailed, every alert dead-lettered once as undeliverable, whole.
    assert not receiver.emails
    calls = Counter(c.key for c in receiver.calls)
    assert calls == dict.fromkeys(ids, MAX_ATTEMPTS), "the whole retry budget, then given up"
    assert {c.status for c in receiver.calls} == {503}
    dead = [
        r.json()
        for r in consume_until(bootstrap, namespace.topic("dlq"), lambda r: len(r) >= ALERTS)
    ]
    assert len(dead) == ALERTS
    assert {(d["stage"], d["reason"]) for d in dead} == {("notify", "undeliverable")}
    assert {d["source_topic"] for d in dead} == {namespace.topic("alerts")}
    assert sorted(base64.b64decode(str(d["raw"])) for d in dead) == sorted(alerts)
    assert all(
        str(d["detail"]).startswith(f"after {MAX_ATTEMPTS} attempts: HTTP 503") for d in dead
    )

    # The API is back. A dry run counts and produces nothing.
    receiver.outage = None
    replay_topic = namespace.topic("alerts.replay")
    env = namespace.env()
    selection = ["--stage", "notify", "--reason", "undeliverable", "--to", replay_topic]
    dry = replay(env, *selection, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == (
        f"replay: {ALERTS} dead letters read, {ALERTS} selected, would replay {ALERTS} "
        f"({replay_topic}: {ALERTS}); refused: none; not selected: 0"
    )

    def one_shot_notifier(name: str) -> float:
        started = time.monotonic()
        flow = FlowProcess(
            "dataflows.notify",
            notify_env(namespace, receiver, FLEET_TOPIC_ALERTS=replay_topic),
            logs / f"{name}.log",
        ).start()
        assert flow.wait(timeout_s=120) == 0, flow.log_tail()
        return time.monotonic() - started

    started = time.monotonic()
    first = replay(env, *selection)
    replay_s = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    assert f"replayed {ALERTS} ({replay_topic}: {ALERTS})" in first.stdout
    first_notify_s = one_shot_notifier("replay-1")
    sent, repeats = successes(receiver)
    assert set(receiver.emails) == ids, "every alert e-mailed"
    assert sent == dict.fromkeys(ids, 1), "each exactly once"
    assert not repeats

    # The same replay again: the API sees each key once more and sends nothing.
    second = replay(env, *selection)
    assert second.returncode == 0, second.stderr
    one_shot_notifier("replay-2")
    sent_again, repeats_again = successes(receiver)
    assert sent_again == dict.fromkeys(ids, 1), "no alert e-mailed twice"
    assert repeats_again == dict.fromkeys(ids, 1), "one repeated call each, answered as a repeat"
    dlq_after = consume_until(bootstrap, namespace.topic("dlq"), lambda _r: False, timeout_s=3)

    figures: dict[str, object] = {
        "alerts": ALERTS,
        "max_attempts": MAX_ATTEMPTS,
        "calls_during_outage": sum(calls.values()),
        "outage_run_s": round(outage_s, 2),
        "dead_lettered_undeliverable": len(dead),
        "lost": len(ids - {alert_id(base64.b64decode(str(d["raw"]))) for d in dead}),
        "replay_s": round(replay_s, 2),
        "replay_notify_s": round(first_notify_s, 2),
        "emailed_after_replay": len(receiver.emails),
        "emails_per_alert_max": max(sent_again.values()),
        "second_replay_extra_emails": sum(sent_again.values()) - sum(sent.values()),
        "second_replay_repeat_calls": sum(repeats_again.values()),
        "dlq_records_after": len(dlq_after),
    }
    report("drill-email-outage", figures, capsys)
    assert len(dlq_after) == ALERTS, "the replays dead-lettered nothing new"


def test_replay_refuses_what_is_not_whole_and_fails_on_missing_topics(
    namespace: Namespace,
) -> None:
    """Truncated originals, MQTT sources and foreign records are counted, never produced;
    a missing target topic or DLQ is an error (exit 1) and nothing is produced."""
    dlq, alerts_topic = namespace.topic("dlq"), namespace.topic("alerts")
    bootstrap = namespace.brokers.kafka_brokers
    ensure_topics({"bootstrap.servers": bootstrap}, [dlq, alerts_topic], 1, 1)
    gone = namespace.topic("gone")
    records: list[tuple[bytes | None, bytes]] = [
        (None, dead_letter(Stage.NOTIFY, "undeliverable", "503", alerts_topic, alert(1), 0)),
        (None, dead_letter(Stage.NOTIFY, "undeliverable", "503", alerts_topic, b"x" * 2**21, 0)),
        (None, dead_letter(Stage.NOTIFY, "rejected", "400", alerts_topic, alert(2), 0)),
        (None, dead_letter(Stage.BRIDGE, "schema", "no ts", "fleet/T1/telemetry", b"{}", 0)),
        (None, dead_letter(Stage.NOTIFY, "unprocessable", "bug", gone, alert(3), 0)),
        (None, b"not a dead letter"),
    ]
    produce(bootstrap, dlq, records)
    env = namespace.env()

    done = replay(env, "--stage", "notify,bridge", "--reason", "undeliverable,schema")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"replay: 6 dead letters read, 1 selected, replayed 1 ({alerts_topic}: 1); "
        "refused: 1 not_a_dead_letter, 1 not_a_kafka_topic, 1 truncated; not selected: 2"
    )
    replayed = consume_until(bootstrap, alerts_topic, lambda r: len(r) >= 1, timeout_s=10)
    assert [(r.key, r.value) for r in replayed] == [(b"T1", alert(1))]

    later = replay(
        env, "--stage", "notify", "--reason", "rejected", "--since", "2030-01-01T00:00:00Z"
    )
    assert later.returncode == 0, later.stderr
    assert " 0 selected, replayed 0 (none)" in later.stdout

    missing = replay(env, "--stage", "notify", "--reason", "unprocessable")
    assert missing.returncode == 1
    assert gone in missing.stderr
    assert "nothing was produced" in missing.stderr
    no_dlq = replay(
        {**env, "FLEET_TOPIC_DLQ": namespace.topic("no-dlq")}, "--stage", "a", "--reason", "b"
    )
    assert no_dlq.returncode == 1
    assert namespace.topic("no-dlq") in no_dlq.stderr


def test_replay_to_the_alerts_topic_reaches_the_resumed_notifier(
    namespace: Namespace, receiver: EmailReceiver, logs: Path, tmp_path: Path
) -> None:
    alerts, _, args = outage(namespace, receiver, logs, tmp_path)
    receiver.outage = None
    done = replay(namespace.env(), "--stage", "notify", "--reason", "undeliverable")
    assert done.returncode == 0, done.stderr
    resumed = FlowProcess(
        "dataflows.notify", notify_env(namespace, receiver), logs / "resumed.log", args
    ).start()
    assert resumed.wait(timeout_s=120) == 0, resumed.log_tail()
    assert set(receiver.emails) == {alert_id(a) for a in alerts}
    sent, _repeats = successes(receiver)
    assert sent == dict.fromkeys((alert_id(a) for a in alerts), 1), "each exactly once"
