"""Hostile catalogue files and zones: whatever a file holds, parsing ends in a version or a
``CatalogueError`` naming the file, never another exception (a reload thread that died
would freeze the rules in force without a word)."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.catalogue import CatalogueError, CatalogueVersion, parse_version
from domain.zones import Zones, ZonesError

SOURCE = "hostile.yaml"

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["instant_over", "count_over", "duration_over", "deceleration", "zone_over"]),
    st.sampled_from(["2026-12-01T00:00:00Z", "9999-12-31T23:59:59+01:00", "0001-01-01"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)
_rule_keys = st.sampled_from(
    [
        "id",
        "kind",
        "speed_over_kmh",
        "count",
        "within_s",
        "for_s",
        "max_gap_s",
        "drop_kmh",
        "zone",
        "cooldown_s",
        "severity",
        "scope",
        "trucks",
        "vehicle_classes",
    ]
)
_rules = st.dictionaries(_rule_keys, _values, max_size=8)
_documents = st.one_of(
    _values,
    st.fixed_dictionaries(
        {"version": _values, "effective_from": _values, "rules": st.lists(_rules, max_size=4)}
    ),
)


def _parse(text: str | bytes) -> CatalogueVersion | CatalogueError:
    outcome: CatalogueVersion | CatalogueError
    try:
        outcome = parse_version(text, SOURCE)
    except CatalogueError as error:
        outcome = error
    if isinstance(outcome, CatalogueError):
        assert all(problem.file == SOURCE for problem in outcome.problems)
        assert str(outcome)
    return outcome


@settings(max_examples=400, deadline=None)
@given(_documents)
def test_any_document_is_a_version_or_named_problems(document: Any) -> None:
    _parse(yaml.safe_dump(document, allow_unicode=True))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_version_or_named_problems(raw: bytes) -> None:
    _parse(raw)


def test_alias_bombs_and_deep_nesting_are_refused_or_read_without_blowing_up() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(20)
    )
    assert isinstance(_parse(bomb), CatalogueError)
    assert isinstance(_parse("[" * 100_000 + "]" * 100_000), CatalogueError)
    assert isinstance(_parse("!!python/object/apply:os.system ['true']"), CatalogueError)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_any_zones_document_is_zones_or_a_zones_error(document: Any) -> None:
    message = "parsed"
    try:
        Zones.from_geojson(document)
    except ZonesError as error:
        message = str(error)
    assert message


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=3),
        max_size=6,
    )
)
def test_any_ring_is_a_zone_or_a_zones_error(ring: list[list[float]]) -> None:
    feature = {
        "type": "Feature",
        "properties": {"name": "z"},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }
    try:
        zones = Zones.from_geojson({"type": "FeatureCollection", "features": [feature]})
    except ZonesError as error:
        message = str(error)
    else:
        assert zones["z"].contains(0.0, 0.0) in (True, False)
        return
    assert "zone 'z'" in message
