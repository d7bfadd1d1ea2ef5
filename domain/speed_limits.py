"""Posted speed limits from OpenStreetMap tags (CONTRACT.md section 10), and which ways are
roads at all. Pure: ``connectors.roads`` reads the extract and calls these.

Values of ``maxspeed`` / ``maxspeed:hgv``:

- a number of km/h, optionally followed by ``km/h`` (``50``, ``50 km/h``, ``7.5``);
- a number followed by ``mph`` (``30 mph``): times 1.609344, not rounded;
- a country value (``FI:urban``) through ``COUNTRY_LIMITS_KMH`` (source ``implicit``);
- anything else is no limit: ``none``, ``signals``, ``walk``, ``50;30``, a country value
  the table does not list, zero, a negative or non-finite number, or more than
  ``MAX_LIMIT_KMH`` (a typo, not a road).

Directional and conditional variants (``maxspeed:forward``, ``maxspeed:conditional``) are
not read: the contract ignores them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Literal, NamedTuple

import msgspec

LimitSource = Literal["maxspeed", "implicit", "hgv"]

KMH_PER_MPH = 1.609344
# No posted limit anywhere is above this; a bigger number is a tagging mistake.
MAX_LIMIT_KMH = 300.0
HEAVY = "heavy"

# The ways that are roads (section 10), by their ``highway`` tag.
DRIVABLE_HIGHWAYS = frozenset(
    {
        "motorway",
        "trunk",
        "primary",
        "secondary",
        "tertiary",
        "motorway_link",
        "trunk_link",
        "primary_link",
        "secondary_link",
        "tertiary_link",
        "unclassified",
        "residential",
        "living_street",
        "service",
        "road",
    }
)

# Implicit limits: the country's general limit where a sign says only "built-up area",
# "outside built-up areas", "motorway", ... (OSM wiki, "Default speed limits"). Kept to the
# values that are one number of km/h for a car; a value not listed is no limit (e.g.
# DE:motorway has only an advisory 130 and no limit; DE:living_street is walking pace).
# docs/roads.md lists the table.
COUNTRY_LIMITS_KMH: Mapping[str, float] = {
    "FI:urban": 50.0,
    "FI:rural": 80.0,
    "FI:motorway": 120.0,
    "FI:living_street": 20.0,
    "DE:urban": 50.0,
    "DE:rural": 100.0,
    "SE:urban": 50.0,
    "SE:rural": 70.0,
    "SE:motorway": 110.0,
    "NO:urban": 50.0,
    "NO:rural": 80.0,
    "DK:urban": 50.0,
    "DK:rural": 80.0,
    "DK:motorway": 130.0,
    "NL:urban": 50.0,
    "NL:rural": 80.0,
    "GB:nsl_single": 60 * KMH_PER_MPH,
    "GB:nsl_dual": 70 * KMH_PER_MPH,
    "GB:motorway": 70 * KMH_PER_MPH,
}

_NUMBER = re.compile(r"([0-9]+(?:\.[0-9]+)?) *(km/h|mph)?")


class PostedLimit(NamedTuple):
    """A limit in km/h and where it came from (the alert's ``limit_source``)."""

    kmh: float
    source: LimitSource


class RoadLimit(msgspec.Struct, frozen=True, gc=False):
    """The posted limit a reading is judged by (``Reading.posted_limit``): its road's limit
    for its truck's vehicle class, and the road. One object per way and class, shared by
    every reading on that way (connectors/road_limits.py), so it costs a reading a pointer."""

    kmh: float
    source: LimitSource
    osm_way_id: int
    road_name: str | None = None


def is_drivable(tags: Mapping[str, str]) -> bool:
    """A road of section 10: a drivable ``highway`` that is not an area."""
    return tags.get("highway") in DRIVABLE_HIGHWAYS and tags.get("area") != "yes"


def parse_maxspeed(value: str | None) -> PostedLimit | None:
    """The limit a ``maxspeed`` value states (source ``maxspeed`` or ``implicit``), or None."""
    if value is None:
        return None
    text = value.strip()
    implicit = COUNTRY_LIMITS_KMH.get(text)
    if implicit is not None:
        return PostedLimit(implicit, "implicit")
    match = _NUMBER.fullmatch(text)
    if match is None:
        return None
    kmh = float(match.group(1))
    if match.group(2) == "mph":
        kmh *= KMH_PER_MPH
    if not (math.isfinite(kmh) and 0 < kmh <= MAX_LIMIT_KMH):
        return None
    return PostedLimit(kmh, "maxspeed")


def limit_for(
    maxspeed: str | None, maxspeed_hgv: str | None, vehicle_class: str | None
) -> PostedLimit | None:
    """The limit for a truck of ``vehicle_class`` on a way with these tags: the
    ``maxspeed:hgv`` for a heavy truck when it parses (source ``hgv``), else ``maxspeed``."""
    if vehicle_class == HEAVY:
        hgv = parse_maxspeed(maxspeed_hgv)
        if hgv is not None:
            return PostedLimit(hgv.kmh, "hgv")
    return parse_maxspeed(maxspeed)
