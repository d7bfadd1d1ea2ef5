"""dataflows.notify against a real local HTTP server (devtools.email_receiver) and a real
Kafka broker: retries, permanent failures, duplicates, hostile alerts and hostile answers,
and kill -9 with resume."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path

import pytest
from bytewax.recovery import init_db_dir

from devtools.email_receiver import EmailReceiver, Fail
from domain.alerts import build_alert, encode_alert
from domain.readings import Reading
from domain.rules import Detection, Rule
from tests.builders import BEGINNING_MS
from tests.integration.flows import FlowProcess, Namespace, consume_until, produce
from tests.integration.reports import report

SECRET = "a-test-signing-secret-of-32-bytes"


def alert(n: int, truck: str | None = None) -> bytes:
    reading = Reading(f"e{n}", truck or f"T{n % 9}", BEGINNING_MS + n * 1_000, 140.0)
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


def hostile(n: int, field: str, fragment: str) -> bytes:
    """Alert ``n`` with ``field`` holding the raw JSON text ``fragment``."""
    document = json.loads(alert(n))
    document[field] = "__hole__"
    return json.dumps(document).replace('"__hole__"', fragment).encode()


def test_hostile_alerts_are_dead_lettered_and_the_flow_goes_on(
    namespace: Namespace, receiver: EmailReceiver, logs: Path, tmp_path: Path
) -> None:
    """Records that crashed the notifier before issue 14, mixed into good alerts (two of
    which meet hostile answers from the API): each bad one is on the DLQ with its reason,
    each good one e-mailed once, and the flow runs to the end of the topic."""
    bad = {
        "driver_as_list": (hostile(100, "driver", '["Ana"]'), "schema"),
        "count_as_string": (hostile(101, "count", '"5"'), "schema"),
        "max_speed_beyond_float": (hostile(102, "max_speed_kmh", "1e400"), "out_of_range"),
        # Tokyo is ahead of UTC: this instant is in year 10000 there.
        "window_end_9999": (
            hostile(103, "window_end", '"9999-12-31T23:59:59.999Z"'),
            "bad_timestamp",
        ),
        "window_start_year_1": (
            hostile(104, "window_start", '"0001-01-01T00:00:00+01:00"'),
            "bad_timestamp",
        ),
        "window_start_not_a_date": (hostile(105, "window_start", '"soon"'), "bad_timestamp"),
        "nested_100000_deep": (hostile(106, "details", "[" * 100_000 + "]" * 100_000), "schema"),
        "alert_id_non_ascii": (hostile(107, "alert_id", '"' + "ä" * 32 + '"'), "schema"),
        "alert_id_lone_surrogate": (hostile(108, "alert_id", r'"\ud800"'), "invalid_json"),
        "not_json": (b"\xff\xfe", "invalid_json"),
    }
    good = [alert(n) for n in range(6)] + [alert(6, truck="T6\r\nBcc: all@example.com")]
    ids = [alert_id(a) for a in good]
    receiver.fail(ids[0], Fail(503, retry_after="²"))  # crashed: isdigit() but not float()
    receiver.fail(ids[1], Fail(503, retry_after="١٢٣", body_bytes=5_000_000))
    mixed = zip_longest(good, [raw for raw, _ in bad.values()])
    records = [r for pair in mixed for r in pair if r is not None]
    produce(
        namespace.brokers.kafka_brokers, namespace.topic("alerts"), [(b"T", r) for r in records]
    )
    flow = FlowProcess(
        "dataflows.notify",
        notify_env(
            namespace, receiver, FLEET_KAFKA_TAIL="false", FLEET_NOTIFY_TIMEZONE="Asia/Tokyo"
        ),
        logs / "n.log",
        recovery(tmp_path),
    ).start()
    assert flow.wait(timeout_s=120) == 0, flow.log_tail()

    assert set(receiver.emails) == set(ids), "every good alert e-mailed"
    successes = Counter(c.key for c in receiver.calls if c.status == 200)
    assert all(successes[i] == 1 for i in ids), "once each"
    assert [c.status for c in receiver.calls_for(ids[0])] == [503, 200]
    assert [c.status for c in receiver.calls_for(ids[1])] == [503, 200]
    assert receiver.emails[ids[6]]["subject"] == (
        "[CRITICAL] Critical over-speed: truck T6  Bcc: all@example.com at 140.0 km/h"
    )
    assert "JST" in receiver.emails[ids[2]]["text"], "rendered in FLEET_NOTIFY_TIMEZONE"
    dead = [
        r.json()
        for r in consume_until(
            namespace.brokers.kafka_brokers,
            namespace.topic("dlq"),
            lambda r: len(r) >= len(bad),
        )
    ]
    by_raw = {base64.b64decode(str(d["raw"])): d for d in dead}
    assert len(dead) == len(by_raw) == len(bad), "each bad record dead-lettered once"
    for name, (raw, reason) in bad.items():
        assert (by_raw[raw]["stage"], by_raw[raw]["reason"]) == ("notify", reason), name


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
