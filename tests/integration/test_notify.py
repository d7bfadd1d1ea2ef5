"""dataflows.notify against a real local HTTP server (fleetwatch.email_receiver) and a real
Kafka broker: retries, permanent failures, duplicates, and kill -9 with resume."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from bytewax.recovery import init_db_dir

from domain.alerts import build_alert, encode_alert
from domain.readings import Reading
from domain.rules import Detection, Rule
from fleetwatch.email_receiver import EmailReceiver, Fail
from tests.builders import BEGINNING_MS
from tests.integration.flows import FlowProcess, Namespace, consume_until, produce
from tests.integration.reports import report

SECRET = "a-test-signing-secret-of-32-bytes"


def alert(n: int) -> bytes:
    reading = Reading(f"e{n}", f"T{n % 9}", BEGINNING_MS + n * 1_000, 140.0)
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
        FLEET_NOTIFY_MAX_ATTEMPTS="5",
        **extra,
    )


def recovery(tmp_path: Path) -> list[str]:
    directory = tmp_path / "recovery"
    directory.mkdir()
    init_db_dir(directory, 1)
    return ["-r", str(directory), "-s", "1", "-b", "0"]


def test_failure_mix_gives_one_email_per_alert(
    namespace: Namespace, receiver: EmailReceiver, logs: Path, tmp_path: Path
) -> None:
    alerts = [alert(n) for n in range(20)]
    ids = [alert_id(a) for a in alerts]
    receiver.fail(ids[0], Fail(503), Fail(503))
    receiver.fail(ids[1], Fail(429, retry_after="1"))
    receiver.fail(ids[2], Fail(200, delay_s=2.0))  # answers after the 1 s timeout
    receiver.fail(ids[3], Fail(400))
    receiver.fail(ids[4], Fail(422))
    # Every alert twice on the topic: at-least-once upstream.
    produce(
        namespace.brokers.kafka_brokers,
        namespace.topic("alerts"),
        [(b"T", a) for a in alerts + alerts],
    )
    flow = FlowProcess(
        "dataflows.notify",
        notify_env(namespace, receiver, FLEET_KAFKA_TAIL="false"),
        logs / "n.log",
        recovery(tmp_path),
    ).start()
    assert flow.wait(timeout_s=120) == 0, flow.log_tail()

    assert set(receiver.emails) == set(ids) - {ids[3], ids[4]}, "every other alert e-mailed"
    assert [c.status for c in receiver.calls_for(ids[0])] == [503, 503, 200]
    assert [c.status for c in receiver.calls_for(ids[1])] == [429, 200]
    assert [c.status for c in receiver.calls_for(ids[3])] == [400], "permanent: not retried"
    assert all(c.signature_ok for c in receiver.calls)
    successes = Counter(c.key for c in receiver.calls if c.status == 200)
    assert all(successes[i] == 1 for i in ids if i not in (ids[2], ids[3], ids[4])), (
        "duplicates made no call"
    )
    assert receiver.emails[ids[5]]["to"] == ["fleet-ops@localhost"]
    dead = [
        r.json()
        for r in consume_until(
            namespace.brokers.kafka_brokers, namespace.topic("dlq"), lambda r: len(r) >= 2
        )
    ]
    assert sorted((d["stage"], d["reason"]) for d in dead) == [
        ("notify", "rejected"),
        ("notify", "rejected"),
    ]


def test_kill_9_and_resume_sends_every_alert_once(
    namespace: Namespace,
    receiver: EmailReceiver,
    logs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    alerts = [alert(n) for n in range(400)]
    for raw in alerts:
        receiver.fail(
            alert_id(raw), Fail(200, delay_s=0.02)
        )  # a slow service: the run takes a while
    produce(namespace.brokers.kafka_brokers, namespace.topic("alerts"), [(b"T", a) for a in alerts])
    args = recovery(tmp_path)
    env = notify_env(namespace, receiver, FLEET_NOTIFY_CONCURRENCY="2")
    kills = 0
    for _ in range(2):
        flow = FlowProcess("dataflows.notify", env, logs / "notify.log", args).start()
        deadline = time.monotonic() + 30
        before = len(receiver.emails)
        while len(receiver.emails) < before + 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert flow.process is not None
        assert flow.process.poll() is None
        flow.kill()
        kills += 1
    final = FlowProcess(
        "dataflows.notify", {**env, "FLEET_KAFKA_TAIL": "false"}, logs / "notify.log", args
    ).start()
    assert final.wait(timeout_s=180) == 0, final.log_tail()
    ids = {alert_id(a) for a in alerts}
    calls = Counter(c.key for c in receiver.calls)
    figures = {
        "alerts": len(ids),
        "kills": kills,
        "emails": len(receiver.emails),
        "unsent": len(ids - set(receiver.emails)),
        "repeated_calls": sum(n - 1 for n in calls.values() if n > 1),
    }
    report("notify-kill", figures, capsys)
    assert set(receiver.emails) == ids, "no alert unsent"
    assert len(receiver.emails) == len(ids), "the service sent each once (idempotency key)"
