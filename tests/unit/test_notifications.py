"""E-mails from alerts: routing, rendering, signatures and retry decisions."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from msgspec.structs import replace

from domain.alerts import Alert, AlertDriver, Severity
from domain.notifications import (
    RetryPolicy,
    Routes,
    Verdict,
    classify,
    render,
    secret_bytes,
    sign,
    verify,
)

SECRET = b"0123456789abcdef0123456789abcdef"
ALERT = Alert(
    alert_id="abc",
    rule="sustained_speeding",
    truck_id="T0012",
    driver_id="D1",
    window_start="2026-11-24T10:00:00.000Z",
    window_end="2026-11-24T10:05:00.000Z",
    count=5,
    event_ids=["e1", "e2", "e3", "e4", "e5"],
    max_speed_kmh=118.0,
    mean_speed_kmh=104.2,
    threshold_kmh=90.0,
    severity=Severity.CRITICAL,
    driver=AlertDriver(
        driver_id="D1",
        name="Ana Berg",
        hired_on="2019-04-01",
        overspeed_events_90d=4,
        avg_speed_kmh_90d=83.0,
        km_driven_90d=9_120.0,
        risk_tier="high",
        speed_over_baseline_kmh=35.0,
        repeat_offender=True,
    ),
    detected_at="2026-11-24T10:05:01.000Z",
)
ROUTES = Routes.parse(
    {
        "default": ["ops@fleet.example"],
        "severity": {"critical": ["oncall@fleet.example", "ops@fleet.example"]},
        "groups": [
            {"trucks": "T001*", "to": ["north@fleet.example"]},
            {"trucks": "T9*", "to": ["south@x"]},
        ],
    }
)


def test_signature_verifies_and_a_tampered_body_does_not() -> None:
    signature = sign(SECRET, "abc", 1_795_000_000, b'{"a":1}')
    assert signature.startswith("v1,")
    assert verify(SECRET, "abc", 1_795_000_000, b'{"a":1}', signature)
    assert not verify(SECRET, "abc", 1_795_000_000, b'{"a":2}', signature)
    assert not verify(SECRET, "abd", 1_795_000_000, b'{"a":1}', signature)
    assert not verify(b"x" * 32, "abc", 1_795_000_000, b'{"a":1}', signature)


def test_secret_must_be_long_enough_and_whsec_is_base64() -> None:
    with pytest.raises(ValueError, match="24 bytes"):
        secret_bytes("short")
    assert secret_bytes("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB") == b"A" * 24


def test_recipients_by_default_severity_and_truck_group() -> None:
    assert ROUTES.recipients(ALERT) == [
        "ops@fleet.example",
        "oncall@fleet.example",
        "north@fleet.example",
    ]
    assert ROUTES.recipients(replace(ALERT, severity=Severity.WARNING, truck_id="T5")) == [
        "ops@fleet.example"
    ]


def test_routes_refuse_a_severity_that_does_not_exist() -> None:
    with pytest.raises(ValueError, match="'critcal' is not a valid Severity"):
        Routes.parse({"default": ["ops@fleet.example"], "severity": {"critcal": ["x@y"]}})


def test_render_uses_the_fleet_time_zone_and_names_the_driver() -> None:
    email = render(ALERT, ROUTES, ZoneInfo("Europe/Berlin"))
    assert email.subject == "[CRITICAL] Sustained speeding: truck T0012 at 118.0 km/h"
    assert "2026-11-24 11:00:00 CET" in email.text
    assert (
        "Ana Berg (D1), risk high, 35.0 km/h over their 90-day average, repeat offender"
        in email.text
    )
    assert "<li>Truck: T0012</li>" in email.html


def test_render_titles_a_catalogue_rule_by_its_id_and_a_driver_without_history() -> None:
    alert = replace(ALERT, rule="school_zone_30", severity=Severity.WARNING, driver=None)
    email = render(alert, ROUTES, ZoneInfo("UTC"))
    assert email.subject == "[WARNING] school_zone_30: truck T0012 at 118.0 km/h"
    assert "Driver: D1 (no history)\n" in email.text
    no_driver = render(replace(alert, driver_id=None), ROUTES, ZoneInfo("UTC"))
    assert "Driver: no driver assigned\n" in no_driver.text


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(200, Verdict.DELIVERED), (202, Verdict.DELIVERED), (429, Verdict.RETRY),
     (500, Verdict.RETRY), (503, Verdict.RETRY), (400, Verdict.REJECTED),
     (401, Verdict.REJECTED), (404, Verdict.REJECTED), (422, Verdict.REJECTED)],
)  # fmt: skip
def test_classify(status: int, verdict: Verdict) -> None:
    assert classify(status) is verdict


def test_backoff_is_jittered_exponential_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=6, base_s=0.5, cap_s=30)
    rng, now = random.Random(1), datetime(2026, 11, 24, tzinfo=UTC)
    assert all(0 <= policy.delay_s(3, None, rng, now) <= 2.0 for _ in range(100))
    assert policy.delay_s(20, None, rng, now) <= 30
    assert policy.delay_s(1, "7", rng, now) == 7
    assert policy.delay_s(1, "Tue, 24 Nov 2026 00:00:05 GMT", rng, now) == 5
    assert policy.delay_s(1, "3600", rng, now) == 30, "capped"
