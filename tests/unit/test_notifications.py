"""E-mails from alerts: routing, rendering, signatures and retry decisions."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from domain.alerts import Alert, AlertDriver, Position, Severity
from domain.notifications import (
    KINDS,
    Email,
    RetryPolicy,
    Routes,
    Verdict,
    classify,
    duration,
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
        "rules": {
            "harsh_braking": ["safety@fleet.example", "north@fleet.example"],
            "sustained_speeding": ["coach@fleet.example"],
        },
        "groups": [
            {"trucks": "T001*", "to": ["north@fleet.example"]},
            {"trucks": "T9*", "to": ["south@x"]},
        ],
    }
)
UTC_ZONE = ZoneInfo("UTC")
YARD = Position(60.169951, 24.938431)
MAP = "https://www.openstreetmap.org/?mlat=60.16995&mlon=24.93843#map=17/60.16995/24.93843"
BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def catalogue_alert(rule: str, details: dict[str, Any], **changes: Any) -> Alert:
    """A warning of a catalogue rule (version 7), at the yard, for a driver with no history."""
    fields: dict[str, Any] = {
        "rule": rule,
        "rule_version": 7,
        "severity": Severity.WARNING,
        "driver": None,
        "position": YARD,
        "details": details,
    }
    return replace(ALERT, **(fields | changes))


def single_reading(speed: float, limit: float) -> dict[str, Any]:
    return {
        "count": 1,
        "window_start": ALERT.window_end,
        "max_speed_kmh": speed,
        "mean_speed_kmh": speed,
        "threshold_kmh": limit,
    }


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


def test_recipients_by_default_severity_rule_and_truck_group() -> None:
    assert ROUTES.recipients(ALERT) == [
        "ops@fleet.example",
        "oncall@fleet.example",
        "coach@fleet.example",  # the built-in rule's id routes too
        "north@fleet.example",
    ]
    assert ROUTES.recipients(replace(ALERT, severity=Severity.WARNING, truck_id="T5")) == [
        "ops@fleet.example",
        "coach@fleet.example",
    ]


def test_recipients_by_rule_id_each_address_once_in_order() -> None:
    braking = catalogue_alert("harsh_braking", {"kind": "deceleration"})
    assert ROUTES.recipients(braking) == [
        "ops@fleet.example",
        "safety@fleet.example",
        "north@fleet.example",  # also the T001* group's: once
    ]
    other = catalogue_alert("yard_slow_zone", {"kind": "zone_over"}, truck_id="T5")
    assert ROUTES.recipients(other) == ["ops@fleet.example"]
    assert Routes(("a@x",)).recipients(braking) == ["a@x"], "no rules key: no rule routes"


def test_routes_refuse_a_severity_that_does_not_exist() -> None:
    with pytest.raises(ValueError, match="'critcal' is not a valid Severity"):
        Routes.parse({"default": ["ops@fleet.example"], "severity": {"critcal": ["x@y"]}})


@pytest.mark.parametrize("rule", ["Harsh_Braking", "harsh-braking", "", "x" * 65, "zone é"])
def test_routes_refuse_a_rule_id_that_no_catalogue_can_have(rule: str) -> None:
    with pytest.raises(ValueError, match=r"is not 1-64 chars of \[a-z0-9_\]"):
        Routes.parse({"default": ["ops@fleet.example"], "rules": {rule: ["x@y"]}})


@pytest.mark.parametrize(
    "document",
    [
        {"default": "ops@fleet.example"},
        {"default": ["ops@x"], "rules": {"harsh_braking": "safety@x"}},
        {"default": ["ops@x"], "rules": {"harsh_braking": [1]}},
        {"default": ["ops@x"], "severity": {"critical": "oncall@x"}},
    ],
)
def test_routes_refuse_addresses_that_are_no_list_of_text(document: dict[str, Any]) -> None:
    """A string is no list: it would have been read as one address per character."""
    with pytest.raises(ValueError, match="must be a list of addresses"):
        Routes.parse(document)


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


# --- Each kind of rule, in a fleet manager's words -------------------------------------------


def test_the_built_in_rules_keep_their_titles_and_say_they_are_built_in() -> None:
    email = render(ALERT, ROUTES, UTC_ZONE)
    assert email.text.splitlines()[0] == "Sustained speeding"
    assert "What happened: 5 readings over 90 km/h within 5 min\n" in email.text
    assert "Speed: top 118.0 km/h, 28.0 km/h over the 90 km/h limit; mean 104.2 km/h\n" in (
        email.text
    )
    assert "Where: no position reported\n" in email.text
    assert "When: from 2026-11-24 10:00:00 UTC to 2026-11-24 10:05:00 UTC (5 min)\n" in (email.text)
    assert "Rule: sustained_speeding (built-in)\n" in email.text
    instant = replace(ALERT, rule="instant_overspeed", **single_reading(141.5, 130.0))
    email = render(instant, ROUTES, UTC_ZONE)
    assert email.subject == "[CRITICAL] Critical over-speed: truck T0012 at 141.5 km/h"
    assert "11.5 km/h over the 130 km/h limit" in email.text
    assert "When: at 2026-11-24 10:05:00 UTC\n" in email.text


def test_instant_over_names_the_limit() -> None:
    alert = catalogue_alert("over_100", {"kind": "instant_over"}, **single_reading(118.0, 100))
    email = render(alert, ROUTES, UTC_ZONE)
    assert email.subject == "[WARNING] Over 100 km/h: truck T0012 at 118.0 km/h"
    assert "What happened: 1 reading over 100 km/h\n" in email.text
    assert "18.0 km/h over the 100 km/h limit" in email.text
    assert "Rule: over_100 (catalogue version 7): any reading over 100 km/h\n" in email.text


def test_count_over_counts_the_readings_within_the_window() -> None:
    alert = catalogue_alert(
        "repeat_90",
        {"kind": "count_over", "within_s": 600},
        window_end="2026-11-24T10:04:10.000Z",
    )
    email = render(alert, ROUTES, UTC_ZONE)
    assert email.subject == ("[WARNING] Repeated speeding over 90 km/h: truck T0012 at 118.0 km/h")
    assert "5 readings over 90 km/h within 4 min 10 s" in email.text
    assert "28.0 km/h over the 90 km/h limit" in email.text
    assert "Rule: repeat_90 (catalogue version 7): 5 readings over 90 km/h within 10 min\n" in (
        email.text
    )


def test_duration_over_says_for_how_long() -> None:
    alert = catalogue_alert(
        "heavy_over_80_for_a_minute",
        {"kind": "duration_over", "duration_s": 65.0, "for_s": 60},
        threshold_kmh=80.0,
        count=14,
        window_end="2026-11-24T10:01:05.000Z",
    )
    email = render(alert, ROUTES, UTC_ZONE)
    assert email.subject == "[WARNING] Over 80 km/h for 1 min: truck T0012 at 118.0 km/h"
    assert "What happened: over 80 km/h for 1 min 05 s (14 readings)\n" in email.text
    assert "38.0 km/h over the 80 km/h limit" in email.text
    assert "(catalogue version 7): over 80 km/h for 1 min or longer\n" in email.text


def test_deceleration_says_how_much_speed_fell_and_how_fast() -> None:
    alert = catalogue_alert(
        "harsh_braking",
        {"kind": "deceleration", "drop_kmh": 31.0, "deceleration_ms2": 5.741, "interval_s": 1.5},
        count=2,
        max_speed_kmh=92.0,
        mean_speed_kmh=76.5,
        threshold_kmh=25.0,
        window_end="2026-11-24T10:00:01.500Z",
    )
    email = render(alert, ROUTES, UTC_ZONE)
    assert email.subject == (
        "[WARNING] Harsh braking: truck T0012 braked from 92.0 to 61.0 km/h in 1.5 s"
    )
    assert "What happened: speed fell from 92.0 to 61.0 km/h in 1.5 s (\u22125.7 m/s\u00b2)\n" in (
        email.text
    )
    assert "Rule: harsh_braking (catalogue version 7): a drop of 25 km/h or more\n" in email.text
    assert "over the" not in email.text, "a drop is no speed limit"
    without_rate = replace(alert, details={"kind": "deceleration", "drop_kmh": 31.0})
    assert "in 1.5 s (\u22125.7 m/s\u00b2)" in render(without_rate, ROUTES, UTC_ZONE).text
    instant = {"kind": "deceleration", "drop_kmh": 31.0, "interval_s": 5e-324}
    text = render(replace(alert, details=instant), ROUTES, UTC_ZONE).text
    assert "speed fell from 92.0 to 61.0 km/h in 0 s\n" in text, "no rate of inf m/s²"


def test_zone_over_names_the_zone_and_where_it_happened() -> None:
    alert = catalogue_alert(
        "yard_slow_zone", {"kind": "zone_over", "zone": "Yard"}, **single_reading(34.2, 20)
    )
    email = render(alert, ROUTES, UTC_ZONE)
    assert email.subject == "[WARNING] Speeding in zone Yard: truck T0012 at 34.2 km/h"
    assert "14.2 km/h over the 20 km/h limit in zone Yard" in email.text
    assert f"Where: zone Yard, 60.16995, 24.93843 ({MAP})\n" in email.text
    assert (
        '<li>Where: zone Yard, <a href="https://www.openstreetmap.org/?mlat=60.16995&amp;'
        'mlon=24.93843#map=17/60.16995/24.93843">60.16995, 24.93843</a></li>'
    ) in email.html


@pytest.mark.parametrize("road_key", ["road_name", "road"])
def test_posted_limit_over_names_the_road_and_the_limit(road_key: str) -> None:
    details = {
        "kind": "posted_limit_over",
        "posted_limit_kmh": 50,
        road_key: "Mannerheimintie",
        "osm_way_id": 4254545,
        "limit_source": "hgv",
        "over_kmh": 12.5,
        "duration_s": 42.0,
    }
    alert = catalogue_alert(
        "posted_limit",
        details,
        threshold_kmh=50.0,
        max_speed_kmh=62.5,
        mean_speed_kmh=58.1,
        count=9,
        window_end="2026-11-24T10:00:42.000Z",
    )
    email = render(alert, ROUTES, UTC_ZONE)
    assert email.subject == (
        "[WARNING] Over the 50 km/h limit on Mannerheimintie: truck T0012 at 62.5 km/h"
    )
    assert "over the 50 km/h heavy-vehicle limit on Mannerheimintie for 42 s (9 readings)" in (
        email.text
    )
    assert "12.5 km/h over the 50 km/h heavy-vehicle limit" in email.text
    assert "Where: Mannerheimintie (OSM way 4254545), 60.16995, 24.93843" in email.text


def test_an_unknown_kind_falls_back_to_generic_words() -> None:
    alert = catalogue_alert("teleported", {"kind": "teleport", "distance_km": 4})
    email = render(alert, ROUTES, UTC_ZONE)
    assert email.subject == "[WARNING] teleported: truck T0012 at 118.0 km/h"
    assert "What happened: 5 readings within 5 min; the rule's threshold: 90 km/h\n" in (email.text)
    assert "Rule: teleported (catalogue version 7)\n" in email.text
    assert render(replace(alert, details={}), ROUTES, UTC_ZONE).text == email.text


@pytest.mark.parametrize(
    ("details", "title"),
    [
        ({"kind": "deceleration", "drop_kmh": "31"}, "harsh_braking"),  # generic words
        ({"kind": "deceleration", "drop_kmh": True}, "harsh_braking"),
        ({"kind": "deceleration", "drop_kmh": -5}, "harsh_braking"),
        ({"kind": "zone_over", "zone": 5}, "Speeding in a zone"),
        ({"kind": "zone_over", "zone": " \n "}, "Speeding in a zone"),
        ({"kind": "duration_over", "for_s": True}, "Over 90 km/h"),
        ({"kind": "duration_over", "for_s": 1e300}, "Over 90 km/h"),
        ({"kind": "posted_limit_over", "road_name": ["x"]}, "Over the 90 km/h limit"),
        ({"kind": ["deceleration"]}, "harsh_braking"),
        ({"kind": "Deceleration"}, "harsh_braking"),
    ],
)
def test_details_of_the_wrong_type_are_ignored(details: dict[str, Any], title: str) -> None:
    email = render(catalogue_alert("harsh_braking", details), ROUTES, UTC_ZONE)
    assert email.text.splitlines()[0] == title


def test_a_long_zone_name_is_cut_and_a_negative_coordinate_stays_signed() -> None:
    alert = catalogue_alert(
        "yard", {"kind": "zone_over", "zone": "Y" * 500}, position=Position(-33.9, -0.000001)
    )
    email = render(alert, ROUTES, UTC_ZONE)
    assert email.text.splitlines()[0] == "Speeding in zone " + "Y" * 79 + "\u2026"
    assert "-33.90000, 0.00000 (https://www.openstreetmap.org/?mlat=-33.90000&mlon=0.00000#" in (
        email.text
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (1.5, "1.5 s"), (2.0, "2 s"), (9.96, "10 s"), (45, "45 s"), (59.6, "1 min"),
     (60, "1 min"), (65, "1 min 05 s"), (250, "4 min 10 s"), (3600, "1 h"),
     (7500, "2 h 05 min"), (90_000, "1 d 01 h"), (86_400 * 3, "3 d")],
)  # fmt: skip
def test_durations_read_as_a_person_says_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


# --- Hostile details: anything JSON can hold, and more ----------------------------------------

DETAIL_KEYS = ["kind", "within_s", "duration_s", "for_s", "drop_kmh", "deceleration_ms2",
               "interval_s", "zone", "posted_limit_kmh", "road_name", "road", "osm_way_id",
               "limit_source", "over_kmh"]  # fmt: skip
hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**63), 10**400, 1e308, -1e308, 5e-324, 0, -0.0]),
    st.floats(),  # NaN and infinities: JSON has none, a caller bypassing the decoder may
    st.text(),
    st.text(st.characters(codec=None, categories=["Cs", "Zl", "Zp", "Cc", "Nd"])),
    st.sampled_from([*sorted(KINDS), "x" * 100_000, "<script>", "a\r\nBcc: x@y", "hgv"]),
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
hostile_details = st.dictionaries(
    st.sampled_from(DETAIL_KEYS) | st.text(max_size=8), hostile_values, max_size=6
)
MARKUP = re.compile(r'</?(h2|ul|li)>|<a href="https://www\.openstreetmap\.org/\?[^"<>]*">|</a>')


def check(email: Email) -> None:
    assert not BREAKS.search(email.subject), email.subject
    assert email.subject.startswith("[WARNING] ")
    assert "truck T0012" in email.subject
    assert len(email.text.splitlines()) == 1 + email.html.count("<li>"), "one line a fact"
    assert "<" not in MARKUP.sub("", email.html), "HTML escaped"
    assert len(email.text) < 10_000


@given(details=hostile_details, kind=st.sampled_from([*sorted(KINDS), None]))
def test_any_details_render_without_raising_or_breaking_the_subject(
    details: dict[str, Any], kind: str | None
) -> None:
    if kind is not None:
        details = {**details, "kind": kind}
    check(render(catalogue_alert("any_rule", details), ROUTES, UTC_ZONE))
    check(render(catalogue_alert("sustained_speeding", details), ROUTES, UTC_ZONE))


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


def test_a_duration_under_a_second_is_shown_to_the_millisecond() -> None:
    """Readings a fraction of a second apart: "0.04 s", never a braking "in 0 s"."""
    assert [duration(s) for s in (0.04, 0.2, 0.949, 1.5, 65)] == [
        "0.04 s",
        "0.2 s",
        "0.949 s",
        "1.5 s",
        "1 min 05 s",
    ]
