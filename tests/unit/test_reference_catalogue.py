"""The catalogue reference (tests/reference.py) checked on its own, on small hand-made cases.

Other tests trust ``reference_catalogue_alerts`` to say which alerts CONTRACT.md section 9
owes; these make sure it can be wrong: each boundary of each kind, of versions and of scopes
has a named instant on both sides of it."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no stubs installed
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.readings import Reading
from domain.rules import RuleConfig
from tests.reference import (
    CatalogueAlertKey,
    reference_alerts,
    reference_catalogue_alerts,
    reference_catalogue_details,
)

T0 = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()) * 1000  # the first version's start
T0_YAML = "2026-12-01T00:00:00Z"
MS = 1  # one millisecond, for "a boundary missed by 1 ms"


def at(seconds: float) -> int:
    """The instant ``seconds`` after T0, in epoch ms."""
    return T0 + round(seconds * 1000)


def reading(
    event_id: str,
    ts_ms: int,
    speed: float,
    truck: str = "T1",
    lat: float | None = None,
    lon: float | None = None,
) -> Reading:
    return Reading(event_id, truck, ts_ms, float(speed), lat, lon)


def version(*rules: dict[str, Any], number: int = 1, effective_from: str = T0_YAML) -> str:
    """One catalogue file's text (effective_from written as a quoted string)."""
    document = {"version": number, "effective_from": effective_from, "rules": list(rules)}
    return str(yaml.safe_dump(document, sort_keys=False))


def rule(kind: str, rule_id: str = "r", **fields: Any) -> dict[str, Any]:
    return {"id": rule_id, "kind": kind, **fields}


def covered(readings: list[Reading], *texts: str, **kwargs: Any) -> list[tuple[str, ...]]:
    """The covered event ids of every alert, sorted."""
    return sorted(key[3] for key in reference_catalogue_alerts(readings, texts, **kwargs))


# --- instant_over ---------------------------------------------------------------------------

INSTANT = rule("instant_over", speed_over_kmh=100, cooldown_s=60)


def test_instant_over_is_strictly_over() -> None:
    readings = [reading("a", at(0), 100), reading("b", at(1), 100.1)]
    assert reference_catalogue_alerts(readings, [version(INSTANT)]) == {
        ("r", 1, "T1", ("b",), "warning")
    }


@pytest.mark.parametrize(
    ("second_at", "expected"),
    [
        pytest.param(at(60) - MS, [("a",)], id="1 ms before the cooldown ends: not counted"),
        pytest.param(at(60), [("a",), ("b",)], id="when the cooldown ends: counted"),
    ],
)
def test_cooldown_end_is_inclusive(second_at: int, expected: list[tuple[str, ...]]) -> None:
    readings = [reading("a", at(0), 120), reading("b", second_at, 120)]
    assert covered(readings, version(INSTANT)) == expected


def test_cooldown_zero_means_none_even_for_a_tie() -> None:
    no_cooldown = {**INSTANT, "cooldown_s": 0}
    readings = [reading("a", at(0), 120), reading("b", at(0), 120), reading("c", at(1), 120)]
    assert covered(readings, version(no_cooldown)) == [("a",), ("b",), ("c",)]


def test_cooldown_defaults_to_600_s() -> None:
    default = {k: v for k, v in INSTANT.items() if k != "cooldown_s"}
    readings = [reading("a", at(0), 120), reading("b", at(600) - MS, 120)]
    readings.append(reading("c", at(600), 120))
    assert covered(readings, version(default)) == [("a",), ("c",)]


@pytest.mark.parametrize(
    ("first_speed", "resent_speed", "expected"),
    [
        pytest.param(90, 120, [], id="the first not over: the resend is ignored"),
        pytest.param(120, 90, [("b",)], id="the first over: it counts"),
    ],
)
def test_duplicates_keep_the_first(
    first_speed: float, resent_speed: float, expected: list[tuple[str, ...]]
) -> None:
    readings = [reading("b", at(0), first_speed), reading("b", at(0), resent_speed)]
    assert covered(readings, version(INSTANT)) == expected


def test_ties_go_by_event_id() -> None:
    # Both over at the same ts: "a" is first, fires, and puts "b" in its cooldown.
    readings = [reading("b", at(0), 120), reading("a", at(0), 120)]
    assert covered(readings, version(INSTANT)) == [("a",)]


# --- count_over -----------------------------------------------------------------------------

COUNT = rule("count_over", speed_over_kmh=90, count=3, within_s=60)


@pytest.mark.parametrize(
    ("last_at", "expected"),
    [
        pytest.param(at(60), [("a", "b", "c")], id="oldest and newest within_s apart: fires"),
        pytest.param(at(60) + MS, [], id="1 ms more: the oldest is dropped"),
    ],
)
def test_count_over_window_is_inclusive(last_at: int, expected: list[tuple[str, ...]]) -> None:
    readings = [reading("a", at(0), 95), reading("b", at(30), 95), reading("c", last_at, 95)]
    assert covered(readings, version(COUNT)) == expected


def test_count_over_ignores_readings_not_over() -> None:
    readings = [reading("a", at(0), 95), reading("b", at(10), 90), reading("c", at(20), 95)]
    readings.append(reading("d", at(30), 95))
    assert covered(readings, version(COUNT)) == [("a", "c", "d")]


def test_count_over_restarts_empty_after_the_cooldown() -> None:
    # An alert at 20 s; cooldown until 620 s: the reading 1 ms before is not counted.
    readings = [reading(e, at(s), 95) for e, s in [("a", 0), ("b", 10), ("c", 20), ("d", 600)]]
    readings += [reading("e", at(620) - MS, 95)]
    readings += [reading(e, at(s), 95) for e, s in [("f", 620), ("g", 630), ("h", 640)]]
    assert covered(readings, version({**COUNT, "cooldown_s": 600})) == [
        ("a", "b", "c"),
        ("f", "g", "h"),
    ]


# --- duration_over --------------------------------------------------------------------------

DURATION = rule("duration_over", speed_over_kmh=90, for_s=60, max_gap_s=30, cooldown_s=0)


@pytest.mark.parametrize(
    ("seconds", "speeds", "expected"),
    [
        pytest.param([0, 30, 60], [95] * 3, [("a", "b", "c")], id="for_s reached exactly"),
        pytest.param([0, 30, 59.999], [95] * 3, [], id="for_s missed by 1 ms"),
        pytest.param(
            [0, 30, 59.999, 60], [95] * 4, [("a", "b", "c", "d")], id="fires at the first reaching"
        ),
        pytest.param([0, 30.001, 60], [95] * 3, [], id="max_gap_s exceeded by 1 ms: new run"),
        pytest.param(
            [0, 10, 20, 30, 60], [95, 95, 90, 95, 95], [], id="a reading not over ends the run"
        ),
        pytest.param([0, 0, 30, 60], [95] * 4, [("a", "b", "c", "d")], id="a gap of 0 keeps it"),
    ],
)
def test_duration_over_runs(
    seconds: list[float], speeds: list[float], expected: list[tuple[str, ...]]
) -> None:
    readings = [
        reading("abcde"[i], at(s), v) for i, (s, v) in enumerate(zip(seconds, speeds, strict=True))
    ]
    assert covered(readings, version(DURATION)) == expected


def test_duration_over_max_gap_defaults_to_30_s() -> None:
    default = {k: v for k, v in DURATION.items() if k != "max_gap_s"}
    kept = [reading(e, at(s), 95) for e, s in [("a", 0), ("b", 30), ("c", 60)]]
    broken = [reading(e, at(s), 95) for e, s in [("a", 0), ("b", 30.001), ("c", 60)]]
    assert covered(kept, version(default)) == [("a", "b", "c")]
    assert covered(broken, version(default)) == []


def test_duration_over_run_restarts_empty_after_an_alert_without_cooldown() -> None:
    readings = [reading(f"e{s:03d}", at(s), 95) for s in range(0, 151, 30)]
    assert covered(readings, version(DURATION)) == [
        ("e000", "e030", "e060"),
        ("e090", "e120", "e150"),
    ]


def test_duration_over_for_zero_fires_at_every_reading_over() -> None:
    instant_like = {**DURATION, "for_s": 0}
    readings = [reading("a", at(0), 95), reading("b", at(1), 90), reading("c", at(2), 95)]
    assert covered(readings, version(instant_like)) == [("a",), ("c",)]


def test_duration_over_readings_in_cooldown_start_no_run() -> None:
    # An alert at 60 s, cooldown until 660 s: the run that follows starts at 660 s.
    readings = [reading(f"e{s:03d}", at(s), 95) for s in range(0, 721, 30)]
    readings.append(reading("e659", at(660) - MS, 95))
    assert covered(readings, version({**DURATION, "cooldown_s": 600})) == [
        ("e000", "e030", "e060"),
        ("e660", "e690", "e720"),
    ]


# --- deceleration ---------------------------------------------------------------------------

DECELERATION = rule("deceleration", drop_kmh=30, within_s=10, cooldown_s=0)


@pytest.mark.parametrize(
    ("second_at", "second_speed", "fires"),
    [
        pytest.param(at(5), 70, True, id="drop equal to drop_kmh"),
        pytest.param(at(5), 70.1, False, id="drop 0.1 short"),
        pytest.param(at(10), 70, True, id="dt equal to within_s"),
        pytest.param(at(10) + MS, 70, False, id="dt within_s + 1 ms"),
        pytest.param(at(0), 0, False, id="equal ts: never a pair"),
    ],
)
def test_deceleration_pair_boundaries(second_at: int, second_speed: float, fires: bool) -> None:
    readings = [reading("a", at(0), 100), reading("b", second_at, second_speed)]
    assert covered(readings, version(DECELERATION)) == ([("a", "b")] if fires else [])


def test_deceleration_details_are_the_drop_and_m_per_s2() -> None:
    readings = [reading("a", at(0), 100), reading("b", at(5), 64)]
    details = reference_catalogue_details(readings, [version(DECELERATION)])
    assert list(details) == [("r", 1, "T1", ("a", "b"), "warning")]
    (facts,) = details.values()
    assert facts["drop_kmh"] == pytest.approx(36.0)
    assert facts["deceleration_ms2"] == pytest.approx(2.0)  # 10 m/s lost in 5 s


def test_other_kinds_have_no_details() -> None:
    details = reference_catalogue_details([reading("a", at(0), 120)], [version(INSTANT)])
    assert list(details.values()) == [{}]


def test_deceleration_pairs_only_adjacent_readings() -> None:
    readings = [reading("a", at(0), 100), reading("b", at(2), 90), reading("c", at(5), 70)]
    assert covered(readings, version(DECELERATION)) == []


def test_deceleration_the_later_of_a_tie_is_the_previous_reading() -> None:
    readings = [reading("a", at(0), 100), reading("b", at(0), 65), reading("c", at(5), 35)]
    assert covered(readings, version(DECELERATION)) == [("b", "c")]


def test_deceleration_pair_is_consumed() -> None:
    readings = [reading("a", at(0), 100), reading("b", at(5), 70), reading("c", at(10), 40)]
    assert covered(readings, version(DECELERATION)) == [("a", "b")]


def test_deceleration_readings_in_cooldown_are_no_previous_reading() -> None:
    # An alert at 5 s, cooldown until 25 s: "c" is in it, so "d" has no previous reading.
    readings = [reading("a", at(0), 100), reading("b", at(5), 70)]
    readings += [reading("c", at(25) - MS, 100), reading("d", at(25), 70)]
    readings += [reading("e", at(30), 40)]
    assert covered(readings, version({**DECELERATION, "cooldown_s": 20})) == [
        ("a", "b"),
        ("d", "e"),
    ]


# --- zone_over ------------------------------------------------------------------------------


def square(west: float, south: float, east: float, north: float) -> list[list[float]]:
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]


ZONES: dict[str, Any] = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"name": "depot"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [square(24, 60, 25, 61), square(24.4, 60.4, 24.6, 60.6)],
            },
        },
        {
            "type": "Feature",
            "properties": {"name": "twin"},
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [[square(0, 0, 1, 1)], [square(2, 0, 3, 1)]],
            },
        },
        {
            "type": "Feature",
            "properties": {"name": "wedge"},  # a slanted edge from (0, 0) to (0.3, 0.3)
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 0], [0.3, 0], [0.3, 0.3], [0, 0]]],
            },
        },
        {
            "type": "Feature",
            "properties": {"name": "diamond"},  # rays level with its side vertices
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 1], [1, 0], [2, 1], [1, 2], [0, 1]]],
            },
        },
    ],
}


@pytest.mark.parametrize(
    ("zone", "lat", "lon", "speed", "fires"),
    [
        pytest.param("depot", 60.2, 24.2, 95, True, id="inside"),
        pytest.param("depot", 60.2, 24.2, 90, False, id="inside at exactly X: not over"),
        pytest.param("depot", 60.5, 25.5, 95, False, id="outside"),
        pytest.param("depot", 60.5, 25.0, 95, True, id="on an edge"),
        pytest.param("depot", 60.0, 24.0, 95, True, id="on a vertex"),
        pytest.param("depot", 60.5, 25.000001, 95, False, id="just outside an edge"),
        pytest.param("depot", 60.5, 24.5, 95, False, id="in the hole"),
        pytest.param("depot", 60.5, 24.4, 95, True, id="on the hole's edge"),
        pytest.param("twin", 0.5, 2.5, 95, True, id="in a MultiPolygon's second part"),
        pytest.param("twin", 0.5, 1.5, 95, False, id="between a MultiPolygon's parts"),
        pytest.param("wedge", 0.1, 0.1, 95, True, id="on a slanted edge"),
        pytest.param("wedge", 0.1, 0.2, 95, True, id="inside a triangle"),
        pytest.param("wedge", 0.2, 0.1, 95, False, id="beside a triangle"),
        pytest.param("wedge", 0.3, 0.1, 95, False, id="level with a vertex, outside"),
        pytest.param("diamond", 1.0, 0.5, 95, True, id="the ray through a vertex, inside"),
        pytest.param("diamond", 1.0, -0.5, 95, False, id="the ray through two vertices, outside"),
        pytest.param("nowhere", 60.2, 24.2, 95, False, id="a zone that does not exist"),
        pytest.param("depot", None, 24.2, 95, False, id="no lat"),
        pytest.param("depot", None, None, 95, False, id="no position"),
    ],
)
def test_zone_over(
    zone: str, lat: float | None, lon: float | None, speed: float, fires: bool
) -> None:
    zone_rule = rule("zone_over", zone=zone, speed_over_kmh=90)
    readings = [reading("a", at(0), speed, lat=lat, lon=lon)]
    assert covered(readings, version(zone_rule), zones=ZONES) == ([("a",)] if fires else [])


# --- scope ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "truck", "judged"),
    [
        pytest.param({"trucks": ["T001*", "T00042"]}, "T0012", True, id="a pattern"),
        pytest.param({"trucks": ["T001*", "T00042"]}, "T00042", True, id="an exact name"),
        pytest.param({"trucks": ["T001*", "T00042"]}, "T000420", False, id="no partial match"),
        pytest.param({"trucks": ["T001*"]}, "t0012", False, id="patterns are case-sensitive"),
        pytest.param({"trucks": ["T00?"]}, "T007", True, id="? is one character"),
        pytest.param({"vehicle_classes": ["heavy"]}, "H1", True, id="a class"),
        pytest.param({"vehicle_classes": ["heavy"]}, "L1", False, id="another class"),
        pytest.param({"vehicle_classes": ["heavy"]}, "X1", False, id="a truck without class"),
        pytest.param({"trucks": ["H*"], "vehicle_classes": ["heavy"]}, "H1", True, id="both"),
        pytest.param({"trucks": ["H*"], "vehicle_classes": ["light"]}, "H1", False, id="one"),
        pytest.param({}, "X1", True, id="an empty scope: every truck"),
    ],
)
def test_scope(scope: dict[str, list[str]], truck: str, judged: bool) -> None:
    scoped = {**INSTANT, "scope": scope}
    readings = [reading("a", at(0), 120, truck=truck)]
    classes = {"H1": "heavy", "L1": "light", "T0012": "light"}
    found = covered(readings, version(scoped), vehicle_classes=classes)
    assert found == ([("a",)] if judged else [])


# --- versions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "effective_from",
    [
        pytest.param("2026-12-01T00:01:00Z", id="aware datetime"),
        pytest.param("2026-12-01 00:01:00", id="naive datetime, meaning UTC"),
        pytest.param("2026-12-01T02:01:00+02:00", id="another offset"),
        pytest.param("'2026-12-01T00:01:00.000Z'", id="a string"),
        pytest.param("'2026-12-01T00:00:59.9995Z'", id="sub-ms: from the next whole ms"),
    ],
)
def test_a_version_applies_from_its_effective_from_inclusive(effective_from: str) -> None:
    text = f"""
version: 2
effective_from: {effective_from}
rules:
  - {{id: r, kind: instant_over, speed_over_kmh: 100, cooldown_s: 0}}
"""
    readings = [reading("a", at(60) - MS, 120), reading("b", at(60), 120)]
    assert covered(readings, text) == [("b",)]


def test_a_naive_effective_from_means_utc_whatever_the_machine_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Europe/Helsinki")
    time.tzset()
    try:
        test_a_version_applies_from_its_effective_from_inclusive("2026-12-01 00:01:00")
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_reading_is_judged_by_the_latest_version_in_force() -> None:
    v1 = version({**INSTANT, "cooldown_s": 0})
    v2 = version(
        {**INSTANT, "speed_over_kmh": 115}, number=2, effective_from="2026-12-01T00:01:00Z"
    )
    readings = [
        reading("before", at(0) - MS, 120),  # before every version: no rule applies
        reading("a", at(60) - MS, 110),
        reading("b", at(60), 110),
        reading("c", at(61), 120),
    ]
    assert reference_catalogue_alerts(readings, [v2, v1]) == {
        ("r", 1, "T1", ("a",), "warning"),
        ("r", 2, "T1", ("c",), "warning"),
    }


BETWEEN = "2026-12-01T00:01:00Z"  # v2 starts at 60 s
AFTER = "2026-12-01T00:02:00Z"  # v3 starts at 120 s
COUNT_LONG = rule("count_over", speed_over_kmh=90, count=3, within_s=600)


@pytest.mark.parametrize(
    ("middle", "kept"),
    [
        pytest.param(COUNT_LONG, True, id="unchanged"),
        pytest.param({**COUNT_LONG, "severity": "critical"}, True, id="severity only"),
        pytest.param({**COUNT_LONG, "cooldown_s": 600}, True, id="a default written out"),
        pytest.param({**COUNT_LONG, "within_s": 601}, False, id="a parameter changed"),
        pytest.param({**COUNT_LONG, "cooldown_s": 0}, False, id="cooldown changed"),
        pytest.param({**COUNT_LONG, "scope": {"trucks": ["T2"]}}, False, id="truck out of scope"),
        pytest.param(rule("instant_over", "other", speed_over_kmh=100), False, id="rule absent"),
    ],
)
def test_state_survives_a_version_without_readings_only_if_unchanged(
    middle: dict[str, Any], kept: bool
) -> None:
    # v1 and v3 are identical; the truck has no reading under v2.
    texts = [
        version(COUNT_LONG),
        version(middle, number=2, effective_from=BETWEEN),
        version(COUNT_LONG, number=3, effective_from=AFTER),
    ]
    readings = [reading("a", at(0), 95), reading("b", at(10), 95), reading("c", at(130), 95)]
    assert covered(readings, *texts) == ([("a", "b", "c")] if kept else [])


def test_severity_and_rule_version_come_from_the_version_that_fired() -> None:
    texts = [
        version(COUNT),
        version({**COUNT, "severity": "critical"}, number=2, effective_from=BETWEEN),
    ]
    readings = [reading("a", at(50), 95), reading("b", at(55), 95), reading("c", at(60), 95)]
    assert reference_catalogue_alerts(readings, texts) == {
        ("r", 2, "T1", ("a", "b", "c"), "critical")
    }


def test_a_changed_definition_starts_empty() -> None:
    texts = [version(COUNT), version({**COUNT, "within_s": 61}, number=2, effective_from=BETWEEN)]
    readings = [reading(e, at(s), 95) for e, s in [("a", 50), ("b", 55), ("c", 60), ("d", 61)]]
    readings.append(reading("e", at(62), 95))
    assert covered(readings, *texts) == [("c", "d", "e")]


def test_a_running_cooldown_survives_only_an_unchanged_definition() -> None:
    same = version(INSTANT, number=2, effective_from=BETWEEN)
    changed = version({**INSTANT, "speed_over_kmh": 101}, number=2, effective_from=BETWEEN)
    readings = [reading("a", at(30), 120), reading("b", at(60), 120)]
    assert covered(readings, version(INSTANT), same) == [("a",)]
    assert covered(readings, version(INSTANT), changed) == [("a",), ("b",)]


def test_a_deceleration_previous_reading_survives_only_an_unchanged_definition() -> None:
    same = version(DECELERATION, number=2, effective_from=BETWEEN)
    changed = version({**DECELERATION, "drop_kmh": 29}, number=2, effective_from=BETWEEN)
    readings = [reading("a", at(55), 100), reading("b", at(60), 60)]
    assert covered(readings, version(DECELERATION), same) == [("a", "b")]
    assert covered(readings, version(DECELERATION), changed) == []


def test_scope_lists_compare_as_sets() -> None:
    first = {**COUNT, "scope": {"trucks": ["T1", "T2"], "vehicle_classes": ["heavy"]}}
    second = {**COUNT, "scope": {"trucks": ["T2", "T1", "T1"], "vehicle_classes": ["heavy"]}}
    texts = [version(first), version(second, number=2, effective_from=BETWEEN)]
    readings = [reading("a", at(50), 95), reading("b", at(55), 95), reading("c", at(60), 95)]
    assert covered(readings, *texts, vehicle_classes={"T1": "heavy"}) == [("a", "b", "c")]


def test_rules_and_trucks_keep_their_own_state() -> None:
    texts = [version(COUNT, {**INSTANT, "id": "fast"})]
    readings = [reading(e, at(s), 120, truck=t) for e, s, t in [("a", 0, "T1"), ("b", 1, "T2")]]
    readings += [reading("c", at(2), 120, truck="T1")]
    assert reference_catalogue_alerts(readings, texts) == {
        ("fast", 1, "T1", ("a",), "warning"),
        ("fast", 1, "T2", ("b",), "warning"),
    }


@pytest.mark.parametrize(
    "texts",
    [
        pytest.param([version(INSTANT), version(INSTANT, number=2)], id="a shared effective_from"),
        pytest.param(
            [version(INSTANT), version(INSTANT, effective_from=BETWEEN)], id="a shared number"
        ),
        pytest.param([version(rule("warp_over"))], id="a kind not implemented"),
        pytest.param([version(rule("count_over", speed_over_kmh=90))], id="a missing parameter"),
    ],
)
def test_catalogues_the_reference_refuses(texts: list[str]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # the message varies with the fault
        reference_catalogue_alerts([reading("a", at(0), 120)], texts)


# --- the built-in rules, as a catalogue -----------------------------------------------------

BUILT_IN = """
version: 1
effective_from: 1970-01-01T00:00:00Z
rules:
  - id: instant_overspeed
    kind: instant_over
    speed_over_kmh: 130
    severity: critical
  - id: sustained_speeding
    kind: count_over
    speed_over_kmh: 90
    count: 5
    within_s: 600
"""
SPEEDS = [60.0, 90.0, 90.5, 110.0, 130.0, 130.5, 145.0]
STEPS_MS = [0, 1, 3_000, 40_000, 150_000, 599_999, 600_000, 600_001]


@st.composite
def fleets(draw: st.DrawFn) -> list[Reading]:
    """Random fleets with ties, resends and every step that meets a 600 s boundary."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    readings: list[Reading] = []
    for truck in ["T1", "T2", "T3"][: draw(st.integers(1, 3))]:
        ts = T0
        for n in range(draw(st.integers(1, 60))):
            ts += rng.choice(STEPS_MS)
            r = reading(f"e{n:03d}{rng.choice('ab')}", ts, rng.choice(SPEEDS), truck)
            readings += [r, r] if rng.random() < 0.15 else [r]  # a resend is an exact copy
    rng.shuffle(readings)
    return readings


@settings(max_examples=200, deadline=None)
@given(fleets())
def test_the_built_in_catalogue_gives_section_4s_alerts(readings: list[Reading]) -> None:
    catalogue = reference_catalogue_alerts(readings, [BUILT_IN])
    assert {(rule_id, truck, ids) for rule_id, _, truck, ids, _ in catalogue} == reference_alerts(
        readings, RuleConfig()
    )
    severities = {"instant_overspeed": "critical", "sustained_speeding": "warning"}
    assert all(key[1] == 1 and key[4] == severities[key[0]] for key in catalogue)


EVERY_KIND = [
    version(
        rule("instant_over", "fast", speed_over_kmh=130),
        rule("count_over", "often", speed_over_kmh=90, count=3, within_s=60),
        rule("duration_over", "long", speed_over_kmh=100, for_s=40),
        rule("deceleration", "brake", drop_kmh=40, within_s=5, cooldown_s=0),
    ),
    version(
        rule("deceleration", "brake", drop_kmh=40, within_s=5, cooldown_s=0, severity="critical"),
        rule("duration_over", "long", speed_over_kmh=100, for_s=60),
        number=2,
        effective_from="2026-12-01T00:20:00Z",
    ),
]


@settings(max_examples=50, deadline=None)
@given(fleets(), st.randoms(use_true_random=False))
def test_the_reference_does_not_depend_on_arrival_order(
    readings: list[Reading], rng: random.Random
) -> None:
    shuffled = list(readings)
    rng.shuffle(shuffled)
    expected: set[CatalogueAlertKey] = reference_catalogue_alerts(readings, EVERY_KIND)
    assert reference_catalogue_alerts(shuffled, EVERY_KIND) == expected
