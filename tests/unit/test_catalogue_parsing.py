"""Parsing catalogue versions and zones (CONTRACT.md section 9): every refusal names the file,
the rule and the field; several problems in one file are all reported; defaults are filled.

Table-driven: each bad input maps to the (rule, field) a problem must name."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pytest

from domain.catalogue import (
    Catalogue,
    CatalogueError,
    CatalogueVersion,
    Problem,
    builtin_catalogue,
    parse_version,
)
from domain.rule_kinds import (
    CountOver,
    Deceleration,
    DurationOver,
    InstantOver,
    PostedLimitOver,
    ZoneOver,
)
from domain.zones import Zones, ZonesError
from tests.catalogues import (
    T0,
    feature,
    feature_collection,
    polygon,
    rectangle,
)

FILE = "rules-7.yaml"
HEAD = "version: 7\neffective_from: 2026-12-01T00:00:00Z\nrules:\n"
ZONES = Zones.from_geojson(
    feature_collection(feature("depot", polygon(rectangle(24.0, 60.0, 24.5, 60.5))))
)


def rules(*lines: str) -> str:
    """A version whose rules are the given flow-style YAML lines."""
    return HEAD + "".join(f"  - {line}\n" for line in lines)


def problems_of(text: str | bytes, zones: Zones | None = ZONES) -> tuple[Problem, ...]:
    with pytest.raises(CatalogueError) as caught:
        parse_version(text, FILE, zones)
    return caught.value.problems


def where(problems: tuple[Problem, ...]) -> set[tuple[str | None, str | None]]:
    return {(p.rule, p.field) for p in problems}


@dataclass(frozen=True)
class Bad:
    text: str | bytes
    expected: tuple[str | None, str | None]  # (rule, field) one problem must name
    message: str = ""  # a fragment that problem's message must hold (case-insensitive)
    zones: Zones | None = ZONES


INSTANT = "{id: a, kind: instant_over, speed_over_kmh: 90}"
COUNT = "id: a, kind: count_over, speed_over_kmh: 90, within_s: 60"

BAD: dict[str, Bad] = {
    "count missing": Bad(rules(f"{{{COUNT}}}"), ("a", "count"), "required"),
    "count 0": Bad(rules(f"{{{COUNT}, count: 0}}"), ("a", "count")),
    "count 2.5": Bad(rules(f"{{{COUNT}, count: 2.5}}"), ("a", "count")),
    "count 10001": Bad(rules(f"{{{COUNT}, count: 10001}}"), ("a", "count")),
    "speed 'fast'": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: fast}"), ("a", "speed_over_kmh")
    ),
    "speed over 400": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: 400.5}"), ("a", "speed_over_kmh")
    ),
    "speed negative": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: -1}"), ("a", "speed_over_kmh")
    ),
    "speed NaN": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: .nan}"), ("a", "speed_over_kmh")
    ),
    "a bool as a number": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: true}"), ("a", "speed_over_kmh")
    ),
    "a bool as a count": Bad(rules(f"{{{COUNT}, count: true}}"), ("a", "count")),
    "a bool as cooldown": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: 90, cooldown_s: false}"),
        ("a", "cooldown_s"),
    ),
    "cooldown over 30 days": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: 90, cooldown_s: 2592001}"),
        ("a", "cooldown_s"),
    ),
    "within_s over a day": Bad(
        rules("{id: a, kind: count_over, speed_over_kmh: 90, count: 2, within_s: 86401}"),
        ("a", "within_s"),
    ),
    "for_s over an hour": Bad(
        rules("{id: a, kind: duration_over, speed_over_kmh: 90, for_s: 3601}"), ("a", "for_s")
    ),
    "max_gap_s 0": Bad(
        rules("{id: a, kind: duration_over, speed_over_kmh: 90, for_s: 60, max_gap_s: 0}"),
        ("a", "max_gap_s"),
    ),
    "drop_kmh 0": Bad(
        rules("{id: a, kind: deceleration, drop_kmh: 0, within_s: 5}"), ("a", "drop_kmh")
    ),
    "deceleration within_s 0": Bad(
        rules("{id: a, kind: deceleration, drop_kmh: 20, within_s: 0}"), ("a", "within_s")
    ),
    "unknown field (typo speed_over)": Bad(
        rules("{id: a, kind: instant_over, speed_over: 90}"), ("a", "speed_over"), "unknown"
    ),
    "a field of another kind": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: 90, count: 3}"), ("a", "count")
    ),
    "unknown kind": Bad(rules("{id: a, kind: warp_over, speed_over_kmh: 90}"), ("a", "kind")),
    "kind missing": Bad(rules("{id: a, speed_over_kmh: 90}"), ("a", "kind")),
    "posted_limit_over with a speed_over_kmh": Bad(
        rules("{id: a, kind: posted_limit_over, speed_over_kmh: 5}"),
        ("a", "speed_over_kmh"),
        "unknown",
    ),
    "posted_limit_over with a negative over_kmh": Bad(
        rules("{id: a, kind: posted_limit_over, over_kmh: -1}"), ("a", "over_kmh")
    ),
    "posted_limit_over with over_pct beyond 1000": Bad(
        rules("{id: a, kind: posted_limit_over, over_pct: 1001}"), ("a", "over_pct")
    ),
    "posted_limit_over with a max_gap_s of 0": Bad(
        rules("{id: a, kind: posted_limit_over, max_gap_s: 0}"), ("a", "max_gap_s")
    ),
    "posted_limit_over with a for_s finer than a ms": Bad(
        rules("{id: a, kind: posted_limit_over, for_s: 0.0005}"), ("a", "for_s")
    ),
    "severity unknown": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: 90, severity: high}"),
        ("a", "severity"),
    ),
    "id with capitals": Bad(
        rules("{id: Fast, kind: instant_over, speed_over_kmh: 90}"), ("#1", "id")
    ),
    "id missing (second rule)": Bad(
        rules(INSTANT, "{kind: instant_over, speed_over_kmh: 90}"), ("#2", "id")
    ),
    "duplicate rule ids": Bad(
        rules(INSTANT, "{id: a, kind: instant_over, speed_over_kmh: 95}"), ("a", "id"), "unique"
    ),
    "zone unknown": Bad(
        rules("{id: a, kind: zone_over, zone: harbour, speed_over_kmh: 50}"),
        ("a", "zone"),
        "harbour",
    ),
    "zones unset": Bad(
        rules("{id: a, kind: zone_over, zone: depot, speed_over_kmh: 50}"),
        ("a", "zone"),
        "FLEET_ZONES",
        zones=None,
    ),
    "zone not a name": Bad(
        rules("{id: a, kind: zone_over, zone: 3, speed_over_kmh: 50}"), ("a", "zone")
    ),
    "scope with an unknown class": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: 90, scope: {vehicle_classes: [huge]}}"),
        ("a", "scope.vehicle_classes"),
        "huge",
    ),
    "scope with an empty trucks list": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: 90, scope: {trucks: []}}"),
        ("a", "scope.trucks"),
    ),
    "scope with an empty class list": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: 90, scope: {vehicle_classes: []}}"),
        ("a", "scope.vehicle_classes"),
    ),
    "scope {}": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: 90, scope: {}}"), ("a", "scope")
    ),
    "scope with an unknown key": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: 90, scope: {depots: [north]}}"),
        ("a", "scope.depots"),
    ),
    "scope trucks not texts": Bad(
        rules("{id: a, kind: instant_over, speed_over_kmh: 90, scope: {trucks: [7]}}"),
        ("a", "scope.trucks"),
    ),
    "effective_from naive": Bad(
        "version: 7\neffective_from: 2026-12-01T00:00:00\nrules: []\n",
        (None, "effective_from"),
        "offset",
    ),
    "effective_from a date only": Bad(
        "version: 7\neffective_from: 2026-12-01\nrules: []\n", (None, "effective_from")
    ),
    "effective_from quoted and naive": Bad(
        "version: 7\neffective_from: '2026-12-01T00:00:00'\nrules: []\n", (None, "effective_from")
    ),
    "effective_from a number": Bad(
        "version: 7\neffective_from: 1796083200000\nrules: []\n", (None, "effective_from")
    ),
    "effective_from missing": Bad("version: 7\nrules: []\n", (None, "effective_from")),
    "version 0": Bad(
        "version: 0\neffective_from: 2026-12-01T00:00:00Z\nrules: []\n", (None, "version")
    ),
    "version '7' (text)": Bad(
        "version: '7'\neffective_from: 2026-12-01T00:00:00Z\nrules: []\n", (None, "version")
    ),
    "version true": Bad(
        "version: true\neffective_from: 2026-12-01T00:00:00Z\nrules: []\n", (None, "version")
    ),
    "version missing": Bad("effective_from: 2026-12-01T00:00:00Z\nrules: []\n", (None, "version")),
    "rules missing": Bad("version: 7\neffective_from: 2026-12-01T00:00:00Z\n", (None, "rules")),
    "rules a mapping": Bad(HEAD + "  a: 1\n", (None, "rules")),
    "a rule that is not a mapping": Bad(rules("just text"), ("#1", None)),
    "unknown top-level field": Bad(HEAD + "  []\nowner: ops\n", (None, "owner")),
    "not YAML": Bad("version: [1\nrules: {", (None, None), "not YAML"),
    "not UTF-8": Bad(b"version: 7\nrules: [\xff\xfe]\n", (None, None)),
    "a list at top level": Bad("- version: 7\n- rules: []\n", (None, None), "mapping"),
    "a scalar at top level": Bad("seven\n", (None, None), "mapping"),
    "an empty file": Bad("", (None, None), "mapping"),
    "deep nesting": Bad("rules: " + "[" * 100_000 + "]" * 100_000 + "\n", (None, None)),
    "a 2 MB file": Bad(
        "version: 7\neffective_from: 2026-12-01T00:00:00Z\nrules: []\n# " + "x" * 2_000_000,
        (None, None),
        "larger than",
    ),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_a_bad_file_is_refused_naming_file_rule_and_field(case: Bad) -> None:
    problems = problems_of(case.text, case.zones)
    assert all(p.file == FILE for p in problems), problems
    assert case.expected in where(problems), problems
    named = [p for p in problems if (p.rule, p.field) == case.expected]
    assert any(case.message.lower() in p.message.lower() for p in named), named
    for p in named:  # str() of the error names them too, for logs and the operator
        assert FILE in str(p)
        if p.rule is not None:
            assert repr(p.rule) in str(p)
        if p.field is not None:
            assert repr(p.field) in str(p)


DUPLICATE_KEYS = {
    "in a rule": (
        HEAD
        + "  - id: a\n    kind: instant_over\n    speed_over_kmh: 90\n    speed_over_kmh: 95\n",
        ("a", "speed_over_kmh"),
    ),
    "at the top": (
        "version: 7\nversion: 8\neffective_from: 2026-12-01T00:00:00Z\nrules: []\n",
        (None, "version"),
    ),
}


@pytest.mark.parametrize(("text", "expected"), DUPLICATE_KEYS.values(), ids=DUPLICATE_KEYS.keys())
def test_a_duplicate_yaml_key_is_refused_naming_the_key(
    text: str, expected: tuple[str | None, str]
) -> None:
    """PyYAML would keep the last value silently; the file must be refused, and what the
    operator reads must name the key (and the line)."""
    problems = problems_of(text)
    assert all(p.file == FILE for p in problems)
    message = str(CatalogueError(problems))
    assert "duplicate" in message.lower()
    assert repr(expected[1]) in message
    assert "line" in message


@pytest.mark.parametrize(("text", "expected"), DUPLICATE_KEYS.values(), ids=DUPLICATE_KEYS.keys())
def test_a_duplicate_yaml_key_names_rule_and_field(
    text: str, expected: tuple[str | None, str]
) -> None:
    assert expected in where(problems_of(text))


def test_every_problem_of_a_file_is_reported() -> None:
    text = rules(
        "{id: a, kind: instant_over}",
        "{id: b, kind: count_over, speed_over_kmh: fast, count: 0, within_s: -1}",
        "{id: c, kind: nope}",
        "{id: d, kind: instant_over, speed_over_kmh: 90, speed_over: 95, severity: loud}",
        "{id: e, kind: instant_over, speed_over_kmh: 90}",
        "{id: e, kind: instant_over, speed_over_kmh: 95}",
    ).replace("version: 7", "version: 0")
    problems = problems_of(text)
    assert {
        (None, "version"),
        ("a", "speed_over_kmh"),
        ("b", "speed_over_kmh"),
        ("b", "count"),
        ("b", "within_s"),
        ("c", "kind"),
        ("d", "speed_over"),
        ("d", "severity"),
        ("e", "id"),
    } <= where(problems)
    rendered = str(CatalogueError(problems))
    assert rendered.count(FILE) == len(problems)


def test_a_duplicate_id_is_reported_even_when_its_first_rule_is_invalid() -> None:
    problems = problems_of(rules("{id: a, kind: instant_over}", INSTANT))
    assert ("a", "speed_over_kmh") in where(problems)
    assert ("a", "id") in where(problems)


GOOD_EFFECTIVE_FROM = {
    "unquoted with Z": "2026-12-01T00:00:00Z",
    "quoted with Z": "'2026-12-01T00:00:00Z'",
    "quoted with an offset": "'2026-12-01T01:00:00+01:00'",
    "unquoted with an offset": "2026-11-30T19:00:00-05:00",
    "with milliseconds": "2026-12-01T00:00:00.000Z",
}


@pytest.mark.parametrize("value", GOOD_EFFECTIVE_FROM.values(), ids=GOOD_EFFECTIVE_FROM.keys())
def test_effective_from_with_an_offset_is_accepted(value: str) -> None:
    parsed = parse_version(f"version: 7\neffective_from: {value}\nrules: []\n", FILE)
    assert parsed.effective_from_ms == T0
    assert parsed.rules == ()
    assert parsed.version == 7
    assert parsed.source == FILE


def test_defaults_are_filled_in() -> None:
    parsed = parse_version(
        rules(
            "{id: i, kind: instant_over, speed_over_kmh: 100}",
            "{id: c, kind: count_over, speed_over_kmh: 90, count: 3, within_s: 60.5}",
            "{id: d, kind: duration_over, speed_over_kmh: 90, for_s: 60}",
            "{id: g, kind: deceleration, drop_kmh: 20, within_s: 5}",
            "{id: z, kind: zone_over, zone: depot, speed_over_kmh: 50, cooldown_s: 0}",
            "{id: p, kind: posted_limit_over}",
        ),
        FILE,
        ZONES,
    )
    by_id = {r.id: r for r in parsed.rules}
    assert [r.id for r in parsed.rules] == ["i", "c", "d", "g", "z", "p"], "the file's order"
    assert by_id["i"].definition.kind == InstantOver(100.0)
    assert by_id["c"].definition.kind == CountOver(90.0, 3, 60_500)
    assert by_id["d"].definition.kind == DurationOver(90.0, 60_000, 30_000), "max_gap_s 30"
    assert by_id["g"].definition.kind == Deceleration(20.0, 5_000)
    zone = by_id["z"].definition.kind
    assert isinstance(zone, ZoneOver)
    assert (zone.zone_name, zone.speed_over_kmh) == ("depot", 50.0)
    assert by_id["p"].definition.kind == PostedLimitOver(0.0, 0.0, 0, 30_000), "section 9"
    assert [r.definition.cooldown_ms for r in parsed.rules] == [600_000] * 4 + [0, 600_000]
    assert all(not r.critical for r in parsed.rules), "severity defaults to warning"
    assert all(r.definition.scope.everyone for r in parsed.rules), "no scope: every truck"


def test_explicit_defaults_make_the_same_definition() -> None:
    short = parse_version(
        rules("{id: d, kind: duration_over, speed_over_kmh: 90, for_s: 60}"), FILE
    )
    spelled = parse_version(
        rules(
            "{id: d, kind: duration_over, speed_over_kmh: 90.0, for_s: 60, max_gap_s: 30,"
            " cooldown_s: 600, severity: warning}"
        ),
        FILE,
    )
    assert short.rules[0].definition == spelled.rules[0].definition
    assert short.same_as(spelled)


def test_a_posted_limit_rule_reads_every_parameter() -> None:
    parsed = parse_version(
        rules(
            "{id: p, kind: posted_limit_over, over_kmh: 9, over_pct: 12.5, for_s: 60.25,"
            " max_gap_s: 10}"
        ),
        FILE,
    )
    assert parsed.rules[0].definition.kind == PostedLimitOver(9.0, 12.5, 60_250, 10_000)


def test_scope_lists_are_sets() -> None:
    one = parse_version(
        rules(
            "{id: a, kind: instant_over, speed_over_kmh: 90,"
            " scope: {trucks: ['T1*', T2, T2], vehicle_classes: [heavy, light]}}"
        ),
        FILE,
    )
    other = parse_version(
        rules(
            "{id: a, kind: instant_over, speed_over_kmh: 90,"
            " scope: {trucks: [T2, 'T1*'], vehicle_classes: [light, heavy]}}"
        ),
        FILE,
    )
    assert one.rules[0].definition == other.rules[0].definition
    scope = one.rules[0].definition.scope
    assert scope.trucks == frozenset({"T1*", "T2"})
    assert scope.vehicle_classes == frozenset({"heavy", "light"})


def test_severity_is_not_part_of_the_definition() -> None:
    warning = parse_version(rules(INSTANT), FILE)
    critical = parse_version(
        rules("{id: a, kind: instant_over, speed_over_kmh: 90, severity: critical}"), FILE
    )
    assert warning.rules[0].definition == critical.rules[0].definition
    assert (warning.rules[0].critical, critical.rules[0].critical) == (False, True)
    assert not warning.same_as(critical), "a reload must still see the change"


def _version(number: int, effective_from: str, source: str) -> CatalogueVersion:
    return parse_version(
        f"version: {number}\neffective_from: {effective_from}\nrules: [{INSTANT}]\n", source
    )


def test_catalogue_refuses_two_versions_with_the_same_number() -> None:
    with pytest.raises(CatalogueError) as caught:
        Catalogue(
            [
                _version(3, "2026-12-01T00:00:00Z", "a.yaml"),
                _version(3, "2026-12-02T00:00:00Z", "b.yaml"),
            ]
        )
    [problem] = caught.value.problems
    assert (problem.file, problem.field) == ("b.yaml", "version")
    assert "a.yaml" in problem.message


def test_catalogue_refuses_two_versions_with_the_same_effective_from() -> None:
    """The same instant written two ways is the same effective_from."""
    with pytest.raises(CatalogueError) as caught:
        Catalogue(
            [
                _version(3, "2026-12-01T00:00:00Z", "a.yaml"),
                _version(4, "2026-12-01T01:00:00+01:00", "b.yaml"),
            ]
        )
    assert {p.field for p in caught.value.problems} == {"effective_from"}
    assert any("a.yaml" in str(p) and "b.yaml" in str(p) for p in caught.value.problems)


def test_catalogue_orders_versions_by_effective_from() -> None:
    late = _version(1, "2026-12-02T00:00:00Z", "late.yaml")
    early = _version(2, "2026-12-01T00:00:00Z", "early.yaml")
    catalogue = Catalogue([late, early])
    assert [v.source for v in catalogue.versions] == ["early.yaml", "late.yaml"]
    assert catalogue.at(T0 - 1) is None, "before the first version: no rule"
    in_force = catalogue.at(T0)
    assert in_force is not None
    assert in_force.version is early
    day = 86_400_000
    assert catalogue.at(T0 + day - 1).version is early  # type: ignore[union-attr]
    assert catalogue.at(T0 + day).version is late  # type: ignore[union-attr]
    assert len(catalogue.describe()) == 2


def test_the_builtin_catalogue_is_version_0_with_section_4s_rules() -> None:
    catalogue = builtin_catalogue(90.0, 5, 600_000, 130.0, 600_000)
    [v] = catalogue.versions
    assert v.version == 0
    in_force = catalogue.at(0)
    assert in_force is not None, "in force from the beginning of time"
    assert [(r.id, r.critical) for r in v.rules] == [
        ("instant_overspeed", True),
        ("sustained_speeding", False),
    ]
    assert catalogue.lowest_relevant_kmh == 90.0


def test_lowest_relevant_speed_is_minus_infinity_with_a_rule_that_sees_every_reading() -> None:
    v = parse_version(
        rules(INSTANT, "{id: g, kind: deceleration, drop_kmh: 20, within_s: 5}"), FILE
    )
    assert Catalogue([v]).lowest_relevant_kmh == -math.inf
    assert Catalogue([parse_version(rules(INSTANT), FILE)]).lowest_relevant_kmh == 90.0


# --- Zones --------------------------------------------------------------------------------

SQUARE = polygon(rectangle(24.0, 60.0, 24.5, 60.5))


def test_a_valid_feature_collection_gives_named_zones() -> None:
    with_hole = polygon(rectangle(25.0, 60.0, 26.0, 61.0), rectangle(25.25, 60.25, 25.75, 60.75))
    multi = {
        "type": "MultiPolygon",
        "coordinates": [
            [rectangle(20.0, 50.0, 20.5, 50.5)],
            [rectangle(21.0, 50.0, 21.5, 50.5)],
        ],
    }
    zones = Zones.from_geojson(
        feature_collection(
            feature("depot", SQUARE), feature("ring", with_hole), feature("pair", multi)
        )
    )
    assert zones.names() == ["depot", "pair", "ring"]
    assert zones["depot"].contains(60.25, 24.25)
    assert not zones["ring"].contains(60.5, 25.5), "in the hole"
    assert zones["pair"].contains(50.25, 21.25)
    assert not zones["pair"].contains(50.25, 20.75), "between the two parts"


def _with_coordinates(coordinates: Any) -> dict[str, Any]:
    return feature_collection(feature("z", {"type": "Polygon", "coordinates": coordinates}))


BAD_ZONES: dict[str, tuple[Any, str]] = {
    "duplicate names": (
        feature_collection(feature("depot", SQUARE), feature("depot", SQUARE)),
        "not unique",
    ),
    "a Point geometry": (
        feature_collection(feature("p", {"type": "Point", "coordinates": [24.0, 60.0]})),
        "Polygon",
    ),
    "a LineString geometry": (
        feature_collection(
            feature("l", {"type": "LineString", "coordinates": [[24.0, 60.0], [25.0, 61.0]]})
        ),
        "Polygon",
    ),
    "NaN (as JSON reads it)": (
        json.loads(
            '{"type": "FeatureCollection", "features": [{"type": "Feature",'
            ' "properties": {"name": "z"}, "geometry": {"type": "Polygon", "coordinates":'
            " [[[24, 60], [NaN, 60], [24.5, 60.5], [24, 60]]]}}]}"
        ),
        "finite",
    ),
    "Infinity": (
        _with_coordinates([[[24, 60], [math.inf, 60], [24.5, 60.5], [24, 60]]]),
        "finite",
    ),
    "longitude out of range": (
        _with_coordinates([rectangle(179.5, 60.0, 180.5, 60.5)]),
        "finite",
    ),
    "latitude out of range": (
        _with_coordinates([rectangle(24.0, 89.5, 24.5, 90.5)]),
        "finite",
    ),
    "a coordinate as text": (
        _with_coordinates([[[24, 60], ["24.5", 60], [24.5, 60.5], [24, 60]]]),
        "finite",
    ),
    "a coordinate as bool": (
        _with_coordinates([[[24, 60], [True, 60], [24.5, 60.5], [24, 60]]]),
        "finite",
    ),
    "a self-intersecting polygon (bow tie)": (
        _with_coordinates([[[24, 60], [25, 61], [25, 60], [24, 61], [24, 60]]]),
        "self-intersection",
    ),
    "too few points": (_with_coordinates([[[24, 60], [25, 60], [24, 60]]]), "valid"),
    "no name": (
        {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "properties": {}, "geometry": SQUARE}],
        },
        "name",
    ),
    "not a FeatureCollection": (feature("depot", SQUARE), "FeatureCollection"),
    "features not a list": ({"type": "FeatureCollection", "features": {}}, "list"),
}


@pytest.mark.parametrize(("document", "fragment"), BAD_ZONES.values(), ids=BAD_ZONES.keys())
def test_bad_zones_are_refused_with_a_reason(document: Any, fragment: str) -> None:
    with pytest.raises(ZonesError) as caught:
        Zones.from_geojson(document)
    assert fragment.lower() in str(caught.value).lower()


def test_a_refused_zone_is_named() -> None:
    bow = feature(
        "harbour",
        {"type": "Polygon", "coordinates": [[[24, 60], [25, 61], [25, 60], [24, 61], [24, 60]]]},
    )
    with pytest.raises(ZonesError, match="harbour"):
        Zones.from_geojson(feature_collection(feature("depot", SQUARE), bow))
