"""Digests (issue 19 item 4) on a real Kafka broker and the real local HTTP e-mail server
(devtools.email_receiver): two recipients, two periods, a kill -9 of the notifier while a
digest's call is in flight (the server sends it, the notifier never learns), and a restart
from recovery. Exactly one digest reaches the server per recipient and period, no alert is
lost, and a critical alert still goes at once."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from bytewax.recovery import init_db_dir

from devtools.email_receiver import EmailReceiver, Fail
from domain.alerts import build_alert, encode_alert
from domain.digest_periods import Every, Schedule, digest_id
from domain.history import Assignment, Driver, HistoryIndex
from domain.readings import Reading
from domain.rules import Detection, Rule
from domain.timestamps import to_epoch_ms
from runtime.clock import utc_now
from tests.integration.flows import FlowProcess, Namespace, produce
from tests.integration.reports import report

SECRET = "a-digest-signing-secret-of-32-bytes"
PERIOD_S = 12
GRACE_S = 2
EVERY = Schedule(Every.SECONDS, seconds=PERIOD_S)
UTC = ZoneInfo("UTC")
HISTORY = HistoryIndex.build(
    [
        Driver("D-ana", "Ana Berg", "2019-04-01", 1, 80.0, 9_000.0, "low"),
        Driver("D-bo", "Bo Lind", "2020-06-01", 0, 78.0, 7_000.0, "medium"),
    ],
    [
        Assignment("T1", "D-ana", 0, None),
        Assignment("TN1", "D-ana", 0, None),
        Assignment("TN2", "D-bo", 0, None),
    ],
)
ROUTES = {
    "default": {"to": ["ops@fleet.example"], "digest": {"every_s": PERIOD_S}},
    "groups": [{"trucks": "TN*", "to": ["north@fleet.example"], "digest": {"every_s": PERIOD_S}}],
    "digest_grace_s": GRACE_S,
}


@dataclass
class WatchedReceiver(EmailReceiver):
    """The receiver, also noting each call's key as it arrives (before any scripted delay)."""

    arrived: list[str] = field(default_factory=list)

    def _handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._lock:
            self.arrived.append(request.headers.get("idempotency-key", ""))
        super()._handle(request, body)


@pytest.fixture
def receiver() -> Iterator[WatchedReceiver]:
    started = WatchedReceiver(SECRET.encode())
    started.start()
    try:
        yield started
    finally:
        started.stop()


def now_ms() -> int:
    return to_epoch_ms(utc_now())


def warning(n: int, truck: str, at_ms: int) -> bytes:
    """A sustained-speeding alert (a warning: the drivers are not high risk) ending now."""
    readings = tuple(Reading(f"w{n}-{i}", truck, at_ms - (4 - i) * 1_000, 95.0) for i in range(5))
    detection = Detection(Rule.SUSTAINED, truck, readings, 90.0)
    return encode_alert(build_alert(detection, at_ms, HISTORY))


def critical(n: int, truck: str, at_ms: int) -> bytes:
    reading = Reading(f"c{n}", truck, at_ms, 140.0)
    return encode_alert(build_alert(Detection(Rule.INSTANT, truck, (reading,), 130.0), at_ms))


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def sleep_until_ms(moment_ms: int) -> None:
    time.sleep(max(0.0, (moment_ms - now_ms()) / 1000))


def test_one_digest_per_recipient_and_period_across_kill_9_and_restart(
    namespace: Namespace,
    receiver: WatchedReceiver,
    logs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps(ROUTES))
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)  # type: ignore[no-untyped-call]
    args = ["-r", str(recovery), "-s", "1", "-b", "0"]
    env = namespace.env(
        FLEET_NOTIFY_URL=receiver.url,
        FLEET_NOTIFY_SECRET=SECRET,
        FLEET_NOTIFY_TIMEOUT_S="5",
        FLEET_NOTIFY_ROUTES=str(routes),
    )
    bootstrap, topic = namespace.brokers.kafka_brokers, namespace.topic("alerts")

    def publish(alerts: list[bytes]) -> None:
        produce(bootstrap, topic, [(json.loads(a)["truck_id"].encode(), a) for a in alerts])

    def ids(alerts: list[bytes]) -> set[str]:
        return {str(json.loads(a)["alert_id"]) for a in alerts}

    # The notifier is up once the critical alert came, at once, to the default route.
    first = FlowProcess("dataflows.notify", env, logs / "notify.log", args).start()
    urgent = critical(0, "T1", now_ms())
    publish([urgent])
    (urgent_id,) = ids([urgent])
    wait_until(lambda: urgent_id in receiver.emails, 60, "the critical alert")

    # Period A: from the next boundary on. Its digest for ops is slow to answer (2 s).
    period_a = EVERY.period(now_ms() + PERIOD_S * 1000, UTC)
    period_b = EVERY.period(period_a.end_ms, UTC)
    ops_a = digest_id("ops@fleet.example", EVERY, period_a.start_ms)
    receiver.fail(ops_a, Fail(200, delay_s=2.0))
    sleep_until_ms(period_a.start_ms + 200)
    in_a = [warning(n, truck, now_ms()) for n, truck in enumerate(["T1", "TN1", "TN2", "T1"])]
    publish(in_a)
    sleep_until_ms(period_b.start_ms + 200)
    in_b = [warning(10 + n, truck, now_ms()) for n, truck in enumerate(["TN2", "T1", "TN1"])]
    publish(in_b)

    # A is due at its end plus the grace: kill -9 while ops's digest call is in flight.
    wait_until(lambda: ops_a in receiver.arrived, PERIOD_S + 30, "ops's digest of period A")
    first.kill()
    wait_until(lambda: ops_a in receiver.emails, 10, "the server to send it anyway")

    second = FlowProcess("dataflows.notify", env, logs / "notify.log", args).start()
    ops_b = digest_id("ops@fleet.example", EVERY, period_b.start_ms)
    north_b = digest_id("north@fleet.example", EVERY, period_b.start_ms)
    wait_until(lambda: {ops_b, north_b} <= set(receiver.emails), PERIOD_S + 60, "the digests of B")
    # Anything the lost run had taken after its last snapshot would be listed again, late,
    # in a later period: give such a period the time to close too.
    sleep_until_ms(period_b.end_ms + (PERIOD_S + GRACE_S + 2) * 1000)
    second.kill()

    digests = [e for e in receiver.emails.values() if "digest_id" in e]
    per_period = Counter((e["to"][0], e["tags"]["period_start_ms"]) for e in digests)
    sent = Counter(c.key for c in receiver.calls if c.status == 200 and not c.duplicate)
    repeats = Counter(c.key for c in receiver.calls if c.status == 200 and c.duplicate)
    listed: dict[str, set[str]] = {"ops@fleet.example": set(), "north@fleet.example": set()}
    for e in digests:
        listed[e["to"][0]] |= set(e["alert_ids"])
    north_alerts = [a for a in in_a + in_b if json.loads(a)["truck_id"].startswith("TN")]
    report(
        "notify-digests-kill",
        {
            "digests": len(digests),
            "periods_per_recipient_max": max(per_period.values()),
            "repeated_digest_calls": sum(repeats.values()),
            "ops_a_calls": len(receiver.calls_for(ops_a)),
        },
        capsys,
    )

    assert all(n == 1 for n in per_period.values()), f"one digest per period: {per_period}"
    assert all(n == 1 for n in sent.values()), "the server sent each message once"
    assert [c.duplicate for c in receiver.calls_for(ops_a)] == [False, True], (
        "the restarted notifier sent ops's digest of A again, with the same id"
    )
    a_digest = receiver.emails[ops_a]
    assert set(a_digest["alert_ids"]) == ids(in_a)
    assert a_digest["subject"].startswith("[fleetwatch] 4 alerts, ")
    assert "Ana Berg (D-ana): 3 alerts" in a_digest["text"]
    assert "Bo Lind (D-bo): 1 alert" in a_digest["text"]
    north_a = receiver.emails[digest_id("north@fleet.example", EVERY, period_a.start_ms)]
    assert set(north_a["alert_ids"]) == ids([a for a in in_a if a in north_alerts])
    # A's alerts were in a snapshot long before the kill; B's come back in B either way
    # (in the snapshot or replayed from Kafka while B is not due): no later period.
    assert set(per_period) == {
        (recipient, period.start_ms) for recipient in listed for period in (period_a, period_b)
    }
    assert set(receiver.emails[ops_b]["alert_ids"]) == ids(in_b)
    assert set(receiver.emails[north_b]["alert_ids"]) == ids([a for a in in_b if a in north_alerts])
    assert listed["ops@fleet.example"] >= ids(in_a + in_b), "no alert lost for ops"
    assert listed["north@fleet.example"] >= ids(north_alerts), "no alert lost for north"
    assert urgent_id not in listed["ops@fleet.example"], "the critical alert went at once only"
    assert receiver.emails[urgent_id]["to"] == ["ops@fleet.example"]
    assert all(c.signature_ok for c in receiver.calls)
