"""Digests (issue 19 item 4): routes with delivery modes, periods in a local zone across
daylight saving changes, which period an alert lands in, closing, rendering by driver, and
the notifier's flow with an injected clock and a fake e-mail API, aborted and resumed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, TimeTestingGetter, run_main
from msgspec.structs import replace

import domain.digests
from connectors.email_api import Delivery, EmailApi
from connectors.kafka import OutboundRecord
from connectors.kafka_source import Fetch
from dataflows import notify
from dataflows.digests import DigestStep
from devtools.email_receiver import EmailReceiver
from domain.alerts import Alert, AlertDriver, Severity, encode_alert
from domain.digest_periods import Every, Period, Schedule, digest_id
from domain.digests import Digest, DigestBook, DigestEntry, period_text, render_digest
from domain.notifications import Mode, Routes, Verdict
from domain.timestamps import format_rfc3339_ms, parse_rfc3339_ms, to_epoch_ms

UTC_ZONE = ZoneInfo("UTC")
HELSINKI = ZoneInfo("Europe/Helsinki")
KOLKATA = ZoneInfo("Asia/Kolkata")
HOURLY = Schedule(Every.HOURLY)
DAILY_7 = Schedule(Every.DAILY, at=7 * 60)
NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # 14:00 in Helsinki
GRACE_MS = 60_000
RETENTION_MS = 7 * 86_400_000


def ms(moment: datetime) -> int:
    return to_epoch_ms(moment)


def at(
    year: int, month: int, day: int, hour: int, minute: int, second: int = 0, *, fold: int = 0
) -> int:
    """Epoch ms of a wall time in Helsinki (``fold=1``: the second of a repeated hour)."""
    return ms(datetime(year, month, day, hour, minute, second, tzinfo=HELSINKI, fold=fold))


# --- Routes ---------------------------------------------------------------------------------


ROUTES = Routes.parse(
    {
        "default": {"to": ["ops@x"], "digest": {"daily": "07:00"}},
        "severity": {"critical": ["oncall@x"]},
        "rules": {
            "harsh_braking": {"to": ["safety@x"], "digest": "hourly", "critical": "digest"},
            "yard_slow_zone": ["yard@x"],
        },
        "groups": [
            {"trucks": "T1*", "to": ["north@x", "ops@x"], "digest": {"every_s": 30}},
        ],
        "digest_grace_s": 5,
    }
)


def test_routes_parse_delivery_modes() -> None:
    assert ROUTES.default == ("ops@x",)
    assert ROUTES.modes == {
        "default": Mode(DAILY_7),
        "rules.harsh_braking": Mode(HOURLY, critical_too=True),
        "groups[0]": Mode(Schedule(Every.SECONDS, seconds=30)),
    }
    assert ROUTES.groups == (("T1*", ("north@x", "ops@x")),)
    assert ROUTES.digest_grace_s == 5.0
    plain = Routes.parse({"default": ["a@x"], "groups": [{"trucks": "T*", "to": ["b@x"]}]})
    assert plain.modes == {}, "lists and routes without digest deliver at once, as before"
    assert plain.digest_grace_s == 60.0
    assert Routes.parse({"default": {"to": ["a@x"], "digest": "daily"}}).modes == {
        "default": Mode(Schedule(Every.DAILY, at=0))
    }


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"default": {"to": ["a"], "digest": "weekly"}}, "default.digest: a digest is"),
        ({"default": {"to": ["a"], "digest": {"daily": "7:00"}}}, 'local time "HH:MM"'),
        ({"default": {"to": ["a"], "digest": {"daily": "24:00"}}}, "not '24:00'"),
        ({"default": {"to": ["a"], "digest": {"daily": "07:60"}}}, "not '07:60'"),
        ({"default": {"to": ["a"], "digest": {"daily": 7}}}, "not 7"),
        ({"default": {"to": ["a"], "digest": {"every_s": 0}}}, "every_s must be 1 to"),
        ({"default": {"to": ["a"], "digest": {"every_s": True}}}, "whole number"),
        ({"default": {"to": ["a"], "digest": {"every_s": 1.5}}}, "whole number"),
        ({"default": {"to": ["a"], "digest": {"hourly": 1, "daily": "07:00"}}}, "a digest is"),
        ({"default": {"to": ["a"], "digets": "hourly"}}, "unknown key 'digets'"),
        ({"default": {"digest": "hourly"}}, 'default needs "to"'),
        ({"default": {"to": "a@x", "digest": "hourly"}}, "default.to must be a list"),
        ({"default": {"to": ["a"], "critical": "digest"}}, '"critical" needs a digest'),
        (
            {"default": ["a"], "rules": {"r": {"to": ["b"], "digest": "hourly", "critical": 1}}},
            'rules.r.critical is "immediate" or "digest"',
        ),
        (
            {"default": ["a"], "severity": {"critical": {"to": ["b"], "digest": "hourly"}}},
            'unless the route says "critical": "digest"',
        ),
        ({"default": ["a"], "groups": [{"to": ["b"]}]}, 'groups[0] needs "trucks"'),
        (
            {"default": ["a"], "groups": [{"trucks": "T*", "to": ["b"], "every": "x"}]},
            "groups[0]: unknown key 'every'",
        ),
        ({"default": ["a"], "digest_grace_s": -1}, "digest_grace_s must be 0 to"),
        ({"default": ["a"], "digest_grace_s": "60"}, "a number of seconds"),
    ],
)
def test_routes_refuse_bad_digests_with_a_clear_error(
    document: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Routes.parse(document)


def alert(
    n: int,
    when: int,
    *,
    driver: str | None = "D1",
    rule: str = "sustained_speeding",
    severity: Severity = Severity.WARNING,
    truck: str = "T20",
    details: dict[str, Any] | None = None,
) -> Alert:
    named = {"D1": "Ana Berg", "D2": "Bo Lind"}
    history = (
        None
        if driver is None or driver not in named
        else AlertDriver(driver, named[driver], "2019-04-01", 1, 80.0, 9000.0, "low", 5.0, False)
    )
    return Alert(
        alert_id=f"a{n}",
        rule=rule,
        truck_id=truck,
        driver_id=driver,
        window_start=format_rfc3339_ms(when - 30_000),
        window_end=format_rfc3339_ms(when),
        count=5,
        event_ids=[f"e{n}"],
        max_speed_kmh=118.0,
        mean_speed_kmh=104.2,
        threshold_kmh=90.0,
        severity=severity,
        driver=history,
        detected_at=format_rfc3339_ms(when + 1_000),
        details=details or {},
    )


def test_critical_alerts_go_at_once_unless_a_route_digests_them() -> None:
    warning = alert(1, ms(NOON))
    assert ROUTES.deliveries(warning) == ([], [("ops@x", DAILY_7)])
    critical = replace(warning, severity=Severity.CRITICAL)
    assert ROUTES.deliveries(critical) == (["ops@x", "oncall@x"], [])
    braking = replace(critical, rule="harsh_braking")
    assert ROUTES.deliveries(braking) == (["ops@x", "oncall@x"], [("safety@x", HOURLY)])
    assert ROUTES.recipients(braking) == ["ops@x", "oncall@x"], "render's recipients: at once"


def test_an_address_gets_an_alert_once_at_once_wins_and_the_first_digest_route_wins() -> None:
    north = alert(1, ms(NOON), truck="T11")
    every_30 = Schedule(Every.SECONDS, seconds=30)
    assert ROUTES.deliveries(north) == ([], [("ops@x", DAILY_7), ("north@x", every_30)])
    yard = replace(north, rule="yard_slow_zone")
    assert ROUTES.deliveries(yard) == (["yard@x"], [("ops@x", DAILY_7), ("north@x", every_30)])
    routes = Routes.parse({"default": {"to": ["a"], "digest": "hourly"}, "rules": {"r": ["a"]}})
    assert routes.deliveries(replace(north, rule="r")) == (["a"], []), "at once, not also later"


# --- Periods --------------------------------------------------------------------------------


def period(schedule: Schedule, moment: int, zone: ZoneInfo = HELSINKI) -> Period:
    return schedule.period(moment, zone)


def hours(p: Period) -> float:
    return (p.end_ms - p.start_ms) / 3_600_000


def test_a_daily_period_runs_from_the_local_time_to_the_same_time_next_day() -> None:
    p = period(DAILY_7, at(2026, 12, 1, 14, 0))
    assert p == Period(at(2026, 12, 1, 7, 0), at(2026, 12, 2, 7, 0))
    assert period(DAILY_7, at(2026, 12, 1, 6, 59, 59)) == Period(
        at(2026, 11, 30, 7, 0), at(2026, 12, 1, 7, 0)
    ), "before 07:00: yesterday's period"
    assert period(DAILY_7, at(2026, 12, 1, 7, 0)).start_ms == at(2026, 12, 1, 7, 0), "inclusive"


def test_the_daily_period_of_the_night_clocks_go_back_is_25_hours() -> None:
    # Helsinki, last Sunday of October 2024: 04:00 EEST becomes 03:00 EET.
    p = period(DAILY_7, at(2024, 10, 27, 3, 30, fold=1))
    assert p == Period(at(2024, 10, 26, 7, 0), at(2024, 10, 27, 7, 0))
    assert hours(p) == 25
    assert p.start_ms == ms(datetime(2024, 10, 26, 4, 0, tzinfo=UTC))
    assert p.end_ms == ms(datetime(2024, 10, 27, 5, 0, tzinfo=UTC))
    assert hours(period(DAILY_7, at(2024, 10, 27, 12, 0))) == 24


def test_the_daily_period_of_the_night_clocks_go_forward_is_23_hours() -> None:
    # Helsinki, last Sunday of March 2024: 03:00 EET becomes 04:00 EEST.
    assert hours(period(DAILY_7, at(2024, 3, 30, 12, 0))) == 23
    # A start time the change skips reads with the offset before the change.
    skipped = Schedule(Every.DAILY, at=3 * 60 + 30)
    p = period(skipped, at(2024, 3, 31, 12, 0))
    assert p.start_ms == ms(datetime(2024, 3, 31, 1, 30, tzinfo=UTC)), "04:30 EEST"
    assert hours(p) == 23


def test_hourly_periods_are_local_hours_and_the_repeated_hour_is_two() -> None:
    first = period(HOURLY, at(2024, 10, 27, 3, 30, fold=0))  # 03:30 EEST
    second = period(HOURLY, at(2024, 10, 27, 3, 30, fold=1))  # 03:30 EET
    assert first == Period(at(2024, 10, 27, 3, 0, fold=0), at(2024, 10, 27, 3, 0, fold=1))
    assert second == Period(at(2024, 10, 27, 3, 0, fold=1), at(2024, 10, 27, 4, 0))
    assert hours(first) == hours(second) == 1
    # Kolkata is UTC+05:30: its hours start at half past in UTC.
    p = period(HOURLY, ms(datetime(2026, 12, 1, 12, 10, tzinfo=UTC)), KOLKATA)
    assert p.start_ms == ms(datetime(2026, 12, 1, 11, 30, tzinfo=UTC))
    assert hours(p) == 1


def test_every_s_periods_are_fixed_from_the_epoch() -> None:
    every = Schedule(Every.SECONDS, seconds=30)
    assert period(every, 95_000) == Period(90_000, 120_000)
    assert period(every, 120_000) == Period(120_000, 150_000)


def test_a_digest_id_names_recipient_schedule_and_period() -> None:
    one = digest_id("ops@x", DAILY_7, 1_000)
    assert re.fullmatch("[0-9a-f]{32}", one)
    assert one == digest_id("ops@x", DAILY_7, 1_000)
    others = {
        digest_id("oncall@x", DAILY_7, 1_000),
        digest_id("ops@x", HOURLY, 1_000),
        digest_id("ops@x", DAILY_7, 2_000),
    }
    assert len(others | {one}) == 4


def test_period_text() -> None:
    assert period_text(Period(at(2026, 12, 1, 7, 0), at(2026, 12, 2, 7, 0)), HELSINKI) == (
        "07:00 1 Dec \u2013 07:00 2 Dec"
    )
    assert period_text(Period(at(2026, 12, 1, 10, 0), at(2026, 12, 1, 11, 0)), HELSINKI) == (
        "10:00\u201311:00 1 Dec"
    )
    assert period_text(Period(90_000, 120_000), UTC_ZONE) == "00:01:30\u201300:02:00 1 Jan"


# --- The book -------------------------------------------------------------------------------


def entry(a: Alert, recipient: str = "ops@x", schedule: Schedule = DAILY_7) -> DigestEntry:
    end = parse_rfc3339_ms(a.window_end)
    return DigestEntry(recipient, schedule, a.alert_id, a.rule, end, encode_alert(a))


def test_an_alert_is_in_the_period_of_its_window_end_until_that_period_is_due() -> None:
    book = DigestBook("ops@x", DAILY_7)
    day_1 = at(2026, 12, 1, 7, 0)
    day_2 = at(2026, 12, 2, 7, 0)
    assert book.add(entry(alert(1, at(2026, 12, 1, 23, 0))), HELSINKI, day_2 - 1, GRACE_MS) == (
        "queued"
    )
    # Within the grace after the end: still the period of its window_end.
    assert book.add(entry(alert(2, day_2 - 1)), HELSINKI, day_2 + GRACE_MS - 1, GRACE_MS) == (
        "queued"
    )
    assert list(book.pending) == [day_1]
    assert book.wake_at_ms(GRACE_MS, RETENTION_MS) == day_2 + GRACE_MS
    # Due: the period is frozen; an alert of it that comes now is late, in the next one.
    assert book.add(entry(alert(3, day_2 - 1)), HELSINKI, day_2 + GRACE_MS, GRACE_MS) == "late"
    assert sorted(book.pending) == [day_1, day_2]
    assert list(book.pending[day_2].raws) == ["a3"]
    closed = book.close(day_2 + GRACE_MS, GRACE_MS, RETENTION_MS)
    assert [(d.period.start_ms, [i for i, _ in d.raws]) for d in closed] == [(day_1, ["a1", "a2"])]
    assert closed[0].digest_id == digest_id("ops@x", DAILY_7, day_1)
    assert list(book.pending) == [day_2], "the sent period's state is gone"


def test_a_repeated_alert_is_listed_once_until_the_retention_passes() -> None:
    book = DigestBook("ops@x", HOURLY)
    now = ms(NOON)
    a = entry(alert(1, now))
    assert book.add(a, HELSINKI, now, GRACE_MS) == "queued"
    assert book.add(a, HELSINKI, now + 1, GRACE_MS) == "duplicate"
    later = now + 3_600_000 + GRACE_MS
    assert len(book.close(later, GRACE_MS, RETENTION_MS)) == 1
    assert book.add(a, HELSINKI, later, GRACE_MS) == "duplicate", "after its digest went out"
    assert book.wake_at_ms(GRACE_MS, RETENTION_MS) == now + RETENTION_MS
    assert book.close(now + RETENTION_MS, GRACE_MS, RETENTION_MS) == []
    assert book.empty, "nothing pending, nothing remembered: the state can go"


def test_a_full_digest_counts_what_it_does_not_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(domain.digests, "MAX_LISTED", 2)
    book = DigestBook("ops@x", HOURLY)
    now = ms(NOON)
    outcomes = [book.add(entry(alert(n, now)), HELSINKI, now, GRACE_MS) for n in range(3)]
    assert outcomes == ["queued", "queued", "unlisted"]
    (digest,) = book.close(now + 3_600_000 + GRACE_MS, GRACE_MS, RETENTION_MS)
    assert (digest.total, len(digest.raws)) == (3, 2)
    assert "1 alert more not listed" in render_digest(digest, HELSINKI).text


def test_a_failed_digest_forgets_its_alerts_so_a_replay_lists_them_again() -> None:
    book = DigestBook("ops@x", HOURLY)
    now = ms(NOON)
    a = entry(alert(1, now))
    book.add(a, HELSINKI, now, GRACE_MS)
    (digest,) = book.close(now + 3_600_000 + GRACE_MS, GRACE_MS, RETENTION_MS)
    book.forget(digest)
    assert book.add(a, HELSINKI, now + 3_600_000 + GRACE_MS, GRACE_MS) == "late"


def test_the_snapshot_is_a_copy() -> None:
    book = DigestBook("ops@x", HOURLY)
    now = ms(NOON)
    book.add(entry(alert(1, now)), HELSINKI, now, GRACE_MS)
    copy = book.copy()
    book.add(entry(alert(2, now)), HELSINKI, now, GRACE_MS)
    assert [list(p.raws) for p in copy.pending.values()] == [["a1"]]
    assert list(copy.listed) == ["a1"]


# --- Rendering ------------------------------------------------------------------------------


def test_a_digest_lists_alerts_by_driver_with_counts_by_rule() -> None:
    day = Period(at(2026, 12, 1, 7, 0), at(2026, 12, 2, 7, 0))
    alerts = [
        alert(1, at(2026, 12, 1, 9, 15), driver="D2"),
        alert(2, at(2026, 12, 1, 8, 14, 2), driver="D1", truck="T12"),
        alert(
            3,
            at(2026, 12, 1, 18, 0),
            driver="D1",
            rule="city_speed",
            details={"kind": "posted_limit_over", "road_name": "Mannerheimintie"},
        ),
        alert(4, at(2026, 12, 1, 10, 0), driver=None, rule="yard", details={"kind": "zone_over"}),
        alert(5, at(2026, 12, 1, 11, 0), driver="D9<b>"),
        alert(6, at(2026, 11, 30, 23, 0), driver="D1"),  # late: before the period
    ]
    digest = Digest(
        "f" * 32,
        "ops@x",
        DAILY_7,
        day,
        tuple((a.alert_id, encode_alert(a)) for a in alerts),
        {"sustained_speeding": 4, "city_speed": 1, "yard": 1},
    )
    email = render_digest(digest, HELSINKI)
    assert email.to == ["ops@x"]
    assert email.subject == "[fleetwatch] 6 alerts, 07:00 1 Dec \u2013 07:00 2 Dec"
    lines = email.text.splitlines()
    assert lines[0] == "6 alerts, 07:00 1 Dec \u2013 07:00 2 Dec (EET), daily 07:00 digest"
    assert lines[1] == "By rule: sustained_speeding 4, city_speed 1, yard 1"
    headings = [line for line in lines if line and not line.startswith("  ")][2:]
    assert headings == [
        "Ana Berg (D1): 3 alerts",
        "Bo Lind (D2): 1 alert",
        "D9<b> (no history): 1 alert",
        "no driver assigned: 1 alert",
    ]
    ana = lines[lines.index("Ana Berg (D1): 3 alerts") + 1 : lines.index("Bo Lind (D2): 1 alert")]
    assert ana[0] == (
        "  30 Nov 23:00:00 (late) Sustained speeding: truck T20, top 118.0 km/h, 28.0 km/h "
        "over the 90 km/h limit; mean 104.2 km/h [sustained_speeding]"
    )
    assert ana[1].startswith("  1 Dec 08:14:02 Sustained speeding: truck T12, top 118.0")
    assert ana[2] == (
        "  1 Dec 18:00:00 Over the 90 km/h limit on Mannerheimintie: truck T20, top 118.0 "
        "km/h, 28.0 km/h over the 90 km/h posted limit on Mannerheimintie; mean 104.2 km/h; "
        "Mannerheimintie [city_speed]"
    )
    assert "<h3>D9&lt;b&gt; (no history): 1 alert</h3>" in email.html
    assert "<b>" not in email.html
    assert email.html.count("<li>") == 6


def test_the_digest_request_carries_its_id_and_the_listed_alert_ids() -> None:
    a = alert(1, ms(NOON))
    digest = Digest("0" * 32, "ops@x", HOURLY, Period(0, 1), (("a1", encode_alert(a)),), {"r": 1})
    document = domain.digests.digest_json(digest, render_digest(digest, UTC_ZONE))
    assert document["digest_id"] == "0" * 32
    assert document["alert_ids"] == ["a1"]
    assert document["tags"] == {
        "digest": "hourly",
        "period_start_ms": 0,
        "period_end_ms": 1,
        "alerts": 1,
    }


# --- The flow -------------------------------------------------------------------------------


class FakeApi:
    """The e-mail API as the idempotency key makes it: a repeat of an id sends nothing."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.calls: list[Digest] = []
        self.failing = failing

    def deliver(self, digests: Sequence[Digest]) -> list[Delivery]:
        out = []
        for d in digests:
            self.calls.append(d)
            failed = d.recipient in self.failing
            verdict = Verdict.RETRY if failed else Verdict.DELIVERED
            out.append(Delivery(d.digest_id, verdict, 3 if failed else 1, "HTTP 503: down"))
        return out

    @property
    def sent(self) -> dict[str, Digest]:
        return {d.digest_id: d for d in self.calls if d.recipient not in self.failing}


EVERY_10 = Schedule(Every.SECONDS, seconds=10)
FLOW_ROUTES = Routes.parse(
    {
        "default": {"to": ["ops@x"], "digest": {"every_s": 10}},
        "groups": [{"trucks": "T3*", "to": ["north@x"], "digest": {"every_s": 10}}],
        "digest_grace_s": 2,
    }
)
START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # a period boundary of every_s 10


def run_flow(
    items: Iterable[Fetch | TestingSource.ABORT],
    clock: TimeTestingGetter,
    api: FakeApi,
    recovery: RecoveryConfig | None = None,
) -> tuple[list[tuple[str, Any]], list[OutboundRecord]]:
    immediate: list[tuple[str, Any]] = []
    dead: list[OutboundRecord] = []
    step = DigestStep(
        api.deliver,
        dead.extend,
        "alerts",
        "dlq",
        UTC_ZONE,
        timedelta(seconds=2),
        timedelta(days=7),
        clock.get,
    )
    flow = notify.build_flow(
        TestingSource(items),
        TestingSink(immediate),
        TestingSink([]),
        "alerts",
        UTC_ZONE,
        FLOW_ROUTES,
        step,
    )
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
    return immediate, dead


def fetch(*alerts: Alert) -> Fetch:
    return Fetch(0, 0, 0, [encode_alert(a) for a in alerts])


def test_the_flow_sends_one_digest_per_recipient_and_period_and_critical_at_once() -> None:
    clock = TimeTestingGetter(START)
    api = FakeApi()

    def stream() -> Iterator[Fetch | TestingSource.ABORT]:
        yield fetch(alert(1, ms(START) + 1_000, truck="T31"), alert(2, ms(START) + 2_000))
        yield fetch(alert(3, ms(START) + 3_000, severity=Severity.CRITICAL))
        clock.advance(timedelta(seconds=12))  # the first period is due
        yield fetch(alert(4, ms(START) + 9_000))  # late: into the second period
        yield fetch(alert(5, ms(START) + 13_000, truck="T32"))
        clock.advance(timedelta(seconds=10))

    immediate, dead = run_flow(stream(), clock, api)
    assert [key for key, _ in immediate] == ["a3"], "critical: at once"
    got = {(d.recipient, d.period.start_ms): [i for i, _ in d.raws] for d in api.calls}
    first, second = ms(START), ms(START) + 10_000
    assert got == {
        ("ops@x", first): ["a1", "a2"],
        ("north@x", first): ["a1"],
        ("ops@x", second): ["a4", "a5"],
        ("north@x", second): ["a5"],
    }
    assert len(api.calls) == 4, "one call each"
    assert dead == []


def test_a_digest_that_cannot_be_sent_is_dead_lettered_as_its_alerts() -> None:
    clock = TimeTestingGetter(START)
    api = FakeApi(failing=frozenset({"north@x"}))

    def stream() -> Iterator[Fetch | TestingSource.ABORT]:
        yield fetch(alert(1, ms(START) + 1_000, truck="T31"), alert(2, ms(START) + 2_000))
        clock.advance(timedelta(seconds=12))

    _, dead = run_flow(stream(), clock, api)
    assert len(api.sent) == 1
    assert [(r.topic, r.key) for r in dead] == [("dlq", b"a1")]
    letter = json.loads(dead[0].value)
    assert (letter["stage"], letter["reason"], letter["source_topic"]) == (
        "notify",
        "undeliverable",
        "alerts",
    )
    assert letter["detail"].startswith("digest ")
    assert "after 3 attempts: HTTP 503: down" in letter["detail"]


def test_an_open_period_waits_in_recovery_and_the_resumed_run_sends_it(tmp_path: Path) -> None:
    """Aborted mid-stream after the first period went out; the resumed run (the clock 10 s
    on) sends the period that was open, and every period has one id: a repeated call (the
    abort can lose the last epoch's snapshot) carries the id the API already has."""
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    clock = TimeTestingGetter(START)
    api = FakeApi()
    fetches = [
        fetch(alert(1, ms(START) + 1_000)),
        fetch(alert(2, ms(START) + 11_000)),  # the second period, not due in the first run
        fetch(alert(3, ms(START) + 12_000)),
    ]

    def first_run() -> Iterator[Fetch | TestingSource.ABORT]:
        yield fetches[0]
        clock.advance(timedelta(seconds=12))  # the first period is due
        yield from fetches[1:]
        yield TestingSource.ABORT()

    run_flow(first_run(), clock, api, recovery)
    assert {d.period.start_ms for d in api.calls} == {ms(START)}

    clock.advance(timedelta(seconds=10))  # the second period is due at once
    run_flow([*fetches, fetch(alert(4, ms(START) + 25_000))], clock, api, recovery)
    by_period = {d.period.start_ms: d.digest_id for d in api.calls}
    assert sorted(by_period) == [ms(START), ms(START) + 10_000]
    assert len({d.digest_id for d in api.calls}) == 2, "one id per period"
    second = [d for d in api.calls if d.period.start_ms == ms(START) + 10_000]
    assert [i for i, _ in second[0].raws][:1] == ["a2"]


def test_the_routes_examples_of_the_docs_parse() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "contract.md").read_text()
    blocks = [b for b in re.findall(r"```json\n(.*?)```", page, re.S) if '"default"' in b]
    parsed = [Routes.parse(json.loads(block)) for block in blocks]
    assert len(parsed) == 2
    assert parsed[1].modes["groups[0]"] == Mode(HOURLY, critical_too=True)


# --- The daily report's link (routes file's report_url) -------------------------------------

REPORT_URL = "https://reports.example/fleetwatch/{day}.html?from=digest&a=1"


def linked_digest(schedule: Schedule, period: Period) -> Digest:
    a = alert(1, period.start_ms + 60_000)
    return Digest("e" * 32, "ops@x", schedule, period, ((a.alert_id, encode_alert(a)),), {"r": 1})


@pytest.mark.parametrize(
    ("schedule", "period", "day"),
    [
        # daily: the period is the day itself
        (Schedule(Every.DAILY), Period(at(2026, 12, 1, 0, 0), at(2026, 12, 2, 0, 0)), "2026-12-01"),
        # daily at 07:00: the day whose night the period closes (over by the time it is sent)
        (DAILY_7, Period(at(2026, 12, 1, 7, 0), at(2026, 12, 2, 7, 0)), "2026-12-01"),
        # across the fall-back night: 25 hours, the same rule
        (DAILY_7, Period(at(2026, 10, 24, 7, 0), at(2026, 10, 25, 7, 0)), "2026-10-24"),
    ],
)
def test_a_daily_digest_links_the_report_of_its_day(
    schedule: Schedule, period: Period, day: str
) -> None:
    email = render_digest(linked_digest(schedule, period), HELSINKI, REPORT_URL)
    url = f"https://reports.example/fleetwatch/{day}.html?from=digest&a=1"
    assert f"The day's report, {day}: {url}" in email.text.splitlines()
    escaped = url.replace("&", "&amp;")
    assert f'<p>The day\'s report, {day}: <a href="{escaped}">{escaped}</a></p>' in email.html


@pytest.mark.parametrize(
    ("schedule", "template"),
    [(HOURLY, REPORT_URL), (Schedule(Every.SECONDS, seconds=30), REPORT_URL), (DAILY_7, None)],
)
def test_no_link_for_other_digests_or_without_a_template(
    schedule: Schedule, template: str | None
) -> None:
    period = Period(at(2026, 12, 1, 7, 0), at(2026, 12, 2, 7, 0))
    email = render_digest(linked_digest(schedule, period), HELSINKI, template)
    assert "report" not in email.text
    assert "<a " not in email.html


def test_routes_take_a_report_url_template() -> None:
    assert Routes.parse({"default": ["a"]}).report_url is None
    routes = Routes.parse({"default": ["a"], "report_url": REPORT_URL})
    assert routes.report_url == REPORT_URL


@pytest.mark.parametrize(
    "value",
    [
        "https://reports.example/latest.html",  # no {day}
        "https://reports.example/{day}/{day}.html",
        "ftp://reports.example/{day}.html",
        "javascript:alert(1)//{day}",
        "https://reports.example/{day}.html\nBcc: x@y",
        "https://reports.example/{ day }.html",
        "https://reports.example/{day}-{month}.html",
        "https://reports.example/" + "x" * 2000 + "{day}",
        42,
        ["https://reports.example/{day}.html"],
    ],
)
def test_routes_refuse_a_bad_report_url(value: object) -> None:
    with pytest.raises(ValueError, match="report_url must be"):
        Routes.parse({"default": ["a"], "report_url": value})


def test_the_e_mail_api_sends_the_link_in_the_digest() -> None:
    secret = b"0123456789abcdef0123456789abcdef"
    receiver = EmailReceiver(secret).start()
    try:
        routes = Routes.parse(
            {"default": {"to": ["ops@x"], "digest": "daily"}, "report_url": REPORT_URL}
        )
        api = EmailApi(receiver.url, secret, routes, HELSINKI, timeout_s=5)
        digest = linked_digest(
            Schedule(Every.DAILY), Period(at(2026, 12, 3, 0, 0), at(2026, 12, 4, 0, 0))
        )
        delivery = api.deliver_digest(digest)
    finally:
        receiver.stop()
    assert delivery.verdict is Verdict.DELIVERED, delivery.detail
    sent = receiver.emails[digest.digest_id]
    assert "https://reports.example/fleetwatch/2026-12-03.html?from=digest&a=1" in sent["text"]
