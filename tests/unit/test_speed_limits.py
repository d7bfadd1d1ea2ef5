"""Posted limits from OSM tags (CONTRACT.md section 10): the values, the country table, the
heavy truck's ``maxspeed:hgv``, and which ways are roads."""

from __future__ import annotations

import pytest

from domain.speed_limits import (
    COUNTRY_LIMITS_KMH,
    DRIVABLE_HIGHWAYS,
    KMH_PER_MPH,
    PostedLimit,
    is_drivable,
    limit_for,
    parse_maxspeed,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("50", PostedLimit(50.0, "maxspeed")),
        ("30", PostedLimit(30.0, "maxspeed")),
        ("7.5", PostedLimit(7.5, "maxspeed")),
        (" 80 ", PostedLimit(80.0, "maxspeed")),
        ("50 km/h", PostedLimit(50.0, "maxspeed")),
        ("50km/h", PostedLimit(50.0, "maxspeed")),
        ("50 mph", PostedLimit(50 * 1.609344, "maxspeed")),
        ("30mph", PostedLimit(30 * 1.609344, "maxspeed")),
        ("300", PostedLimit(300.0, "maxspeed")),
        ("FI:urban", PostedLimit(50.0, "implicit")),
        ("FI:rural", PostedLimit(80.0, "implicit")),
        ("FI:motorway", PostedLimit(120.0, "implicit")),
        ("DE:urban", PostedLimit(50.0, "implicit")),
        ("DE:rural", PostedLimit(100.0, "implicit")),
        ("GB:nsl_single", PostedLimit(60 * 1.609344, "implicit")),
    ],
)
def test_a_value_that_states_a_limit(value: str, expected: PostedLimit) -> None:
    assert parse_maxspeed(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "none",
        "signals",
        "walk",
        "variable",
        "50;30",
        "50 kmh",
        "50 knots",
        "fast",
        "-50",
        "+50",
        "0",
        "0 mph",
        "nan",
        "inf",
        "1e3",
        "301",
        "99999999999999999999999",
        "50.",
        "fi:urban",
        "DE:motorway",
        "XX:urban",
        "\u0665\u0660",  # Arabic-Indic digits: not an OSM number
    ],
)
def test_anything_else_is_no_limit(value: str | None) -> None:
    assert parse_maxspeed(value) is None


def test_mph_is_converted_and_not_rounded() -> None:
    limit = parse_maxspeed("20 mph")
    assert limit is not None
    assert limit.kmh == 20 * KMH_PER_MPH == pytest.approx(32.18688)


def test_every_country_value_is_a_plausible_car_limit() -> None:
    assert all(
        key[:2].isupper() and key[2] == ":" and 5 <= kmh <= 130
        for key, kmh in COUNTRY_LIMITS_KMH.items()
    )


@pytest.mark.parametrize(
    ("maxspeed", "hgv", "vehicle_class", "expected"),
    [
        ("80", "60", "heavy", PostedLimit(60.0, "hgv")),
        ("80", "60", "light", PostedLimit(80.0, "maxspeed")),
        ("80", "60", None, PostedLimit(80.0, "maxspeed")),
        ("80", None, "heavy", PostedLimit(80.0, "maxspeed")),
        ("80", "signals", "heavy", PostedLimit(80.0, "maxspeed")),
        ("FI:rural", None, "heavy", PostedLimit(80.0, "implicit")),
        ("FI:rural", "FI:urban", "heavy", PostedLimit(50.0, "hgv")),
        (None, "60", "heavy", PostedLimit(60.0, "hgv")),
        (None, "60", "medium", None),
        (None, None, "heavy", None),
        ("none", "walk", "heavy", None),
        ("50 mph", "40 mph", "heavy", PostedLimit(40 * 1.609344, "hgv")),
    ],
)
def test_limit_for_a_vehicle_class(
    maxspeed: str | None, hgv: str | None, vehicle_class: str | None, expected: PostedLimit | None
) -> None:
    assert limit_for(maxspeed, hgv, vehicle_class) == expected


@pytest.mark.parametrize(
    ("tags", "drivable"),
    [
        ({"highway": "motorway"}, True),
        ({"highway": "primary_link"}, True),
        ({"highway": "residential", "area": "no"}, True),
        ({"highway": "living_street"}, True),
        ({"highway": "service"}, True),
        ({"highway": "road"}, True),
        ({"highway": "service", "area": "yes"}, False),
        ({"highway": "footway"}, False),
        ({"highway": "cycleway"}, False),
        ({"highway": "track"}, False),
        ({"highway": "pedestrian"}, False),
        ({"highway": "motorway_junction"}, False),
        ({"railway": "rail"}, False),
        ({}, False),
    ],
)
def test_which_ways_are_roads(tags: dict[str, str], drivable: bool) -> None:
    assert is_drivable(tags) is drivable


def test_the_drivable_set_is_the_contracts() -> None:
    main = {"motorway", "trunk", "primary", "secondary", "tertiary"}
    others = {"unclassified", "residential", "living_street", "service", "road"}
    assert main | {f"{h}_link" for h in main} | others == DRIVABLE_HIGHWAYS
